"""Send what ``files.walk`` finds to a server's batch route: batches by kind, a few in
flight at once, retried on 429 (after ``Retry-After``), 5xx and lost connections with
backoff; files already stored under the same id and sha256 skipped before any upload."""

from __future__ import annotations

import csv
import json
import mimetypes
import random
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from app.ingest.files import Found, IngestError, Loaded, load, read_manifest, walk
from app.ingest.progress import Progress
from app.ingest.tally import Failure, Tally

PAGE = 1000  # items per listing page (the API's most)
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # and every other 5xx


@dataclass(frozen=True)
class Options:
    """How ``mmr ingest`` runs (its flags)."""

    server: str
    collection: str
    api_key: str | None = None
    create: bool = False
    batch: int = 32  # items per request
    batch_mb: float = 32.0  # bytes per request, at most (one larger file goes alone)
    concurrency: int = 2  # requests in flight: one is encoded while the next is sent
    retries: int = 8
    manifest: Path | None = None
    failures: Path = Path("mmr-ingest-failures.csv")
    timeout_s: float = 300.0
    engine: str = "local"  # "ray": images decoded and encoded on a Ray cluster
    ray_address: str | None = None  # ray.init's address; a local cluster when None
    cache_dir: Path = Path("data/models")  # where Ray actors keep model files


def ingest(
    paths: list[Path], opts: Options, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr
) -> int:
    """Send every file; the summary line on ``out``, progress on ``err``. 0 when every file
    was stored or skipped, 1 when some failed (listed in ``opts.failures``)."""
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    with httpx.Client(base_url=opts.server, headers=headers, timeout=opts.timeout_s) as client:
        if opts.create:
            _create(client, opts.collection)
        stored = _stored(client, opts)
        manifest = (
            read_manifest(opts.manifest, opts.manifest.parent) if opts.manifest is not None else {}
        )
        found = list(walk(paths))
        tally = Tally()
        progress = Progress(len(found), sum(f.size for f in found), tally, err)
        with progress:
            if opts.engine == "ray":
                _send_with_ray(client, opts, found, stored, manifest, tally, err)
            else:
                _send_all(client, opts, found, stored, manifest, tally)
    print(tally.summary(), file=out)
    if tally.failures:
        _write_failures(opts.failures, tally.failures)
        print(f"failures: {opts.failures}", file=out)
        return 1
    return 0


def _create(client: httpx.Client, name: str) -> None:
    reply = _call(client, "POST", "/v1/collections", json={"name": name})
    if reply.status_code not in (201, 409):  # 409: there already
        raise _refused(reply, f"creating collection {name!r}", "--create needs an admin key")


def _stored(client: httpx.Client, opts: Options) -> dict[str, str]:
    """The collection's items now: sha256 by id (the listing, page by page)."""
    stored: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})
        reply = _call(client, "GET", f"/v1/collections/{opts.collection}/items", params=params)
        if reply.status_code == 404:
            raise IngestError(
                f"no collection {opts.collection!r} on {opts.server}: create it, or pass --create"
            )
        if reply.status_code != 200:
            raise _refused(reply, f"listing {opts.collection!r}", "ingesting needs a write key")
        page = reply.json()
        stored.update((item["id"], item["sha256"]) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return stored


def _call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request, retried while the server is busy or away (a few times, then raise)."""
    for attempt in range(6):
        try:
            reply = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if attempt == 5:
                raise IngestError(f"no answer from {client.base_url}: {exc}") from exc
            time.sleep(_backoff(attempt))
            continue
        if (reply.status_code < 500 and reply.status_code != 429) or attempt == 5:
            return reply
        time.sleep(_wait(reply, attempt))
    raise AssertionError("unreachable")


def _send_all(
    client: httpx.Client,
    opts: Options,
    found: list[Found],
    stored: dict[str, str],
    manifest: dict[Path, dict[str, Any]],
    tally: Tally,
    *,
    features: dict[Path, list[float]] | None = None,
    space: dict[str, Any] | None = None,
) -> None:
    slots = threading.BoundedSemaphore(2 * opts.concurrency)  # batches read ahead, at most
    with ThreadPoolExecutor(opts.concurrency) as pool:
        sent: list[Future[None]] = []
        for batch in _batches(opts, found, stored, manifest, tally, features or {}, space):
            slots.acquire()
            future = pool.submit(_send, client, opts, batch, tally)
            future.add_done_callback(lambda _: slots.release())
            sent.append(future)
        for future in sent:
            future.result()


def _send_with_ray(
    client: httpx.Client,
    opts: Options,
    found: list[Found],
    stored: dict[str, str],
    manifest: dict[Path, dict[str, Any]],
    tally: Tally,
    err: IO[str],
) -> None:
    """The images not stored yet encoded on the cluster, a pass of ``RAY_CHUNK`` at a time,
    then sent with their features; everything else as ``_send_all`` sends it."""
    from app.ingest import ray_engine

    reply = _call(client, "GET", f"/v1/collections/{opts.collection}")
    if reply.status_code != 200:
        raise _refused(reply, f"reading {opts.collection!r}", "a read key at least")
    model = reply.json()["model"]
    pictures = {f.path for f in ray_engine.images(found)}
    for start in range(0, len(found), ray_engine.RAY_CHUNK):
        chunk = found[start : start + ray_engine.RAY_CHUNK]
        todo = [
            f.path
            for f in chunk
            if f.path in pictures and stored.get(f.item_id) != ray_engine.sha256_of(f.path)
        ]
        features, space = ray_engine.encode(
            todo, model=model, address=opts.ray_address, batch=opts.batch, cache_dir=opts.cache_dir
        )
        err.write(f"ray: {len(features)} of {len(todo)} images encoded on the cluster\n")
        _send_all(client, opts, chunk, stored, manifest, tally, features=features, space=space)


def _batches(
    opts: Options,
    found: list[Found],
    stored: dict[str, str],
    manifest: dict[Path, dict[str, Any]],
    tally: Tally,
    features: dict[Path, list[float]],
    space: dict[str, Any] | None,
) -> Iterator[list[Loaded]]:
    """Files read and grouped by kind; those stored already (same id and sha256) and those
    that cannot be read are counted here and not sent."""
    open_batches: dict[str, list[Loaded]] = {"file": [], "text": []}
    limit = int(opts.batch_mb * 1024 * 1024)
    for f in found:
        try:
            loaded = load(f, manifest)
        except (OSError, ValueError) as exc:
            tally.done(f, Failure(f.path, 0, "unreadable", str(exc)))
            continue
        if stored.get(f.item_id) == loaded.sha256:
            with tally.lock:
                tally.skipped += 1
            tally.done(f)
            continue
        loaded.feature = features.get(f.path)
        loaded.space = space if loaded.feature is not None else None
        batch = open_batches[f.kind]
        if batch and (
            len(batch) >= opts.batch or sum(len(b.data) for b in batch) + len(loaded.data) > limit
        ):
            yield batch
            batch = open_batches[f.kind] = []
        batch.append(loaded)
    yield from (batch for batch in open_batches.values() if batch)


def _send(client: httpx.Client, opts: Options, batch: list[Loaded], tally: Tally) -> None:
    """One batch until every item is stored or has failed; 429/5xx answers and lost
    connections retried with backoff, items answered 429 or 503 inside a batch likewise."""
    todo = batch
    last = (0, "no_answer", "no answer")
    wait = 0.0
    for attempt in range(opts.retries + 1):
        if attempt:
            time.sleep(wait)
        try:
            reply = _post(client, opts.collection, todo)
        except httpx.TransportError as exc:
            last, wait = (0, "no_answer", f"no answer: {exc}"), _backoff(attempt)
            continue
        if reply.status_code == 429 or reply.status_code >= 500:
            last, wait = _error(reply), _wait(reply, attempt)
            continue
        if reply.status_code in (413, 422) and len(todo) > 1:
            # Refused as a whole (too large, or more items than the server's
            # MMR_MAX_BATCH_ITEMS): each half alone, down to single files if need be.
            half = len(todo) // 2
            _send(client, opts, todo[:half], tally)
            _send(client, opts, todo[half:], tally)
            return
        if reply.status_code != 200:
            for loaded in todo:
                tally.done(loaded.found, Failure(loaded.found.path, *_error(reply)))
            return
        again = []
        for loaded, result in zip(todo, reply.json()["results"], strict=True):
            status = int(result["status"])
            if status in (200, 201):
                with tally.lock:
                    tally.ingested += 1
                tally.done(loaded.found)
            elif status in (429, 503):
                again.append(loaded)
                last = (status, result["error"]["code"], result["error"]["message"])
            else:
                error = result["error"]
                failure = Failure(loaded.found.path, status, error["code"], error["message"])
                tally.done(loaded.found, failure)
        todo, wait = again, _backoff(attempt)
        if not todo:
            return
    for loaded in todo:
        tally.done(loaded.found, Failure(loaded.found.path, *last))


def _post(client: httpx.Client, collection: str, batch: list[Loaded]) -> httpx.Response:
    url = f"/v1/collections/{collection}/items/batch"
    if batch[0].found.kind == "text":
        entries = [
            {"id": b.found.item_id, "text": b.data.decode("utf-8"), "metadata": b.metadata}
            for b in batch
        ]
        return client.post(url, json=entries)
    files = [
        ("file", (b.found.path.name, b.data, mimetypes.guess_type(b.found.path.name)[0]))
        for b in batch
    ]
    form = {
        "id": [b.found.item_id for b in batch],
        "metadata": json.dumps([b.metadata for b in batch]),
    }
    spaces = [b.space for b in batch if b.feature is not None]
    if spaces:  # encoded on the cluster: the server checks the space and takes them
        form["features"] = json.dumps([b.feature for b in batch])
        form["space"] = json.dumps(spaces[0])
    return client.post(url, files=files, data=form)


def _error(reply: httpx.Response) -> tuple[int, str, str]:
    try:
        error = reply.json()["error"]
        return reply.status_code, str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return reply.status_code, "http_error", reply.text[:200]


def _refused(reply: httpx.Response, doing: str, scope: str) -> IngestError:
    """What to tell the user when the server refuses before anything is sent."""
    if reply.status_code == 401:
        return IngestError(
            f"{doing}: the server asks for an API key: pass --api-key or set MMR_API_KEY"
        )
    if reply.status_code == 403:
        return IngestError(f"{doing}: this key may not do that ({scope})")
    return IngestError(f"{doing}: {_said(reply)}")


def _said(reply: httpx.Response) -> str:
    status, code, message = _error(reply)
    return f"{status} {code}: {message}"


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)


def _wait(reply: httpx.Response, attempt: int) -> float:
    """Retry-After when the server names it (seconds), else backoff."""
    try:
        return min(60.0, max(0.0, float(reply.headers["retry-after"])))
    except (KeyError, ValueError):
        return _backoff(attempt)


def _write_failures(path: Path, failures: list[Failure]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "status", "code", "message"])
        for failure in failures:
            writer.writerow([failure.path, failure.status, failure.code, failure.message])
