"""CLAP (LAION's contrastive language-audio model) as an audio tower, through transformers.

A long recording is cut into windows by ``models.encoders.audio.cut_segments``; every window
is at most the feature extractor's ``max_length_s`` long, so CLAP's own handling of longer input
(random crops, random "fusion" chunks) never runs and the features are deterministic.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from models.encoders import hub
from models.encoders.audio import AudioSegments, cut_segments, in_forwards
from models.errors import ModelLoadError, UnsupportedMediaError
from models.runtime.batcher import BatchConfig, MicroBatcher

BATCH = 32  # captions per text forward (audio windows go through the batcher's max_batch)
# What from_pretrained raises for missing, partial or corrupt files and failed downloads;
# huggingface_hub's errors subclass OSError or ValueError, safetensors raises its own.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)
FEATURE_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
SAVE_HINT = (
    "make one with ClapModel.from_pretrained(REPO).save_pretrained(DIR) and "
    "ClapProcessor.from_pretrained(REPO).save_pretrained(DIR) on a machine with internet"
)


class ClapAudioEncoder:
    """A transformers ``ClapModel`` + ``ClapProcessor`` behind the ``AudioEncoder`` protocol."""

    def __init__(
        self,
        model_id: str,
        model: Any,
        processor: Any,
        device: str,
        batching: BatchConfig | None = None,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self._model = model
        self._processor = processor
        extractor = processor.feature_extractor
        self.dim = int(model.config.projection_dim)
        self.sample_rate = int(extractor.sampling_rate)
        self.window_s = float(extractor.max_length_s)
        self.hop_s = self.window_s / 2
        self._window = round(self.window_s * self.sample_rate)  # as cut_segments rounds it
        # The unfused checkpoints ship "rand_trunc" (a random crop only above max_length, slaney
        # mel filters); fused ones need "fusion" (4 stacked mels, htk filters).
        fused = bool(model.config.audio_config.enable_fusion)
        self._truncation = "fusion" if fused else "rand_trunc"
        self._text_len = _text_length(model.config.text_config, processor.tokenizer)
        # One forward at a time; the fast tokenizer also raises "Already borrowed" when two
        # threads set its padding and truncation at once.
        self._lock = threading.Lock()
        # Audio windows of concurrent requests share forwards; the text tower (bootstrap only)
        # pads to its longest caption, so it runs directly.
        self._batching = batching or BatchConfig()
        self._batcher: MicroBatcher | None = None
        self._batcher_lock = threading.Lock()
        self._closed = False

    def prepare_windows(self, pieces: list[np.ndarray]) -> torch.Tensor:
        """Windows -> the audio tower's input features, in the caller's thread."""
        inputs = self._processor.feature_extractor(
            pieces,
            sampling_rate=self.sample_rate,
            max_length=self._window,  # an int: max_length_s * rate is a float for 10.0 s
            truncation=self._truncation,
            padding="repeatpad",
            return_tensors="np",
        )
        return torch.from_numpy(np.asarray(inputs["input_features"], dtype=np.float32))

    def forward(self, features: torch.Tensor) -> np.ndarray:
        """One audio forward on prepared features, no batcher: (n, dim) float32."""
        # Under "fusion" the extractor marks one random clip as longer when none is; no window
        # is longer, and a "longer" clip takes the fusion branch and gets another embedding.
        is_longer = torch.zeros((len(features), 1), dtype=torch.bool)
        with self._lock, torch.inference_mode():
            out = self._model.get_audio_features(
                input_features=features.to(self.device), is_longer=is_longer.to(self.device)
            )
        return _embeddings(out)

    def close(self) -> None:
        """Stop the batcher's thread; later encodes raise RuntimeError."""
        with self._batcher_lock:
            self._closed = True
            batcher = self._batcher
        if batcher is not None:
            batcher.close()

    def encode_audio(self, waves: Sequence[np.ndarray]) -> list[AudioSegments]:
        """Each mono wave at ``sample_rate`` -> its windows' CLAP embeddings and spans."""
        cuts = [
            cut_segments(_mono(w), rate=self.sample_rate, window_s=self.window_s, hop_s=self.hop_s)
            for w in waves
        ]
        features = self._embed_pieces([piece for pieces, _ in cuts for piece in pieces])
        bounds = np.cumsum([0] + [len(pieces) for pieces, _ in cuts])
        return [
            AudioSegments(features=features[a:b], spans=spans)
            for (a, b), (_, spans) in zip(itertools.pairwise(bounds), cuts, strict=True)
        ]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Captions -> CLAP text embeddings (n, dim), in the audio embeddings' space."""
        rows = [self._forward_text(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def _embed_pieces(self, pieces: list[np.ndarray]) -> np.ndarray:
        if not pieces:
            return np.zeros((0, self.dim), dtype=np.float32)
        batcher = self._audio_batcher()
        return in_forwards(
            pieces,
            self._batching.max_batch,
            lambda chunk: batcher.run(lambda: self.prepare_windows(list(chunk))),
        )

    def _audio_batcher(self) -> MicroBatcher:
        with self._batcher_lock:
            if self._closed:
                raise RuntimeError(f"{self.model_id} is closed (the server shuts down)")
            if self._batcher is None:
                # One stream: the forward holds the tower's lock (see __init__).
                single = dataclasses.replace(self._batching, streams=1)
                self._batcher = MicroBatcher(self._forward_of, name="audio", config=single)
            return self._batcher

    def _forward_of(self, features: torch.Tensor, *, alone: bool) -> np.ndarray:
        return self.forward(features)  # looked up per call: a wrapped forward is the one run

    def _forward_text(self, texts: list[str]) -> np.ndarray:
        with self._lock, torch.inference_mode():
            tokens = self._processor.tokenizer(
                texts, padding=True, truncation=True, max_length=self._text_len, return_tensors="pt"
            )
            out = self._model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        return _embeddings(out)


def _mono(wave: np.ndarray) -> np.ndarray:
    mono = np.asarray(wave, dtype=np.float32)
    if mono.ndim != 1:
        raise ValueError(f"a wave is mono, one dimension; got shape {mono.shape}")
    if mono.size == 0:
        # CLAP's repeat padding divides by the length.
        raise UnsupportedMediaError("the audio is empty; upload a clip with at least one sample")
    return mono


def _embeddings(out: Any) -> np.ndarray:
    """transformers 5 returns an output whose ``pooler_output`` is the normalised projection;
    4.x returned that tensor itself."""
    tensor = out if isinstance(out, torch.Tensor) else out.pooler_output
    return np.asarray(tensor.detach().float().cpu().numpy(), dtype=np.float32)


def _text_length(text_config: Any, tokenizer: Any) -> int:
    """Longest token sequence the text tower takes: RoBERTa numbers positions from pad id + 1,
    and a tokenizer saved without a limit reports a huge ``model_max_length``."""
    positions = int(text_config.max_position_embeddings) - int(text_config.pad_token_id) - 1
    return min(int(tokenizer.model_max_length), positions)


def load_clap(
    model_id: str,
    source: str,
    *,
    device: str = "cpu",
    cache_dir: Path | None = None,
    batching: BatchConfig | None = None,
) -> ClapAudioEncoder:
    """A CLAP encoder from a local ``save_pretrained`` directory or a Hugging Face repo id.

    ``source`` starting with ``/``, ``./``, ``../`` or ``~`` is a directory; anything else is a
    repo id, taken from the cache first and downloaded only when the hub answers.
    """
    from transformers.utils import logging as hf_logging

    # Per-shard progress bars on stderr are noise in a server's log.
    hf_logging.disable_progress_bar()
    if source.startswith(("/", "./", "../", "~")):
        path = Path(source).expanduser()
        _check_dir(model_id, path)
        model, processor = _load_pretrained(model_id, str(path), None, local_only=True)
    else:
        model, processor = _load_hub(model_id, source, cache_dir)
    model = model.to(device=device, dtype=torch.float32).eval()
    return ClapAudioEncoder(model_id, model, processor, device, batching)


def _check_dir(model_id: str, path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"{model_id}: {path} is not a directory; {SAVE_HINT}")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json (the model)")
    if not any((path / name).is_file() for name in FEATURE_FILES):
        missing.append(" or ".join(FEATURE_FILES) + " (the feature extractor)")
    if not any(all((path / n).is_file() for n in group) for group in TOKENIZER_FILES):
        missing.append("tokenizer.json or vocab.json + merges.txt (the tokenizer)")
    if missing:
        raise ModelLoadError(f"{model_id}: {path} lacks {'; '.join(missing)}; {SAVE_HINT}")


def _load_hub(model_id: str, repo: str, cache_dir: Path | None) -> tuple[Any, Any]:
    try:
        return _load_pretrained(model_id, repo, cache_dir, local_only=True)
    except ModelLoadError as cached:
        if not hub.reachable():  # offline: fail now, not after the hub client's retries
            raise ModelLoadError(
                f"{model_id}: {repo} is not cached and the Hugging Face hub cannot be reached. "
                f"On a machine with internet run `huggingface-cli download {repo}` and copy the "
                f"cache, or save it to a directory ({SAVE_HINT}) and use clap:/path/to/DIR"
            ) from cached
    return _load_pretrained(model_id, repo, cache_dir, local_only=False)


def _load_pretrained(
    model_id: str, source: str, cache_dir: Path | None, *, local_only: bool
) -> tuple[Any, Any]:
    from transformers import ClapModel, ClapProcessor

    kwargs: dict[str, Any] = {"local_files_only": local_only, "cache_dir": cache_dir}
    try:
        model = ClapModel.from_pretrained(source, **kwargs)
        processor = ClapProcessor.from_pretrained(source, **kwargs)
    except LOAD_ERRORS as exc:
        raise ModelLoadError(f"{model_id}: could not load CLAP from {source}: {exc}") from exc
    return model, processor
