"""Query vectors of many inputs at once: the same as each input's own ``query``; items'
vectors of a batch at once: the same as each item's own ``vectors``."""

from __future__ import annotations

import numpy as np

from app.services.embedding import Encoded, all_vectors, queries
from models.encoders.aligner import Aligner, AlignerHead


def _inputs() -> tuple[Aligner, list[Encoded]]:
    rng = np.random.default_rng(0)
    dim, raw_dim = 8, 6
    aligner = Aligner(
        dim,
        {
            "image": AlignerHead.identity(dim),
            "audio": AlignerHead.linear(rng.normal(size=(dim, raw_dim))),
        },
        {"image": "enc", "audio": "clap"},
    )
    encoded = [
        Encoded("image", rng.normal(size=(1, dim)).astype(np.float32)),
        Encoded("audio", rng.normal(size=(3, raw_dim)).astype(np.float32), np.zeros((3, 2))),
        Encoded("audio", rng.normal(size=(1, raw_dim)).astype(np.float32)),
        Encoded("image", np.zeros((1, dim), np.float32)),  # stays zero
        Encoded("image", 5 * rng.normal(size=(1, dim)).astype(np.float32)),
        Encoded("audio", rng.normal(size=(1, raw_dim)).astype(np.float32)),
    ]
    return aligner, encoded


def test_queries_of_many_inputs_are_each_inputs_query() -> None:
    aligner, encoded = _inputs()
    dim = aligner.dim
    got = queries(aligner, encoded)
    assert got.shape == (6, dim) and got.dtype == np.float32
    want = np.stack([e.query(aligner) for e in encoded])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not got[3].any()
    assert queries(aligner, []).shape == (0, dim)


def test_vectors_of_a_batch_are_each_items_vectors() -> None:
    aligner, encoded = _inputs()
    got = all_vectors(aligner, encoded)
    assert [v.shape for v in got] == [(len(e.raw), aligner.dim) for e in encoded]
    for vectors, e in zip(got, encoded, strict=True):
        np.testing.assert_allclose(vectors, e.vectors(aligner), atol=1e-6)
    assert all_vectors(aligner, []) == []
