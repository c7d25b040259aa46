"""mmr-mini: shipped weights, folded tokenizer and audio tower."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoders.mini.audio import AudioConfig, AudioTower, LogMel, pad_window
from models.encoders.mini.encoder import MiniEncoder
from models.encoders.mini.model import CARD_FILE, SHIPPED_DIR, WEIGHTS_FILE, sha256_file
from models.encoders.mini.tokenizer import FoldedTokenizer
from models.encoders.registry import load_model
from models.errors import ModelLoadError
from models.runtime.batcher import BatchConfig
from models.synth.world.vocabulary import WORDS

MAX_WEIGHTS_BYTES = 20 * 1024 * 1024


def test_shipped_weights_match_their_recorded_checksum() -> None:
    card = json.loads((SHIPPED_DIR / CARD_FILE).read_text())
    weights = SHIPPED_DIR / WEIGHTS_FILE
    assert sha256_file(weights) == card["sha256"]
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    # The card says how the weights were made and how good they are.
    assert card["train"]["seed"] == 0 and card["train"]["steps"] > 0
    assert card["evaluation"]["pairs_per_set"] >= 500
    assert set(card["evaluation"]["sets"]) == {"held-out", "shifted"}


def test_shipped_weights_load_through_the_registry() -> None:
    loaded = load_model("mmr-mini", device="cpu")
    encoder = loaded.encoder
    assert encoder.modalities == ("image", "text")
    assert loaded.audio is not None and loaded.audio.sample_rate == 16000
    assert loaded.audio.model_id == "mmr-mini" and loaded.audio.dim == encoder.dim
    assert encoder.encode_texts(["a red circle"]).shape == (1, encoder.dim)
    assert load_model("mmr-mini", audio_model="none", device="cpu").audio is None


def test_a_weights_file_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED_DIR, tmp_path / "mini")
    weights = tmp_path / "mini" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(f"mmr-mini@{tmp_path / 'mini'}", device="cpu")


def test_a_directory_without_a_card_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="mmr train-mini"):
        load_model(f"mmr-mini@{tmp_path}", device="cpu")


def test_folded_tokens_fit_the_table_and_end_on_the_largest_id() -> None:
    tok = FoldedTokenizer(vocab_size=8192, context_length=24)
    ids = tok(["a small red circle on the left", "naïve 日本語 émoji 🎵 " * 5])
    assert ids.max() < 8192 and ids.min() >= 0
    for row in ids:
        # open_clip pools the text at the argmax id: it must be the end-of-text token.
        assert int(row.max()) == tok.eot
        assert int(row[0]) == tok.sot


def test_the_worlds_words_get_rows_of_their_own() -> None:
    tok = FoldedTokenizer(vocab_size=8192, context_length=24)
    owners: dict[int, str] = {}
    for word, rows in tok.word_rows(WORDS).items():
        for row in rows:
            assert owners.setdefault(row, word) == word, f"{word} shares a row with {owners[row]}"


def test_log_mel_ignores_loudness() -> None:
    cfg = AudioConfig()
    t = np.arange(cfg.window_samples) / cfg.sample_rate
    wave = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))[None]
    front = LogMel(cfg)
    assert torch.allclose(front(wave), front(wave * 0.01), atol=1e-3)


def test_short_audio_is_zero_padded_to_one_window() -> None:
    cfg = AudioConfig()
    window = pad_window(np.ones(10, dtype=np.float32), cfg)
    assert window.shape == (cfg.window_samples,) and window[:10].all() and not window[10:].any()
    assert pad_window(np.ones(cfg.window_samples * 2, np.float32), cfg).shape == window.shape


def test_audio_tower_shapes() -> None:
    cfg = AudioConfig()
    tower = AudioTower(cfg, 128).eval()
    with torch.inference_mode():
        out = tower(torch.zeros(3, cfg.window_samples))
    assert out.shape == (3, 128)


def test_long_audio_is_encoded_segment_by_segment() -> None:
    encoder = load_model("mmr-mini", device="cpu").encoder
    assert isinstance(encoder, MiniEncoder)
    rate = 16000
    short = np.zeros(rate, dtype=np.float32)
    long = np.random.default_rng(0).normal(0, 0.1, rate * 11).astype(np.float32)
    out = encoder.audio.encode_audio([short, long, short])
    assert [len(o.features) for o in out] == [1, 5, 1]  # 0-4, 2-6, 4-8, 6-10, 7-11 s
    assert out[1].spans.tolist()[-1] == [7.0, 11.0]
    assert out[0].features.shape == (1, encoder.dim)
    np.testing.assert_allclose(out[0].features, out[2].features, atol=1e-5)
    # A segment is encoded exactly as the same samples would be alone.
    alone = encoder.audio.encode_audio([long[2 * rate : 6 * rate]])[0].features[0]
    np.testing.assert_allclose(out[1].features[1], alone, atol=1e-4)


def test_a_long_recording_is_prepared_one_forward_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows are prepared a forward's worth at a time (MMR_BATCH_SIZE), not all at once, and
    the features are the same as from one big forward."""
    rate = 16000
    long = np.random.default_rng(1).normal(0, 0.1, rate * 31).astype(np.float32)  # 15 windows
    whole = load_model("mmr-mini", device="cpu").encoder
    assert isinstance(whole, MiniEncoder)
    want = whole.audio.encode_audio([long])[0].features
    small = load_model("mmr-mini", device="cpu", batching=BatchConfig(max_batch=4)).encoder
    assert isinstance(small, MiniEncoder)
    sizes: list[int] = []
    prepare = small.audio.prepare_windows

    def counted(pieces: Sequence[np.ndarray]) -> torch.Tensor:
        sizes.append(len(pieces))
        return prepare(pieces)

    monkeypatch.setattr(small.audio, "prepare_windows", counted)
    got = small.audio.encode_audio([long])[0].features
    assert sizes == [4, 4, 4, 3]
    np.testing.assert_allclose(got, want, atol=1e-4)
