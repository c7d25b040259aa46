"""Items: prepare (validate + decode), embed in batches, write SQL + index together."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from app.ids import check_key
from app.schemas.common import MAX_TEXT_CHARS
from app.schemas.items import ItemPage, ItemPublic
from app.services.collections import require_space
from app.services.embedding import Embedder, Encoded, all_vectors, as_stored, kept_vectors
from app.services.errors import InvalidInput, Malformed, MalformedJson, SpaceMismatch, TooLarge
from app.services.media import decode_upload
from app.services.pool import ModelPool, in_space
from app.services.views import item_public
from app.settings import Settings
from index.blobs import BlobStore, Storing
from index.collections import CollectionStore
from index.columns import storable
from index.errors import NotFoundError, SpaceChangedError
from index.faults import is_fault
from index.items import ItemDraft, ItemStore
from index.manager import IndexManager, LiveIndex
from index.tables import CollectionRow
from models.encoders.aligner import Aligner
from models.errors import UnsupportedMediaError
from models.media.budget import RequestBudget
from models.media.image import IMAGE_PREPROCESS, sniff_image

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32  # the object itself is level 1
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


@dataclass
class PendingItem:
    """A validated, decoded item waiting for its embedding."""

    external_id: str | None
    modality: str
    content_type: str
    data: bytes
    text: str | None = None
    payload: Any = None  # what the encoder takes: the text, an RGB image or a mono wave
    metadata: dict[str, Any] = field(default_factory=dict)
    encoded: Encoded | None = None  # features computed elsewhere (feature_space): not encoded

    @functools.cached_property
    def sha256(self) -> str:
        """The digest of the original (its name in the blob store, for a file)."""
        return hashlib.sha256(self.data).hexdigest()


def feature_space(embedder: Embedder) -> dict[str, Any]:
    """The space of the image features this server computes: what features sent with a
    batch must name (``space``) to be taken instead of decoding and encoding here."""
    return {
        "model": embedder.encoder_ids.get("image"),
        "dim": embedder.dim,
        "preprocess": IMAGE_PREPROCESS,
    }


def check_space(embedder: Embedder, space: Any) -> None:
    """Refuse (409) features of another space than this server's: another model, width or
    preprocessing (a misconfigured cluster must not poison a collection)."""
    ours = feature_space(embedder)
    if (
        not isinstance(space, dict)
        or set(space) != set(ours)
        or not isinstance(space["model"], (str, type(None)))
        or not isinstance(space["dim"], int)
        or isinstance(space["dim"], bool)
        or not isinstance(space["preprocess"], str)
    ):
        raise InvalidInput(
            'space must be a JSON object {"model": string or null, "dim": integer, '
            '"preprocess": string}'
        )
    if space != ours:
        raise SpaceMismatch(
            f"the features were computed in the space {json.dumps(space, sort_keys=True)}, "
            f"but this server computes {json.dumps(ours, sort_keys=True)}: run the encoding "
            "with the server's model (MMR_MODEL) and this release's preprocessing"
        )


def prepare_encoded_file(
    *,
    settings: Settings,
    embedder: Embedder,
    data: bytes,
    feature: Any,
    external_id: str | None,
    metadata: dict[str, Any],
) -> PendingItem:
    """An image item whose features came with it (``check_space`` passed): the bytes are
    checked to be an image, not decoded."""
    if len(data) > settings.max_upload_bytes:
        raise TooLarge(
            f"the file is over the {settings.max_upload_mb:g} MB limit (MMR_MAX_UPLOAD_MB)"
        )
    mime = sniff_image(data)
    if mime is None:
        raise UnsupportedMediaError("features are taken with images only: send this file alone")
    raw = _feature(feature, embedder.dim)
    return PendingItem(
        external_id=external_id,
        modality="image",
        content_type=mime,
        data=data,
        metadata=check_metadata(metadata),
        encoded=Encoded("image", raw.reshape(1, -1)),
    )


def is_number(value: Any) -> bool:
    """A JSON number (true and false are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _feature(value: Any, dim: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != dim or not all(map(is_number, value)):
        raise InvalidInput(f"a feature is a list of {dim} numbers")
    raw = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(raw)) or not np.any(raw):
        raise InvalidInput("a feature must be finite and not all zeros")
    return raw


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata must be a JSON object of bounded size and depth, of finite numbers, its keys
    following the identifier rule (app/ids.py); it comes back with its keys in NFC."""
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    try:
        checked = _checked_value(metadata, depth=1)
    except ValueError as exc:
        raise InvalidInput(f"metadata: {exc}") from exc
    if len(json.dumps(checked)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is over {MAX_METADATA_BYTES // 1024} KiB")
    return checked


def _checked_value(value: Any, *, depth: int) -> Any:
    """A JSON value as stored: NaN, infinities (and 1e400, read as one) refused rather than
    stored as null (SQLite) or refused by the database (Postgres); depth bounded."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN, Infinity or overflowing 1e400)")
    if isinstance(value, list):
        return [_checked_value(v, depth=depth + 1) for v in value]
    if isinstance(value, dict):
        checked: dict[str, Any] = {}
        for key, inner in value.items():
            name = check_key(key)
            if name in checked:
                raise ValueError(f"two keys are {name!r} once normalised to NFC")
            checked[name] = _checked_value(inner, depth=depth + 1)
        return checked
    return value


# A \uD800-\uDFFF escape: half of a UTF-16 pair, which Python's parser may leave alone.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def loads(raw: str | bytes) -> Any:
    """``json.loads``, and ValueError for a string (or key) holding half of a UTF-16
    surrogate pair: JSON may escape one alone (``"\\ud800"``), Python's parser gives a str
    no UTF-8 can hold, and such a value fails every later answer that carries it. Only a
    text holding such an escape is walked."""
    value = json.loads(raw)
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _SURROGATE_ESCAPE.search(data):
        _no_lone_surrogate(value)
    return value


def _no_lone_surrogate(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "a string holds half of a UTF-16 surrogate pair (an escape such as "
                    "\\ud800 without its other half): escape characters beyond U+FFFF as a "
                    "full pair, or send them as UTF-8"
                ) from None


def parse_json_field(raw: str, field: str) -> Any:
    """A multipart field that carries JSON as a string; 400 when it is not JSON."""
    try:
        return loads(raw)
    except RecursionError as exc:  # Python's parser recurses per nesting level
        raise MalformedJson(
            f"{field} is nested too deeply to parse; metadata and filters nest at most "
            f"{MAX_METADATA_DEPTH} levels"
        ) from exc
    except ValueError as exc:
        raise MalformedJson(f"{field} is not valid JSON: {exc}") from exc


def parse_metadata_field(raw: str | None) -> dict[str, Any]:
    """The multipart `metadata` field: a JSON object as a string."""
    if raw is None or raw == "":
        return {}
    return check_metadata(parse_json_field(raw, "metadata"))


def prepare_text(*, text: str, external_id: str | None, metadata: dict[str, Any]) -> PendingItem:
    """A text item ready to embed."""
    if not text.strip():
        raise InvalidInput("text must not be blank")
    if not storable(text):
        raise InvalidInput("text must not contain NUL (U+0000) characters")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"text is over {MAX_TEXT_CHARS} characters")
    return PendingItem(
        external_id=external_id,
        modality="text",
        content_type=TEXT_CONTENT_TYPE,
        data=text.encode("utf-8"),
        text=text,
        payload=text,
        metadata=check_metadata(metadata),
    )


def prepare_file(
    *,
    settings: Settings,
    embedder: Embedder,
    data: bytes,
    external_id: str | None,
    metadata: dict[str, Any],
    budget: RequestBudget | None = None,
) -> PendingItem:
    """A file item decoded and ready to embed (415/413 for what cannot be decoded), within
    ``budget`` (its request's decoded bytes; a request of its own when None)."""
    media = decode_upload(data, settings=settings, embedder=embedder, budget=budget)
    return PendingItem(
        external_id=external_id,
        modality=media.modality,
        content_type=media.content_type,
        data=data,
        payload=media.payload,
        metadata=check_metadata(metadata),
    )


def add_item(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    blobs: BlobStore,
    name: str,
    prepare: Callable[[Embedder], PendingItem],
) -> tuple[ItemPublic, bool]:
    """Prepare (decode for the collection's model), encode and write one item; (item,
    created)."""

    def one(embedder: Embedder) -> list[PendingItem | Exception]:
        return [prepare(embedder)]

    _, [written] = add_items(
        collections=collections,
        items=items,
        indexes=indexes,
        models=models,
        blobs=blobs,
        name=name,
        prepare=one,
        alone=True,
    )
    if isinstance(written, Exception):
        raise written
    return written


def add_items(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    blobs: BlobStore,
    name: str,
    prepare: Callable[[Embedder], list[PendingItem | Exception]],
    alone: bool = False,
) -> tuple[list[PendingItem | Exception], list[tuple[ItemPublic, bool] | Exception]]:
    """Prepare entries for the collection's model, encode the good ones (one forward pass
    per modality) and write them, all in one transaction: the entries, and (item, created)
    for each good one in order. When the transaction fails, each item is written alone
    (unless ``alone``: the one item's error is raised) and an item that fails then has its
    error in its place (NotFoundError, the collection gone, fails them all). A migration
    that switches the collection to another model between the encoding and the commit
    makes it start again once with the new model."""
    row = collections.get(name)
    try:
        return _add(items, indexes, models, blobs, row, prepare, alone)
    except SpaceChangedError:
        fresh = collections.get_by_id(row.id)  # SQL as it is now, not a kept row
        return _add(items, indexes, models, blobs, fresh, prepare, alone)


def _add(
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    blobs: BlobStore,
    row: CollectionRow,
    prepare: Callable[[Embedder], list[PendingItem | Exception]],
    alone: bool,
) -> tuple[list[PendingItem | Exception], list[tuple[ItemPublic, bool] | Exception]]:
    with contextlib.ExitStack() as stack:
        with models.use(row.model, row.audio_model) as embedder:
            entries = prepare(embedder)
            pending = [e for e in entries if isinstance(e, PendingItem)]
            if not pending:
                return entries, []
            live = _live_in_space(indexes, row)
            for modality in sorted({p.modality for p in pending}):
                require_space(row, live.aligner, embedder, modality)
            # Files' originals are written while they are encoded: their flushes to disk take
            # as long as a forward, and the rows wait for them only at the commit. A text's
            # original is its text, which its row holds.
            # Those no row comes to name (the forward or the write failed) are trashed.
            files = [p for p in pending if p.text is None]
            stored = stack.enter_context(
                blobs.storing(
                    [p.data for p in files], items.shas_in_use, digests=[p.sha256 for p in files]
                )
            )
            encoded = _encoded(embedder, pending)
        if alone:
            return entries, list(_write(items, indexes, blobs, row, pending, encoded, stored))
        return entries, _write_all(items, indexes, blobs, row, pending, encoded, stored)


def _live_in_space(indexes: IndexManager[Aligner], row: CollectionRow) -> LiveIndex[Aligner]:
    """The collection's live index, waited for when this process still serves the space a
    migration left (the switch reached SQL, not yet this process's index)."""
    live = indexes.get(row)
    return live if in_space(live, row) else indexes.get(row, wait=True)


def _write_all(
    items: ItemStore,
    indexes: IndexManager[Aligner],
    blobs: BlobStore,
    row: CollectionRow,
    pending: list[PendingItem],
    encoded: list[Encoded],
    stored: Storing,
) -> list[tuple[ItemPublic, bool] | Exception]:
    try:
        return list(_write(items, indexes, blobs, row, pending, encoded, stored))
    except (NotFoundError, SpaceChangedError):
        raise  # the collection is gone or moved: so it is for every item
    except Exception as exc:
        if is_fault(exc):  # the database or the disk, not an item: each alone would fail too
            raise
        log.warning("a batch of %d items failed as a whole: writing them one by one", len(pending))
    written: list[tuple[ItemPublic, bool] | Exception] = []
    for item, enc in zip(pending, encoded, strict=True):
        try:
            written.extend(_write_alone(items, indexes, blobs, row, item, enc, stored))
        except (NotFoundError, SpaceChangedError):
            raise
        except Exception as exc:  # this item's own outcome, in its place
            log.exception("writing an item of a batch failed")
            written.append(exc)
            if item.text is None:
                stored.unused.add(item.sha256)
    return written


def _write_alone(
    items: ItemStore,
    indexes: IndexManager[Aligner],
    blobs: BlobStore,
    row: CollectionRow,
    item: PendingItem,
    enc: Encoded,
    stored: Storing,
) -> list[tuple[ItemPublic, bool]]:
    """One item of a batch that failed as a whole: when the batch's originals could not be
    written, this item's is written again on its own (the failure may have been another's)."""
    if item.text is not None or not stored.failed():
        return _write(items, indexes, blobs, row, [item], [enc], stored)
    with blobs.storing([item.data], items.shas_in_use, digests=[item.sha256]) as own:
        return _write(items, indexes, blobs, row, [item], [enc], own)


def _encoded(embedder: Embedder, pending: Sequence[PendingItem]) -> list[Encoded]:
    """Each item's features: those that came with it, the others encoded here (one forward
    pass per modality)."""
    todo = [p for p in pending if p.encoded is None]
    done = iter(embedder.encode_mixed([p.modality for p in todo], [p.payload for p in todo]))
    return [p.encoded if p.encoded is not None else next(done) for p in pending]


def _write(
    items: ItemStore,
    indexes: IndexManager[Aligner],
    blobs: BlobStore,
    row: CollectionRow,
    pending: Sequence[PendingItem],
    encoded: Sequence[Encoded],
    stored: Storing,
) -> list[tuple[ItemPublic, bool]]:
    """Write items in one SQL transaction and one index update, (item, created) in order;
    the originals of files among them are ``stored``'s."""
    live = indexes.get(row)
    # Bytes first: a committed row must never point at a file that is not on disk.
    if any(item.text is None for item in pending):
        stored.wait()
    with indexes.writing(live) as index:
        # Projected under the writer lock: the aligner cannot change between the vectors
        # and the version number written beside them.
        aligner = live.aligner
        if not in_space(live, row):  # swapped to a migration's new space since encoding
            raise SpaceChangedError(
                f"collection {row.name!r} moved to another model while this write was "
                "encoded: send it again"
            )
        encoded, features = as_stored(encoded)
        vectors = all_vectors(aligner, encoded)
        drafts = [
            ItemDraft(
                external_id=item.external_id or uuid.uuid4().hex,
                modality=item.modality,
                sha256=item.sha256,
                content_type=item.content_type,
                size_bytes=len(item.data),
                feature=feature,
                vector=kept_vectors(aligner, enc, vecs),
                aligner_version=aligner.version,
                text=item.text,
                metadata=item.metadata,
                spans=enc.span_list(),
            )
            for item, enc, feature, vecs in zip(pending, encoded, features, vectors, strict=True)
        ]
        # Refused (409) if a migration switched the collection to another model since
        # ``row`` was read: these features are of the old one.
        done = items.upsert_many(
            collection_id=row.id,
            drafts=drafts,
            space=(row.model, row.audio_model, row.dim),
            own=True,  # in this process's index below: its follower need not look
        )
        # An id written twice in the batch: its last vectors are the ones SQL holds.
        last = {d.row.pk: n for n, d in enumerate(done)}
        kept = sorted(last.values())
        index.upsert(
            np.array([done[n].row.pk for n in kept], dtype=np.int64),
            np.concatenate([vectors[n] for n in kept]),
            np.array([len(vectors[n]) for n in kept]),
        )
        for d in done:  # in log order: each one's own changes follow the one before
            live.wrote(d.seq, after=d.after)
    # Originals no row names any more (SQL is asked: another item may share the bytes).
    replaced = {d.replaced_sha for d in done if d.replaced_sha} - {d.row.sha256 for d in done}
    if replaced:
        blobs.remove_unused(replaced, items.shas_in_use)
    return [(item_public(d.row, row.name), d.created) for d in done]


def get_item(
    *, collections: CollectionStore, items: ItemStore, name: str, item_id: str
) -> ItemPublic:
    """One item."""
    row = collections.get(name)
    return item_public(items.get(collection_id=row.id, external_id=item_id), name)


def item_content(
    *, collections: CollectionStore, items: ItemStore, blobs: BlobStore, name: str, item_id: str
) -> tuple[bytes, str]:
    """The original bytes of an item and their content type: a text's from its row, a
    file's from the blob store."""
    original = open_original(
        collections=collections, items=items, blobs=blobs, name=name, item_id=item_id
    )
    if original.file is None:
        return original.data, original.content_type
    with original.file:
        return original.file.read(), original.content_type


@dataclass
class Original:
    """An item's original as the content route sends it: a text's bytes, or a file's open
    file (read as it is sent, never whole in memory); its size and sha256 either way."""

    content_type: str
    sha256: str
    size: int
    data: bytes = b""
    file: BinaryIO | None = None


def open_original(
    *, collections: CollectionStore, items: ItemStore, blobs: BlobStore, name: str, item_id: str
) -> Original:
    """An item's original: the caller closes its file. Once open, the file stays readable
    whatever removes its name meanwhile."""
    row = collections.get(name)
    item = items.get(collection_id=row.id, external_id=item_id)
    if item.modality == "text" and item.text is not None:
        data = item.text.encode("utf-8")
        return Original(item.content_type, item.sha256, len(data), data=data)
    try:
        file = blobs.path(item.sha256).open("rb")
    except FileNotFoundError as exc:
        # The row is there but its file is not (deleted or lost outside the service).
        raise NotFoundError(
            f"the original bytes of item {item_id!r} are missing from the server's data "
            "directory; upload the item again (or restore the data directory from a backup)"
        ) from exc
    return Original(item.content_type, item.sha256, os.fstat(file.fileno()).st_size, file=file)


def patch_item(
    *,
    collections: CollectionStore,
    items: ItemStore,
    name: str,
    item_id: str,
    metadata: dict[str, Any],
) -> ItemPublic:
    """Replace an item's metadata without re-embedding it."""
    row = collections.get(name)
    updated = items.set_metadata(
        collection_id=row.id, external_id=item_id, metadata=check_metadata(metadata)
    )
    return item_public(updated, name)


def delete_item(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    blobs: BlobStore,
    name: str,
    item_id: str,
) -> None:
    """Delete an item from SQL and the index, under the collection's writer lock."""
    row = collections.get(name)
    live = indexes.get(row)
    with indexes.writing(live) as index:
        deleted = items.delete(collection_id=row.id, external_id=item_id, own=True)
        index.remove(np.array([deleted.row.pk], dtype=np.int64))
        live.wrote(deleted.seq)
    blobs.remove_unused([deleted.row.sha256], items.shas_in_use)


def list_items(
    *, collections: CollectionStore, items: ItemStore, name: str, limit: int, cursor: str | None
) -> ItemPage:
    """A page of items, oldest first; the cursor is opaque to clients."""
    row = collections.get(name)
    after = decode_cursor(cursor) if cursor else 0
    rows = items.page(collection_id=row.id, after_pk=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].pk) if more and rows else None
    return ItemPage(items=[item_public(r, name) for r in rows], next_cursor=next_cursor)


def encode_cursor(pk: int) -> str:
    """An opaque cursor for keyset pagination."""
    return base64.urlsafe_b64encode(json.dumps({"after": pk}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The inverse of encode_cursor; 400 on anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise Malformed("the cursor is not valid: pass next_cursor back unchanged") from exc
    if not isinstance(after, int) or not 0 <= after < 2**63:  # a row key is 64 bits
        raise Malformed("the cursor is not valid: pass next_cursor back unchanged")
    return after
