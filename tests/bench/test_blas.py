"""The bench's numpy baseline sets numpy's own OpenBLAS threads, even with FAISS' loaded."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from bench.blas import _getter, _openblas, blas_threads


def test_the_thread_count_set_is_numpys_even_beside_faiss_openblas() -> None:
    assert faiss.IndexFlatIP(4).d == 4  # FAISS' wheel brings a second OpenBLAS along
    found = _openblas()
    assert found is not None
    lib, setter = found
    assert lib._name.startswith(str(Path(np.__file__).resolve().parent))  # numpy.libs/
    get = getattr(lib, _getter(setter))
    with blas_threads(1) as used:
        assert used == 1
        assert int(get()) == 1
    with blas_threads(2) as used:
        assert used == 2
        assert int(get()) == 2
