"""Raw features in SQL: float16 behind a header (half the bytes), float32 where float16 would
distort a row, and the headerless float32 blobs of earlier releases still read."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from index.columns import (
    HALF,
    SINGLE,
    from_features,
    store_features,
    to_blob,
    to_features,
)
from models.encoders.aligner import l2_normalize

finite = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_subnormal=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 40)), elements=finite))
def test_features_read_back_as_storing_keeps_them(raw: np.ndarray) -> None:
    blob = to_features(raw)
    back = from_features(blob)
    assert back.dtype == np.float32 and back.shape == raw.shape
    # What a write projects is what a rebuild reads: bit for bit.
    assert np.array_equal(back, store_features([raw])[0].rows)
    # Every row within 2**-10 of its length: its direction is kept.
    error = np.linalg.norm(back - raw, axis=1)
    assert np.all(error <= 2.0**-10 * np.linalg.norm(raw, axis=1))


def test_a_feature_of_ordinary_values_takes_two_bytes_a_value() -> None:
    raw = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    blob = to_features(raw)
    assert blob[:4] == HALF and len(blob) == 8 + 512 * 2
    # The unit vectors an index holds move by less than 1e-6 in cosine.
    cosine = float(l2_normalize(raw)[0] @ l2_normalize(from_features(blob))[0])
    assert cosine > 1 - 1e-6


def test_values_float16_cannot_hold_are_kept_in_float32() -> None:
    huge = np.array([[7e4, 1.0, -3.0]], dtype=np.float32)  # past float16's 65504
    tiny = np.array([[1e-9, -2e-9, 3e-9]], dtype=np.float32)  # under its smallest value
    for raw in (huge, tiny):
        blob = to_features(raw)
        assert blob[:4] == SINGLE
        assert np.array_equal(from_features(blob), raw)
        assert np.array_equal(store_features([raw])[0].rows, raw)


def test_an_earlier_release_float32_feature_is_read_with_its_row_count() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    assert np.array_equal(from_features(to_blob(rows), 3), rows)
    assert np.array_equal(from_features(to_blob(rows[:1])), rows[:1])


def test_a_video_row_keeps_its_kind_column_exact() -> None:
    rows = np.random.default_rng(1).standard_normal((3, 9)).astype(np.float32)
    rows[:, 0] = [1, 2, 1]  # pack_video's kinds
    assert np.array_equal(from_features(to_features(rows))[:, 0], [1, 2, 1])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from([4, 9]), st.sampled_from([1.0, 1e5, 1e-9])),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**32 - 1),
)
def test_a_batch_is_stored_as_each_of_its_inputs_alone(
    shapes: list[tuple[int, int, float]], seed: int
) -> None:
    # A write checks and casts a whole batch at once (two widths: an image's and an audio
    # clip's features), some inputs float16 cannot hold: each comes out as it would alone.
    rng = np.random.default_rng(seed)
    raws = [(rng.standard_normal((n, w)) * scale).astype(np.float32) for n, w, scale in shapes]
    stored = store_features(raws)
    assert len(stored) == len(raws)
    for raw, one in zip(raws, stored, strict=True):
        assert one.blob == to_features(raw)
        assert np.array_equal(one.rows, store_features([raw])[0].rows)
        assert np.array_equal(one.rows, from_features(one.blob))
