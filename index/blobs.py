"""Original bytes, content-addressed by sha256 under the data dir.

An original no item refers to any more is not unlinked: it is *trashed* (renamed into
``.trash`` under the blob root, the folder fsynced) and a sweep removes it later. That grace
period is what lets ``mmr backup`` copy a live deployment at one point in time while items
keep being deleted and replaced: the backup reads SQL in one read transaction, then copies
the originals those rows name, and an original deleted after the transaction began is found
in the trash (``find``) instead of being gone. Without it a backup had to start over from a
new snapshot whenever a delete beat its copy, and under steady deletes it never finished.

Why a trash with holds rather than the alternatives:

- *Reference counts or a delete log in SQL*: every delete would write more rows, and the
  original would still have to outlive the backup's snapshot somewhere on disk.
- *Blocking deletes during a backup*: a backup of a large deployment takes minutes; the
  API must keep acknowledging writes (docs/backup.md, "What it costs the running server").
- *Hard links into the backup*: only on the same filesystem, and a backup is usually on
  another disk.

The sweep (``BlobStore.sweep``, run by the API process's background thread, never on a
request) removes trash older than ``grace_s`` unless a backup is running: a backup takes a
*hold* (``holding_trash``), a small file under ``.holds`` that names its host and pid and
whose mtime a heartbeat thread renews. Files, not SQL rows: every process and host that
serves the deployment shares the data dir (the blob store itself lives there), and a hold
must exist before the backup's read transaction begins. A hold is stale, and removed by the
next sweep, once its heartbeat is older than ``LEASE_S`` or, on the sweeping host, once its
process is gone: a crashed (``kill -9``) backup blocks sweeping for at most ``LEASE_S``.
Hosts sharing the data dir must agree on the time within ``LEASE_S`` (a heartbeat is an
mtime). The grace period on top of the holds is a margin, not the mechanism: for a hold not
yet visible to another host (a network filesystem's attribute cache), for clocks, and for a
backup made by an older release, which takes no hold (it retries instead).

Several processes: a pin is this process's own, so another process may find no row naming
an original and trash it while an ingest here has written it and not yet committed its row.
Two things undo that: the ingest looks again once its row is committed and writes the
original back if it is gone (it still holds the bytes), and every sweep puts back any trashed
original a row names (an ingest killed between its commit and that look).

Crash safety: a delete commits in SQL first and trashes after, so a ``kill -9`` in between
leaves an unreferenced original in place (as a crash between a blob write and its commit
does), never a referenced one in the trash. The rename is atomic; whatever reached the
trash is swept by the next sweep of any process after the grace period. A writer killed
between writing an original's temp file and renaming it into place leaves the temp file:
``sweep_temps`` removes those older than ``TEMP_GRACE_S``, one fan-out folder a call (a
listing of a few thousand names at a million originals), every folder once in 256 calls.
Should it take a live writer's (one stalled for longer than the grace period), that
writer's rename fails and so does its request: no row names an original that is not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from index.snapshots import can_sync_filesystem, fsync_dir, sync_filesystem, write_atomically

log = logging.getLogger(__name__)

TRASH = ".trash"  # trashed originals: <sha256>.<time trashed, ns since the epoch>
HOLDS = ".holds"  # one file per running backup: no trash is swept while one is live
TRASH_GRACE_S = 600.0  # trash younger than this is kept even when no backup runs
LEASE_S = 120.0  # a hold whose heartbeat is older than this is stale (its backup died)
# A temp file this old was left by a writer that died: a live one renames its temp files
# into place seconds after writing them (a big video's, within minutes).
TEMP_GRACE_S = 3600.0
# Originals of one batch written at once: their fsyncs overlap (the disk queues them).
PUT_THREADS = 8


def _host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Storing:
    """Originals being written (``BlobStore.storing``): their digests, in order, once
    ``wait()`` has seen every one durably on disk (it raises the write's error)."""

    digests: list[str]
    writes: Future[None]
    unused: set[str] = field(default_factory=set)  # digests no row came to name

    def wait(self) -> list[str]:
        """The digests, once the originals are on disk."""
        self.writes.result()
        return self.digests

    def failed(self) -> bool:
        """Whether writing the originals failed (once the writes are over)."""
        return self.writes.exception() is not None


class BlobStore:
    """Write-once files named by their sha256: ``blobs/ab/abcd...`` (``blobs/ab/cd/abcd...``
    for those an earlier release stored).

    Files no item refers to are trashed, then swept (see the module docstring). A file is
    *pinned* from the moment an ingest writes it until its SQL row is committed, so that
    removal never races an ingest of the same bytes (which would leave a committed row
    pointing at nothing).
    """

    def __init__(self, root: Path, *, grace_s: float | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.grace_s = TRASH_GRACE_S if grace_s is None else grace_s
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._writer: ThreadPoolExecutor | None = None  # storing()'s background writes
        # Fan-out folders known to exist (nothing removes one): a mkdir of one that exists
        # cost a fifth of a batch's writes. At most 65,536.
        self._folders: set[str] = set()
        self._root = os.fspath(root)
        # Temp files' names: this process's own random token and a count (unique among
        # its threads). A pid alone is not unique: containers sharing a data dir all run as
        # pid 1, and two writers of one temp name would write into each other's file.
        self._tmp_owner = (-1, "")
        self._tmp_names = itertools.count()
        # The fan-out folder sweep_temps lists next: from a random one, so that a process
        # restarted more often than a round takes reaches every folder in time.
        self._temps_turn = random.randrange(256)

    @contextlib.contextmanager
    def pinned(self, data: bytes) -> Iterator[str]:
        """Store bytes and keep them from removal until the block (the SQL commit) ends."""
        with self.pinned_many([data]) as (digest,):
            yield digest

    @contextlib.contextmanager
    def pinned_many(self, datas: Sequence[bytes]) -> Iterator[list[str]]:
        """``pinned`` for many originals at once: they are written in parallel (each write
        waits on its own fsyncs), and their digests come back in order."""
        with self.storing(datas) as stored:
            yield stored.wait()

    @contextlib.contextmanager
    def storing(
        self,
        datas: Sequence[bytes],
        in_use: Callable[[set[str]], set[str]] | None = None,
        digests: Sequence[str] | None = None,
    ) -> Iterator[Storing]:
        """``pinned_many`` whose writes run on a thread of the store while the block goes on
        (a batch's forward): the block calls ``wait()`` for the digests once the originals
        are needed on disk, before any row names them. Leaving the block waits for the
        writes; after a block that ended normally (its rows committed), any original another
        process trashed meanwhile is written back. With ``in_use`` (the digests SQL refers
        to), what no row came to name is trashed once the pins are gone: every original when
        the block raised, those it marked ``unused`` otherwise (items that failed alone).
        ``digests``: the datas' sha256, when the caller has them already."""
        if digests is None:
            digests = [hashlib.sha256(data).hexdigest() for data in datas]
        digests = list(digests)
        with self._lock:
            self._pins.update(digests)
            if self._writer is None:
                self._writer = ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="mmr-blobs")
            writes = self._writer.submit(self._put_all, datas, digests)
        stored = Storing(digests, writes)
        ended = False
        try:
            yield stored
            ended = True
            if writes.exception() is None:
                # Another process may have trashed a file before this row committed (its
                # pins are not ours): the row is committed now, so the file must be there.
                missing = [(d, h) for d, h in zip(datas, digests, strict=True) if not self._has(h)]
                self._put_all([d for d, _ in missing], [h for _, h in missing])
        finally:
            wait([writes])  # none left running once the block is over
            with self._lock:
                self._pins.subtract(digests)
                for digest in set(digests):
                    if not self._pins[digest]:
                        del self._pins[digest]
            unused = stored.unused if ended else set(digests)
            if unused and in_use is not None:
                with contextlib.suppress(Exception):  # a leftover file, not a lost write
                    self.remove_unused(unused, in_use)

    def _has(self, digest: str) -> bool:
        """Whether the original is stored, in its place or an earlier release's: a stat of
        each on a plain string (``Path`` objects cost as much CPU as the stat, for every
        original of a batch, twice). A stat that fails (permissions, a stale network
        handle) reads as absent: the original is written again, and that write reports it."""
        here, earlier = _spots(self._root, digest)
        return os.path.exists(here) or os.path.exists(earlier)

    def _put_all(self, datas: Sequence[bytes], digests: Sequence[str]) -> None:
        """Store many originals durably. Where the kernel can flush one file system at once
        (Linux ``syncfs``), they are written, flushed together, renamed into place and
        flushed again: two flushes for the batch instead of two fsyncs a file (64 small
        files: 26 ms of fsyncs on 8 threads). Elsewhere each is ``put`` on a thread pool."""
        pairs = zip(datas, digests, strict=True)
        missing = {digest: data for data, digest in pairs if not self._has(digest)}
        if len(missing) > 1 and can_sync_filesystem():
            self._put_synced(missing)
        elif len(missing) > 1:
            with ThreadPoolExecutor(min(PUT_THREADS, len(missing))) as pool:
                list(pool.map(self.put, missing.values()))
        else:
            for data in missing.values():
                self.put(data)

    def _put_synced(self, missing: dict[str, bytes]) -> None:
        """Plain ``os`` calls on string paths: ``pathlib`` and a buffered file object cost
        more CPU than the kernel's own work for a small original (docs/performance.md)."""
        written: list[tuple[str, str]] = []
        owner = self._tmp_token()
        try:
            for digest, data in missing.items():
                target = _spots(self._root, digest)[0]
                folder = os.path.dirname(target)
                self._make_folder(folder)
                written.append((self._write_temp(folder, digest, owner, data), target))
            sync_filesystem(self.root)  # the bytes are on disk before any name points at them
            for tmp, target in written:
                os.replace(tmp, target)
            written.clear()
            sync_filesystem(self.root)  # and the names
        finally:
            for tmp, _ in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _write_temp(self, folder: str, digest: str, owner: str, data: bytes) -> str:
        """A new temp file in ``folder`` holding ``data``: its path. Never another's file
        (a name taken: the next one), and a folder removed from outside is made again."""
        for attempt in range(3):
            tmp = f"{folder}/.{digest}.{owner}.{next(self._tmp_names):x}.tmp"
            try:
                _write_new(tmp, data)
                return tmp
            except FileExistsError:
                if attempt == 2:
                    raise
            except FileNotFoundError:
                if attempt == 2:
                    raise
                self._folders.discard(folder)
                self._make_folder(folder)
        raise AssertionError("unreachable")

    def _tmp_token(self) -> str:
        """``<pid>.<random>``, made again in a forked child (which must not share it)."""
        pid, token = self._tmp_owner
        if pid != os.getpid():
            pid, token = os.getpid(), f"{os.getpid()}.{os.urandom(4).hex()}"
            self._tmp_owner = (pid, token)
        return token

    def _make_folder(self, folder: str) -> None:
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)

    def remove_unused(self, digests: Iterable[str], in_use: Callable[[set[str]], set[str]]) -> int:
        """Trash the files of these digests that are neither pinned nor referenced in SQL."""
        candidates = set(digests)
        removed = 0
        with self._lock:
            candidates -= set(self._pins)
            for digest in candidates - in_use(candidates) if candidates else ():
                removed += self._trash(digest)
        return removed

    def _trash(self, digest: str) -> int:
        trash = self.root / TRASH
        trash.mkdir(exist_ok=True)
        try:
            os.rename(self.path(digest), trash / f"{digest}.{time.time_ns()}")
        except FileNotFoundError:
            return 0
        # One fsync makes the rename durable (both folders are in the same journal entry).
        fsync_dir(trash)
        return 1

    def sweep(
        self, *, now: float | None = None, in_use: Callable[[set[str]], set[str]] | None = None
    ) -> int:
        """Put back trashed originals that rows name again (``in_use``: the digests SQL
        refers to), then delete trash older than the grace period unless a backup is
        running; how many were deleted.

        The trash is listed *before* the holds are read: a backup that takes its hold after
        that reads SQL after these deletes committed, so it cannot need what is removed.
        """
        now = time.time() if now is None else now
        if in_use is not None:
            self._restore_named(in_use)
        due = [path for path, at in trashed(self.root) if now - at >= self.grace_s]
        if not due or backups_running(self.root, now=now):
            return 0
        removed = 0
        for path in due:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def sweep_temps(self, *, now: float | None = None, folders: int = 1) -> int:
        """Remove the temp files that writers killed mid-write left (older than
        ``TEMP_GRACE_S``) from the next ``folders`` fan-out folders, round robin; how many
        were removed. A folder or a file it cannot read or remove is passed over (the next
        round tries again). The age is the file's mtime against this host's clock: hosts
        sharing a data dir must agree on the time (module docstring), here within the
        grace period."""
        now = time.time() if now is None else now
        removed = 0
        for _ in range(folders):
            folder = f"{self._root}/{self._temps_turn:02x}"
            self._temps_turn = (self._temps_turn + 1) % 256
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        removed += _remove_if_older(entry, now - TEMP_GRACE_S)
        return removed

    def _restore_named(self, in_use: Callable[[set[str]], set[str]]) -> None:
        """Trashed originals that a row names (an ingest in another process committed it
        after the trash): back in place, or dropped when the place holds them already."""
        by_digest: dict[str, list[Path]] = {}
        for path, _ in trashed(self.root):
            by_digest.setdefault(path.name.partition(".")[0], []).append(path)
        for digest in in_use(set(by_digest)) if by_digest else ():
            place = blob_path(self.root, digest)
            for path in by_digest[digest]:
                if self._has(digest):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                place.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, place)
                    fsync_dir(place.parent)
                    log.warning("original %s was trashed while a row named it: put back", digest)

    def path(self, sha256: str) -> Path:
        """Where the bytes with this digest live (where they would be written when absent)."""
        return located(self.root, sha256)

    def put(self, data: bytes) -> str:
        """Store bytes durably (before the SQL commit that refers to them); return the digest."""
        digest = hashlib.sha256(data).hexdigest()
        if self._has(digest):
            return digest
        target = blob_path(self.root, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        write_atomically(target, tmp, (data,))
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored bytes; FileNotFoundError when absent."""
        return self.path(sha256).read_bytes()


def _remove_if_older(entry: os.DirEntry[str], than: float) -> int:
    """1 when the file was last written before ``than`` (epoch s) and is removed now."""
    try:
        if entry.stat(follow_symlinks=False).st_mtime < than:
            os.unlink(entry.path)
            return 1
    except OSError:  # gone meanwhile (renamed by its writer), or not ours to remove
        pass
    return 0


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (FileExistsError if it is there) holding ``data``, its mode as
    ``open`` gives a new file (0o666 less the umask); removed again if the write fails (a
    full disk)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def blob_path(root: Path, sha256: str) -> Path:
    """Where an original is written under a blob root (a backup's ``blobs/`` has the same
    layout): one folder of 256 deep, ``ab/<sha256>``. Two levels (``ab/cd/<sha256>``, up to
    v1.0) made a folder for nearly every one of the first 65,536 originals, which cost as
    much CPU as writing the file (docs/performance.md, bulk writes); a folder of a few
    thousand names (a million originals) or tens of thousands (ten million) is a hashed
    directory's everyday size on ext4 and XFS."""
    return Path(_spots(os.fspath(root), sha256)[0])


def places(root: Path, sha256: str) -> tuple[Path, Path]:
    """Where an original may be under a blob root: its place, then where a release before
    v1.1 put it (``ab/cd/<sha256>``; a data dir or a backup upgraded in place keeps those)."""
    here, earlier = _spots(os.fspath(root), sha256)
    return Path(here), Path(earlier)


def _spots(root: str, sha256: str) -> tuple[str, str]:
    """``places`` as strings: the layout's one spelling, which the batch writes use as it
    is (a ``Path`` a lookup cost as much CPU as the stat it was for)."""
    return f"{root}/{sha256[:2]}/{sha256}", f"{root}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def located(root: Path, sha256: str) -> Path:
    """Where an original is under a blob root: the first of its ``places`` that holds it,
    else its place (where it would be written)."""
    here, earlier = places(root, sha256)
    return earlier if not here.exists() and earlier.exists() else here


def trashed(root: Path) -> Iterator[tuple[Path, float]]:
    """Every trashed original under the blob root, with when it was trashed (epoch s)."""
    trash = root / TRASH
    if not trash.is_dir():
        return
    for path in trash.iterdir():
        _, _, stamp = path.name.partition(".")
        if stamp.isdigit():
            yield path, int(stamp) / 1e9


def find(root: Path, sha256: str) -> list[Path]:
    """Where an original may be: its ``places`` in the store, then its trashed copies (a
    delete committed after a backup's snapshot moved it there)."""
    live = list(places(root, sha256))
    trash = root / TRASH
    return [*live, *sorted(trash.glob(f"{sha256}.*"))] if trash.is_dir() else live


# -- holds: running backups ----------------------------------------------------------------


@contextlib.contextmanager
def holding_trash(root: Path, *, lease_s: float = LEASE_S) -> Iterator[Path]:
    """Keep every sweep (of any process sharing the data dir) from removing trash while the
    block runs; take it before the backup's read transaction begins."""
    holds = root / HOLDS
    holds.mkdir(parents=True, exist_ok=True)
    path = holds / f"{_host()}.{os.getpid()}.{os.urandom(4).hex()}"
    body = json.dumps({"host": _host(), "pid": os.getpid(), "started": time.time()})

    def write() -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        write_atomically(path, tmp, (body.encode(),))

    write()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 4):
            try:
                os.utime(path)
            except FileNotFoundError:  # swept as stale (the process was suspended): again
                write()

    heartbeat = threading.Thread(target=renew, name="mmr-backup-hold", daemon=True)
    heartbeat.start()
    try:
        yield path
    finally:
        stop.set()
        heartbeat.join()
        path.unlink(missing_ok=True)


def backups_running(root: Path, *, now: float | None = None, lease_s: float = LEASE_S) -> bool:
    """Whether a live hold exists; stale ones (heartbeat past the lease, or a process of
    this host that is gone) are removed on the way."""
    holds = root / HOLDS
    if not holds.is_dir():
        return False
    now = time.time() if now is None else now
    live = False
    for path in holds.iterdir():
        if path.name.startswith("."):
            continue  # a hold being written
        try:
            renewed = path.stat().st_mtime
            owner = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            owner = {}
        if now - renewed > lease_s or _dead(owner):
            path.unlink(missing_ok=True)
        else:
            live = True
    return live


def _dead(owner: object) -> bool:
    """Whether a hold's process is known gone: only a process of this host can be checked."""
    if not isinstance(owner, dict) or owner.get("host") != _host():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
