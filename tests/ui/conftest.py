"""Browser tests of the search page: headless Chromium (Debian's ``chromium``) driven by
Playwright for Python, against a real ``mmr serve`` on mmr-mini with media of its own world.

Without a browser, Playwright or the axe-core package (``npm ci --prefix tests/ui``, which
``make test`` runs where npm is) these tests are skipped and say why; with
``MMR_TEST_REQUIRE_BROWSER=1`` (``.ci/run``) they fail instead: CI never skips them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.app.test_crash import Server, serve
from tests.ui.demo import Demo, seed

HERE = Path(__file__).parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
KEY = "ui-test-key"


def _missing(what: str) -> None:
    message = f"browser tests need {what}"
    if os.environ.get("MMR_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (MMR_TEST_REQUIRE_BROWSER=1: CI never skips them)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for a module. Not for the session: Playwright's sync API keeps
    an event loop running in this thread while it is started, and tests elsewhere that call
    ``asyncio.run`` would find it."""
    executable = os.environ.get("MMR_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        _missing("Chromium: apt-get install chromium (or MMR_CHROMIUM=/path/to/chrome)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        _missing("axe-core: npm ci --prefix tests/ui")
    return AXE.read_text(encoding="utf-8")


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMR_")}
    env.update(
        MMR_DATA_DIR=str(data),
        MMR_MODEL="mmr-mini",
        MMR_PRECISION="fp32",
        MMR_DEVICE="cpu",
        MMR_TORCH_THREADS="1",
        MMR_LOG_LEVEL="warning",
        PYTHONPATH=str(HERE.parent.parent),
        **extra,
    )
    return env


@dataclass
class Site:
    """A running server with the demo collection, and what was stored."""

    server: Server
    demo: Demo
    key: str | None = None

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """mmr serve on mmr-mini (SQLite, in-process worker) holding the demo collection."""
    root = tmp_path_factory.mktemp("ui")
    with serve(_env(root / "data"), root / "server.log") as server:
        yield Site(server, seed(server.url))


@pytest.fixture(scope="module")
def keyed_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same with an API key asked of every /v1 call."""
    root = tmp_path_factory.mktemp("ui-keyed")
    with serve(_env(root / "data", MMR_API_KEYS=KEY), root / "server.log") as server:
        yield Site(server, seed(server.url, key=KEY, images=2), key=KEY)


@dataclass
class Watch:
    """What a page did: every request's URL, console errors and uncaught exceptions."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Console errors a test brings about on purpose (Chromium logs every 4xx a fetch gets).
    allowed: list[str] = field(default_factory=list)

    def check(self) -> None:
        """No request left the host, nothing went wrong in the page."""
        outside = [
            u for u in self.requests if not u.startswith((self.origin + "/", "blob:", "data:"))
        ]
        assert outside == [], f"requests left the host: {outside}"
        errors = [e for e in self.errors if not any(a in e for a in self.allowed)]
        assert errors == [], f"the page logged errors: {errors}"


def open_page(browser: Any, site: Site, *, expect: tuple[str, ...] = (), **options: Any) -> Any:
    """A new page (its own context: its own sessionStorage) watching its requests and
    console; ``expect``: console errors the test brings about on purpose (a refused key)."""
    context = browser.new_context(**options)
    page = context.new_page()
    watch = Watch(site.url, allowed=list(expect))
    page.watch = watch

    def on_console(message: Any) -> None:
        if message.type == "error":
            watch.errors.append(message.text)

    page.on("request", lambda request: watch.requests.append(request.url))
    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
    return page


@pytest.fixture
def page(chromium: Any, site: Site) -> Iterator[Any]:
    """The page of ``site`` in a fresh context, checked after the test: nothing left the
    host, no console error."""
    page = open_page(chromium, site, viewport={"width": 1100, "height": 800})
    page.goto(site.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    try:
        page.watch.check()
    finally:
        page.context.close()
