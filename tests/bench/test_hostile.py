"""`python -m bench --quick --only hostile`: every attack sent, answers counted, memory read.

Numbers are not asserted (a tiny run on a shared machine); shapes are: every attack got
answers, the baseline and the peak were read, the report has its section and targets.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.config import quick_config
from bench.hostile import _encoded, _flac_with_rate, _ogg_with_rate, build_attacks
from tests.bench.test_bench import run_bench


def test_the_lying_files_claim_what_they_say() -> None:
    cfg = quick_config()
    attacks = {a.name: a for a in build_attacks(cfg)}
    assert {"lying_ogg", "lying_flac", "pixel_bomb", "deep_json", "unauthenticated_large"} <= set(
        attacks
    )
    assert "2 GHz" in attacks["lying_ogg"].what and "1 MHz" in attacks["lying_flac"].what


def test_flac_and_ogg_rates_are_patched_where_libsndfile_reads_them() -> None:
    silence = np.zeros(16000, np.float32)
    flac = _flac_with_rate(_encoded(silence, 16000, "FLAC"), 1_000_000)
    ogg = _ogg_with_rate(_encoded(silence, 16000, "OGG"), 2_000_000_000)
    assert sf.info(io.BytesIO(flac)).samplerate == 1_000_000
    assert sf.info(io.BytesIO(ogg)).samplerate == 2_000_000_000


@pytest.mark.slow
def test_quick_hostile_run_counts_every_answer(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "--only", "hostile")
    hostile = results["hostile"]
    cfg = quick_config().hostile
    assert len(hostile["attacks"]) == len(build_attacks(quick_config()))
    for attack in hostile["attacks"]:
        assert attack["requests"] == cfg.clients * cfg.rounds, attack
        assert sum(attack["statuses"].values()) == attack["requests"]
    assert 0 < hostile["baseline"]["rss_mb"] <= hostile["peak_rss_mb"]
    assert isinstance(hostile["any_500"], bool) and hostile["ready_after"]
    names = {t["name"] for t in results["targets"]}
    assert {"hostile input: peak RSS (MB)", "hostile input: answers 500"} <= names
    assert "## Hostile input" in (tmp_path / "results.md").read_text()
