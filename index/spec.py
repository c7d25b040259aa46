"""Index types a collection can choose: exact ``flat``, graph ``hnsw``, inverted-list ``ivf``,
or ``auto`` (one of them, chosen from the collection's size: :func:`auto_spec`).

A spec is chosen at creation and changed only by a reindex (a rebuild from SQL). It is
stored as ``collections.index_type`` + ``collections.index_params`` (the fields of its type).
An ``auto`` collection stores ``"auto"`` and, as its params, the spec in use with its type
(``{"type": "hnsw", "m": 32, ...}``): every process builds and loads the same index, and a
reindex chooses again from the size at that moment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

IndexType = Literal["flat", "hnsw", "ivf"]
AUTO = "auto"
Quantizer = Literal["flat", "sq8", "pq"]

# Fields each type takes; the others keep their defaults and are not stored.
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "hnsw": ("m", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe", "quantizer", "pq_m", "on_disk"),
}
# Fields stored only when they differ from their default: a collection created before the
# field existed stores the same params as one that leaves it out.
STORED_WHEN_SET = ("on_disk",)
# An IVF index with an automatic list count is trained once it holds this many vectors;
# below it, search is exact (a few milliseconds at most at that size).
AUTO_TRAIN_AT = 10_000
# FAISS' k-means warns under 39 points per centroid; product quantisers have 256 each.
POINTS_PER_LIST = 39
PQ_TRAIN_MIN = 256 * POINTS_PER_LIST

# ``auto``: exact search up to this many vectors, HNSW above. Chosen by measurement on the
# 2-core AMD EPYC of docs/performance.md: flat p50 over HTTP was 1.25 ms at 10,000 512-d
# vectors and 8.6 ms at 100,000 (linear: ~2.1 ms at 20,000); in process, on the machine
# loaded by other work (load 10 on 2 cores), 0.56 ms at 10,000, 2.1 ms at 20,000 and
# 9.5 ms at 50,000. 20,000 keeps exact search well under the 5 ms p50 target, with room
# for a busy machine. Raise it when flat search gets faster; a collection moves at its
# next reindex (auto chooses again then).
AUTO_EXACT_MAX = 20_000
# An HNSW collection that shrinks under this share of the threshold goes back to exact
# (hysteresis: a collection near the threshold does not flip on every write).
AUTO_SHRINK_SHARE = 0.5
# A graph cannot drop nodes: deletions are masked. Past this share of masked vectors the
# graph is rebuilt (search visits the masked nodes, and they take memory).
AUTO_MAX_DELETED_SHARE = 0.2
# HNSW settings of ``auto``: neighbours per node, and candidates while searching by size,
# measured on the bench's clustered vectors (recall@10 >= 0.95: docs/index-types.md).
AUTO_HNSW_M = 32
AUTO_HNSW_EF_CONSTRUCTION = 80
AUTO_HNSW_EF_SEARCH: tuple[tuple[int, int], ...] = ((250_000, 64), (2_000_000, 128))
AUTO_HNSW_EF_SEARCH_MAX = 256  # beyond the last size above
# Past this much memory for its graph, ``auto`` keeps a collection's vectors on disk
# instead: an IVF of 8-bit codes whose lists are searched in the mapped snapshot (on_disk,
# docs/index-types.md), measured at 10M x 512 on the 2-core, 24 GB AMD EPYC: recall@10
# 0.975, p50 16.6 ms warm with 1,024 lists and 16 probed, 1.5 GiB of process memory where an
# HNSW graph would take 23 GB. 8 GiB: at 512 dimensions, past ~3.7M vectors.
AUTO_MEMORY_MAX = 8 << 30
AUTO_DISK_NPROBE = 16
AUTO_DISK_LIST_SIZE = 10_000  # vectors a list: the measured 10M / 1,024
AUTO_DISK_NLIST_MIN = 1_024


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
    on_disk: bool = False  # ivf: lists searched in place in the mapped snapshot file

    def params(self) -> dict[str, Any]:
        """The fields of this type, as stored in SQL and shown by the API."""
        values = asdict(self)
        defaults = IndexSpec()
        return {
            name: values[name]
            for name in TYPE_FIELDS[self.type]
            if name not in STORED_WHEN_SET or values[name] != getattr(defaults, name)
        }

    @classmethod
    def of(cls, index_type: str, params: dict[str, Any] | None = None) -> IndexSpec:
        """The spec stored as (type, params); ValueError for an unknown type or field. An
        ``auto`` collection's params are the spec in use, with its type (none: exact)."""
        if index_type == AUTO:
            chosen = dict(params or {"type": "flat"})
            inner = chosen.pop("type", None)
            if inner not in TYPE_FIELDS:
                raise ValueError(f"auto index params name no index type: {params!r}")
            return cls.of(str(inner), chosen)
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
        if not isinstance(self.on_disk, bool):
            raise ValueError(f"on_disk is true or false, not {self.on_disk!r}")

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


def auto_spec(vectors: int, dim: int) -> IndexSpec:
    """The index ``auto`` uses for a collection of ``vectors`` vectors of ``dim`` dimensions:
    exact up to :data:`AUTO_EXACT_MAX`, else HNSW with a candidate list that grows with the
    size, until its graph would take more than :data:`AUTO_MEMORY_MAX`: an on_disk IVF of
    8-bit codes then, with lists of about :data:`AUTO_DISK_LIST_SIZE` vectors."""
    if vectors <= AUTO_EXACT_MAX:
        return IndexSpec(type="flat")
    graph = _auto_graph(vectors)
    if vectors * graph.bytes_per_vector(dim) <= AUTO_MEMORY_MAX:
        return graph
    return IndexSpec(
        type="ivf",
        nlist=_disk_lists(vectors),
        nprobe=AUTO_DISK_NPROBE,
        quantizer="sq8",
        on_disk=True,
    )


def _auto_graph(vectors: int) -> IndexSpec:
    ef = next((ef for upto, ef in AUTO_HNSW_EF_SEARCH if vectors <= upto), None)
    return IndexSpec(
        type="hnsw",
        m=AUTO_HNSW_M,
        ef_construction=AUTO_HNSW_EF_CONSTRUCTION,
        ef_search=ef or AUTO_HNSW_EF_SEARCH_MAX,
    )


def _disk_lists(vectors: int) -> int:
    """A power of two near ``vectors`` / AUTO_DISK_LIST_SIZE, at least AUTO_DISK_NLIST_MIN."""
    near = 2 ** round(math.log2(max(vectors / AUTO_DISK_LIST_SIZE, 1)))
    return max(near, AUTO_DISK_NLIST_MIN)


def auto_params(vectors: int, dim: int) -> dict[str, Any]:
    """What an ``auto`` collection stores as its params: :func:`auto_spec` with its type."""
    spec = auto_spec(vectors, dim)
    return {"type": spec.type, **spec.params()}


def auto_retune(current: IndexSpec, *, vectors: int, deleted: int, dim: int) -> str | None:
    """Why an ``auto`` collection's index (``current``, holding ``vectors`` live and
    ``deleted`` masked vectors) should be rebuilt now, or None while it fits its size.

    Exact grows into HNSW past :data:`AUTO_EXACT_MAX`; HNSW goes back to exact under
    :data:`AUTO_SHRINK_SHARE` of it, is rebuilt once masked deletions pass
    :data:`AUTO_MAX_DELETED_SHARE` of what it holds, and when the size needs a longer
    candidate list; it goes on disk once its graph would pass :data:`AUTO_MEMORY_MAX`, and
    back to a graph under :data:`AUTO_SHRINK_SHARE` of that, or is rebuilt with more lists
    when it has grown fourfold. Between the thresholds nothing moves (no flip on every
    write)."""
    wanted = auto_spec(vectors, dim)
    graph_bytes = vectors * _auto_graph(vectors).bytes_per_vector(dim)
    if current.type == "ivf":  # the lists on disk
        if graph_bytes < AUTO_SHRINK_SHARE * AUTO_MEMORY_MAX:
            return f"{vectors} vectors: a graph of {graph_bytes / 2**30:.1f} GiB fits in memory"
        if wanted.type == "ivf" and (wanted.nlist or 0) >= 4 * (current.nlist or 1):
            return f"{vectors} vectors: lists of {vectors // (current.nlist or 1)} get slow"
        return None
    if current.type != "hnsw":
        if wanted.type != current.type:
            return f"{vectors} vectors: past {AUTO_EXACT_MAX}, exact search gets slow"
        return None
    if wanted.type == "ivf":
        return (
            f"{vectors} vectors: a graph of {graph_bytes / 2**30:.1f} GiB passes "
            f"{AUTO_MEMORY_MAX / 2**30:g} GiB, the lists go on disk"
        )
    if vectors < AUTO_SHRINK_SHARE * AUTO_EXACT_MAX:
        return f"{vectors} vectors: under {AUTO_SHRINK_SHARE:g} x {AUTO_EXACT_MAX}, exact is fast"
    held = vectors + deleted
    if held and deleted > AUTO_MAX_DELETED_SHARE * held:
        return f"{deleted} of {held} vectors in the graph are deleted"
    if wanted.type == "hnsw" and wanted.ef_search > current.ef_search:
        return f"{vectors} vectors: recall wants ef_search {wanted.ef_search}"
    return None
