"""Linear head bootstrapping: ridge start, contrastive fit, early stopping, text-only audio."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from models.encoders.aligner import AlignerHead, l2_normalize
from models.training.bootstrap import (
    FitConfig,
    FitReport,
    bootstrap_audio_head,
    fit_linear_head,
)
from models.training.validation import pair_recall, split_pairs

CFG = FitConfig(max_epochs=40, patience=5, seed=3)


def _mean(recall: dict[str, float]) -> float:
    return float(np.mean(list(recall.values())))


def _synthetic(n: int, src: int, dst: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    """target = normalize(source M + noise): a linear map exists, blurred a little."""
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, src)).astype(np.float32)
    mix = rng.standard_normal((src, dst)).astype(np.float32)
    target = l2_normalize(l2_normalize(source) @ mix + noise * rng.standard_normal((n, dst)))
    return source, target


@pytest.fixture(scope="module")
def fitted() -> tuple[np.ndarray, np.ndarray, AlignerHead, FitReport]:
    source, target = _synthetic(1500, 64, 48, noise=1.5, seed=0)
    head, report = fit_linear_head(source, target, cfg=CFG)
    return source, target, head, report


def test_fit_maps_held_out_pairs_far_above_chance(fitted) -> None:
    _, _, head, report = fitted
    assert (head.kind, head.in_dim, head.out_dim) == ("linear", 64, 48)
    assert (report.pairs, report.train, report.heldout) == (1500, 1350, 150)
    assert report.before["source_to_target@5"] == pytest.approx(5 / 150)  # chance
    assert report.after["source_to_target@5"] >= 0.9
    assert report.after["target_to_source@5"] >= 0.9
    assert report.after["source_to_target@1"] > 10 * report.before["source_to_target@1"]
    assert _mean(report.init) >= _mean(report.before)
    assert _mean(report.after) >= _mean(report.init) - 1e-9  # the best state is kept
    assert 0.01 <= report.temperature <= 1.0
    assert report.stopped in {"patience", "max_epochs"} and report.epochs >= 1
    meta = json.loads(json.dumps(report.as_meta()))
    assert meta["after"]["source_to_target@1"] == round(report.after["source_to_target@1"], 4)


def test_fit_is_deterministic(fitted) -> None:
    source, target, head, _ = fitted
    again, _ = fit_linear_head(source, target, cfg=CFG)
    for name, tensor in head.tensors.items():
        assert again.tensors[name].tobytes() == tensor.tobytes()


def test_start_head_is_the_starting_point_and_training_moves_it() -> None:
    rng = np.random.default_rng(1)
    source = l2_normalize(rng.standard_normal((400, 32)))
    mix = np.eye(32) + 3.0 * rng.standard_normal((32, 32)) / np.sqrt(32)
    target = l2_normalize(source @ mix + 0.1 * rng.standard_normal((400, 32)))
    cfg = FitConfig(max_epochs=30, patience=5, lr=1e-2)
    _, report = fit_linear_head(source, target, cfg=cfg, start=AlignerHead.identity(32))
    _, held = split_pairs(400, cfg.holdout, cfg.seed)
    expected = pair_recall(source[held], target[held])
    assert report.before == expected and report.init == expected  # the start, not ridge
    assert 0.1 < report.before["source_to_target@1"] < 0.6  # neither chance nor solved
    # No ridge shortcut here: the contrastive loop alone has to find the map.
    assert report.after["source_to_target@1"] >= 0.9
    assert _mean(report.after) > _mean(report.before) + 0.2
    with pytest.raises(ValueError, match="start head"):
        fit_linear_head(source, target[:, :16], start=AlignerHead.identity(32))


def test_bad_inputs_are_refused() -> None:
    source, target = _synthetic(50, 8, 8, noise=0.1, seed=2)
    with pytest.raises(ValueError, match="rows"):
        fit_linear_head(source, target[:-1])
    with pytest.raises(ValueError, match="at least 10"):
        fit_linear_head(source[:9], target[:9])
    bad = source.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_linear_head(bad, target)
    with pytest.raises(ValueError, match="2-D"):
        fit_linear_head(source[:, 0], target[:, 0])
    with pytest.raises(ValueError, match="holdout"):
        fit_linear_head(source, target, cfg=FitConfig(holdout=0.0))


def test_small_sets_fit_and_split_keeps_both_sides() -> None:
    source, target = _synthetic(50, 16, 12, noise=0.1, seed=4)
    head, report = fit_linear_head(source, target, cfg=FitConfig(max_epochs=20, patience=4))
    assert (report.train, report.heldout) == (45, 5)
    assert report.after["source_to_target@5"] == 1.0  # 5 held-out rows: @5 is certain
    assert np.isfinite(head.tensors["weight"]).all()
    train, held = split_pairs(10, 0.01, seed=0)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)


def test_max_seconds_stops_early_with_a_valid_head() -> None:
    source, target = _synthetic(300, 16, 16, noise=0.1, seed=5)
    head, report = fit_linear_head(source, target, cfg=FitConfig(max_seconds=0.0))
    assert report.stopped == "max_seconds" and report.epochs == 0
    assert report.after == report.init  # the ridge start is returned
    head.check()
    assert head.project(source).shape == (300, 16)


WORDS = [f"w{i}" for i in range(30)]


def _bag(dim: int, seed: int):
    """Hashed bag-of-words then a fixed random projection: a toy text tower."""
    proj = np.random.default_rng(seed).standard_normal((256, dim)).astype(np.float32)
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        bags = np.zeros((len(texts), 256), np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                bags[row, zlib.crc32(word.encode()) % 256] += 1.0
        return bags @ proj

    embed.calls = calls  # type: ignore[attr-defined]
    return embed


def test_bootstrap_audio_head_from_toy_text_towers() -> None:
    rng = np.random.default_rng(7)
    captions = [" ".join(sorted(rng.choice(WORDS, 4, replace=False))) for _ in range(700)]
    distinct = list(dict.fromkeys(captions))
    source, target = _bag(48, seed=8), _bag(40, seed=9)
    head, report = bootstrap_audio_head(
        captions=[*captions, *captions[:50], "  "],
        source_text=source,
        target_text=target,
        cfg=FitConfig(max_epochs=30, patience=5),
        batch=64,
    )
    assert sum(source.calls) == sum(target.calls) == len(distinct) == report.pairs
    assert max(source.calls) <= 64
    assert report.extra["captions"] == 751 and report.extra["distinct_captions"] == len(distinct)
    assert (head.in_dim, head.out_dim) == (48, 40)
    assert report.after["source_to_target@5"] >= 0.8 > 10 * report.before["source_to_target@5"]
    assert report.as_meta()["extra"]["distinct_captions"] == len(distinct)
