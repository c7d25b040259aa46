"""On-disk IVF (issue 26, ten million vectors on one 24 GB machine): the lists of an
``on_disk`` IVF are searched in place in the mapped snapshot file, writes go to an in-memory
delta until the next snapshot, which merges them (the dead left out) a list at a time and
maps the new file. SQLite, then Postgres, where SQL is involved."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.schemas.collections import IndexSettings
from index import manager as manager_module
from index.snapshots import (
    IndexSnapshot,
    SnapshotHeader,
    peek_header,
    read_header,
    read_snapshot,
    write_snapshot_chunks,
)
from index.spec import IndexSpec
from index.stores import Stores
from index.tables import CollectionRow
from index.vector_index import VectorIndex
from tests.index.test_streamed_build import (
    DIM,
    built_at_once,
    collection_of,
    drafts,
    fill,
    manager,
    queries,
)

N = 3000
QUANTIZERS = ["flat", "sq8", "pq"]


def unit(count: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def spec(quantizer: str, *, on_disk: bool = True) -> IndexSpec:
    return IndexSpec(
        type="ivf", nlist=16, nprobe=4, quantizer=quantizer, pq_m=8, on_disk=on_disk
    )  # pq: 16 * 39 and 256 * 39 vectors before training


def pair(quantizer: str, count: int = 12_000) -> tuple[VectorIndex, VectorIndex, np.ndarray]:
    """The same vectors in an on_disk IVF and in a plain one."""
    vectors = unit(count, 1)
    disk, plain = (
        VectorIndex(DIM, spec(quantizer)),
        VectorIndex(DIM, spec(quantizer, on_disk=False)),
    )
    for index in (disk, plain):
        index.upsert(np.arange(1, count + 1), vectors)
    assert disk.streams and disk.lists == 16
    return disk, plain, vectors


def top(index: VectorIndex, q: np.ndarray) -> list[int]:
    return [h.pk for h in index.search(q, 10)]


def test_old_params_parse_and_store_as_before() -> None:
    stored = {"nlist": None, "nprobe": 16, "quantizer": "sq8", "pq_m": 64}
    old = IndexSpec.of("ivf", stored)
    assert not old.on_disk and old.params() == stored  # unchanged in SQL and the API
    assert IndexSpec.of("ivf", {**stored, "on_disk": True}).params() == {**stored, "on_disk": True}
    assert IndexSettings(type="ivf", on_disk=True).params() == {"on_disk": True}
    with pytest.raises(ValueError, match='on_disk applies to ivf indexes, not hnsw: give "type"'):
        IndexSettings(type="hnsw", on_disk=True)
    with pytest.raises(ValueError, match="hnsw index takes no on_disk"):
        IndexSpec.of("hnsw", {"on_disk": True})


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_the_streamed_snapshot_holds_faiss_own_serialisation(quantizer: str) -> None:
    """Written a list at a time, the lists are byte for byte what FAISS writes of the whole
    index: any FAISS reader reads them."""
    disk, _, _ = pair(quantizer)
    streamed = b"".join(disk.write_chunks())
    assert faiss.serialize_index(disk._index).tobytes() in streamed


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_loaded_lists_are_the_mapped_file_not_a_copy(quantizer: str, tmp_path: Path) -> None:
    disk, plain, _ = pair(quantizer)
    path = tmp_path / "snap"
    write_snapshot_chunks(path, SnapshotHeader(seq=1, dim=DIM), disk.write_chunks())
    snap = read_snapshot(path)
    assert snap is not None
    loaded = VectorIndex.from_bytes(DIM, snap.payload, spec(quantizer))
    assert loaded.mapped and not loaded._index.ntotal
    buffer = loaded._mapped
    start = buffer.__array_interface__["data"][0]
    lists = faiss.extract_index_ivf(loaded._base).invlists
    for i in range(lists.nlist):
        if lists.list_size(i):
            at = int(lists.get_codes(i))  # type: ignore[call-overload]
            assert start <= at < start + len(buffer)
    for q in queries():
        assert top(loaded, q) == top(plain, q)
    # Memory counts the centroids, the delta and the labels: not the lists.
    assert loaded.describe()["bytes"] < plain.describe()["bytes"]


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_writes_go_to_memory_until_the_next_snapshot_maps_them(quantizer: str) -> None:
    disk, plain, vectors = pair(quantizer)
    before = b"".join(disk.write_chunks())
    mapped = VectorIndex.from_bytes(DIM, before, spec(quantizer))
    fresh = unit(50, 2)
    for index in (mapped, plain):
        index.upsert(np.arange(20_001, 20_051), fresh)  # new items
        index.upsert(np.array([5]), fresh[:1])  # one moved
        index.remove(np.arange(100, 2100))  # past the compaction share: masked here
    assert mapped.mapped and mapped._index.ntotal == 51 and mapped.deleted == 2001
    probes = np.concatenate([queries(), fresh[:10], vectors[95:105]])
    for q in probes:
        assert top(mapped, q) == top(plain, q)
    mapped.adopt(b"".join(mapped.write_chunks()))
    assert mapped.mapped and mapped._index.ntotal == 0 and mapped.deleted == 0
    assert mapped.vectors == plain.vectors and np.array_equal(mapped.ids(), plain.ids())
    for q in probes:
        assert top(mapped, q) == top(plain, q)
    with pytest.raises(ValueError, match="does not hold this index's vectors: not adopted"):
        mapped.adopt(before)  # another state: the writes since are not in it


def test_a_streamed_snapshot_reads_as_any_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    header = SnapshotHeader(seq=7, dim=DIM, aligner_version=2, epoch=3)
    write_snapshot_chunks(path, header, [b"ab", memoryview(b"cd")])
    assert read_header(path) == header == peek_header(path)
    snap = read_snapshot(path)
    assert snap is not None and bytes(snap.payload) == b"abcd"

    def failing() -> list[bytes]:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_snapshot_chunks(path, header, iter(failing, None))  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]  # the temp file went


def collection(stores: Stores) -> CollectionRow:
    on_disk = {"nlist": 16, "nprobe": 4, "quantizer": "sq8", "on_disk": True}
    return collection_of(stores, "ivf", on_disk)


def test_the_service_writes_snapshots_and_restarts_an_on_disk_collection(
    stores: Stores, tmp_path: Path
) -> None:
    """Build from SQL (in memory), snapshot (mapped), upserts and deletes through the
    writer lock (the delta), snapshot again (merged, mapped), restart (mapped, the log
    replayed): every step answers as an index built from every row at once."""
    row = collection(stores)
    fill(stores, row, 0, N)
    indexes = manager(stores, tmp_path)
    live = indexes.load(stores.collections.get("c"))
    assert live.index.lists == 16 and not live.index.mapped
    indexes.snapshot_due(every=1000, max_age_s=3600.0)  # trained lists: snapshotted now
    assert live.index.mapped and live.lists_on_disk and not live.dirty

    def check(index: VectorIndex) -> list[list[int]]:
        """SQL's items, and each query's top 10 (every list probed) near the exact one."""
        exact = built_at_once(stores, stores.collections.get("c"))
        exact.spec = IndexSpec()  # flat: exact
        assert np.array_equal(index.ids(), exact.ids())
        kept, index.spec = index.spec, replace(index.spec, nprobe=16)
        found = [top(index, q) for q in queries()]
        index.spec = kept
        for got, q in zip(found, queries(), strict=True):
            assert len(set(got) & set(top(exact, q))) >= 8  # SQ8 codes, not exact floats
        return found

    first = check(live.index)
    assert first == check(built_at_once(stores, stores.collections.get("c")))
    for i, draft in enumerate(drafts(N, 20, seed=77)):
        with indexes.writing(live) as index:
            done = stores.items.upsert(collection_id=row.id, draft=draft)
            index.upsert(np.array([done.row.pk]), draft.vector[None], np.array([1]))
            live.wrote(done.seq, after=done.after)
        if i % 2:
            with indexes.writing(live) as index:
                gone = stores.items.delete(collection_id=row.id, external_id=str(i))
                index.remove(np.array([gone.row.pk]))
                live.wrote(gone.seq)
    assert live.index.mapped and live.index._index.ntotal == 20 and live.index.deleted == 10
    written = check(live.index)
    indexes.snapshot(live)
    assert live.index._index.ntotal == 0 and live.index.deleted == 0 and live.index.mapped
    assert check(live.index) == written
    with indexes.writing(live) as index:  # after the last snapshot: replayed at start-up
        gone = stores.items.delete(collection_id=row.id, external_id="100")
        index.remove(np.array([gone.row.pk]))
        live.wrote(gone.seq)
    restarted = manager(stores, tmp_path).load(stores.collections.get("c"))
    assert restarted.index.mapped and restarted.lists_on_disk
    check(restarted.index)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_a_selective_filter_finds_its_items_in_the_file_and_in_memory(quantizer: str) -> None:
    """An on_disk IVF keeps no direct map (it would be read into memory whole): a selective
    filter scans its lists, mapped and in memory, with a bitmap and finds what the plain
    index finds by decoding its rows."""
    disk, plain, _ = pair(quantizer)
    mapped = VectorIndex.from_bytes(DIM, b"".join(disk.write_chunks()), spec(quantizer))
    fresh = unit(50, 3)
    for index in (mapped, plain):
        index.upsert(np.arange(20_001, 20_051), fresh)  # in memory, beside the file
    allowed = np.concatenate([np.arange(1, 12_000, 997), np.arange(20_001, 20_051, 7)])
    for q in np.concatenate([queries()[:10], fresh[:5]]):
        got = mapped.search(q, 10, allowed)
        want = plain.search(q, 10, allowed)
        assert len(got) == len(want) == 10 and {h.pk for h in got} <= set(allowed.tolist())
        if quantizer != "pq":  # pq: decoded rows and table lookups round apart
            assert [h.pk for h in got] == [h.pk for h in want]
    assert mapped.describe()["bytes"] < plain.describe()["bytes"]


def test_an_unmapped_on_disk_ivf_compacts_without_scanning_its_dead_per_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until its first snapshot maps it, an on_disk IVF compacts in memory. It keeps no
    direct map, so an IDSelectorArray would be scanned whole for each stored code (1M
    codes against 250k dead: 2.5e11 compares, under the index's write lock): it removes
    by a hash set instead, and ends as the plain index does."""
    disk, plain, vectors = pair("sq8")
    assert not disk.mapped

    def refused(*args: object) -> None:
        raise AssertionError("an IDSelectorArray on an IVF without a direct map")

    for index in (plain, disk):  # the plain one first: it keeps its map, and the array
        if index is disk:
            monkeypatch.setattr(faiss, "IDSelectorArray", refused)
        index.remove(np.arange(1, 4001))  # a third: compacted
    assert disk.deleted == plain.deleted == 0 and disk.vectors == plain.vectors == 8000
    for q in np.concatenate([queries()[:10], vectors[4000:4010]]):
        assert top(disk, q) == top(plain, q)


def test_a_snapshot_replaced_before_it_is_mapped_is_not_adopted(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the folder may rename its snapshot over the one just
    written: its labels are its own, so it is refused rather than mapped (and the change
    log is not pruned on its word)."""
    row = collection(stores)
    fill(stores, row, 0, N)
    indexes = manager(stores, tmp_path)
    live = indexes.load(stores.collections.get("c"))
    real = manager_module.read_snapshot

    def theirs(path: Path) -> IndexSnapshot | None:
        snap = real(path)
        return None if snap is None else replace(snap, seq=snap.seq + 1)

    monkeypatch.setattr(manager_module, "read_snapshot", theirs)
    with pytest.raises(OSError, match="was replaced just after it was written: not adopted"):
        indexes.snapshot(live)
    assert not live.index.mapped and live.dirty
