"""Long recordings' windows go to the encoder a forward's worth at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from models.encoders.audio import in_forwards


def test_windows_are_encoded_in_forwards_of_at_most_per_forward_in_order() -> None:
    pieces = [np.full(3, i, dtype=np.float32) for i in range(7)]
    calls: list[int] = []

    def encode(chunk: Sequence[np.ndarray]) -> np.ndarray:
        calls.append(len(chunk))
        return np.stack([p[:1] for p in chunk])

    rows = in_forwards(pieces, 3, encode)
    assert calls == [3, 3, 1]
    assert rows[:, 0].tolist() == list(range(7))


def test_a_forward_takes_at_least_one_window() -> None:
    with pytest.raises(ValueError, match="per_forward"):
        in_forwards([np.zeros(3)], 0, lambda chunk: np.zeros((len(chunk), 1)))
