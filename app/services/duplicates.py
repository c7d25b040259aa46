"""Duplicates: pairs of stored items at least a threshold alike, best first, in pages.

What is compared: items of one modality, each as one unit vector (its own; a recording of
several segments, long audio or video, the mean of its segments at unit length). Items of
one vector pair with each other; recordings of several segments pair only with such
recordings whose durations agree (DURATION_TOLERANCE): a whole clip is compared with a
whole clip, never with an image or one segment.

How: a collection of at most ``MMR_DUPLICATES_EXACT_MAX`` items is compared exactly, all
pairs in blocks (index.pairs.all_pairs); a larger one through its index, each item with
its NEIGHBOURS nearest, the index's scores (approximate where the index is). The work is
bounded: the exact path by that size, the index path by the exact path's largest work
(MAX_WORK), refused (422) past it, and both by a deadline checked between blocks of work
(422 past it); one computation runs per process at a time, and its
result is kept for the collection's state (its change-log head), so the pages of one
listing cost one computation.

Past those bounds a ``duplicates`` job (app.services.duplicates_job) computes the listing
exactly in the background and stores it (index.listings); a request for a collection over
the exact bound then pages the newest stored listing that covers its threshold and
modality, saying which and whether the collection changed since. Refused without one, the
422 names the job to post.

Pages: a ``b`` is stored after its ``a``; pairs come by score, then ``a``, then ``b``, and
a cursor is the last pair given (score and keys): the next page continues after it in the
collection as it is then, so a pair is never given twice, and none is skipped but those
whose items changed meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from app.schemas.duplicates import DuplicatePage, DuplicatePair, StoredListing
from app.services.errors import InvalidInput, Malformed, QueueFull
from index.builds import current_vectors
from index.collections import CollectionStore
from index.items import ItemStore, StoredVectors
from index.listings import ListingInfo, ListingStore
from index.manager import IndexManager
from index.pairs import Pairs, all_pairs, candidate_pairs, ordered
from index.tables import CollectionRow
from index.vector_index import VectorIndex
from models.encoders.aligner import Aligner, l2_normalize

MAX_PAIRS = 100_000  # pairs one listing holds (the best): 2 MB
NEIGHBOURS = 16  # index path: nearest items asked of each item
# Index path: comparisons, in the exact path's largest work (exact_max^2 / 2). One through
# an index costs about four exact ones (bench/results/amd-epyc/duplicates: hnsw vs blocked
# numpy), so no listing through the index costs more than the largest exact one.
MAX_WORK = 0.25
DURATION_TOLERANCE = 0.1  # recordings pair when the shorter is within 10 % of the longer
CACHED = 8  # listings kept per process (collection state x threshold x modality)
CHUNK = 1024  # items read from SQL, and searched in the index, at a time


@dataclass
class _Group:
    """Items of one modality and kind (single vector, or recording) in ascending key order."""

    pks: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)

    def matrix(self, dim: int) -> np.ndarray:
        if not self.vectors:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack(self.vectors).astype(np.float32)


@dataclass
class DuplicateFinder:
    """The listings computed lately (per collection state) and the one-at-a-time gate."""

    gate: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: OrderedDict[tuple[object, ...], Pairs] = field(default_factory=OrderedDict)

    def cached(self, key: tuple[object, ...]) -> Pairs | None:
        with self.lock:
            found = self.cache.get(key)
            if found is not None:
                self.cache.move_to_end(key)
            return found

    def keep(self, key: tuple[object, ...], pairs: Pairs) -> None:
        with self.lock:
            self.cache[key] = pairs
            while len(self.cache) > CACHED:
                self.cache.popitem(last=False)


class TooLarge(InvalidInput):
    """A listing refused for its size or time (a job can compute it: see duplicates_job)."""


@dataclass(frozen=True)
class Listing:
    """What a duplicates request asks for."""

    threshold: float
    limit: int
    cursor: str | None = None
    modality: str | None = None


def duplicates(
    *,
    finder: DuplicateFinder,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    listings: ListingStore,
    exact_max: int,
    deadline_s: float,
    name: str,
    listing: Listing,
) -> DuplicatePage:
    """A page of the collection's pairs at least ``threshold`` alike, best first: computed
    now, or, for a collection too large for that, from the newest listing a job stored."""
    row = collections.get(name)
    after = decode_cursor(listing.cursor) if listing.cursor else None
    live = indexes.get(row)
    space = live.space
    # The change-log head before reading: a write meanwhile makes the next request's key
    # differ, so a listing is never kept for a state it does not reflect. Through the index,
    # the index's own position too: one computed while it lagged SQL is not kept past it.
    head = indexes.changes.last_seq(row.id)
    count = _count(items, row, space.index, listing.modality)
    stored = _Stored(finder, items, listings, row, head, listing)
    if count > exact_max and (page := stored.page(after)) is not None:
        return page
    followed = live.applied if count > exact_max else 0
    threshold = float(np.float32(listing.threshold))
    key: tuple[object, ...] = (row.id, space.epoch, space.aligner.version, head, followed)
    key += (exact_max, threshold, listing.modality)
    try:
        pairs = _computed(
            finder,
            key,
            row,
            lambda check: _compute(
                items, row, space.aligner, space.index, count, exact_max, listing, check
            ),
            deadline_s,
        )
    except TooLarge as exc:
        # A deadline met by a small collection: a job's listing answers it too.
        if (page := stored.page(after)) is not None:
            return page
        raise TooLarge(f"{exc}; or {job_to_post(row.name, listing)}") from exc
    if pairs.truncated:  # a last page of a cut listing would look complete
        raise InvalidInput(
            f"more than {MAX_PAIRS} pairs in collection {row.name!r} are at least "
            f"{listing.threshold} alike, more than one listing holds: raise the threshold "
            "(duplicates score above the default, 0.98), or ask for one modality"
        )
    return _page(items, row, pairs, after, listing.limit)


def job_to_post(name: str, listing: Listing) -> str:
    """What a client posts to have a listing computed in the background."""
    body: dict[str, object] = {"type": "duplicates", "collection": name}
    body["threshold"] = listing.threshold
    if listing.modality is not None:
        body["modality"] = listing.modality
    return (
        f"list them in the background: POST /v1/jobs {json.dumps(body)}, then ask again "
        "once GET /v1/jobs/{id} says succeeded (pages then come from its stored listing)"
    )


def _computed(
    finder: DuplicateFinder,
    key: tuple[object, ...],
    row: CollectionRow,
    compute: Callable[[Callable[[], None]], Pairs],
    deadline_s: float,
) -> Pairs:
    """The listing kept for ``key``, or computed now within the deadline and kept."""
    pairs = finder.cached(key)
    if pairs is not None:
        return pairs
    # Never wait for the gate: a waiting request holds a thread of the server's pool
    # (the route is sync), and enough of them would stall every other sync route.
    if not finder.gate.acquire(blocking=False):
        raise QueueFull(
            "another duplicates listing is being computed on this server; retry shortly "
            "(pages of a listing already computed are answered at once)"
        )
    try:
        pairs = finder.cached(key)
        if pairs is None:
            clock = _Deadline(row.name, deadline_s, time.monotonic() + deadline_s)
            pairs = compute(clock.check)
            finder.keep(key, pairs)
        return pairs
    finally:
        finder.gate.release()


def _count(items: ItemStore, row: CollectionRow, index: VectorIndex, modality: str | None) -> int:
    """Vectors a listing compares: the index's, or those of items of one modality."""
    if modality is None:
        return index.size
    return len(items.matching_pks(collection_id=row.id, modalities=[modality], filters=None))


@dataclass(frozen=True)
class _Stored:
    """Pages from the newest listing a duplicates job stored that covers a request."""

    finder: DuplicateFinder
    items: ItemStore
    listings: ListingStore
    row: CollectionRow
    head: int
    listing: Listing

    def page(self, after: tuple[float, int, int] | None) -> DuplicatePage | None:
        threshold = float(np.float32(self.listing.threshold))
        modality = self.listing.modality
        info = self.listings.newest(
            collection_id=self.row.id, modality=modality, threshold=threshold
        )
        if info is None:
            return None
        # Kept per collection state: items deleted since (or of another modality) are left
        # out before paging, so pages stay full.
        key: tuple[object, ...] = ("stored", info.job_id, self.head, threshold, modality)
        pairs = self.finder.cached(key)
        if pairs is None:
            raw = self.listings.pairs(info.job_id)
            if raw is None:  # replaced by a newer listing just now
                return None
            pairs = self._current(Pairs.from_bytes(raw), threshold, modality)
            self.finder.keep(key, pairs)
        page = _page(self.items, self.row, pairs, after, self.listing.limit)
        page.stored = StoredListing(
            job_id=info.job_id,
            computed_at=info.computed_at,
            threshold=float(str(np.float32(info.threshold))),  # 0.98, not 0.98000001
            modality=info.modality,
            change_seq=info.change_seq,
            stale=_stale(info, self.row, self.head),
        )
        return page

    def _current(self, pairs: Pairs, threshold: float, modality: str | None) -> Pairs:
        live = self.items.matching_pks(
            collection_id=self.row.id,
            modalities=None if modality is None else [modality],
            filters=None,
        )
        keep = (pairs.scores >= np.float32(threshold)) & np.isin(pairs.left, live)
        return pairs.where(keep & np.isin(pairs.right, live))


def _stale(info: ListingInfo, row: CollectionRow, head: int) -> bool:
    """Whether the collection changed since the listing: items written or deleted, or its
    vectors made by another model or aligner version."""
    return (
        info.change_seq != head
        or info.model != row.model
        or info.aligner_version != row.aligner_version
    )


@dataclass(frozen=True)
class _Deadline:
    """When a listing must stop; checked between blocks of its work."""

    name: str
    seconds: float
    ends: float

    def check(self) -> None:
        if time.monotonic() > self.ends:
            raise TooLarge(
                f"listing the duplicates of collection {self.name!r} took more than "
                f"{self.seconds:g} s, the most this server gives one listing: ask for one "
                "modality (modality=image) if it holds several, or ask the operator to raise "
                "MMR_DUPLICATES_DEADLINE_S"
            )


def _compute(
    items: ItemStore,
    row: CollectionRow,
    aligner: Aligner,
    index: VectorIndex,
    count: int,
    exact_max: int,
    listing: Listing,
    check: Callable[[], None],
) -> Pairs:
    exact_work = max(exact_max, 1) ** 2 / 2
    if count <= exact_max:
        return exact(items, row, aligner, listing.threshold, listing.modality, check)
    work = count * index.scan_size(NEIGHBOURS + 1)
    budget = MAX_WORK * exact_work
    if work > budget:
        flat = ", or reindex it as hnsw or ivf" if index.spec.type == "flat" else ""
        raise TooLarge(
            f"collection {row.name!r} holds {count} vectors to compare in a "
            f"{index.spec.type} index: listing their duplicates would take about {work:.2g} "
            f"comparisons, more than this server gives one listing ({budget:.2g}): ask for "
            f"one modality (modality=image) if it holds several{flat}"
        )
    return _through_index(items, row, aligner, index, budget, listing, check)


def _stored(
    items: ItemStore,
    row: CollectionRow,
    aligner: Aligner,
    modality: str | None,
    check: Callable[[], None],
) -> Iterator[tuple[list[StoredVectors], list[np.ndarray]]]:
    """The collection's items in key order, a chunk at a time, with their current vectors
    (raw features read only for rows another aligner version made)."""
    stored = items.iter_stored(
        collection_id=row.id, modality=modality, chunk=CHUNK, features_unless=aligner.version
    )
    for chunk in stored:
        check()
        yield chunk, [current_vectors(s, aligner, row.dim) for s in chunk]


def _whole(vectors: np.ndarray) -> np.ndarray:
    """A recording as one unit vector: the mean of its segments."""
    mean = vectors.astype(np.float64).mean(axis=0, keepdims=True)
    return l2_normalize(mean.astype(np.float32))[0]


PairsOf = Callable[[np.ndarray, float], Pairs]


def exact(
    items: ItemStore,
    row: CollectionRow,
    aligner: Aligner,
    threshold: float,
    modality: str | None,
    check: Callable[[], None],
    pairs_of: PairsOf | None = None,
) -> Pairs:
    """Every pair of the collection's items (of ``modality``, or all) at least ``threshold``
    alike, the best MAX_PAIRS: single vectors by ``pairs_of`` (all_pairs by default),
    recordings as wholes of durations that agree. ``check`` is called between chunks of
    items read and blocks of work."""
    if pairs_of is None:

        def pairs_of(matrix: np.ndarray, floor: float) -> Pairs:
            return all_pairs(matrix, floor, cap=MAX_PAIRS, between=check)

    singles: dict[str, _Group] = defaultdict(_Group)
    clips: dict[str, _Group] = defaultdict(_Group)
    for chunk, vectors in _stored(items, row, aligner, modality, check):
        for stored, matrix in zip(chunk, vectors, strict=True):
            group = singles if len(matrix) == 1 else clips
            group[stored.modality].pks.append(stored.pk)
            group[stored.modality].vectors.append(matrix[0] if len(matrix) == 1 else _whole(matrix))
    found = [
        pairs_of(g.matrix(row.dim), threshold).keyed(np.array(g.pks, dtype=np.int64))
        for g in singles.values()
    ]
    found += [_clip_pairs(items, row, g, threshold, check) for g in clips.values()]
    return _merged(found)


def _clip_pairs(
    items: ItemStore, row: CollectionRow, group: _Group, threshold: float, check: Callable[[], None]
) -> Pairs:
    """Recordings' pairs: alike as wholes, and of durations that agree."""
    keys = np.array(group.pks, dtype=np.int64)
    pairs = all_pairs(group.matrix(row.dim), threshold, cap=MAX_PAIRS, between=check)
    pairs = pairs.keyed(keys)
    if not len(pairs):
        return pairs
    durations = _durations(items, row, group.pks)
    short = np.minimum(_at(durations, pairs.left), _at(durations, pairs.right))
    long = np.maximum(_at(durations, pairs.left), _at(durations, pairs.right))
    agree = short >= (1.0 - DURATION_TOLERANCE) * long
    return pairs.where(agree)


def _durations(items: ItemStore, row: CollectionRow, pks: list[int]) -> dict[int, float]:
    """Seconds of each recording: the end of its last segment."""
    out: dict[int, float] = {}
    for start in range(0, len(pks), CHUNK):
        found = items.summaries(collection_id=row.id, pks=pks[start : start + CHUNK])
        for pk, summary in found.items():
            spans = summary.spans or [[0.0, 0.0]]
            out[pk] = float(max(end for _, end in spans))
    return out


def _at(durations: dict[int, float], keys: np.ndarray) -> np.ndarray:
    return np.array([durations.get(int(k), 0.0) for k in keys], dtype=np.float64)


def _through_index(
    items: ItemStore,
    row: CollectionRow,
    aligner: Aligner,
    index: VectorIndex,
    budget: float,
    listing: Listing,
    check: Callable[[], None],
) -> Pairs:
    """Each single-vector item's nearest items in the index; recordings exactly, as wholes."""
    clips: dict[str, _Group] = defaultdict(_Group)
    allowed: dict[str, np.ndarray] = {}
    hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    found = Pairs.empty()
    for chunk, vectors in _stored(items, row, aligner, listing.modality, check):
        queries: dict[str, _Group] = defaultdict(_Group)
        for stored, matrix in zip(chunk, vectors, strict=True):
            if len(matrix) > 1:
                clips[stored.modality].pks.append(stored.pk)
                clips[stored.modality].vectors.append(_whole(matrix))
            else:
                queries[stored.modality].pks.append(stored.pk)
                queries[stored.modality].vectors.append(matrix[0])
        for modality, group in queries.items():
            if modality not in allowed:
                allowed[modality] = items.matching_pks(
                    collection_id=row.id, modalities=[modality], filters=None
                )
            # One modality only: a filter, unless it is all of them (a graph walk through
            # a filter costs more than one without).
            only = allowed[modality] if len(allowed[modality]) < index.size else None
            keys, scores = index.search_many(group.matrix(row.dim), NEIGHBOURS + 1, only)
            own = np.repeat(np.array(group.pks, dtype=np.int64), keys.shape[1])
            hits.append((own, keys.ravel(), scores.ravel()))
            held += keys.size
            check()
        if held > 4 * MAX_PAIRS:  # fold what is held into the best pairs so far
            found = _fold(found, hits, listing.threshold)
            hits, held = [], 0
    found = _fold(found, hits, listing.threshold)
    recordings = {pk for g in clips.values() for pk in g.pks}
    if sum(len(g.pks) ** 2 // 2 for g in clips.values()) > budget:
        raise TooLarge(
            f"collection {row.name!r} holds too many recordings of several segments to "
            "compare them all as whole clips on this server; ask for another modality "
            "(modality=image), or ask the operator to raise MMR_DUPLICATES_EXACT_MAX"
        )
    if recordings:  # a single vector's hit on a segment of a recording is not a pair
        mixed = np.isin(found.left, list(recordings)) | np.isin(found.right, list(recordings))
        found = found.where(~mixed)
    return _merged(
        [found] + [_clip_pairs(items, row, g, listing.threshold, check) for g in clips.values()]
    )


def _fold(
    found: Pairs, hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]], threshold: float
) -> Pairs:
    parts = [(found.left, found.right, found.scores), *hits]
    left, right, scores = (np.concatenate(p) for p in zip(*parts, strict=True))
    real = right >= 0
    return candidate_pairs(
        left[real], right[real], scores[real], threshold, cap=MAX_PAIRS, truncated=found.truncated
    )


def _merged(parts: list[Pairs]) -> Pairs:
    """Pairs of several groups in one order (the best MAX_PAIRS)."""
    if not parts:
        return Pairs.empty()
    left, right, scores = (
        np.concatenate(p) for p in zip(*[(p.left, p.right, p.scores) for p in parts], strict=True)
    )
    return ordered(left, right, scores, MAX_PAIRS, truncated=any(p.truncated for p in parts))


def _page(
    items: ItemStore,
    row: CollectionRow,
    pairs: Pairs,
    after: tuple[float, int, int] | None,
    limit: int,
) -> DuplicatePage:
    start = pairs.after(*after) if after else 0
    stop = min(len(pairs), start + limit)
    keys = {int(k) for k in pairs.left[start:stop]} | {int(k) for k in pairs.right[start:stop]}
    found = items.summaries(collection_id=row.id, pks=sorted(keys))
    page = []
    for i in range(start, stop):
        a, b = int(pairs.left[i]), int(pairs.right[i])
        if a in found and b in found:  # one deleted since the listing was computed
            page.append(
                DuplicatePair(
                    a=found[a].external_id, b=found[b].external_id, score=float(pairs.scores[i])
                )
            )
    if stop >= len(pairs):
        return DuplicatePage(pairs=page, next_cursor=None)
    last = (float(pairs.scores[stop - 1]), int(pairs.left[stop - 1]), int(pairs.right[stop - 1]))
    return DuplicatePage(pairs=page, next_cursor=encode_cursor(*last))


def encode_cursor(score: float, a: int, b: int) -> str:
    """An opaque cursor: the last pair given."""
    raw = json.dumps({"s": score, "a": a, "b": b}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int, int]:
    """The inverse of encode_cursor; 400 on anything else."""
    bad = "the cursor is not valid: pass next_cursor back unchanged, or leave it out"
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        score, a, b = raw["s"], raw["a"], raw["b"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Malformed(bad) from exc
    numbers = isinstance(score, float | int) and not isinstance(score, bool)
    keys = all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 2**63 for k in (a, b))
    if not (numbers and keys and -2.0 <= score <= 2.0):
        raise Malformed(bad)
    return float(score), a, b
