"""Aligner heads and their artefact; segments of long recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.encoders.aligner import Aligner, AlignerFormatError, AlignerHead, l2_normalize
from models.encoders.audio import AudioSegments, cut_segments, pooled, segment_starts
from models.errors import UnsupportedMediaError


def rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def bridge() -> Aligner:
    rng = np.random.default_rng(1)
    audio = AlignerHead.linear(rng.normal(size=(8, 5)), rng.normal(size=8))
    tuned = AlignerHead.lowrank(rng.normal(size=(2, 8)) * 0.1, rng.normal(size=(8, 2)) * 0.1)
    return Aligner(
        8,
        {"image": AlignerHead.identity(8), "text": tuned, "audio": audio},
        {"image": "clip", "text": "clip", "audio": "clap:x"},
        {"kind": "bootstrap", "recall": {"@5": 0.5}},
    )


def test_heads_project_to_unit_vectors_of_the_shared_width() -> None:
    aligner = bridge()
    raw = rows(3, 8)
    np.testing.assert_allclose(aligner.project("image", raw), l2_normalize(raw), atol=1e-6)
    audio = aligner.project("audio", rows(4, 5))
    assert audio.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    w, b = aligner.heads["audio"].affine()
    expected = l2_normalize(l2_normalize(rows(4, 5)) @ w.T + b)
    np.testing.assert_allclose(audio, expected, atol=1e-5)
    # A low-rank residual is the identity plus its correction, as one affine map.
    text = aligner.heads["text"]
    w, b = text.affine()
    np.testing.assert_allclose(
        text.project(raw), l2_normalize(l2_normalize(raw) @ w.T + b), atol=1e-5
    )
    # The scale of a raw feature never matters: heads see unit rows.
    np.testing.assert_allclose(text.project(raw * 7), text.project(raw), atol=1e-6)


def test_a_modality_without_a_head_is_refused() -> None:
    aligner = Aligner.identity(8, {"image": "clip", "text": "clip"})
    assert aligner.modalities == ("image", "text")
    with pytest.raises(UnsupportedMediaError, match="no audio head"):
        aligner.project("audio", rows(1, 8))


def test_the_artefact_round_trips_through_bytes_and_files(tmp_path: Path) -> None:
    aligner = bridge().numbered(3)
    again = Aligner.from_bytes(aligner.to_bytes())
    assert again.version == 0  # numbers belong to a collection, not to the bytes
    assert again.encoders == aligner.encoders and again.meta == aligner.meta
    for modality in aligner.heads:
        np.testing.assert_array_equal(
            again.project(modality, rows(2, aligner.heads[modality].in_dim)),
            aligner.project(modality, rows(2, aligner.heads[modality].in_dim)),
        )
    assert again.sha256 == aligner.sha256
    aligner.save(tmp_path / "heads" / "a.safetensors")
    assert Aligner.load(tmp_path / "heads" / "a.safetensors").sha256 == aligner.sha256
    identity = Aligner.identity(4, {"text": "m"})
    assert Aligner.from_bytes(identity.to_bytes()).heads["text"].kind == "identity"


@pytest.mark.parametrize(
    "data",
    [b"", b"not safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"],
)
def test_garbage_is_not_an_aligner(data: bytes) -> None:
    with pytest.raises(AlignerFormatError):
        Aligner.from_bytes(data)


def test_inconsistent_heads_are_refused() -> None:
    with pytest.raises(AlignerFormatError, match="identity"):
        AlignerHead("identity", 4, 8).check()
    with pytest.raises(AlignerFormatError, match="finite"):
        AlignerHead.linear(np.full((2, 2), np.nan))
    with pytest.raises(AlignerFormatError, match="writes 8 dims"):
        Aligner(4, {"text": AlignerHead.identity(8)}, {"text": "m"})
    with pytest.raises(AlignerFormatError, match="encoder"):
        Aligner(4, {"text": AlignerHead.identity(4)}, {})
    with pytest.raises(AlignerFormatError, match="unknown head kind"):
        AlignerHead("cubic", 4, 4).check()


def test_segments_cover_a_long_recording_and_end_at_its_end() -> None:
    rate = 100
    assert segment_starts(50, 1000, 500).tolist() == [0]
    assert segment_starts(6000, 1000, 500).tolist() == list(range(0, 5001, 500))
    # 9.5 windows: the last window is aligned to the end, not padded past it.
    assert segment_starts(9500, 1000, 500).tolist()[-2:] == [8000, 8500]
    wave = np.arange(60 * rate, dtype=np.float32)
    pieces, spans = cut_segments(wave, rate=rate, window_s=10, hop_s=5)
    assert len(pieces) == 11 and all(len(p) == 10 * rate for p in pieces)
    assert spans[0].tolist() == [0.0, 10.0] and spans[-1].tolist() == [50.0, 60.0]
    # 37 s lies inside the segments that start at 30 and at 35.
    covering = [s.tolist() for s in spans if s[0] <= 37 < s[1]]
    assert covering == [[30.0, 40.0], [35.0, 45.0]]
    np.testing.assert_array_equal(pieces[6], wave[30 * rate : 40 * rate])
    short, one = cut_segments(wave[: 3 * rate], rate=rate, window_s=10, hop_s=5)
    assert len(short) == 1 and one.tolist() == [[0.0, 3.0]]


def test_a_recording_has_one_span_per_feature() -> None:
    with pytest.raises(ValueError):
        AudioSegments(np.zeros((2, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        AudioSegments(np.zeros((0, 4)), np.zeros((0, 2)))
    np.testing.assert_allclose(pooled(np.array([[1.0, 0.0], [0.0, 1.0]])), [0.5, 0.5])


def test_a_residual_head_is_its_base_plus_a_relu_correction() -> None:
    rng = np.random.default_rng(4)
    base = AlignerHead.linear(rng.normal(size=(8, 5)), rng.normal(size=8))
    down, bias, up = rng.normal(size=(6, 5)), rng.normal(size=6), rng.normal(size=(8, 6))
    head = AlignerHead.residual(base, down, bias, up)
    raw = rows(4, 5)
    x = l2_normalize(raw)
    w, b = base.affine()
    want = l2_normalize(x @ w.T + b + np.maximum(x @ down.T + bias, 0) @ up.T)
    np.testing.assert_allclose(head.project(raw), want, atol=1e-5)
    # With no correction it is its base exactly; a residual of a residual keeps the base.
    silent = AlignerHead.residual(base, down, bias, np.zeros((8, 6)))
    np.testing.assert_allclose(silent.project(raw), base.project(raw), atol=1e-6)
    again = AlignerHead.residual(head, down, bias, np.zeros((8, 6)))
    np.testing.assert_array_equal(again.base()[0], head.base()[0])
    with pytest.raises(ValueError, match="not one affine map"):
        head.affine()
    # It round-trips through the artefact, and a wrong shape is refused there.
    aligner = Aligner(
        8, {"image": AlignerHead.identity(8), "audio": head}, {"image": "c", "audio": "a"}
    )
    back = Aligner.from_bytes(aligner.to_bytes())
    np.testing.assert_allclose(back.project("audio", raw), head.project(raw), atol=1e-6)
    broken = AlignerHead("residual", 5, 8, {**head.tensors, "up": np.zeros((8, 3), np.float32)})
    with pytest.raises(AlignerFormatError, match="residual head"):
        broken.check()
