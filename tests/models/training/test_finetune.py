"""Fine-tuning aligner heads on paired raw features (synthetic spaces: fast and exact)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.encoders.aligner import Aligner, l2_normalize
from models.training.finetune import (
    AnchorCheck,
    Cancelled,
    FinetuneConfig,
    Pairs,
    Progress,
    finetune,
)

DIM = 24


def spaces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image features, and two kinds of text about them: one the text head already reads
    right (the old vocabulary) and one through an unknown mixing (a new vocabulary), whose
    features lie apart from the old ones (new words are other tokens to the text tower)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, DIM)).astype(np.float32)
    old = images + 0.1 * rng.normal(size=(n, DIM)).astype(np.float32)
    mixing = np.random.default_rng(99).normal(size=(DIM, DIM)).astype(np.float32)
    new = images @ mixing + 0.1 * rng.normal(size=(n, DIM)).astype(np.float32)
    return images, old, new + 2.0 * np.sqrt(DIM) * np.eye(DIM, dtype=np.float32)[0]


def base() -> Aligner:
    return Aligner.identity(DIM, {"image": "m", "text": "m", "audio": "a"})


def recall_at_5(aligner: Aligner, text: np.ndarray, images: np.ndarray) -> float:
    scores = aligner.project("text", text) @ aligner.project("image", images).T
    top = np.argsort(-scores, axis=1)[:, :5]
    return float(np.mean([i in row for i, row in enumerate(top)]))


CFG = FinetuneConfig(max_epochs=40, patience=40, lr=1e-2)


@pytest.mark.parametrize("form", ["residual", "affine"])
def test_a_new_vocabulary_is_learnt_and_the_old_one_kept_by_anchors(form: str) -> None:
    images, _, new = spaces(300)
    probe_images, probe_old, probe_new = spaces(200, seed=1)
    pairs = Pairs("text", "image", new, images, anchors={"text": probe_old[:100]})
    tuned, report = finetune(base(), pairs, replace(CFG, form=form))
    assert report.trained == ["text"] and report.improved
    assert report.after["a_to_b@5"] - report.before["a_to_b@5"] > 0.5
    assert recall_at_5(tuned, probe_new[100:], probe_images[100:]) > 0.6  # chance: 0.05
    kept = recall_at_5(tuned, probe_old[100:], probe_images[100:])
    assert kept >= recall_at_5(base(), probe_old[100:], probe_images[100:]) - 0.05
    # Heads that did not learn are the very same heads; the new one is of the form asked.
    assert tuned.heads["image"] is base().heads["image"] or tuned.heads["image"].kind == "identity"
    kind = {"residual": "residual", "affine": "linear"}[form]
    assert tuned.heads["audio"].kind == "identity" and tuned.heads["text"].kind == kind
    assert tuned.version == 0 and tuned.meta["kind"] == "finetune"


def test_the_same_inputs_give_the_same_bytes() -> None:
    images, _, new = spaces(200)
    pairs = Pairs("text", "image", new, images)
    cfg = FinetuneConfig(max_epochs=5)
    first, second = finetune(base(), pairs, cfg)[0], finetune(base(), pairs, cfg)[0]
    for name, tensor in first.heads["text"].tensors.items():
        np.testing.assert_array_equal(tensor, second.heads["text"].tensors[name])


def test_progress_is_reported_every_epoch_and_cancel_stops_it() -> None:
    images, _, new = spaces(200)
    pairs = Pairs("text", "image", new, images)
    seen: list[Progress] = []
    finetune(base(), pairs, FinetuneConfig(max_epochs=4, patience=10), progress=seen.append)
    assert [p.epoch for p in seen] == [1, 2, 3, 4]
    assert all(0 < p.fraction <= 1 for p in seen) and seen[-1].fraction == 1.0
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        finetune(base(), pairs, CFG, should_stop=lambda: next(calls) >= 3)


def test_limits_stop_training_and_still_return_heads() -> None:
    images, _, new = spaces(200)
    pairs = Pairs("text", "image", new, images)
    _, report = finetune(base(), pairs, FinetuneConfig(max_seconds=1e-9))
    assert report.stopped == "max_seconds" and report.epochs == 0
    _, report = finetune(base(), pairs, FinetuneConfig(max_epochs=2, patience=50))
    assert report.stopped == "max_epochs" and report.epochs == 2


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (Pairs("text", "image", np.ones((5, DIM)), np.ones((5, DIM))), "pairs"),
        (Pairs("text", "image", np.ones((20, DIM)), np.ones((21, DIM))), "pair up"),
        (Pairs("text", "image", np.full((20, DIM), np.nan), np.ones((20, DIM))), "finite"),
        (Pairs("text", "image", np.ones((20, DIM + 1)), np.ones((20, DIM))), "must be"),
        (Pairs("text", "smell", np.ones((20, DIM)), np.ones((20, DIM))), "no smell head"),
        (
            Pairs("text", "image", np.ones((20, DIM)), np.ones((20, DIM)), {"text": np.ones(3)}),
            "anchors",
        ),
    ],
)
def test_unusable_pairs_are_refused(pairs: Pairs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        finetune(base(), pairs, FinetuneConfig(max_epochs=1))


def test_identity_heads_stay_exactly_where_they_were_when_nothing_improves() -> None:
    rng = np.random.default_rng(3)
    noise = Pairs("text", "image", rng.normal(size=(60, DIM)), rng.normal(size=(60, DIM)))
    tuned, report = finetune(base(), noise, FinetuneConfig(max_epochs=3, patience=1))
    if not report.trained:  # the start was the best state: no head changed
        assert tuned.heads["text"].kind == "identity"
    np.testing.assert_allclose(
        l2_normalize(noise.raw_b), tuned.project("image", noise.raw_b), atol=1e-6
    )


def test_no_state_that_forgets_past_the_tolerance_is_handed_back() -> None:
    """The anchor check (retrieval on old-vocabulary probes the training never sees) picks
    the kept state with the pairs' score: without anchors or pull, a fine-tune that may
    forget freely trades the old vocabulary away, one held to 2 points does not."""
    images, _, new = spaces(300)
    probe_images, probe_old, _ = spaces(200, seed=1)
    check = AnchorCheck("text", probe_old, "image", probe_images, np.eye(200, dtype=bool))
    pairs = Pairs("text", "image", new, images, check=check)
    cfg = replace(CFG, form="affine", stay=0.0)
    _, free = finetune(base(), pairs, replace(cfg, tolerance=1.0))
    _, held = finetune(base(), pairs, cfg)
    name = "text_to_image@5"
    assert free.anchors_before == held.anchors_before and held.tolerance == 0.02
    assert free.anchors_after[name] < free.anchors_before[name] - 0.02
    assert free.improved  # within its tolerance of 1; held to 2 points, it would not be:
    strict = replace(free, tolerance=0.02)
    assert not strict.kept and not strict.improved and strict.after == free.after
    assert held.anchors_after[name] >= held.anchors_before[name] - 0.02 and held.kept
    assert held.as_meta()["anchors_after"] == {name: round(held.anchors_after[name], 4)}


def test_without_relevance_the_check_keeps_what_the_start_found_first() -> None:
    images, old, _ = spaces(100)
    check = AnchorCheck("text", old, "image", images)
    pairs = Pairs("text", "image", old, images, check=check)
    _, report = finetune(base(), pairs, replace(CFG, max_epochs=2))
    assert report.anchors_before == {"text_to_image@5": 1.0}
    assert report.anchors_after["text_to_image@5"] >= 0.98


def test_a_fixed_temperature_stays_and_noise_is_seeded() -> None:
    images, _, new = spaces(200)
    pairs = Pairs("text", "image", new, images)
    cfg = FinetuneConfig(max_epochs=3, patience=10)
    _, fixed = finetune(base(), pairs, replace(cfg, temperature=0.05))
    assert fixed.temperature == pytest.approx(0.05)
    noisy = [finetune(base(), pairs, replace(cfg, augment=0.1))[0] for _ in range(2)]
    plain = finetune(base(), pairs, cfg)[0]
    w = [a.heads["text"].tensors["up"] for a in (*noisy, plain)]
    np.testing.assert_array_equal(w[0], w[1])  # the same noise for the same seed
    assert not np.array_equal(w[0], w[2])  # and it changed what was learnt
    with pytest.raises(ValueError, match="temperature"):
        finetune(base(), pairs, replace(cfg, temperature=0.0))


def test_hard_batches_hold_near_neighbours_and_cover_every_pair_once() -> None:
    import torch

    from models.training.finetune import _NearChunks

    # Two far-apart clusters of 8: a batch of 8 is one cluster.
    rng = np.random.default_rng(0)
    centres = np.stack([np.eye(DIM)[0], -np.eye(DIM)[0]])
    x = np.concatenate([c + 0.01 * rng.normal(size=(8, DIM)) for c in centres]).astype(np.float32)
    chunks = _NearChunks(torch.from_numpy(x), 8, torch.Generator().manual_seed(0))
    batches = chunks.epoch()
    assert chunks.per_epoch == 2 and len(batches) == 2
    assert sorted(torch.cat(batches).tolist()) == list(range(16))
    assert {frozenset(b.tolist()) for b in batches} == {
        frozenset(range(8)),
        frozenset(range(8, 16)),
    }
    images, _, new = spaces(200)
    _, report = finetune(
        base(), Pairs("text", "image", new, images), FinetuneConfig(max_epochs=2, hard=True)
    )
    assert report.epochs == 2
