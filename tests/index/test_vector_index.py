"""The FAISS wrapper and its snapshots."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index.columns import canonical, tag_pairs
from index.locks import RWLock, WouldBlock
from index.snapshots import (
    IndexSnapshot,
    SnapshotHeader,
    collection_of,
    read_header,
    read_snapshot,
    snapshot_file,
    write_snapshot,
)
from index.vector_index import VectorIndex
from models.encoders.aligner import l2_normalize


def unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(rows, dim)))


def test_upsert_replaces_and_remove_forgets() -> None:
    index = VectorIndex(8)
    vectors = unit(3)
    index.upsert(np.array([10, 20, 30]), vectors)
    index.upsert(np.array([20]), vectors[0])
    assert index.size == 3
    hits = index.search(vectors[0], 2)
    assert sorted(h.pk for h in hits) == [10, 20]
    index.remove(np.array([10, 99]))
    assert sorted(index.ids().tolist()) == [20, 30]


def test_fewer_results_than_k_never_pads() -> None:
    index = VectorIndex(8)
    index.upsert(np.array([1, 2]), unit(2))
    assert len(index.search(unit(1)[0], 10)) == 2
    assert VectorIndex(8).search(unit(1)[0], 5) == []


def test_allowed_ids_apply_before_the_cut() -> None:
    index = VectorIndex(8)
    vectors = unit(100)
    index.upsert(np.arange(100), vectors)
    allowed = np.array([3, 50, 97])
    hits = index.search(vectors[0], 3, allowed)
    assert sorted(h.pk for h in hits) == [3, 50, 97]
    assert index.search(vectors[0], 3, np.array([], dtype=np.int64)) == []


def test_segments_of_an_item_come_back_once_with_the_best_one() -> None:
    index = VectorIndex(8)
    vectors = unit(40)
    # Item 7 has 30 segments, all near the query; items 1..10 one vector each.
    near = l2_normalize(vectors[0] + 0.05 * unit(30, seed=1))
    index.upsert(np.array([7]), near, np.array([30]))
    index.upsert(np.arange(1, 7), vectors[1:7])
    assert index.size == 7 and index.vectors == 36
    hits = index.search(vectors[0], 3)
    assert hits[0].pk == 7 and len({h.pk for h in hits}) == 3
    best = int(np.argmax(near @ vectors[0]))
    assert hits[0].segment == best
    assert hits[0].score == pytest.approx(float(near[best] @ vectors[0]), abs=1e-5)
    # More segments than k never crowd other items out.
    assert len(index.search(vectors[0], 7)) == 7
    # Filters name items; every segment of an allowed item stays searchable.
    only = index.search(vectors[0], 5, np.array([7, 3]))
    assert [h.pk for h in only] == [7, 3] and only[0].segment == best
    # Re-upserting with fewer segments leaves none of the old ones behind.
    index.upsert(np.array([7]), near[:2], np.array([2]))
    assert index.vectors == 8
    index.remove(np.array([7, 1]))
    assert index.ids().tolist() == [2, 3, 4, 5, 6] and index.vectors == 5


def test_segment_counts_must_fit_the_id_layout() -> None:
    index = VectorIndex(8)
    with pytest.raises(ValueError, match="segments"):
        index.upsert(np.array([1]), unit(1), np.array([0]))
    with pytest.raises(ValueError, match="vector ids"):
        index.upsert(np.array([1, 2]), unit(3), np.array([1, 1]))


def test_wrong_dimension_is_refused() -> None:
    index = VectorIndex(8)
    with pytest.raises(ValueError, match="dimension 8"):
        index.upsert(np.array([1]), unit(1, dim=4))
    with pytest.raises(ValueError, match="dimension 8"):
        index.search(unit(1, dim=4)[0], 1)


def test_snapshot_round_trip_and_corruption(tmp_path: Path) -> None:
    index = VectorIndex(8)
    index.upsert(np.array([5, 6]), unit(2))
    path = tmp_path / "idx" / "c.faiss"
    write_snapshot(path, IndexSnapshot(seq=42, dim=8, payload=index.to_bytes()))
    assert [p.name for p in path.parent.iterdir()] == ["c.faiss"]  # no temp file left
    snap = read_snapshot(path)
    assert snap is not None and snap.seq == 42
    restored = VectorIndex.from_bytes(8, snap.payload)
    assert sorted(restored.ids().tolist()) == [5, 6]
    with pytest.raises(ValueError):
        VectorIndex.from_bytes(16, snap.payload)
    data = path.read_bytes()
    flipped = data[:-1] + bytes([data[-1] ^ 0xFF])
    for broken in (data[: len(data) // 2], b"", b"garbage\n" + data, flipped):
        path.write_bytes(broken)
        assert read_snapshot(path) is None
    assert read_snapshot(tmp_path / "absent.faiss") is None


def test_metadata_values_compare_as_json() -> None:
    assert canonical(1) == canonical(1.0) != canonical("1")
    assert canonical(True) != canonical(1)
    pairs = tag_pairs({"a": [1, "x", {"no": 1}], "b": None, "c": {"nested": 1}})
    assert pairs == {("a", "1"), ("a", '"x"'), ("b", "null")}


def test_rwlock_writer_excludes_readers() -> None:
    lock = RWLock()
    events: list[str] = []

    def reader() -> None:
        with lock.read():
            events.append("read")

    with lock.write():
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.05)
        events.append("write-done")
    thread.join()
    assert events == ["write-done", "read"]


def test_a_reader_that_will_not_wait_hears_the_lock_is_busy() -> None:
    lock = RWLock()
    with lock.read(wait=False), lock.read(wait=False):  # readers share
        pass
    with lock.write(), pytest.raises(WouldBlock), lock.read(wait=False):
        pass
    # A waiting writer turns new readers away too (it would starve otherwise).
    reading = lock.read()
    reading.__enter__()
    writer = threading.Thread(target=lambda: lock.write().__enter__())
    writer.start()
    deadline = time.monotonic() + 5
    while not lock._writers_waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(WouldBlock), lock.read(wait=False):
        pass
    reading.__exit__(None, None, None)
    writer.join(5)
    assert not writer.is_alive()


def test_a_header_is_read_with_its_payload_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.faiss"
    payload = bytes(range(256)) * 9000  # over two read chunks
    write_snapshot(path, IndexSnapshot(seq=7, dim=8, payload=payload, aligner_version=2, epoch=1))
    assert read_header(path) == SnapshotHeader(seq=7, dim=8, aligner_version=2, epoch=1)
    snap = read_snapshot(path)
    assert snap is not None and snap.header == read_header(path)
    data = path.read_bytes()
    flipped = data[:-1] + bytes([data[-1] ^ 0xFF])
    for broken in (data[:-1], data + b"x", flipped, data[:30], b"garbage\n" + data):
        path.write_bytes(broken)
        assert read_header(path) is None
    assert read_header(tmp_path / "absent.faiss") is None


def test_a_snapshot_serves_only_the_rows_it_reflects() -> None:
    header = SnapshotHeader(seq=10, dim=8, aligner_version=2, epoch=1)
    same = {"aligner_version": 2, "epoch": 1}
    assert header.unusable(pruned_seq=10, last_seq=10, **same) is None
    assert header.unusable(pruned_seq=3, last_seq=90, **same) is None
    assert "predates the change log" in str(header.unusable(pruned_seq=11, **same))
    assert "aligner v2, index epoch 1" in str(
        header.unusable(pruned_seq=0, aligner_version=2, epoch=2)
    )
    assert "newer than the rows" in str(header.unusable(pruned_seq=0, last_seq=9, **same))


def test_snapshot_file_names() -> None:
    assert collection_of(snapshot_file(42)) == 42
    for other in ("collection-x.faiss", "collection-4.faiss.tmp", ".collection-4.faiss.1.tmp"):
        assert collection_of(other) is None
