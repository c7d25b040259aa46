"""Precision: ``auto`` measures what the CPU can run (bf16 where native, int8 towers in ONNX
Runtime) on a fixed-input probe and takes the fastest that keeps the probe's cosine and beats
fp32."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import models.runtime.precision as precision
from models.encoders.registry import load_model
from models.errors import ModelLoadError
from models.runtime import onnx
from models.runtime import threads as thread_settings
from models.runtime.batcher import BatchConfig
from models.runtime.precision import Probe, Timer


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def probe_embeddings(encoder: Any) -> dict[str, np.ndarray]:
    return {
        kind: encoder.forward(kind, batch)
        for kind, batch in precision.probe_inputs(encoder).items()
    }


def fake_timer(seconds: list[float]) -> Timer:
    """A probe timer that returns these timings in turn; once they run out, a timing fails."""
    times = iter(seconds)
    return lambda encoder, inputs: next(times)


def auto(probe: Probe, model_id: str = "mmr-mini", cache_dir: Any = None) -> Any:
    """Load with ``auto`` measured by ``probe``; a fresh ``Probe()`` knows no earlier verdicts
    (they are kept per weights), as a new process would."""
    return load_model(model_id, device="cpu", precision="auto", cache_dir=cache_dir, probe=probe)


def check_auto_keeps_its_embeddings(model_id: str) -> None:
    reference = probe_embeddings(load_model(model_id, device="cpu").encoder)
    loaded = auto(Probe(), model_id)
    choice = loaded.precision
    assert choice.name in ("fp32", *precision.cpu_candidates()), choice
    assert choice.probe_min_cosine is not None, "auto measured its candidates"
    if choice.name != "fp32":
        assert choice.probe_min_cosine >= precision.PROBE_MIN_COSINE
    assert (loaded.encoder.dtype == torch.bfloat16) == (choice.name == "bf16")
    assert bool(loaded.encoder.runtimes) == (choice.name in precision.RUNTIME_PRECISIONS)
    got = probe_embeddings(loaded.encoder)
    assert set(got) == set(reference)
    for kind, rows in got.items():
        assert rows.dtype == np.float32
        assert min_cosine(rows, reference[kind]) >= 0.99, kind
    # The serving path (batcher, PIL images in) gives the same rows as the probe's forward.
    images = precision.probe_images(loaded.encoder.image_size)
    served = loaded.encoder.encode_images(images)
    assert min_cosine(served, got["image"]) >= 0.999
    loaded.encoder.close()


needs_a_candidate = pytest.mark.skipif(
    not precision.cpu_candidates(), reason="no native bf16 and no ONNX Runtime here"
)


@needs_a_candidate
def test_mini_auto_keeps_its_embeddings() -> None:
    check_auto_keeps_its_embeddings("mmr-mini")


@needs_a_candidate
@pytest.mark.slow
def test_vit_b_32_auto_keeps_its_embeddings() -> None:
    check_auto_keeps_its_embeddings("random:ViT-B-32")


def with_candidates(
    monkeypatch: pytest.MonkeyPatch,
    seconds: list[float],
    min_cosine: float = precision.PROBE_MIN_COSINE,
) -> Probe:
    """A CPU that can run bf16 and int8, and a probe whose timings are ``seconds`` (fp32,
    bf16, int8: the order they are measured in)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(onnx, "available", lambda: True)
    return Probe(min_cosine=min_cosine, timer=fake_timer(seconds))


def test_auto_takes_the_fastest_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = auto(with_candidates(monkeypatch, [1.0, 0.5, 0.3]))
    assert loaded.precision.name == "int8"
    assert set(loaded.encoder.runtimes) == {"image", "text"}
    assert loaded.encoder.dtype == torch.float32  # bf16 was tried on a copy
    assert "bf16: cosine" in loaded.precision.reason and "int8: cosine" in loaded.precision.reason
    loaded.encoder.close()
    loaded = auto(with_candidates(monkeypatch, [1.0, 0.3, 0.5]))  # a new probe: no verdicts
    assert loaded.precision.name == "bf16"
    assert loaded.encoder.dtype == torch.bfloat16 and loaded.encoder.runtimes == {}
    loaded.encoder.close()


def test_auto_keeps_fp32_unless_a_candidate_is_clearly_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # within the timing noise of a tiny model
    loaded = auto(with_candidates(monkeypatch, [1.0, 0.9, 0.85]))
    assert loaded.precision.name == "fp32"
    assert loaded.encoder.dtype == torch.float32 and loaded.encoder.runtimes == {}
    assert f"{precision.PROBE_MIN_SPEEDUP}x" in loaded.precision.reason
    loaded.encoder.close()


def test_auto_passes_over_a_faster_candidate_that_changes_the_embeddings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = precision.to_dtype

    def scrambled(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        model = real(model, dtype)
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(torch.randn_like(param))
        return model

    monkeypatch.setattr(precision, "to_dtype", scrambled)
    loaded = auto(with_candidates(monkeypatch, [1.0, 0.1, 0.5]))  # bf16 fastest, but far off
    assert loaded.precision.name == "int8"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine >= precision.PROBE_MIN_COSINE
    loaded.encoder.close()


def test_auto_falls_back_to_fp32_when_the_probe_disagrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = probe_embeddings(load_model("mmr-mini", device="cpu").encoder)
    loaded = auto(with_candidates(monkeypatch, [1.0, 0.5, 0.3], min_cosine=1.0))
    assert loaded.precision.name == "fp32"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine < 1.0
    assert loaded.encoder.dtype == torch.float32 and loaded.encoder.runtimes == {}
    # The fp32 weights are the originals, not a round trip through bf16.
    for kind, rows in probe_embeddings(loaded.encoder).items():
        np.testing.assert_array_equal(rows, reference[kind])


def test_a_cosine_only_probe_keeps_the_candidate_or_the_original_weights() -> None:
    """What auto does on CUDA with fp16, shown on the CPU with bf16."""
    loaded = load_model("random:mmr-tiny", device="cpu")
    reference = probe_embeddings(loaded.encoder)
    refused = precision._probe(loaded.encoder, "bf16", Probe(min_cosine=1.0))
    assert refused.name == "fp32" and refused.probe_min_cosine is not None
    assert loaded.encoder.dtype == torch.float32
    for kind, rows in probe_embeddings(loaded.encoder).items():
        np.testing.assert_array_equal(rows, reference[kind])
    kept = precision._probe(loaded.encoder, "bf16", Probe(min_cosine=0.9))
    assert kept.name == "bf16" and loaded.encoder.dtype == torch.bfloat16
    loaded.encoder.close()


def test_explicit_precisions_are_honoured() -> None:
    fp32 = load_model("random:mmr-tiny", device="cpu")
    assert fp32.precision.name == "fp32" and fp32.precision.probe_min_cosine is None
    bf16 = load_model("random:mmr-tiny", device="cpu", precision="bf16")
    assert bf16.precision.name == "bf16" and bf16.encoder.dtype == torch.bfloat16
    out = bf16.encoder.encode_texts(["a red square"])
    assert out.dtype == np.float32
    assert min_cosine(out, fp32.encoder.encode_texts(["a red square"])) > 0.98
    fp32.encoder.close()
    bf16.encoder.close()


def test_auto_without_native_bf16_or_onnxruntime_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(onnx, "available", lambda: False)
    loaded = auto(Probe(), "random:mmr-tiny")
    assert loaded.precision.name == "fp32" and loaded.precision.probe_min_cosine is None
    assert loaded.encoder.dtype == torch.float32


# -- int8 (ONNX Runtime) ----------------------------------------------------------------------


def check_int8_close(model_id: str, cache: Any) -> Any:
    reference = probe_embeddings(load_model(model_id, device="cpu").encoder)
    loaded = load_model(model_id, device="cpu", precision="int8", cache_dir=cache)
    assert loaded.precision.name == "int8"
    assert set(loaded.encoder.runtimes) == {"image", "text"}
    got = probe_embeddings(loaded.encoder)
    for kind, rows in got.items():
        assert rows.dtype == np.float32
        assert min_cosine(rows, reference[kind]) >= precision.PROBE_MIN_COSINE, kind
    if "audio" in got:  # the audio tower stays in torch, unchanged
        np.testing.assert_allclose(got["audio"], reference["audio"], rtol=1e-5, atol=1e-6)
    # The serving path (batcher, PIL images in) runs the int8 tower too.
    images = precision.probe_images(loaded.encoder.image_size)
    served = loaded.encoder.encode_images(images)
    np.testing.assert_allclose(served, got["image"], rtol=1e-4, atol=1e-5)
    return loaded


def test_int8_runs_image_and_text_in_onnx_runtime_and_keeps_the_export(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = check_int8_close("mmr-mini", tmp_path)
    files = onnx.cached_files(tmp_path)
    assert len(files) == 2 and all("mmr-mini" in f.name for f in files)
    assert len(onnx.cached_files(tmp_path, "fp32-onnx")) == 2  # one export made both
    loaded.encoder.close()

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx, "export_tower", no_export)
    again = load_model("mmr-mini", device="cpu", precision="int8", cache_dir=tmp_path)
    assert again.precision.name == "int8"
    again.encoder.close()
    plain = load_model("mmr-mini", device="cpu", precision="fp32-onnx", cache_dir=tmp_path)
    assert plain.precision.name == "fp32-onnx" and set(plain.encoder.runtimes) == {"image", "text"}
    plain.encoder.close()


def test_an_int8_tower_runs_lone_forwards_wide_and_forwards_under_load_narrow(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(thread_settings, "_threads", 2)  # MMR_TORCH_THREADS=2, whatever the machine
    loaded = load_model(
        "random:mmr-tiny",
        device="cpu",
        precision="int8",
        cache_dir=tmp_path,
        batching=BatchConfig(streams=2),
    )
    streams, tower = loaded.encoder.streams, loaded.encoder.runtimes["text"]
    assert tower.wide.get_session_options().intra_op_num_threads == streams.threads
    assert tower.narrow.get_session_options().intra_op_num_threads == streams.narrow_threads
    assert (streams.threads, streams.narrow_threads) == (2, 1) and tower.narrow is not tower.wide
    used: list[str] = []

    class Recording:
        def __init__(self, name: str, session: Any) -> None:
            self.name, self.session = name, session

        def run(self, *args: Any) -> Any:
            used.append(self.name)
            return self.session.run(*args)

    tower.wide, tower.narrow = Recording("wide", tower.wide), Recording("narrow", tower.narrow)
    batch = loaded.encoder.prepare_texts(["a red square", "a blue circle"])
    lone, under_load = tower(batch), tower(batch, streams.narrow_threads)
    assert used == ["wide", "narrow"]
    np.testing.assert_allclose(under_load, lone, rtol=1e-5, atol=1e-6)
    loaded.encoder.close()


@pytest.mark.slow
def test_vit_b_32_int8_keeps_its_embeddings(tmp_path: Any) -> None:
    check_int8_close("random:ViT-B-32", tmp_path).encoder.close()


def test_other_weights_never_load_a_cached_export(tmp_path: Any) -> None:
    one = load_model("random:mmr-tiny", device="cpu", precision="int8", cache_dir=tmp_path)
    before = set(onnx.cached_files(tmp_path))
    model = one.encoder.model
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # other weights, same architecture and id
    two = precision.choose_precision(one.encoder, "int8", cache_dir=tmp_path)
    assert two.name == "int8"
    assert len(set(onnx.cached_files(tmp_path)) - before) == 2
    one.encoder.close()


def auto_without_bf16(monkeypatch: pytest.MonkeyPatch, probe: Probe) -> Any:
    """load mmr-mini with auto on a CPU without bf16, measured by ``probe`` (whose timer
    gives fp32, int8, fp32-onnx: the order they are measured in)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    return auto(probe)


def test_auto_without_native_bf16_takes_int8_when_the_probe_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = auto_without_bf16(monkeypatch, Probe(timer=fake_timer([1.0, 0.4, 0.6])))
    assert loaded.precision.name == "int8"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine >= precision.PROBE_MIN_COSINE
    assert set(loaded.encoder.runtimes) == {"image", "text"}
    loaded.encoder.close()


def test_auto_takes_fp32_in_onnx_runtime_when_it_is_the_fastest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = probe_embeddings(load_model("mmr-mini", device="cpu").encoder)
    loaded = auto_without_bf16(monkeypatch, Probe(timer=fake_timer([1.0, 0.6, 0.4])))
    assert loaded.precision.name == "fp32-onnx"
    assert set(loaded.encoder.runtimes) == {"image", "text"}
    # The same numbers as torch's fp32, give or take the order of additions.
    for kind, rows in probe_embeddings(loaded.encoder).items():
        np.testing.assert_allclose(rows, reference[kind], rtol=1e-4, atol=1e-5)
    loaded.encoder.close()


def test_auto_keeps_fp32_when_int8_is_not_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = probe_embeddings(load_model("mmr-mini", device="cpu").encoder)
    probe = Probe(timer=fake_timer([0.4, 1.0, 1.0]))
    loaded = auto_without_bf16(monkeypatch, probe)
    assert loaded.precision.name == "fp32"
    assert "beats fp32" in loaded.precision.reason
    assert loaded.encoder.runtimes == {}
    for kind, rows in probe_embeddings(loaded.encoder).items():
        np.testing.assert_array_equal(rows, reference[kind])
    loaded.encoder.close()
    # The verdict is kept for these weights: loading them again exports nothing (the same
    # probe: its verdicts, and a timer with no timings left).
    monkeypatch.setattr(onnx, "onnx_towers", lambda *a, **k: pytest.fail("probed again"))
    assert auto_without_bf16(monkeypatch, probe).precision.name == "fp32"


def test_auto_keeps_fp32_when_the_int8_probe_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Probe(min_cosine=1.0, timer=fake_timer([1.0, 0.4, 0.4]))
    loaded = auto_without_bf16(monkeypatch, probe)
    assert loaded.precision.name == "fp32"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine < 1.0
    assert loaded.encoder.runtimes == {}
    loaded.encoder.close()


def test_auto_keeps_fp32_when_the_export_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' is not supported")

    monkeypatch.setattr(onnx, "export_tower", broken)
    loaded = auto_without_bf16(monkeypatch, Probe(timer=fake_timer([1.0])))
    assert loaded.precision.name == "fp32"
    assert "frobnicate" in loaded.precision.reason
    assert loaded.encoder.runtimes == {}
    loaded.encoder.close()


def test_int8_is_refused_on_cuda_and_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_cuda = SimpleNamespace(device="cuda", model_id="m")
    with pytest.raises(ModelLoadError, match="CPU"):
        precision.choose_precision(on_cuda, "int8")
    monkeypatch.setattr(onnx, "available", lambda: False)
    with pytest.raises(ModelLoadError, match="onnxruntime"):
        precision.choose_precision(SimpleNamespace(device="cpu", model_id="m"), "int8")


def test_auto_keeps_the_first_starts_verdict_for_these_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)

    def load(timer: Timer, cache_dir: Any = tmp_path) -> Any:
        return auto(Probe(timer=timer), cache_dir=cache_dir)  # a new probe: a new process

    first = load(fake_timer([1.0, 0.4]))
    assert first.precision.name == "int8"
    first.encoder.close()
    # A restart measures nothing: the first verdict holds, the exports load.
    again = load(fake_timer([]))  # no timings: any timing fails the test
    assert again.precision.name == "int8"
    assert again.precision.probe_min_cosine == first.precision.probe_min_cosine
    assert "earlier start" in again.precision.reason
    assert set(again.encoder.runtimes) == {"image", "text"}
    again.encoder.close()
    # A refusal is kept too (another data dir, so a first start of its own).
    other = tmp_path / "other"
    refused = load(lambda encoder, inputs: 0.0, other)  # never faster
    assert refused.precision.name == "fp32"
    kept = load(lambda encoder, inputs: pytest.fail("measured"), other)
    assert kept.precision.name == "fp32" and kept.encoder.runtimes == {}


def test_the_probe_times_each_tower_on_its_own() -> None:
    """One tower per timed run, the towers' best times summed: run back to back, a tower's
    ONNX Runtime pool spins on beside the next tower's forward and the probe misjudges."""
    encoder = load_model("mmr-mini", device="cpu").encoder
    forward, ran, timed_towers = encoder.forward, [], []

    def spy(kind: str, batch: torch.Tensor, **kwargs: Any) -> np.ndarray:
        ran.append(kind)
        return forward(kind, batch, **kwargs)

    def fake_timed(run: Any, repeats: int = 2) -> float:
        ran.clear()
        run()
        run()
        assert len(ran) == 2 and ran[0] == ran[1], ran
        timed_towers.append(ran[0])
        return {"image": 0.25, "text": 0.5, "audio": 1.0}[ran[0]]

    encoder.forward = spy
    inputs = precision.probe_inputs(encoder)
    assert precision.timed_towers(encoder, inputs, best_of=fake_timed) == 1.75
    assert timed_towers == ["image", "text", "audio"]
    encoder.close()
