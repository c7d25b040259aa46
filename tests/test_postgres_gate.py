"""The Postgres half of the suite: skipped with one clear line when the server cannot be
reached, a failure when MMR_TEST_REQUIRE_POSTGRES=1 (CI), run as usual when it answers.

Each case runs pytest in a subprocess on a two-test file (one marked ``postgres``) with the
gate plugin only, so it costs a second, not a torch import.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres_gate import PG_URL, REQUIRE_VAR

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-p", "tests.postgres_gate", "-p", "no:cacheprovider"]
MARKER = ["--strict-markers", "-o", "markers=postgres: needs the Postgres server"]
TWO_TESTS = """
import pytest

@pytest.mark.postgres
def test_needs_postgres():
    pass

def test_needs_nothing():
    pass
"""


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_gate(tmp_path: Path, pg_url: str, *, require: bool, body: str = TWO_TESTS) -> str:
    """Exit status and output of pytest on ``body`` with the gate plugin and this URL."""
    (tmp_path / "test_two.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_VAR}
    env.update(MMR_TEST_PG_URL=pg_url, PYTHONPATH=str(ROOT))
    if require:
        env[REQUIRE_VAR] = "1"
    done = subprocess.run(
        [*PYTEST, *MARKER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_without_postgres_the_marked_tests_are_skipped_and_the_summary_says_so(
    tmp_path: Path,
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    out = run_gate(tmp_path, url, require=False)
    assert out.startswith("exit 0\n"), out
    assert "1 passed, 1 skipped" in out, out
    assert f"Postgres at {url} cannot be reached" in out, out
    assert "1 Postgres test skipped; CI runs them" in out, out
    assert f"{REQUIRE_VAR}=1" in out, out


def test_ci_fails_when_postgres_is_required_and_missing(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    out = run_gate(tmp_path, url, require=True)
    assert not out.startswith("exit 0\n"), out
    assert f"Postgres at {url} cannot be reached" in out, out
    assert REQUIRE_VAR in out, out
    assert "passed" not in out, out  # it stops before running anything


def test_a_run_without_postgres_tests_does_not_need_the_server(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    body = "def test_needs_nothing():\n    pass\n"
    out = run_gate(tmp_path, url, require=True, body=body)
    assert out.startswith("exit 0\n"), out
    assert "1 passed" in out and "Postgres" not in out, out


@pytest.mark.postgres
def test_with_postgres_the_marked_tests_run(tmp_path: Path) -> None:
    out = run_gate(tmp_path, PG_URL, require=True)
    assert out.startswith("exit 0\n"), out
    assert "2 passed" in out and "skipped" not in out, out
