"""The models of this process: the one it starts with, and those its collections record.

Every collection records the model (and audio tower) its vectors come from; a collection
migrated to another model, or created with one, is served with that model. The pool loads
such a model on first use and keeps it while it fits the memory budget
(``MMR_MODEL_MEMORY_MB``), unloading the least recently used idle models to make room for a
new one (or once the models that kept it over the budget are idle again); the start-up
model (``MMR_MODEL``) and models in use (a request, a migration) are never unloaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from app.services.embedding import Embedder
from app.services.errors import SpaceMismatch
from index.manager import LiveIndex
from index.tables import CollectionRow
from models.encoders.aligner import Aligner
from models.errors import ModelLoadError, UnknownModelError

log = logging.getLogger("mmr.models")


class ModelKey(NamedTuple):
    """A model as collections record it: the image/text model and the audio tower."""

    model: str
    audio_model: str | None


# (model, audio tower as MMR_AUDIO_MODEL names it: "" the model's own, "none", "clap:...")
Loader = Callable[[str, str], Embedder]


def audio_request(key: ModelKey) -> str:
    """How to ask the loader for the audio tower a collection records."""
    if key.audio_model == key.model:
        return ""  # the model's own tower records the model's id
    return key.audio_model or "none"


def key_of_aligner(aligner: Aligner) -> ModelKey:
    """The (model, audio model) whose raw features an aligner version takes."""
    encoders = aligner.encoders
    model = encoders.get("text") or encoders.get("image") or ""
    return ModelKey(model, encoders.get("audio"))


def in_space(live: LiveIndex[Aligner], row: CollectionRow) -> bool:
    """Whether a live index is in the space the collection row records (not the one a
    migration's switch left, before this process swapped)."""
    aligner = live.space.aligner
    return key_of_aligner(aligner) == (row.model, row.audio_model) and aligner.dim == row.dim


@dataclass
class _Entry:
    embedder: Embedder
    bytes: int
    default: bool = False
    users: int = 0
    last_used: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PooledModel:
    """A loaded model as ``GET /v1/models`` lists it."""

    model: str
    audio_model: str | None
    dim: int
    modalities: tuple[str, ...]
    memory_mb: float
    default: bool
    in_use: int
    last_used: float


def model_bytes(embedder: Embedder) -> int:
    """The memory a model's weights take: its torch parameters and buffers (an encoder
    without torch modules, e.g. ONNX Runtime towers, counts its ``nbytes`` if it has one)."""
    import torch

    seen: set[int] = set()
    total = 0
    for owner in (embedder.encoder, embedder.audio):
        if owner is None:
            continue
        for value in vars(owner).values():
            if isinstance(value, torch.nn.Module):
                for tensor in [*value.parameters(), *value.buffers()]:
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        total += tensor.numel() * tensor.element_size()
        total += int(getattr(owner, "nbytes", 0) or 0)
    return total


class ModelPool:
    """Embedders by (model, audio model), loaded on demand within a memory budget."""

    def __init__(self, default: Embedder, *, load: Loader, budget_mb: float) -> None:
        self.default = default
        self.budget_bytes = int(budget_mb * 2**20)
        self._load = load
        self._lock = threading.Lock()
        self._loading: dict[ModelKey, threading.Lock] = {}
        self._entries: dict[ModelKey, _Entry] = {
            self.key(default): _Entry(default, model_bytes(default), default=True)
        }
        self.failed: dict[ModelKey, str] = {}

    @staticmethod
    def key(embedder: Embedder) -> ModelKey:
        """The key an embedder is pooled under."""
        return ModelKey(embedder.model_id, embedder.audio_model_id)

    @contextmanager
    def use(self, model: str, audio_model: str | None) -> Iterator[Embedder]:
        """The embedder of a model as collections record it (``audio_model``: the audio
        tower's id, the model's own id for its built-in one, None for none), loaded if need
        be and held for the block; 409 when it cannot be loaded (the message says why)."""
        key = ModelKey(model, audio_model)
        entry = self._acquire([key], key.model, audio_request(key))
        try:
            yield entry.embedder
        finally:
            self._release(entry)

    @contextmanager
    def use_own(self, model: str) -> Iterator[Embedder]:
        """A model with its own audio tower if it has one (what a new collection of it
        gets), held for the block."""
        keys = [ModelKey(model, model), ModelKey(model, None)]
        if model == self.default.model_id:  # MMR_MODEL, with the audio tower it runs
            keys = [self.key(self.default)]
        entry = self._acquire(keys, model, "")
        try:
            yield entry.embedder
        finally:
            self._release(entry)

    def _held(self, keys: list[ModelKey]) -> _Entry | None:
        """A loaded entry under one of ``keys``, taken for a user (lock held)."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
                entry.last_used = time.time()
                return entry
        return None

    def _acquire(self, keys: list[ModelKey], model: str, audio: str) -> _Entry:
        with self._lock:
            entry = self._held(keys)
            if entry is not None:
                return entry
            gate = self._loading.setdefault(keys[0], threading.Lock())
        with gate:  # one load per model, however many requests want it at once
            with self._lock:
                entry = self._held(keys)
                if entry is not None:
                    return entry
            embedder = self._load_now(keys[0], model, audio)
            entry = _Entry(embedder, model_bytes(embedder), users=1)
            duplicate = None
            with self._lock:
                self._loading.pop(keys[0], None)
                kept = self._entries.get(self.key(embedder))
                if kept is not None:  # asked for under another key and loaded meanwhile
                    kept.users += 1
                    kept.last_used = time.time()
                    entry, duplicate = kept, embedder
                    closing = []
                else:
                    self._entries[self.key(embedder)] = entry
                    closing = self._evict(keep=self.key(embedder))
            if duplicate is not None:
                duplicate.close()
            for old in closing:
                old.embedder.close()
            return entry

    def _load_now(self, key: ModelKey, model: str, audio: str) -> Embedder:
        started = time.monotonic()
        try:
            embedder = self._load(model, audio)
        except (ModelLoadError, UnknownModelError) as exc:
            self.failed[key] = str(exc)
            raise SpaceMismatch(
                f"model {model} cannot be loaded here: {exc}; make it loadable (its weights "
                "cached or reachable), or migrate the collection to a model this server has"
            ) from exc
        self.failed.pop(key, None)
        took = time.monotonic() - started
        log.info("loaded model %s (audio %s) in %.1f s", model, audio or "its own", took)
        return embedder

    def _evict(self, *, keep: ModelKey) -> list[_Entry]:
        """Drop idle models, least recently used first, until the pool fits the budget;
        the entries to close (lock held). A model in use stays (its memory is in use)."""
        closing: list[_Entry] = []
        idle = sorted(
            (e for k, e in self._entries.items() if k != keep and not e.default and not e.users),
            key=lambda e: e.last_used,
        )
        for entry in idle:
            if sum(e.bytes for e in self._entries.values()) <= self.budget_bytes:
                break
            self._entries.pop(self.key(entry.embedder), None)
            log.info("unloaded model %s: over MMR_MODEL_MEMORY_MB", entry.embedder.model_id)
            closing.append(entry)
        return closing

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            entry.last_used = time.time()
            # Models kept over the budget while in use go once idle (this one stays: it is
            # the most recently used).
            closing = self._evict(keep=self.key(entry.embedder))
        for old in closing:
            old.embedder.close()

    def loaded(self) -> list[PooledModel]:
        """What the pool holds, most recently used first."""
        with self._lock:
            entries = list(self._entries.values())
        return [
            PooledModel(
                model=e.embedder.model_id,
                audio_model=e.embedder.audio_model_id,
                dim=e.embedder.dim,
                modalities=e.embedder.modalities,
                memory_mb=round(e.bytes / 2**20, 1),
                default=e.default,
                in_use=e.users,
                last_used=e.last_used,
            )
            for e in sorted(entries, key=lambda e: -e.last_used)
        ]

    def close(self) -> None:
        """Close every model (at shutdown)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.embedder.close()
