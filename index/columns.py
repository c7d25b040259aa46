"""How values are kept in columns, for every store: vectors as float32 blobs, raw features as
float16 ones, tag values as canonical JSON, and the text that every backend can hold."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Scalar = str | int | float | bool | None


def to_blob(vectors: np.ndarray) -> bytes:
    """A float32 vector, or rows of them, as bytes for a LargeBinary column."""
    return np.ascontiguousarray(vectors, dtype=np.float32).tobytes()


def from_blob(blob: bytes, width: int | None = None) -> np.ndarray:
    """The inverse of to_blob: flat, or rows of ``width`` when given."""
    flat = np.frombuffer(blob, dtype=np.float32)
    return flat if width is None else flat.reshape(-1, width)


# Raw features are stored in half precision with a header: a float16 component is within
# 2**-11 of the float32 one, relative, which moves a projected unit vector's cosine to the
# float32 one by less than 1e-6 (docs/performance.md, "What a stored item costs"), for half
# the bytes. The header's first four bytes are a float32 NaN, which no stored feature holds
# (features are finite): a blob without it is a float32 one of an earlier release.
HALF = struct.pack("<I", 0x7FC0_F16F)
SINGLE = struct.pack("<I", 0x7FC0_F32F)  # features float16 would distort, kept whole
# A row is kept in float16 when that moves it by at most this share of its length (values
# past 65504 overflow, and ones under 6e-8 vanish: a feature of tiny values would).
HALF_ERROR = 2.0**-10
_WIDTH = struct.Struct("<I")


def _as_rows(raw: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(raw, dtype=np.float32)
    return rows if rows.ndim == 2 else rows.reshape(1, -1)


@dataclass(frozen=True)
class StoredFeatures:
    """An input's raw features as a column keeps them: the column's bytes, and the float32
    rows they read back as (what a write projects, so that a rebuild projects the same)."""

    rows: np.ndarray
    blob: bytes


def store_features(raws: Sequence[np.ndarray]) -> list[StoredFeatures]:
    """Many inputs' raw features as columns keep them, in order: a header (format, width),
    then float16 values, or float32 ones for an input float16 would distort (a row moved by
    more than ``HALF_ERROR`` of its length, or out of its range). Checked and cast for the
    whole batch at once, a handful of numpy calls per width: per input, they cost a write
    ~40 us an item under its collection's writer lock."""
    rows = [_as_rows(raw) for raw in raws]
    out: list[StoredFeatures | None] = [None] * len(rows)
    by_width: dict[int, list[int]] = {}
    for n, r in enumerate(rows):
        by_width.setdefault(r.shape[1], []).append(n)
    for width, where in by_width.items():
        every = np.concatenate([rows[n] for n in where])
        with np.errstate(over="ignore"):
            half = every.astype(np.float16)
        wide = half.astype(np.float32)
        with np.errstate(invalid="ignore"):
            error = np.linalg.norm(wide - every, axis=-1)
        good = np.isfinite(error) & (error <= HALF_ERROR * np.linalg.norm(every, axis=-1))
        header = _WIDTH.pack(width)
        start = 0
        for n in where:
            end = start + len(rows[n])
            if good[start:end].all():
                out[n] = StoredFeatures(wide[start:end], HALF + header + half[start:end].tobytes())
            else:
                out[n] = StoredFeatures(rows[n], SINGLE + header + rows[n].tobytes())
            start = end
    return [s for s in out if s is not None]


def to_features(raw: np.ndarray) -> bytes:
    """Raw features, (rows, width), as a column's bytes (``store_features``)."""
    return store_features([raw])[0].blob


def from_features(blob: bytes, rows: int | None = None) -> np.ndarray:
    """The inverse of to_features: float32 rows. A blob of an earlier release (plain float32,
    no header) is cut into ``rows`` rows (one when not given)."""
    head = blob[:4]
    if head in (HALF, SINGLE):
        (width,) = _WIDTH.unpack_from(blob, 4)
        dtype = np.float16 if head == HALF else np.float32
        return np.frombuffer(blob, dtype=dtype, offset=8).astype(np.float32).reshape(-1, width)
    return np.frombuffer(blob, dtype=np.float32).reshape(rows or 1, -1)


def canonical(value: Scalar) -> str:
    """One JSON spelling per value, so that 1, 1.0 and "1" compare as JSON does."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # ASCII escapes keep control characters (NUL above all) out of the text column.
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def tag_pairs(metadata: dict[str, Any]) -> set[tuple[str, str]]:
    """The (key, value) pairs an equality filter can match: scalars and scalar list elements."""
    pairs: set[tuple[str, str]] = set()
    for key, value in metadata.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, str | int | float | bool):
                text = canonical(v)
                if len(text) <= 1024 and len(key) <= 255 and storable(key):
                    pairs.add((key, text))
    return pairs


def storable(text: str) -> bool:
    """Whether a string fits a text column on every backend (Postgres refuses NUL)."""
    return "\x00" not in text
