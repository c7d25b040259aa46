"""Index builds stream their rows from SQL (issue 26): start-up, reindex and replay read a
bounded chunk of rows a query, never a collection's raw features where its stored vectors
serve, never all its vectors at once (an IVF trains on a sample gathered first); and what they
build is what a build from every row at once builds. SQLite, then Postgres."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

import index.items as items_module
from index.builds import BuildProcess, current_vectors
from index.items import ItemDraft
from index.manager import IndexManager
from index.snapshots import IndexSnapshot, read_snapshot, write_snapshot
from index.spec import IndexSpec
from index.stores import Stores
from index.tables import CollectionRow, ItemRow
from index.vector_index import VectorIndex
from models.encoders.aligner import Aligner
from tests.index.projectors import Identity

DIM = 64
N = 3000
CHUNK = 100  # rows a query, patched in: small enough that every build reads many pages
TYPES = {
    "flat": ("flat", {}),
    "hnsw": ("hnsw", {}),
    "ivf-sq8": ("ivf", {"nlist": 16, "quantizer": "sq8"}),
}


@dataclass
class Reads:
    """Rows and raw-feature bytes each query on the items' vectors returned."""

    rows: list[int]
    feature_bytes: int = 0
    mapped: set[int] = field(default_factory=set)  # SQLite's mmap_size at each query


@pytest.fixture
def reads() -> Iterator[Reads]:
    """Counts, through SQLAlchemy's execute event, what every query of items' vectors
    returns: the rows (frozen, counted and handed on unchanged) and their features' bytes."""
    seen = Reads([])

    def count(state: ORMExecuteState) -> Any:
        if not state.is_select:
            return None
        columns = state.statement.selected_columns  # type: ignore[attr-defined]
        names = [getattr(c, "name", None) for c in columns]
        if "vector" not in names:
            return None
        conn = state.session.connection()
        if conn.dialect.name == "sqlite":
            seen.mapped.add(int(conn.exec_driver_sql("PRAGMA mmap_size").scalar() or 0))
        frozen = state.invoke_statement().freeze()
        rows = frozen().all()
        seen.rows.append(len(rows))
        at = names.index("feature")
        for r in rows:  # columns, or whole rows (the ORM's)
            feature = r[0].feature if isinstance(r[0], ItemRow) else r[at]
            seen.feature_bytes += len(feature or b"")
        return frozen()

    event.listen(Session, "do_orm_execute", count)
    yield seen
    event.remove(Session, "do_orm_execute", count)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(items_module, "LOAD_CHUNK", CHUNK)


def collection(stores: Stores, kind: str) -> CollectionRow:
    return collection_of(stores, *TYPES[kind])


def collection_of(stores: Stores, index_type: str, params: dict[str, Any]) -> CollectionRow:
    """Collection "c" of DIM-d identity heads, indexed as given."""
    aligner = Aligner.identity(DIM, {"image": "m", "text": "m"})
    return stores.collections.create(
        name="c",
        model="m",
        audio_model=None,
        dim=DIM,
        index_type=index_type,
        index_params=params,
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )


def drafts(start: int, count: int, *, seed: int, version: int = 1) -> list[ItemDraft]:
    """Items of unit vectors, of the collection's first aligner version (1); those of
    another ``version`` store a vector that is not their feature's projection (a build must
    project the feature, not take it)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + count):
        feature = rng.standard_normal(DIM).astype(np.float32)
        unit = feature / np.linalg.norm(feature)
        vector = unit if version == 1 else np.roll(unit, 1)
        out.append(
            ItemDraft(
                external_id=str(i),
                modality="text",
                sha256="0" * 64,
                content_type="text/plain",
                size_bytes=1,
                feature=feature if version != 1 else unit,
                vector=vector,
                aligner_version=version,
                text="x",
            )
        )
    return out


def fill(stores: Stores, row: CollectionRow, start: int, count: int, **kw: Any) -> None:
    for at in range(start, start + count, 500):
        batch = drafts(at, min(500, start + count - at), seed=at, **kw)
        stores.items.upsert_many(collection_id=row.id, drafts=batch)


def manager(
    stores: Stores, root: Path, builds: BuildProcess | None = None
) -> IndexManager[Identity]:
    return IndexManager(
        collections=stores.collections,
        items=stores.items,
        changes=stores.changes,
        aligner_of=lambda row: Identity(row.aligner_version),
        root=root,
        builds=builds,
    )


def built_at_once(stores: Stores, row: CollectionRow) -> VectorIndex:
    """The index as builds made it before: every row's vectors added at once, then an IVF
    trained on all of them."""
    stored = [s for c in stores.items.iter_stored(collection_id=row.id) for s in c]
    aligner = Identity(row.aligner_version)
    matrices = [current_vectors(s, aligner, DIM) for s in stored]
    index = VectorIndex(DIM, IndexSpec.of(row.index_type, row.index_params), deferred=True)
    index.upsert(
        np.array([s.pk for s in stored]),
        np.concatenate(matrices),
        np.array([len(m) for m in matrices]),
    )
    index.finish()
    return index


def queries() -> np.ndarray:
    q = np.random.default_rng(99).standard_normal((40, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def assert_same(built: VectorIndex, reference: VectorIndex, kind: str) -> None:
    assert np.array_equal(built.ids(), reference.ids())
    assert built.lists == reference.lists
    for q in queries():
        got, want = built.search(q, 10), reference.search(q, 10)
        if kind == "hnsw":  # a graph built on several threads is not bit-identical
            overlap = {h.pk for h in got} & {h.pk for h in want}
            assert len(overlap) >= 9
        else:
            assert [h.pk for h in got] == [h.pk for h in want]
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-6)


@pytest.mark.parametrize("kind", list(TYPES))
def test_start_up_build_streams_and_matches_a_build_from_every_row(
    stores: Stores, tmp_path: Path, reads: Reads, kind: str
) -> None:
    row = collection(stores, kind)
    fill(stores, row, 0, N)
    fill(stores, row, N, 200, version=7)  # made by another aligner version: projected now
    reads.rows.clear()
    reads.mapped.clear()
    live = manager(stores, tmp_path).load(stores.collections.get("c"))
    assert reads.rows and max(reads.rows) <= CHUNK
    passes = 2 if kind.startswith("ivf") else 1  # an IVF's sample, then its adds
    assert sum(reads.rows) == passes * (N + 200)
    # Only the projected items' raw features were read: the others' stored vectors serve.
    assert reads.feature_bytes == passes * 200 * (8 + DIM * 2)  # header, float16 values
    # Not through SQLite's memory map: the pages read would stay resident in the process.
    assert reads.mapped <= {0}
    assert live.index.size == N + 200
    assert_same(live.index, built_at_once(stores, row), kind)


@pytest.mark.parametrize("kind", ["flat", "ivf-sq8"])
def test_reindex_and_replay_stream_and_match_a_build_from_every_row(
    stores: Stores, tmp_path: Path, reads: Reads, kind: str
) -> None:
    row = collection(stores, "flat")
    fill(stores, row, 0, N)
    first = manager(stores, tmp_path)
    first.load_all()
    # A reindex to the type under test: a new epoch, built beside the live index.
    index_type, params = TYPES[kind]
    fresh = stores.collections.set_space(
        collection_id=row.id, bump_epoch=True, index=(index_type, params)
    )
    reads.rows.clear()
    live = first.get(fresh, wait=True)
    assert reads.rows and max(reads.rows) <= CHUNK
    assert_same(live.index, built_at_once(stores, fresh), kind)
    first.snapshot(live)
    # Changes after the snapshot: new items, replaced ones (another version's), deletions.
    fill(stores, fresh, N, 450)
    fill(stores, fresh, 0, 300, version=3)
    for i in range(300, 420):
        stores.items.delete(collection_id=row.id, external_id=str(i))
    reads.rows.clear()
    replayed = manager(stores, tmp_path).load(stores.collections.get("c"))
    assert reads.rows and max(reads.rows) <= CHUNK
    assert sum(reads.rows) == 300 + 450  # the touched items that remain, nothing else
    reference = built_at_once(stores, fresh)
    assert np.array_equal(replayed.index.ids(), reference.ids())
    for q in queries():  # a replayed IVF keeps the lists it trained on other vectors
        got, want = replayed.index.search(q, 10), reference.search(q, 10)
        assert len({h.pk for h in got} & {h.pk for h in want}) >= (10 if kind == "flat" else 9)


def test_reindexes_free_each_replaced_index_at_the_swap(stores: Stores, tmp_path: Path) -> None:
    """What a server keeps across reindexes is its live index: each replaced one is freed
    when it is swapped out (by its reference count, no garbage collection needed), not held
    by the manager, the snapshot written after the swap, or a cycle."""
    row = collection(stores, "flat")
    fill(stores, row, 0, 600)
    indexes = manager(stores, tmp_path)
    live = indexes.load(stores.collections.get("c"))
    replaced = []
    for kind in ["hnsw", "ivf-sq8", "flat", "hnsw"]:
        replaced.append(weakref.ref(live.index))
        index_type, params = TYPES[kind]
        fresh = stores.collections.set_space(
            collection_id=row.id, bump_epoch=True, index=(index_type, params)
        )
        assert indexes.get(fresh, wait=True) is live
        assert live.index.spec.type == index_type
        assert [r() for r in replaced] == [None] * len(replaced)


def test_an_ivf_build_never_holds_every_vector_in_python(
    stores: Stores, tmp_path: Path, reads: Reads
) -> None:
    """What the build allocates through Python (numpy arrays, rows) peaks well under one
    copy of the collection's vectors; FAISS' own memory (the index) is not counted here."""
    row = collection(stores, "ivf-sq8")
    count = 2 * N
    fill(stores, row, 0, count)
    indexes = manager(stores, tmp_path)
    indexes.load(stores.collections.get("c"))  # once first: statements compiled and cached
    every_vector = count * DIM * 4
    tracemalloc.start()
    try:
        live = indexes.load(stores.collections.get("c"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert live.index.lists == 16 and live.index.size == count
    # The sample (64 vectors a list) and a chunk of rows; a build from every row held
    # the vectors twice over (all of them read back, then the live ones copied).
    assert peak < every_vector / 2, f"peak {peak} bytes for {every_vector} bytes of vectors"


def test_an_index_loads_from_its_snapshot_without_copies_of_the_file(tmp_path: Path) -> None:
    """Start-up from a snapshot reads the file in place (mapped): Python holds neither the
    file's bytes nor the payload cut from them, only the label map the index keeps."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((20_000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = VectorIndex(DIM)
    built.upsert(np.arange(1, 20_001), vectors)
    path = tmp_path / "snap"
    write_snapshot(path, IndexSnapshot(seq=3, dim=DIM, payload=built.to_bytes()))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        snap = read_snapshot(path)
        assert snap is not None
        loaded = VectorIndex.from_bytes(DIM, snap.payload)
        del snap
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 4, f"peak {peak} bytes loading a {size}-byte snapshot"
    assert np.array_equal(loaded.ids(), built.ids())
    for q in queries():
        assert loaded.search(q, 10) == built.search(q, 10)
    # A damaged file is still refused whole.
    damaged = bytearray(path.read_bytes())
    damaged[size // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert read_snapshot(path) is None
    path.write_bytes(b"")
    assert read_snapshot(path) is None
