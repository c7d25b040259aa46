"""Query vectors of many inputs at once: the same as each input's own ``query``."""

from __future__ import annotations

import numpy as np

from app.services.embedding import Encoded, queries
from models.encoders.aligner import Aligner, AlignerHead


def test_queries_of_many_inputs_are_each_inputs_query() -> None:
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
    got = queries(aligner, encoded)
    assert got.shape == (6, dim) and got.dtype == np.float32
    want = np.stack([e.query(aligner) for e in encoded])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not got[3].any()
    assert queries(aligner, []).shape == (0, dim)
