"""How values are kept in columns, for every store: vectors as float32 blobs, tag values as
canonical JSON, and the text that every backend can hold."""

from __future__ import annotations

import json
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
