"""The model registry: id syntax, strict explicit ids, checkpoints, auto fallback, devices."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from models.encoders import hub, registry
from models.encoders.registry import ModelSpec, load_model, parse_model_id, pick_device
from models.errors import ModelLoadError, UnknownModelError


@pytest.mark.parametrize(
    ("model_id", "spec"),
    [
        ("auto", ModelSpec(kind="auto")),
        ("random:ViT-B-32", ModelSpec(kind="random", arch="ViT-B-32")),
        (
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
            ModelSpec(kind="open_clip", arch="ViT-B-32", pretrained="laion2b_s34b_b79k"),
        ),
        (
            "open_clip:RN50@/models/rn50.pt",
            ModelSpec(kind="open_clip", arch="RN50", checkpoint=Path("/models/rn50.pt")),
        ),
        ("mmr-mini", ModelSpec(kind="mmr-mini", arch="mmr-mini", checkpoint=registry.SHIPPED_DIR)),
        (
            "mmr-mini@/w/mini",
            ModelSpec(kind="mmr-mini", arch="mmr-mini", checkpoint=Path("/w/mini")),
        ),
    ],
)
def test_parse(model_id: str, spec: ModelSpec) -> None:
    assert parse_model_id(model_id) == spec


@pytest.mark.parametrize(
    "model_id",
    ["", "ViT-B-32", "open_clip:", "open_clip:ViT-B-32", "open_clip:@x", "hf:x/y", "mmr-mini@"],
)
def test_unknown_syntax(model_id: str) -> None:
    with pytest.raises(UnknownModelError, match="open_clip:ARCH/PRETRAINED"):
        parse_model_id(model_id)


def embeddings(model_id: str) -> tuple[np.ndarray, np.ndarray]:
    encoder = load_model(model_id, device="cpu").encoder
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), np.uint8))
    return encoder.encode_images([image]), encoder.encode_texts(["a photo", "a sound"])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(tmp_path: Path, suffix: str) -> None:
    import open_clip

    registry.list_architectures()  # registers the project's configs
    torch.manual_seed(1234)  # not the registry's seed: the weights must come from the file
    model = open_clip.create_model("mmr-tiny", pretrained=None)
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    _, preprocess = open_clip.create_model_and_transforms("mmr-tiny")[1:]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), np.uint8))
    with torch.inference_mode():
        want_image = model.eval().encode_image(preprocess(image)[None]).numpy()
        tokens = open_clip.get_tokenizer("mmr-tiny")(["a photo", "a sound"])
        want_text = model.encode_text(tokens).numpy()

    got_image, got_text = embeddings(f"open_clip:mmr-tiny@{path}")
    np.testing.assert_allclose(got_image, want_image, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, rtol=1e-5, atol=1e-5)
    random_image, _ = embeddings("random:mmr-tiny")
    assert not np.allclose(random_image, want_image, atol=1e-3)


def test_random_models_are_the_same_space_across_loads() -> None:
    first, second = embeddings("random:mmr-tiny"), embeddings("random:mmr-tiny")
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("open_clip:mmr-tiny@/nonexistent/model.pt", "does not exist"),
        ("random:NoSuchArch", "unknown architecture"),
        ("open_clip:mmr-tiny/no_such_tag", "could not load"),
    ],
)
def test_explicit_ids_are_strict(model_id: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(model_id, device="cpu")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not load the weights"):
        load_model(f"open_clip:mmr-tiny@{path}", device="cpu")


def test_auto_falls_back_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    caplog.set_level(logging.INFO, logger=registry.log.name)
    loaded = load_model("auto", device="cpu", cache_dir=Path("/nonexistent-cache"))
    assert loaded.fallback is True
    assert loaded.encoder.model_id == "mmr-mini"  # the trained offline model, not random weights
    assert loaded.audio is not None and loaded.audio.model_id == "mmr-mini"
    assert loaded.warning and "could not be loaded" in loaded.warning
    # Progress at INFO; the warning itself is said once, by the start-up block or the CLI.
    assert any("offline fallback mmr-mini" in r.getMessage() for r in caplog.records)
    said = [r for r in caplog.records if r.name == registry.log.name]
    assert not [r for r in said if r.levelno > logging.INFO]


def test_auto_uses_the_production_default_when_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_weights_obtainable", lambda spec, cache_dir: True)
    monkeypatch.setattr(registry, "PRODUCTION_DEFAULT", "random:mmr-tiny")
    loaded = load_model("auto", device="cpu")
    assert (loaded.fallback, loaded.warning) == (False, None)


def test_device_auto_picks_cuda_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        pick_device("cuda")


@pytest.mark.parametrize("audio_id", ["clap", "clap:", "whisper:x", "mmr-mini", "NONE"])
def test_audio_ids_outside_the_syntax_are_refused_before_loading(audio_id: str) -> None:
    with pytest.raises(UnknownModelError, match="unknown audio model id"):
        load_model("random:mmr-tiny", audio_model=audio_id, device="cpu")


def test_a_model_without_ears_has_no_audio_unless_one_is_named() -> None:
    assert load_model("random:mmr-tiny", device="cpu").audio is None
    with pytest.raises(ModelLoadError, match="does-not-exist"):
        load_model("random:mmr-tiny", audio_model="clap:/does-not-exist", device="cpu")
