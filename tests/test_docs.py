"""The manual: it builds strictly (every link and anchor between pages resolves), the built
pages load nothing from another host, and the README's links into it resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# An element that makes a browser fetch: script, stylesheet, image, frame, media.
FETCHING_TAG = re.compile(
    r"<(?:script|link|img|iframe|source|audio|video|embed|object)\b[^>]*>", re.IGNORECASE
)
FETCHED_URL = re.compile(r"""\b(?:src|href|data|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
CSS_REMOTE = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""", re.I)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manual built as `make docs` builds it, into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # --quiet would hide warnings
    done = subprocess.run(
        [*argv, "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def remote_fetches(text: str) -> list[str]:
    """The elements and CSS rules of a page or style sheet that fetch from another host."""
    tags = [tag for tag in FETCHING_TAG.findall(text) if FETCHED_URL.search(tag)]
    return tags + [m.group(0) for m in CSS_REMOTE.finditer(text)]


def test_the_check_sees_what_a_theme_would_load_from_a_cdn() -> None:
    assert remote_fetches('<script src="https://cdnjs.example/x.js"></script>')
    assert remote_fetches("<link rel=stylesheet href=//fonts.example/css>")
    assert remote_fetches("body { background: url('https://x.example/a.png') }")
    assert remote_fetches('@import "https://fonts.example/css";')
    assert not remote_fetches('<a href="https://www.mkdocs.org/">MkDocs</a>')  # a link, no fetch
    assert not remote_fetches('<script src="js/base.js"></script><img src="img/a.png">')


def test_the_built_manual_loads_nothing_from_another_host(site: Path) -> None:
    pages = [p for p in site.rglob("*") if p.suffix in {".html", ".css"}]
    assert (site / "index.html") in pages and (site / "settings.html") in pages
    offenders = {
        str(path.relative_to(site)): found
        for path in pages
        if (found := remote_fetches(path.read_text(encoding="utf-8", errors="replace")))
    }
    assert not offenders, offenders


def test_the_readme_links_resolve_into_the_built_manual(site: Path) -> None:
    links = MARKDOWN_LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        path, _, anchor = link.partition("#")
        assert path, f"README links to {link}: its headings are the manual's (docs/)"
        assert (ROOT / path).exists(), f"README links to {link}: no such file"
        if anchor:
            page = site / Path(path).relative_to("docs").with_suffix(".html")
            assert f'id="{anchor}"' in page.read_text(encoding="utf-8"), f"README: {link}"
