"""Content-addressed blobs: durable writes, removal only when unused and unpinned, into a
trash swept after a grace period unless a backup (alive) holds it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import index.blobs as blobs_module
from index.blobs import HOLDS, LEASE_S, BlobStore, backups_running, find, holding_trash, trashed
from index.snapshots import can_sync_filesystem


def test_put_is_content_addressed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert blobs.get(digest) == b"hello"
    assert blobs.put(b"hello") == digest
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_original_lies_one_folder_deep(tmp_path: Path) -> None:
    """``ab/<sha256>``: 256 folders, so that writing an original rarely makes a folder (two
    levels, ``ab/cd/<sha256>``, made one for nearly every original of the first 65,536, a
    third of the CPU an original cost)."""
    blobs = BlobStore(tmp_path)
    many = [blobs.put(b"x%d" % n) for n in range(3)]
    with blobs.pinned_many([b"y%d" % n for n in range(3)]):  # a batch's originals
        pass
    for digest in [*many, *(hashlib.sha256(b"y%d" % n).hexdigest() for n in range(3))]:
        assert blobs.path(digest) == tmp_path / digest[:2] / digest
        assert blobs.path(digest).is_file()


def an_earlier_release_stored(root: Path, data: bytes) -> str:
    """What a release before v1.1 left: ``ab/cd/<sha256>``."""
    digest = hashlib.sha256(data).hexdigest()
    place = root / digest[:2] / digest[2:4] / digest
    place.parent.mkdir(parents=True)
    place.write_bytes(data)
    return digest


def test_originals_an_earlier_release_stored_two_folders_deep_are_still_served(
    tmp_path: Path,
) -> None:
    """A data dir upgraded in place keeps its originals where they are: found, read, not
    written twice, trashed and put back like the others."""
    old = an_earlier_release_stored(tmp_path, b"from v1.0")
    blobs = BlobStore(tmp_path)
    assert blobs.get(old) == b"from v1.0" and blobs.path(old).parent.name == old[2:4]
    assert blobs.put(b"from v1.0") == old
    with blobs.pinned_many([b"from v1.0", b"new"]) as (_, new):
        pass
    assert sorted(only_files(tmp_path)) == sorted(
        [tmp_path / old[:2] / old[2:4] / old, tmp_path / new[:2] / new]
    )
    assert blobs.remove_unused([old], lambda shas: set()) == 1
    assert not blobs.path(old).exists() and find(tmp_path, old)[-1].read_bytes() == b"from v1.0"
    blobs.sweep(in_use=lambda shas: shas)  # named again: put back
    assert blobs.get(old) == b"from v1.0"


def test_remove_only_what_is_unused(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    used, unused = blobs.put(b"used"), blobs.put(b"unused")
    removed = blobs.remove_unused([used, unused], lambda shas: shas & {used})
    assert removed == 1
    assert blobs.path(used).exists()
    assert not blobs.path(unused).exists()


def test_a_pinned_blob_survives_removal(tmp_path: Path) -> None:
    """An ingest between writing the bytes and committing its row keeps them on disk."""
    blobs = BlobStore(tmp_path)
    with blobs.pinned(b"in flight") as digest:
        assert blobs.remove_unused([digest], lambda shas: set()) == 0
        assert blobs.path(digest).exists()
    assert blobs.remove_unused([digest], lambda shas: set()) == 1


def test_an_original_another_process_trashed_before_this_ingest_committed_is_put_back(
    tmp_path: Path,
) -> None:
    """Pins are per process: another process (its own BlobStore on the shared folder) finds
    no row naming the bytes yet and trashes them; once the ingest's row is committed, the
    ingest writes them back."""
    here, there = BlobStore(tmp_path), BlobStore(tmp_path)
    with here.pinned(b"shared bytes") as digest:
        assert there.remove_unused([digest], lambda shas: set()) == 1  # the row is not in yet
        assert not here.path(digest).exists()
    assert here.get(digest) == b"shared bytes"


def test_the_sweep_puts_back_trashed_originals_that_rows_name(tmp_path: Path) -> None:
    """An ingest killed between its commit and its look: the next sweep of any process
    moves the original back instead of deleting it after the grace period."""
    blobs = BlobStore(tmp_path, grace_s=0)
    named, unnamed = blobs.put(b"named again"), blobs.put(b"gone")
    assert blobs.remove_unused([named, unnamed], lambda shas: set()) == 2
    assert blobs.sweep(in_use=lambda shas: shas & {named}) == 1  # only the unnamed one
    assert blobs.get(named) == b"named again"
    assert not blobs.path(unnamed).exists() and list(trashed(tmp_path)) == []


def only_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_removal_trashes_and_the_sweep_frees_the_space_after_the_grace_period(
    tmp_path: Path,
) -> None:
    blobs = BlobStore(tmp_path, grace_s=60)
    digest = blobs.put(b"deleted")
    assert blobs.remove_unused([digest], lambda shas: set()) == 1
    [(path, at)] = trashed(tmp_path)
    assert not blobs.path(digest).exists() and path.read_bytes() == b"deleted"
    assert find(tmp_path, digest)[2:] == [path]  # where a backup still finds it
    assert blobs.sweep(now=at + 59) == 0 and path.exists()
    assert blobs.sweep(now=at + 61) == 1
    assert only_files(tmp_path) == []


def test_no_sweep_while_a_backup_that_started_earlier_runs(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path, grace_s=0)
    blobs.remove_unused([blobs.put(b"a")], lambda shas: set())
    with holding_trash(tmp_path):
        assert backups_running(tmp_path)
        assert blobs.sweep() == 0
        assert len(list(trashed(tmp_path))) == 1
    assert not backups_running(tmp_path)
    assert blobs.sweep() == 1
    assert only_files(tmp_path) == []  # the hold is gone with its backup


def test_a_hold_is_renewed_while_its_backup_runs(tmp_path: Path) -> None:
    with holding_trash(tmp_path, lease_s=0.2) as hold:
        time.sleep(0.6)  # three leases: alive only if renewed
        assert backups_running(tmp_path, lease_s=0.2)
        assert time.time() - hold.stat().st_mtime < 0.2


def test_a_backup_killed_mid_hold_blocks_sweeping_no_longer(tmp_path: Path) -> None:
    """kill -9 of a backup leaves its hold behind: a dead process of this host is seen at
    once; the hold of a process elsewhere, by its heartbeat stopping for a lease."""
    blobs = BlobStore(tmp_path, grace_s=0)
    blobs.remove_unused([blobs.put(b"a"), blobs.put(b"b")], lambda shas: set())
    code = (
        "import sys, time; from pathlib import Path; from index.blobs import holding_trash\n"
        "with holding_trash(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"
    )
    root = Path(__file__).parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=root, stdout=subprocess.PIPE
    ) as child:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        assert blobs.sweep() == 0  # alive: it holds
        child.kill()
    assert blobs.sweep() == 2
    assert not any((tmp_path / HOLDS).iterdir())  # the stale hold went too

    elsewhere = tmp_path / HOLDS / "otherhost.1.x"
    elsewhere.write_text(json.dumps({"host": "otherhost", "pid": 1, "started": time.time()}))
    blobs.remove_unused([blobs.put(b"c")], lambda shas: set())
    assert blobs.sweep() == 0  # its pid cannot be checked from here: alive until it expires
    os.utime(elsewhere, (time.time() - LEASE_S - 1,) * 2)
    assert blobs.sweep() == 1
    assert not elsewhere.exists()


@pytest.mark.parametrize("synced", [True, False], ids=["syncfs", "fsync-each"])
def test_a_batch_of_originals_is_stored_and_pinned_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synced: bool
) -> None:
    if not synced:  # what other systems than Linux do
        monkeypatch.setattr(blobs_module, "can_sync_filesystem", lambda: False)
    store = BlobStore(tmp_path / "blobs")
    datas = [b"one", b"two", b"one", b"three"]
    with store.pinned_many(datas) as digests:
        assert digests == [hashlib.sha256(d).hexdigest() for d in datas]
        assert store.remove_unused(set(digests), lambda _: set()) == 0  # pinned
        assert [store.get(d) for d in digests] == datas
    assert store.remove_unused(set(digests), lambda _: set()) == 3  # released after


def no_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk where a write shows it: putting an original in place fails."""

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobs_module.os, "replace", full)


def test_a_batch_whose_write_fails_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs")
    no_space(monkeypatch)
    with pytest.raises(OSError), store.pinned_many([b"a", b"b", b"c"]):
        pass
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_storing_writes_while_the_block_goes_on_and_pins_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's originals are written on the store's thread while the batch is encoded: the
    block goes on before they are on disk, wait() returns once they are, and they stay
    pinned until the block (the commit) ends."""
    store = BlobStore(tmp_path / "blobs")
    release = threading.Event()
    real = store._put_all

    def slow(datas: object, digests: object) -> None:
        assert release.wait(5)
        real(datas, digests)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_put_all", slow)
    datas = [b"first", b"second"]
    with store.storing(datas) as stored:
        assert not stored.writes.done()  # the block runs before the bytes are written
        assert not any(store.path(d).exists() for d in stored.digests)
        release.set()
        assert stored.wait() == [hashlib.sha256(d).hexdigest() for d in datas]
        assert [store.get(d) for d in stored.digests] == datas
        assert store.remove_unused(set(stored.digests), lambda _: set()) == 0  # pinned
    assert store.remove_unused(set(stored.digests), lambda _: set()) == 2  # released after


def test_storing_raises_a_failed_write_at_wait_and_releases_its_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs")
    no_space(monkeypatch)
    with pytest.raises(OSError, match="No space"), store.storing([b"a", b"b"]) as stored:
        stored.wait()
    assert store._pins == {}
    # A block that fails on its own (the encoder) still waits for the writes it started.
    monkeypatch.undo()
    with pytest.raises(RuntimeError), store.storing([b"c", b"d"]) as stored:
        raise RuntimeError("the forward failed")
    assert stored.writes.done() and store._pins == {}


def test_a_batch_is_written_again_into_a_folder_removed_from_outside(tmp_path: Path) -> None:
    """The store remembers the fan-out folders it made (a mkdir a file cost a fifth of a
    batch's writes); one removed behind its back is made again, not a failed write."""
    store = BlobStore(tmp_path / "blobs")
    with store.pinned_many([b"first", b"other"]) as digests:
        pass
    for digest in digests:
        store.path(digest).unlink()
        store.path(digest).parent.rmdir()
    with store.pinned_many([b"first", b"other"]) as again:
        assert [store.get(d) for d in again] == [b"first", b"other"]


def test_a_batch_never_writes_into_another_writers_temp_file(tmp_path: Path) -> None:
    """Temp names carry a token of the writer's own, not just its pid (containers sharing a
    data dir all run as pid 1): two stores of one pid differ, and a name that is taken, by
    whoever, is left alone (not truncated into a file a rename might be about to publish)."""
    blobs, other = BlobStore(tmp_path), BlobStore(tmp_path)
    assert blobs._tmp_token() != other._tmp_token()
    assert blobs._tmp_token().startswith(f"{os.getpid()}.")
    datas = [b"first", b"second"]
    digests = [hashlib.sha256(d).hexdigest() for d in datas]
    folder = tmp_path / digests[0][:2]
    folder.mkdir()
    theirs = folder / f".{digests[0]}.{blobs._tmp_token()}.0.tmp"  # the next name it takes
    theirs.write_bytes(b"another writer's")
    with blobs.pinned_many(datas) as stored:
        assert stored == digests
    assert [blobs.get(d) for d in digests] == datas
    assert theirs.read_bytes() == b"another writer's"
    assert list(tmp_path.rglob("*.tmp")) == [theirs]


def test_a_forked_child_takes_a_temp_token_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    parents = blobs._tmp_token()
    assert blobs._tmp_token() == parents  # kept while the process is the same
    monkeypatch.setattr(os, "getpid", lambda: 424242)  # as in a child after fork
    assert blobs._tmp_token().startswith("424242.") and blobs._tmp_token() != parents


KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
import index.blobs as blobs
def killed(root):  # the temp files are written; the process dies before any rename
    os.kill(os.getpid(), signal.SIGKILL)
blobs.sync_filesystem = killed
with blobs.BlobStore(Path(sys.argv[1])).pinned_many([b"a" * 100, b"b" * 100, b"c" * 100]):
    pass
"""


@pytest.mark.skipif(not can_sync_filesystem(), reason="the writer dies at syncfs (Linux)")
def test_temp_files_a_killed_writer_left_are_swept_once_old(tmp_path: Path) -> None:
    """A writer killed between its temp files and their renames leaves them in the fan-out
    folders: gone once older than the grace period, one folder a sweep; a live writer's
    temp file and the originals stay."""
    root = tmp_path / "blobs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(root)], env=env)
    assert done.returncode == -9
    left = sorted(root.rglob("*.tmp"))
    assert len(left) == 3
    store = BlobStore(root)
    kept = store.put(b"an original")
    live = root / kept[:2] / f".{kept}.{store._tmp_token()}.0.tmp"  # being written
    live.write_bytes(b"half")
    now = time.time()
    assert store.sweep_temps(now=now, folders=256) == 0  # young: maybe a live writer's
    for path in [*left, live, store.path(kept)]:
        os.utime(path, (now - blobs_module.TEMP_GRACE_S - 1,) * 2)
    live.touch()  # its writer is still at it
    swept = [store.sweep_temps(now=now) for _ in range(256)]  # one folder each
    assert sum(swept) == 3
    assert len([n for n in swept if n]) == len({path.parent for path in left})
    assert sorted(root.rglob("*.tmp")) == [live]
    assert store.get(kept) == b"an original"
