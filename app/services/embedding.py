"""Encoders of this process: media in, raw features out; a collection's heads place them.

Encoding (seconds of CPU) happens before any lock; projecting raw features through an
aligner's head (a matrix product) happens where the aligner is known to be the collection's
active one, so that items and queries of a collection always meet the same head version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from index.columns import StoredFeatures, store_features
from models.encoders.aligner import (
    VIDEO,
    Aligner,
    encoder_ids,
    identity_aligner,
    l2_normalize,
    pack_video,
)
from models.encoders.audio import AudioEncoder, pooled
from models.encoders.registry import LoadedModel
from models.media.video import DecodedVideo

# Frames of a batch's videos prepared and encoded together (MMR_VIDEO_SAMPLE_FRAMES' default).
VIDEO_FRAMES_PER_CALL = 64
# Modalities of one row, whose vectors SQL need not store under an identity head.
DERIVED = frozenset({"image", "text"})


@dataclass(frozen=True)
class Encoded:
    """One input's raw features: one row, or one per segment of a long recording."""

    modality: str
    raw: np.ndarray  # (n, raw_dim)
    spans: np.ndarray | None = None  # (n, 2) seconds, recordings only

    def vectors(self, aligner: Aligner) -> np.ndarray:
        """Every row placed in the aligner's space, (n, dim)."""
        return aligner.project(self.modality, self.raw)

    def query(self, aligner: Aligner) -> np.ndarray:
        """One unit vector for the whole input: the mean of its rows' vectors."""
        return l2_normalize(pooled(self.vectors(aligner)).reshape(1, -1))[0]

    def span_list(self) -> list[list[float]] | None:
        """Spans as JSON-able lists (seconds, rounded to milliseconds)."""
        if self.spans is None:
            return None
        return [[round(float(a), 3), round(float(b), 3)] for a, b in self.spans]


def as_stored(encoded: Sequence[Encoded]) -> tuple[list[Encoded], list[StoredFeatures]]:
    """Inputs with their raw features as SQL keeps them, and those features in their
    column's form (``store_features``, the whole batch at once): a write projects the
    former, so its vectors are the ones a rebuild of the index projects again."""
    stored = store_features([e.raw for e in encoded])
    return [replace(e, raw=s.rows) for e, s in zip(encoded, stored, strict=True)], stored


def kept_vectors(aligner: Aligner, encoded: Encoded, vectors: np.ndarray) -> np.ndarray | None:
    """The vectors a row stores: none for an image or a text whose head is the identity
    (their vectors are the stored features normalised, row by row, bit for bit whatever
    the batch: ``index.builds.current_vectors`` makes them again), else ``vectors``."""
    head = aligner.heads.get(encoded.modality)
    if encoded.modality in DERIVED and head is not None and head.kind == "identity":
        return None
    return vectors


def all_vectors(aligner: Aligner, encoded: Sequence[Encoded]) -> list[np.ndarray]:
    """Every input's ``vectors(aligner)``, in order: the rows of each modality projected
    together (a batch of 64 texts: two numpy calls instead of two per text, under the
    collection's writer lock and holding the GIL)."""
    out: list[np.ndarray] = [np.empty((0, aligner.dim), np.float32)] * len(encoded)
    by_modality: dict[str, list[int]] = {}
    for i, e in enumerate(encoded):
        by_modality.setdefault(e.modality, []).append(i)
    for modality, where in by_modality.items():
        rows = aligner.project(modality, np.concatenate([encoded[i].raw for i in where]))
        bounds = np.cumsum([len(encoded[i].raw) for i in where])[:-1]
        for i, part in zip(where, np.split(rows, bounds), strict=True):
            out[i] = part
    return out


def queries(aligner: Aligner, encoded: Sequence[Encoded]) -> np.ndarray:
    """Every input's ``query(aligner)``, (n, dim): the one-row inputs of a modality projected
    and normalised together (the same operations; for a request of many texts or images, a
    few numpy calls for the lot instead of a few per input, all holding the GIL)."""
    out = np.empty((len(encoded), aligner.dim), dtype=np.float32)
    single: dict[str, list[int]] = {}
    for i, e in enumerate(encoded):
        if len(e.raw) == 1:
            single.setdefault(e.modality, []).append(i)
        else:
            out[i] = e.query(aligner)
    for modality, where in single.items():
        rows = np.concatenate([encoded[i].raw for i in where])
        out[where] = l2_normalize(aligner.project(modality, rows))
    return out


class Embedder:
    """The encoders of this process and the aligner new collections start from."""

    def __init__(self, loaded: LoadedModel, default_aligner: Aligner | None = None) -> None:
        self.loaded = loaded
        self.encoder = loaded.encoder
        self.audio: AudioEncoder | None = loaded.audio
        self.default_aligner = default_aligner or identity_aligner(self.encoder, self.audio)

    def close(self) -> None:
        """Stop the encoders' batcher threads (at shutdown)."""
        self.encoder.close()
        if self.audio is not None:
            self.audio.close()

    @property
    def model_id(self) -> str:
        """The image/text model every collection built by this process records."""
        return self.encoder.model_id

    @property
    def audio_model_id(self) -> str | None:
        """The audio tower's id, or None without audio."""
        return None if self.audio is None else self.audio.model_id

    @property
    def encoder_ids(self) -> dict[str, str]:
        """Per modality, the encoder this process runs for it."""
        return encoder_ids(self.encoder, self.audio)

    @property
    def dim(self) -> int:
        """Dimension of the shared space."""
        return self.encoder.dim

    @property
    def modalities(self) -> tuple[str, ...]:
        """What this process can encode."""
        return ("image", "text", "audio") if self.audio is not None else ("image", "text")

    @property
    def image_size(self) -> int:
        """Shorter side of the image tower's input, in pixels."""
        return self.encoder.image_size

    @property
    def audio_rate(self) -> int | None:
        """Sample rate audio is decoded to, or None without an audio tower."""
        return None if self.audio is None else self.audio.sample_rate

    def texts(self, texts: Sequence[str]) -> list[Encoded]:
        """Encode texts in one forward pass."""
        return self.encode("text", texts)

    def encode_mixed(self, modalities: Sequence[str], payloads: Sequence[Any]) -> list[Encoded]:
        """Encode inputs of several modalities, one forward pass per modality, in order."""
        out: list[Encoded | None] = [None] * len(payloads)
        for modality in sorted(set(modalities)):
            where = [i for i, m in enumerate(modalities) if m == modality]
            for i, done in zip(
                where, self.encode(modality, [payloads[i] for i in where]), strict=True
            ):
                out[i] = done
        return [e for e in out if e is not None]

    @property
    def video_width(self) -> int:
        """Columns of a video's raw rows (``pack_video``): a kind, then the wider feature."""
        return 1 + max(self.encoder.dim, 0 if self.audio is None else self.audio.dim)

    def encode(self, modality: str, payloads: Sequence[Any]) -> list[Encoded]:
        """Encode decoded inputs of one modality (texts, RGB images, mono waves or decoded
        videos) together."""
        if modality == VIDEO:
            return self._videos(payloads)
        if modality == "audio":
            if self.audio is None:
                raise ValueError("no audio tower: decode_upload refuses audio before this")
            return [
                Encoded("audio", seg.features, seg.spans)
                for seg in self.audio.encode_audio(payloads)
            ]
        if modality == "text":
            raw = self.encoder.encode_texts(payloads)
        else:
            raw = self.encoder.encode_images(payloads)
        return [Encoded(modality, row.reshape(1, -1)) for row in raw]

    def _videos(self, videos: Sequence[DecodedVideo]) -> list[Encoded]:
        """Each video's frames in one image forward, its audio tracks in one audio call:
        rows packed by ``pack_video``, spans the frames' then the audio segments'."""
        # A forward's worth of frames prepared at a time, however many videos a batch holds.
        pictures = [f for v in videos for f in v.frames]
        step = VIDEO_FRAMES_PER_CALL
        frames = np.concatenate(
            [
                self.encoder.encode_images(pictures[i : i + step])
                for i in range(0, len(pictures), step)
            ]
        )
        bounds = np.cumsum([len(v.frames) for v in videos])[:-1]
        waves = [(id(v), v.audio) for v in videos if v.audio is not None and len(v.audio)]
        tracks = self.audio.encode_audio([w for _, w in waves]) if self.audio and waves else []
        sound = {key: seg for (key, _), seg in zip(waves, tracks, strict=True)}
        out = []
        for video, rows in zip(videos, np.split(frames, bounds), strict=True):
            seg = sound.get(id(video))
            raw = pack_video(rows, None if seg is None else seg.features, self.video_width)
            spans = (
                video.frame_spans if seg is None else np.concatenate([video.frame_spans, seg.spans])
            )
            out.append(Encoded(VIDEO, raw, spans))
        return out
