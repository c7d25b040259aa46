"""Aligner heads: each encoder's raw features -> the shared, L2-normalised space.

A head maps one modality's raw feature (CLAP audio, CLIP image, ...), L2-normalised, into the
collection's space and normalises the result. Kinds:

- ``identity``  the encoder already speaks the shared space (CLIP image and text at first)
- ``linear``    ``y = x W^T + b``, any input width (CLAP audio -> CLIP, 512 -> 512 or not)
- ``lowrank``   ``y = x + (x D^T) U^T + b``, a low-rank residual on an identity start,
                for fine-tuning a head whose input already lives in the space
- ``residual``  ``y = x W^T + b + relu(x D^T + c) U^T``, a head's affine map plus a small
                non-linear correction: what a fine-tune learns (``AlignerHead.residual``)

An :class:`Aligner` is one head per modality plus the encoder ids whose features the heads
take, the shared dimension and free-form training metadata. It serialises to one safetensors
file (tensors + a JSON header), the same bytes on disk (``mmr bootstrap-audio --out``) and in
SQL (the ``aligners`` table), where each collection numbers its versions and marks one active.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from models.errors import ModelLoadError, UnsupportedMediaError

if TYPE_CHECKING:
    from models.encoders.audio import AudioEncoder
    from models.encoders.openclip import Encoder

FORMAT = "mmr-aligner/1"
HEAD_KINDS = ("identity", "linear", "lowrank", "residual")
MODALITIES = ("image", "text", "audio")
# A video has no head of its own: its frames go through the image head, its audio track's
# segments through the audio head. Its raw rows carry their kind in column 0 (see pack_video).
VIDEO = "video"
VIDEO_ROW_KINDS = {"image": 0.0, "audio": 1.0}


def pack_video(frames: np.ndarray, audio: np.ndarray | None, width: int) -> np.ndarray:
    """A video's raw rows: each frame's image feature, then each audio segment's feature,
    behind a column that says which (0: image, 1: audio), zero-padded to ``width`` columns
    (1 + the widest of the two encoders' features, so that every video of a model has the
    same row width whatever its tracks)."""
    parts = [(VIDEO_ROW_KINDS["image"], frames)]
    if audio is not None and len(audio):
        parts.append((VIDEO_ROW_KINDS["audio"], audio))
    rows = np.zeros((sum(len(p) for _, p in parts), width), dtype=np.float32)
    at = 0
    for kind, part in parts:
        if part.shape[1] + 1 > width:
            raise ValueError(f"a {part.shape[1]}-wide feature does not fit {width} columns")
        rows[at : at + len(part), 0] = kind
        rows[at : at + len(part), 1 : 1 + part.shape[1]] = part
        at += len(part)
    return rows


class AlignerFormatError(ValueError):
    """Bytes that are not an aligner artefact, or one that contradicts itself."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. The one place we normalise."""
    matrix = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


@dataclass(frozen=True)
class AlignerHead:
    """One modality's map from raw encoder features into the shared space."""

    kind: str
    in_dim: int
    out_dim: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def identity(cls, dim: int) -> AlignerHead:
        """The encoder's own space, normalised."""
        return cls("identity", dim, dim)

    @classmethod
    def linear(cls, weight: np.ndarray, bias: np.ndarray | None = None) -> AlignerHead:
        """``y = x W^T + b`` with ``weight`` of shape (out_dim, in_dim)."""
        w = np.ascontiguousarray(weight, dtype=np.float32)
        b = np.zeros(w.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
        head = cls("linear", int(w.shape[1]), int(w.shape[0]), {"weight": w, "bias": b})
        head.check()
        return head

    @classmethod
    def lowrank(
        cls, down: np.ndarray, up: np.ndarray, bias: np.ndarray | None = None
    ) -> AlignerHead:
        """``y = x + (x D^T) U^T + b`` with ``down`` (rank, dim) and ``up`` (dim, rank)."""
        d = np.ascontiguousarray(down, dtype=np.float32)
        u = np.ascontiguousarray(up, dtype=np.float32)
        b = np.zeros(u.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
        head = cls("lowrank", int(d.shape[1]), int(u.shape[0]), {"down": d, "up": u, "bias": b})
        head.check()
        return head

    @classmethod
    def residual(
        cls,
        base: AlignerHead,
        down: np.ndarray,
        down_bias: np.ndarray,
        up: np.ndarray,
    ) -> AlignerHead:
        """``y = x W^T + b + relu(x D^T + c) U^T``: a head's affine map (``base``, kept as
        it is) plus a small non-linear residual, ``down`` (hidden, in_dim), ``down_bias``
        (hidden,), ``up`` (out_dim, hidden). With ``up`` zero it is ``base`` exactly. A
        fine-tune learns the residual alone: unlike a change of the affine map, which moves
        every input alike, it can move the inputs the pairs are about (new words) and leave
        the others (the old vocabulary, held in place by anchors) where they were."""
        w, b = base.affine() if base.kind != "residual" else base.base()
        tensors = {
            "weight": np.ascontiguousarray(w, dtype=np.float32),
            "bias": np.ascontiguousarray(b, dtype=np.float32),
            "down": np.ascontiguousarray(down, dtype=np.float32),
            "down_bias": np.ascontiguousarray(down_bias, dtype=np.float32),
            "up": np.ascontiguousarray(up, dtype=np.float32),
        }
        head = cls("residual", base.in_dim, base.out_dim, tensors)
        head.check()
        return head

    def base(self) -> tuple[np.ndarray, np.ndarray]:
        """A residual head's affine part ``(W, b)`` (its residual left out)."""
        return self.tensors["weight"], self.tensors["bias"]

    def check(self) -> None:
        """Raise AlignerFormatError unless kind, dims and tensor shapes agree."""
        shapes: dict[str, tuple[int, ...]]
        if self.kind == "identity":
            shapes = {}
            if self.in_dim != self.out_dim:
                raise AlignerFormatError("an identity head needs equal input and output widths")
        elif self.kind == "linear":
            shapes = {"weight": (self.out_dim, self.in_dim), "bias": (self.out_dim,)}
        elif self.kind == "lowrank":
            if self.in_dim != self.out_dim:
                raise AlignerFormatError("a low-rank residual head needs equal widths")
            rank = self.tensors["down"].shape[0] if "down" in self.tensors else -1
            shapes = {
                "down": (rank, self.in_dim),
                "up": (self.out_dim, rank),
                "bias": (self.out_dim,),
            }
        elif self.kind == "residual":
            hidden = self.tensors["down"].shape[0] if "down" in self.tensors else -1
            shapes = {
                "weight": (self.out_dim, self.in_dim),
                "bias": (self.out_dim,),
                "down": (hidden, self.in_dim),
                "down_bias": (hidden,),
                "up": (self.out_dim, hidden),
            }
        else:
            raise AlignerFormatError(f"unknown head kind {self.kind!r}; one of {HEAD_KINDS}")
        got = {name: tuple(t.shape) for name, t in self.tensors.items()}
        if got != shapes:
            raise AlignerFormatError(
                f"{self.kind} head {self.in_dim}->{self.out_dim}: tensors {got}"
            )
        if not all(np.all(np.isfinite(t)) for t in self.tensors.values()):
            raise AlignerFormatError("head weights must be finite")

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """The head as one affine map ``(W, b)``: a fine-tune can start from any kind."""
        if self.kind == "identity":
            return np.eye(self.out_dim, dtype=np.float32), np.zeros(self.out_dim, np.float32)
        if self.kind == "linear":
            return self.tensors["weight"], self.tensors["bias"]
        if self.kind == "residual":
            raise ValueError("a residual head is not one affine map (its base() is)")
        eye = np.eye(self.out_dim, dtype=np.float32)
        return eye + self.tensors["up"] @ self.tensors["down"], self.tensors["bias"]

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Raw features (n, in_dim) -> unit vectors (n, out_dim)."""
        # Inputs are normalised first: heads are trained on unit rows, so an encoder's
        # feature scale (CLIP's raw norms vary, CLAP's are already one) never matters.
        x = l2_normalize(np.ascontiguousarray(raw, dtype=np.float32).reshape(-1, self.in_dim))
        if self.kind == "linear":
            x = x @ self.tensors["weight"].T + self.tensors["bias"]
        elif self.kind == "lowrank":
            x = x + (x @ self.tensors["down"].T) @ self.tensors["up"].T + self.tensors["bias"]
        elif self.kind == "residual":
            t = self.tensors
            hidden = np.maximum(x @ t["down"].T + t["down_bias"], 0.0)
            x = x @ t["weight"].T + t["bias"] + hidden @ t["up"].T
        return l2_normalize(x)


@dataclass(frozen=True)
class Aligner:
    """One head per modality: a collection's version of the shared space.

    ``encoders`` names, per modality, the encoder whose raw features the head takes; a
    version only serves a process that runs those encoders. ``version`` is assigned when a
    collection records the aligner in SQL and is not part of the bytes.
    """

    dim: int
    heads: dict[str, AlignerHead]
    encoders: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def identity(cls, dim: int, encoders: dict[str, str], **meta: Any) -> Aligner:
        """Identity heads for every named modality: the encoders' own space."""
        heads = {m: AlignerHead.identity(dim) for m in encoders}
        return cls(dim, heads, dict(encoders), {"kind": "identity", **meta})

    def __post_init__(self) -> None:
        if set(self.heads) != set(self.encoders):
            raise AlignerFormatError("every head needs the id of the encoder it takes")
        for modality, head in self.heads.items():
            if modality not in MODALITIES:
                raise AlignerFormatError(f"unknown modality {modality!r}")
            if head.out_dim != self.dim:
                raise AlignerFormatError(
                    f"the {modality} head writes {head.out_dim} dims, not {self.dim}"
                )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this version can place in the space."""
        return tuple(m for m in MODALITIES if m in self.heads)

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        """Map raw features of a modality into the shared space (a video's rows each through
        the head of their kind: see ``pack_video``)."""
        if modality == VIDEO:
            return self._project_video(raw)
        head = self.heads.get(modality)
        if head is None:
            raise UnsupportedMediaError(f"this collection's aligner has no {modality} head")
        return head.project(raw)

    def _project_video(self, raw: np.ndarray) -> np.ndarray:
        rows = np.asarray(raw, dtype=np.float32)
        rows = rows.reshape(len(rows), -1) if rows.ndim != 2 else rows
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for modality, kind in VIDEO_ROW_KINDS.items():
            where = rows[:, 0] == kind
            if where.any():
                head = self.heads.get(modality)
                if head is None:
                    raise UnsupportedMediaError(
                        f"this collection's aligner has no {modality} head for a video's "
                        f"{modality} segments"
                    )
                out[where] = head.project(rows[where, 1 : 1 + head.in_dim])
        return out

    def describe(self) -> dict[str, dict[str, str | int]]:
        """Per modality: the head's kind and widths and the encoder it takes."""
        return {
            m: {
                "kind": h.kind,
                "in_dim": h.in_dim,
                "out_dim": h.out_dim,
                "encoder": self.encoders[m],
            }
            for m, h in self.heads.items()
        }

    def with_head(self, modality: str, head: AlignerHead, encoder: str, **meta: Any) -> Aligner:
        """A copy with one head added or replaced (version reset: it is a new artefact)."""
        heads = {**self.heads, modality: head}
        encoders = {**self.encoders, modality: encoder}
        return Aligner(self.dim, heads, encoders, {**self.meta, **meta})

    def with_meta(self, **meta: Any) -> Aligner:
        """A copy with more metadata (how it was made)."""
        return replace(self, meta={**self.meta, **meta})

    def numbered(self, version: int) -> Aligner:
        """The same heads as recorded under a collection's version number."""
        return replace(self, version=version)

    # -- the artefact -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """One safetensors file: ``<modality>.<tensor>`` tensors and a JSON header."""
        # Sorted: one aligner, one byte string, one digest.
        tensors = {
            f"{m}.{name}": self.heads[m].tensors[name]
            for m in sorted(self.heads)
            for name in sorted(self.heads[m].tensors)
        }
        header = {
            "format": FORMAT,
            "dim": str(self.dim),
            "heads": json.dumps(self.describe(), sort_keys=True),
            "meta": json.dumps(self.meta, sort_keys=True),
        }
        # safetensors refuses an empty file; identity-only aligners carry a marker tensor.
        tensors.setdefault("_", np.zeros(1, np.float32))
        return _safetensors_bytes(tensors, header)

    @classmethod
    def from_bytes(cls, data: bytes) -> Aligner:
        """The inverse of to_bytes; AlignerFormatError on anything else."""
        try:
            tensors = st_load(data)
            header = _header(data)
            if header.get("format") != FORMAT:
                raise AlignerFormatError(f"not an {FORMAT} artefact")
            specs = json.loads(header["heads"])
            heads = {
                m: AlignerHead(
                    spec["kind"],
                    int(spec["in_dim"]),
                    int(spec["out_dim"]),
                    {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{m}.")},
                )
                for m, spec in specs.items()
            }
            for head in heads.values():
                head.check()
            encoders = {m: str(spec["encoder"]) for m, spec in specs.items()}
            return cls(int(header["dim"]), heads, encoders, json.loads(header["meta"]))
        except (SafetensorError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, AlignerFormatError):
                raise
            raise AlignerFormatError(f"not a readable aligner artefact: {exc}") from exc

    @property
    def sha256(self) -> str:
        """Digest of the artefact bytes: two versions with one digest are the same heads."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: Path) -> None:
        """Write the artefact to a file (parents created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Aligner:
        """Read an artefact file."""
        return cls.from_bytes(path.read_bytes())


def _safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors layout written by hand, keys sorted: the library orders its header
    through a hash map, so its bytes (and any digest of them) would change from run to run."""
    entries: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        entries[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data to 8 bytes
    return len(header).to_bytes(8, "little") + header + b"".join(blobs)


def _header(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors buffer (its first 8 bytes give the header size)."""
    size = int.from_bytes(data[:8], "little")
    meta: dict[str, str] = json.loads(data[8 : 8 + size]).get("__metadata__", {})
    return meta


# -- which aligner serves which encoders ----------------------------------------------------------


def encoder_ids(encoder: Encoder, audio: AudioEncoder | None) -> dict[str, str]:
    """Per modality, the id of the encoder whose raw features its head takes."""
    ids = {"image": encoder.model_id, "text": encoder.model_id}
    if audio is not None:
        ids["audio"] = audio.model_id
    return ids


def needs_bridge(encoder: Encoder, audio: AudioEncoder | None) -> bool:
    """Whether the audio tower lives in a space of its own (and needs a trained head)."""
    return audio is not None and (audio.model_id != encoder.model_id or audio.dim != encoder.dim)


def identity_aligner(encoder: Encoder, audio: AudioEncoder | None) -> Aligner:
    """Identity heads for every modality (no bridge needed)."""
    return Aligner.identity(encoder.dim, encoder_ids(encoder, audio))


def check_serves(aligner: Aligner, encoder: Encoder, audio: AudioEncoder | None) -> None:
    """ModelLoadError unless an aligner's heads take exactly these encoders' features."""
    want = encoder_ids(encoder, audio)
    if aligner.encoders != want or aligner.dim != encoder.dim:
        raise ModelLoadError(
            f"the aligner was built for {aligner.encoders} (dim {aligner.dim}) but this "
            f"server runs {want} (dim {encoder.dim}); build one for this pair with "
            "`mmr bootstrap-audio`"
        )
    audio_head = aligner.heads.get("audio")
    if audio is not None and audio_head is not None and audio_head.in_dim != audio.dim:
        raise ModelLoadError(
            f"the audio head takes {audio_head.in_dim} dims, CLAP gives {audio.dim}"
        )
