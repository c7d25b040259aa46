"""The Postgres half of the suite (tests marked ``postgres``): run when the server answers,
skipped with one summary line when it does not, a failure when CI requires it.

A pytest plugin (tests/conftest.py loads it), kept apart from the conftest so that it
imports no model code. ``MMR_TEST_PG_URL`` names the server; with
``MMR_TEST_REQUIRE_POSTGRES=1`` (set by .ci/run, which starts Postgres) a server that cannot
be reached stops the run before any test instead of skipping half of it.

PYTEST_DONT_REWRITE: tests/conftest.py imports this module (for PG_URL) before pytest loads
it as a plugin, too late to rewrite asserts; it has none.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

PG_URL = os.environ.get("MMR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_VAR = "MMR_TEST_REQUIRE_POSTGRES"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)  # a database fixture's param

_UNREACHABLE = pytest.StashKey[str]()
_SKIPPED = pytest.StashKey[int]()


def unreachable_reason() -> str | None:
    """Why the test server cannot be used (its driver's first line), or None when it can."""
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0]
    finally:
        engine.dispose()


def shown_url() -> str:
    """PG_URL without its password, for messages."""
    return make_url(PG_URL).render_as_string(hide_password=True)


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the server once, and only when a selected test needs it."""
    marked = [item for item in items if item.get_closest_marker("postgres")]
    if not marked:
        return
    reason = unreachable_reason()
    if reason is None:
        return
    message = f"Postgres at {shown_url()} cannot be reached ({reason})"
    if os.environ.get(REQUIRE_VAR) == "1":
        raise pytest.UsageError(
            f"{message}, and {REQUIRE_VAR}=1 requires it for the {len(marked)} tests marked "
            "postgres: start the server (.ci/run does), point MMR_TEST_PG_URL at one, or "
            f"unset {REQUIRE_VAR} to skip them"
        )
    config.stash[_UNREACHABLE] = message
    config.stash[_SKIPPED] = 0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked postgres while the server cannot be reached (one folded reason)."""
    message = item.config.stash.get(_UNREACHABLE, None)
    if message is not None and item.get_closest_marker("postgres"):
        item.config.stash[_SKIPPED] += 1
        pytest.skip(message)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: after the short test summary
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> object:
    """The last line before the totals says what did not run and how CI runs it."""
    yield
    config = terminalreporter.config
    message = config.stash.get(_UNREACHABLE, None)
    skipped = config.stash.get(_SKIPPED, 0)
    if message is None or not skipped:
        return
    tests = "test" if skipped == 1 else "tests"
    terminalreporter.write_line(
        f"{message}: {skipped} Postgres {tests} skipped; CI runs them "
        f"({REQUIRE_VAR}=1 makes a missing server a failure)",
        yellow=True,
        bold=True,
    )
