"""numpy's OpenBLAS thread count, set for a measurement (a small threadpoolctl).

On a busy machine with few cores OpenBLAS' threads spin against other work: a single
``vectors @ q`` can be several times slower on 2 threads than on 1, so the numpy baseline
takes the better of both and says which it was.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def _getter(setter: str) -> str:
    return setter.replace("set_num_threads", "get_num_threads")


def _openblas() -> tuple[ctypes.CDLL, str] | None:
    """numpy's own OpenBLAS: FAISS' wheel loads another one into the process, and setting
    that one's threads leaves numpy's as they were."""
    import numpy  # (loads its OpenBLAS)

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    home = str(Path(numpy.__file__).resolve().parent)  # numpy/ and numpy.libs/ beside it
    paths = [
        path
        for path in dict.fromkeys(
            line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line
        )
        if path.startswith(home)
    ]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            if hasattr(lib, name) and hasattr(lib, _getter(name)):
                return lib, name
    return None


@contextmanager
def blas_threads(threads: int | None) -> Iterator[int | None]:
    """Run the block with ``threads`` BLAS threads (None: leave as is); yields the count in
    force, or None when OpenBLAS cannot be found (then nothing changes)."""
    found = _openblas()
    if found is None:
        yield None
        return
    lib, setter = found
    before = int(getattr(lib, _getter(setter))())
    if threads is None:
        yield before
        return
    getattr(lib, setter)(ctypes.c_int(threads))
    try:
        yield threads
    finally:
        getattr(lib, setter)(ctypes.c_int(before))
