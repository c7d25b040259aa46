"""Index types a collection can choose: exact ``flat``, graph ``hnsw``, inverted-list ``ivf``.

A spec is chosen at creation and changed only by a reindex (a rebuild from SQL). It is
stored as ``collections.index_type`` + ``collections.index_params`` (the fields of its type).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

IndexType = Literal["flat", "hnsw", "ivf"]
Quantizer = Literal["flat", "sq8", "pq"]

# Fields each type takes; the others keep their defaults and are not stored.
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "hnsw": ("m", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe", "quantizer", "pq_m"),
}
# An IVF index with an automatic list count is trained once it holds this many vectors;
# below it, search is exact (a few milliseconds at most at that size).
AUTO_TRAIN_AT = 10_000
# FAISS' k-means warns under 39 points per centroid; product quantisers have 256 each.
POINTS_PER_LIST = 39
PQ_TRAIN_MIN = 256 * POINTS_PER_LIST


@dataclass(frozen=True)
class IndexSpec:
    """How one collection's vectors are indexed."""

    type: IndexType = "flat"
    m: int = 32  # hnsw: graph neighbours per node
    ef_construction: int = 80  # hnsw: candidate list while inserting
    ef_search: int = 64  # hnsw: candidate list while searching (raised to k when smaller)
    nlist: int | None = None  # ivf: inverted lists; None = chosen from the size at training
    nprobe: int = 16  # ivf: lists scanned per query
    quantizer: Quantizer = "flat"  # ivf: how vectors are stored in the lists
    pq_m: int = 64  # ivf + pq: sub-quantisers (bytes per vector); must divide the dimension

    def params(self) -> dict[str, Any]:
        """The fields of this type, as stored in SQL and shown by the API."""
        values = asdict(self)
        return {name: values[name] for name in TYPE_FIELDS[self.type]}

    @classmethod
    def of(cls, index_type: str, params: dict[str, Any] | None = None) -> IndexSpec:
        """The spec stored as (type, params); ValueError for an unknown type or field."""
        if index_type not in TYPE_FIELDS:
            raise ValueError(f"unknown index type {index_type!r}")
        given = dict(params or {})
        unknown = set(given) - set(TYPE_FIELDS[index_type])
        if unknown:
            raise ValueError(f"{index_type} index takes no {', '.join(sorted(unknown))}")
        return cls(type=index_type, **given)  # type: ignore[arg-type]

    def check(self, dim: int) -> None:
        """ValueError when the spec cannot index vectors of this dimension."""
        if self.type == "ivf" and self.quantizer == "pq" and dim % self.pq_m:
            raise ValueError(f"pq_m ({self.pq_m}) must divide the dimension ({dim})")

    def lists_for(self, vectors: int) -> int:
        """Inverted lists for an IVF trained on this many vectors: the set ``nlist``, else a
        power of two near 4 * sqrt(n) with at least 39 training points per list."""
        if self.nlist is not None:
            return self.nlist
        target = 4 * math.sqrt(max(vectors, 1))
        lists = 2 ** round(math.log2(target))
        while lists > 1 and lists * POINTS_PER_LIST > vectors:
            lists //= 2
        return max(lists, 1)

    def train_at(self) -> int:
        """Vectors an IVF needs before it is trained (until then search is exact)."""
        floor = PQ_TRAIN_MIN if self.quantizer == "pq" else 0
        if self.nlist is not None:
            return max(self.nlist * POINTS_PER_LIST, floor)
        return max(AUTO_TRAIN_AT, floor)

    def factory(self, lists: int) -> str:
        """The FAISS index_factory string of this spec."""
        if self.type == "hnsw":
            return f"HNSW{self.m},Flat"
        if self.type == "ivf":
            codes = {"flat": "Flat", "sq8": "SQ8", "pq": f"PQ{self.pq_m}"}[self.quantizer]
            return f"IVF{lists},{codes}"
        return "Flat"

    def bytes_per_vector(self, dim: int) -> int:
        """Memory of one stored vector in this index (codes + links + our label), estimated."""
        label = 8
        if self.type == "hnsw":
            # Level 0 holds 2M int32 links; upper levels add about one more per vector.
            return 4 * dim + 4 * (2 * self.m + 1) + label
        if self.type == "ivf":
            code = {"flat": 4 * dim, "sq8": dim, "pq": self.pq_m}[self.quantizer]
            return code + 8 + label  # + the id stored in the inverted list
        return 4 * dim + 2 * dim + label  # float32 vectors + the float16 copy scanned
