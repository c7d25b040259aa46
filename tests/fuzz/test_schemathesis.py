"""The contract proven by an outside tool: schemathesis, every check, its stateful phase, keys
on, against a live ``mmr serve`` (tests/fuzz/run.py). A short seeded run here; ``make fuzz``
runs a long one on SQLite and Postgres."""

from __future__ import annotations

import pytest

from tests.fuzz.run import fuzz

SEED = 19
MAX_EXAMPLES = 15


@pytest.mark.slow
def test_schemathesis_finds_nothing_on_sqlite() -> None:
    runs = fuzz("sqlite", max_examples=MAX_EXAMPLES, seed=SEED)
    for run in runs:
        print(f"=== {run.label} ===\n{run.summary}")
    failed = [run for run in runs if run.returncode != 0]
    assert not failed, "\n\n".join(f"=== {run.label} ===\n{run.output}" for run in failed)
