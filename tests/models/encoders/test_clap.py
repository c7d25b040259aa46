"""The clap: audio tower, through a tiny random CLAP saved the way the real ones are."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoders.audio import segment_starts
from models.encoders.clap import ClapAudioEncoder, build_tiny_clap, load_clap
from models.encoders.clap.tiny import PROJECTION_DIM
from models.errors import ModelLoadError, UnsupportedMediaError
from models.runtime.batcher import BatchConfig

RATE = 48000
WINDOW_S = 10.0


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("clap"), sample_rate=RATE, window_s=WINDOW_S)


@pytest.fixture(scope="module")
def encoder(tiny_dir: Path) -> ClapAudioEncoder:
    return load_clap(f"clap:{tiny_dir}", str(tiny_dir))


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> ClapAudioEncoder:
    # Another rate and window too, to show that the encoder reads them from the files.
    out = tmp_path_factory.mktemp("clap-fused")
    path = build_tiny_clap(out, sample_rate=16000, window_s=4.0, enable_fusion=True)
    return load_clap(f"clap:{path}", str(path))


def noise_and_chirp(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Different in every window: a chirp from 200 Hz to 8 kHz under a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    sweep = (8000 - 200) / seconds
    chirp = np.sin(2 * np.pi * (200 * t + sweep * t**2 / 2))
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * chirp + 0.05 * noise).astype(np.float32)


def test_attributes_come_from_the_saved_files(encoder: ClapAudioEncoder) -> None:
    assert encoder.dim == PROJECTION_DIM
    assert encoder.sample_rate == RATE
    assert encoder.window_s == WINDOW_S
    assert encoder.hop_s == WINDOW_S / 2
    assert encoder.device == "cpu"


def test_other_rate_and_window(fused: ClapAudioEncoder) -> None:
    assert (fused.sample_rate, fused.window_s, fused.hop_s) == (16000, 4.0, 2.0)
    (clip,) = fused.encode_audio([noise_and_chirp(9.0, rate=16000)])
    np.testing.assert_array_equal(clip.spans, [[0, 4], [2, 6], [4, 8], [5, 9]])


def test_short_clip_is_one_segment(encoder: ClapAudioEncoder) -> None:
    (clip,) = encoder.encode_audio([noise_and_chirp(3.0)])
    assert clip.features.shape == (1, PROJECTION_DIM)
    assert clip.features.dtype == np.float32
    np.testing.assert_array_equal(clip.spans, [[0.0, 3.0]])
    # CLAP's projection is normalised: a unit vector shows pooler_output was taken.
    np.testing.assert_allclose(np.linalg.norm(clip.features, axis=1), 1.0, atol=1e-5)


def test_long_clip_has_a_segment_every_hop(encoder: ClapAudioEncoder) -> None:
    wave = noise_and_chirp(60.0)
    (clip,) = encoder.encode_audio([wave])
    starts = segment_starts(len(wave), round(WINDOW_S * RATE), round(WINDOW_S / 2 * RATE))
    assert clip.features.shape == (len(starts), PROJECTION_DIM) == (11, PROJECTION_DIM)
    np.testing.assert_array_equal(clip.spans[:, 0], starts / RATE)
    np.testing.assert_array_equal(clip.spans[:, 1], clip.spans[:, 0] + WINDOW_S)
    assert clip.spans[-1, 1] == 60.0


def test_same_input_same_features(tiny_dir: Path, encoder: ClapAudioEncoder) -> None:
    waves = [noise_and_chirp(23.0), noise_and_chirp(4.0, seed=1)]
    first = encoder.encode_audio(waves)
    again = encoder.encode_audio(waves)
    reloaded = load_clap("clap:again", str(tiny_dir)).encode_audio(waves)
    for a, b, c in zip(first, again, reloaded, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.features, c.features)
        np.testing.assert_array_equal(a.spans, c.spans)


def test_same_seed_same_model(tmp_path: Path, encoder: ClapAudioEncoder) -> None:
    rebuilt = build_tiny_clap(tmp_path / "again", sample_rate=RATE, window_s=WINDOW_S)
    other = load_clap("clap:rebuilt", str(rebuilt))
    wave = noise_and_chirp(5.0)
    np.testing.assert_array_equal(
        other.encode_audio([wave])[0].features, encoder.encode_audio([wave])[0].features
    )
    texts = ["a dog barking at night"]
    np.testing.assert_array_equal(other.encode_texts(texts), encoder.encode_texts(texts))


def test_a_batch_equals_each_clip_alone(encoder: ClapAudioEncoder) -> None:
    waves = [noise_and_chirp(s, seed=i) for i, s in enumerate([3.0, 60.0, 12.5, 10.0, 0.5])]
    together = encoder.encode_audio(waves)
    for wave, clip in zip(waves, together, strict=True):
        (alone,) = encoder.encode_audio([wave])
        np.testing.assert_allclose(clip.features, alone.features, atol=1e-5)
        np.testing.assert_array_equal(clip.spans, alone.spans)


def test_a_long_clip_is_prepared_one_forward_at_a_time(
    tiny_dir: Path, encoder: ClapAudioEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows are prepared a forward's worth at a time (MMR_BATCH_SIZE): the same features."""
    wave = noise_and_chirp(60.0)  # 11 windows
    (want,) = encoder.encode_audio([wave])
    small = load_clap(f"clap:{tiny_dir}", str(tiny_dir), batching=BatchConfig(max_batch=4))
    sizes: list[int] = []
    prepare = small.prepare_windows

    def counted(pieces: Sequence[np.ndarray]) -> torch.Tensor:
        sizes.append(len(pieces))
        return prepare(list(pieces))

    monkeypatch.setattr(small, "prepare_windows", counted)
    try:
        (got,) = small.encode_audio([wave])
    finally:
        small.close()
    assert sizes == [4, 4, 3]
    np.testing.assert_allclose(got.features, want.features, atol=1e-5)


def test_a_cut_out_window_equals_its_segment(encoder: ClapAudioEncoder) -> None:
    wave = noise_and_chirp(60.0)
    (clip,) = encoder.encode_audio([wave])
    (index,) = np.flatnonzero((clip.spans == [30.0, 40.0]).all(axis=1))
    (cut,) = encoder.encode_audio([wave[30 * RATE : 40 * RATE]])
    np.testing.assert_allclose(cut.features[0], clip.features[index], atol=1e-5)
    # Not vacuous: the neighbouring windows, which overlap it by half, differ far more.
    for other in (index - 1, index + 1):
        assert np.abs(clip.features[other] - clip.features[index]).max() > 1e-3


def test_fused_model_is_deterministic(fused: ClapAudioEncoder) -> None:
    # The fusion feature extractor marks a random clip of each batch as "longer"; were that
    # passed on, a clip alone (always marked) would differ from the same clip in a batch.
    waves = [noise_and_chirp(s, seed=i, rate=16000) for i, s in enumerate([1.0, 2.5, 4.0])]
    together = fused.encode_audio(waves)
    for wave, clip in zip(waves, together, strict=True):
        (alone,) = fused.encode_audio([wave])
        np.testing.assert_allclose(alone.features, clip.features, atol=1e-5)


def test_nothing_in_nothing_out(encoder: ClapAudioEncoder) -> None:
    assert encoder.encode_audio([]) == []
    assert encoder.encode_texts([]).shape == (0, PROJECTION_DIM)


def test_empty_wave_is_refused(encoder: ClapAudioEncoder) -> None:
    with pytest.raises(UnsupportedMediaError, match="empty"):
        encoder.encode_audio([np.zeros(0, dtype=np.float32)])


def test_texts(encoder: ClapAudioEncoder) -> None:
    texts = ["a dog barking in the distance", "rain", "an unseen word: zyzzyva " * 40]
    first = encoder.encode_texts(texts)
    assert first.shape == (3, PROJECTION_DIM)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, encoder.encode_texts(texts))
    np.testing.assert_allclose(encoder.encode_texts(texts[1:2])[0], first[1], atol=1e-5)


def test_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_clap("clap:x", str(tmp_path / "nothing"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"not a directory.*save_pretrained"):
        load_clap("clap:x", "./nothing")


def test_directory_without_processor_files(tmp_path: Path, tiny_dir: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    with pytest.raises(ModelLoadError, match=r"feature extractor.*tokenizer"):
        load_clap("clap:x", str(tmp_path))


def test_directory_with_broken_weights(tmp_path: Path, tiny_dir: Path) -> None:
    shutil.copytree(tiny_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not load CLAP"):
        load_clap("clap:x", str(tmp_path))


def test_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"not cached.*cannot be reached.*huggingface-cli"):
        load_clap("clap:laion/clap-htsat-unfused", "laion/clap-htsat-unfused", cache_dir=tmp_path)
    assert time.monotonic() - started < 5
