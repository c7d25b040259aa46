"""Items: /v1/collections/{name}/items."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from app.deps import (
    BlobsDep,
    CollectionStoreDep,
    IndexesDep,
    ItemStoreDep,
    ModelsDep,
    SettingsDep,
)
from app.errors import describe_error, error_body
from app.routers import body
from app.schemas.common import ErrorDetail, ItemId
from app.schemas.items import (
    BatchEntry,
    BatchResult,
    ItemPage,
    ItemPatch,
    ItemPublic,
    TextBatch,
    TextItemCreate,
)
from app.services import items as svc
from app.services.embedding import Embedder
from app.services.errors import InvalidInput, ServiceError, SpaceMismatch
from app.services.media import request_budget
from app.services.thumbnails import SIDE as THUMB_SIDE
from app.services.thumbnails import thumbnail
from app.settings import Settings
from models.errors import MediaError

router = APIRouter(prefix="/v1/collections/{name}/items", tags=["items"])
ITEM_ID: TypeAdapter[str] = TypeAdapter(ItemId)

FILE_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "an image, audio or video file",
        },
        "id": {"type": "string", "description": "client id; posting it again replaces"},
        "metadata": {"type": "string", "description": "a JSON object as a string"},
    },
}
BATCH_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
        # Also taken: `id` repeated once per file, and `metadata` as a list of one object per
        # file. No schema ties two lengths together, so those are told, not declared.
        "metadata": {
            "type": "string",
            "description": "a JSON object for every file; or (not declared here) a JSON list of "
            "one object per file. Client ids: an `id` field repeated once per file, in order",
        },
        "features": {
            "type": "string",
            "description": "images encoded elsewhere (docs/ingest.md, Ray): a JSON list with, "
            "per file, its image features (a list of numbers) or null to encode it here; "
            "needs `space`",
        },
        "space": {
            "type": "string",
            "description": 'the space of `features`, a JSON object {"model", "dim", '
            '"preprocess"}: features of another space than the server\'s are refused (409)',
        },
    },
}


@router.post(
    "",
    status_code=201,
    response_model=ItemPublic,
    responses={
        200: {"description": "an item with this client id was replaced"},
        409: {"description": "the collection is of another embedding space than the model"},
    },
    openapi_extra=body.openapi_body(TextItemCreate.model_json_schema(), FILE_FORM),
)
async def add_item(
    name: str,
    request: Request,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
    blobs: BlobsDep,
) -> JSONResponse:
    """Add a text item (JSON) or an image (multipart `file`); the same client `id` replaces."""
    body.require_json_or_multipart(request)
    prepare: Callable[[Embedder], svc.PendingItem]
    if body.is_multipart(request):
        form = await body.read_form(request)
        if len(form.files) != 1:
            raise InvalidInput("send exactly one 'file' part (use /items/batch for many)")
        external_id = _item_id(form.field("id"))
        metadata = svc.parse_metadata_field(form.field("metadata"))
        prepare = functools.partial(
            _prepare_file, settings, form.files[0], external_id=external_id, metadata=metadata
        )
    else:
        item = await body.json_model(request, TextItemCreate)
        pending = svc.prepare_text(text=item.text, external_id=item.id, metadata=item.metadata)
        prepare = lambda _: pending  # noqa: E731 (a text is the same for every model)
    public, created = await run_in_threadpool(
        svc.add_item,
        collections=collections,
        items=items,
        indexes=indexes,
        models=models,
        blobs=blobs,
        name=name,
        prepare=prepare,
    )
    return JSONResponse(public.model_dump(mode="json"), status_code=201 if created else 200)


@router.post(
    "/batch",
    response_model=BatchResult,
    responses={
        409: {
            "description": "the collection is of another embedding space than the model, or "
            "`features` came from another space (or named none)"
        }
    },
    openapi_extra=body.openapi_body(TextBatch.model_json_schema(), BATCH_FORM),
)
async def add_batch(
    name: str,
    request: Request,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
    blobs: BlobsDep,
) -> BatchResult:
    """Add many items in one call; each gets its own status, in order."""
    body.require_json_or_multipart(request)
    prepare: Callable[[Embedder], list[svc.PendingItem | Exception]]
    if body.is_multipart(request):
        form = await body.read_form(request)
        _check_batch_size(settings, len(form.files))
        prepare = functools.partial(_prepare_files, settings, form=form)
    else:
        texts = _prepare_texts(settings, await body.json_payload(request))
        if not any(isinstance(e, svc.PendingItem) for e in texts):
            # All refused: each its own error, even for a collection that is not there.
            return BatchResult(results=_batch_results(texts, []))
        prepare = lambda _: texts  # noqa: E731 (texts are the same for every model)
    entries, written = await run_in_threadpool(
        svc.add_items,
        collections=collections,
        items=items,
        indexes=indexes,
        models=models,
        blobs=blobs,
        name=name,
        prepare=prepare,
    )
    return BatchResult(results=_batch_results(entries, written))


def _prepare_file(
    settings: Settings,
    data: bytes,
    embedder: Embedder,
    *,
    external_id: str | None,
    metadata: dict[str, Any],
) -> svc.PendingItem:
    """One uploaded file decoded for the collection's model."""
    return svc.prepare_file(
        settings=settings, embedder=embedder, data=data, external_id=external_id, metadata=metadata
    )


def _batch_results(
    entries: list[svc.PendingItem | Exception],
    written: list[tuple[ItemPublic, bool] | Exception],
) -> list[BatchEntry]:
    """Each entry's outcome at its place: the items written, in order, and the errors of
    the others (refused before the write, or failed in it) with the status and code they
    would have alone."""
    done = iter(written)
    results = []
    for entry in entries:
        outcome = next(done) if isinstance(entry, svc.PendingItem) else entry
        if isinstance(outcome, Exception):
            status, code, message = describe_error(outcome)
            results.append(BatchEntry(status=status, error=ErrorDetail(code=code, message=message)))
        else:
            item, created = outcome
            results.append(BatchEntry(status=201 if created else 200, item=item))
    return results


def _prepare_texts(settings: Settings, payload: Any) -> list[svc.PendingItem | Exception]:
    raw_items = payload if isinstance(payload, list) else body.validate(TextBatch, payload).items
    _check_batch_size(settings, len(raw_items))
    entries: list[svc.PendingItem | Exception] = []
    for raw in raw_items:
        try:
            item = body.validate(TextItemCreate, raw)
            entries.append(
                svc.prepare_text(text=item.text, external_id=item.id, metadata=item.metadata)
            )
        except InvalidInput as exc:
            entries.append(exc)
    return entries


def _prepare_files(
    settings: Settings, embedder: Embedder, *, form: body.Form
) -> list[svc.PendingItem | Exception]:
    ids = [_item_id(v) for v in form.field_list("id")]
    if ids and len(ids) != len(form.files):
        raise InvalidInput(f"{len(ids)} 'id' fields for {len(form.files)} files")
    metadata = _batch_metadata(form.field("metadata"), len(form.files))
    features = _batch_features(embedder, form, len(form.files))
    budget = request_budget(settings)  # the files' decoded bytes, all together
    entries: list[svc.PendingItem | Exception] = []
    for i, upload in enumerate(form.files):
        if isinstance(features[i], Exception):
            entries.append(features[i])
            continue
        try:
            if features[i] is not None:
                entries.append(
                    svc.prepare_encoded_file(
                        settings=settings,
                        embedder=embedder,
                        data=upload,
                        feature=features[i],
                        external_id=ids[i] if ids else None,
                        metadata=metadata[i],
                    )
                )
                continue
            entries.append(
                svc.prepare_file(
                    settings=settings,
                    embedder=embedder,
                    data=upload,
                    external_id=ids[i] if ids else None,
                    metadata=metadata[i],
                    budget=budget,
                )
            )
        except (MediaError, ServiceError) as exc:
            entries.append(exc)  # each entry reports its own error, in place
    return entries


def _batch_features(embedder: Embedder, form: body.Form, n: int) -> list[Any]:
    """Per file, the features that came with it, None, or the error that file gets. A
    ``space`` sent must be this server's (409 for the whole request otherwise), and features
    need one: features of no named space are of an unknown one (409)."""
    raw, space = form.field("features"), form.field("space")
    if space is not None:
        svc.check_space(embedder, svc.parse_json_field(space, "space"))
    if raw is None:
        return [None] * n
    if space is None:
        raise SpaceMismatch(
            "'features' name no 'space': send the space they were computed in "
            '({"model", "dim", "preprocess"}), or leave the features out'
        )
    features = svc.parse_json_field(raw, "features")
    if not isinstance(features, list) or not all(
        f is None or (isinstance(f, list) and all(map(svc.is_number, f))) for f in features
    ):
        raise InvalidInput("'features' must be a JSON list of lists of numbers (or nulls)")
    if len(features) != n:  # each file's own error, as for a bad `metadata`: the call is 200
        message = f"'features' has {len(features)} entries for {n} files: one per file"
        return [InvalidInput(message)] * n
    return features


def _batch_metadata(raw: str | None, n: int) -> list[Any]:
    """One metadata value per file, each checked by ``prepare_file`` with its own file: a
    bad one is that entry's error, in place."""
    if raw is None or raw == "":
        return [{} for _ in range(n)]
    parsed = svc.parse_json_field(raw, "metadata")
    if isinstance(parsed, dict):
        return [dict(parsed) for _ in range(n)]
    if isinstance(parsed, list) and len(parsed) == n:
        return parsed
    raise InvalidInput("metadata must be a JSON object or a list with one per file")


def _check_batch_size(settings: Settings, n: int) -> None:
    limit = settings.max_batch_items
    if n == 0:
        raise InvalidInput("the batch is empty")
    if n > limit:
        raise InvalidInput(f"the batch has {n} items; the limit is {limit}")


def _item_id(value: str | None) -> str | None:
    """A client id from a form field, checked like the JSON field."""
    if value is None:
        return None
    try:
        return ITEM_ID.validate_python(value)
    except ValidationError as exc:  # the rule's own words (app/ids.py), as the JSON field's
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"id {value!r} is not valid: {reason}") from exc


@router.get(
    "",
    response_model=ItemPage,
    responses={400: {"description": "the cursor is not a `next_cursor` this server gave"}},
)
def list_items(
    name: str,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> ItemPage:
    """Items oldest first; pass `next_cursor` back as `cursor` for the next page."""
    return svc.list_items(
        collections=collections, items=items, name=name, limit=limit, cursor=cursor
    )


@router.get("/{item_id}", response_model=ItemPublic)
def get_item(
    name: str, item_id: str, collections: CollectionStoreDep, items: ItemStoreDep
) -> ItemPublic:
    """One item."""
    return svc.get_item(collections=collections, items=items, name=name, item_id=item_id)


@router.patch("/{item_id}", response_model=ItemPublic)
def patch_item(
    name: str,
    item_id: str,
    patch: ItemPatch,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
) -> ItemPublic:
    """Replace an item's metadata; its vector is untouched."""
    return svc.patch_item(
        collections=collections,
        items=items,
        name=name,
        item_id=item_id,
        metadata=patch.metadata,
    )


@router.delete("/{item_id}", status_code=204, response_class=Response)
def delete_item(
    name: str,
    item_id: str,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    blobs: BlobsDep,
) -> Response:
    """Delete an item; search never returns it again."""
    svc.delete_item(
        collections=collections,
        items=items,
        indexes=indexes,
        blobs=blobs,
        name=name,
        item_id=item_id,
    )
    return Response(status_code=204)


@router.get(
    "/{item_id}/content",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}, "audio/*": {}, "text/plain": {}}},
        206: {"description": "the part a `Range: bytes=START-END` header asked for"},
        304: {"description": "unchanged since the `ETag` sent in `If-None-Match`"},
        416: {"description": "the range starts past the end of the original"},
    },
)
def item_content(
    name: str,
    item_id: str,
    request: Request,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    blobs: BlobsDep,
) -> Response:
    """The original bytes, with their content type. Answers a single `Range: bytes=...`
    (206; an audio player seeks with it) and `If-None-Match` with the `ETag` it gives (the
    content's sha256)."""
    original = svc.open_original(
        collections=collections, items=items, blobs=blobs, name=name, item_id=item_id
    )
    body = original.data if original.file is None else original.file
    return ranged(request, body, original.size, original.content_type, etag=f'"{original.sha256}"')


@router.get(
    "/{item_id}/thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "a JPEG at most 256 pixels a side"},
        304: {"description": "unchanged since the `ETag` sent in `If-None-Match`"},
        404: {"description": "no such item, or an item that is neither an image nor a video"},
        413: {"description": "the video's frame takes more than 5 s to decode"},
        422: {"description": "`t` past the video's end, or given for an image"},
    },
)
def item_thumbnail(
    name: str,
    item_id: str,
    request: Request,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    blobs: BlobsDep,
    t: Annotated[
        float | None,
        Query(
            ge=0,
            description="video: the moment, in seconds (default: the first frame), e.g. a "
            "search hit's `start`",
            examples=[12.5],
        ),
    ] = None,
) -> Response:
    """A small JPEG of an image item, or of a video item's frame at the start of the segment
    `t` seconds fall in (at most 256 pixels a side), for result grids. Its `ETag` is the
    original's sha256 (and that start): a browser that sends it back in `If-None-Match` gets
    304."""
    jpeg, key = thumbnail(
        settings=settings,
        collections=collections,
        items=items,
        blobs=blobs,
        name=name,
        item_id=item_id,
        t=t,
    )
    return ranged(request, jpeg, len(jpeg), "image/jpeg", etag=f'"{key}-{THUMB_SIDE}"')


def ranged(
    request: Request, body: bytes | BinaryIO, size: int, content_type: str, *, etag: str
) -> Response:
    """The body (bytes, or an open file sent as it is read and then closed), or the one range
    a ``Range`` header names (206), or 304 for an ``If-None-Match`` that names its ``ETag``.
    Revalidated on every use (``no-cache``): an id posted again may name other bytes, which is
    also why a Range whose ``If-Range`` names another ETag gets the whole. A Range that is not
    one plain ``bytes=`` range is ignored (RFC 9110)."""
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Accept-Ranges": "bytes"}
    if _names(request.headers.get("if-none-match", ""), etag):
        _close(body)
        return Response(status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    wanted = None
    if if_range is None or if_range.strip() == etag:
        wanted = _one_range(request.headers.get("range", ""), size)
    status, first, last = 200, 0, size - 1
    if wanted is not None:
        status, (first, last) = 206, wanted
        if first >= size:
            _close(body)
            return error_body(
                416,
                "range_not_satisfiable",
                f"the range starts at byte {first}, past the end of the {size} bytes; ask "
                "for a range within them, or for the whole without a Range header",
                headers={"Content-Range": f"bytes */{size}"},
            )
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if isinstance(body, bytes):
        return Response(body[first : last + 1], status, headers, media_type=content_type)
    headers["Content-Length"] = str(last + 1 - first)
    chunks = _file_chunks(body, first, last + 1 - first)
    return StreamingResponse(chunks, status, headers, media_type=content_type)


def _names(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names the ETag (weak comparison, or ``*``)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _close(body: bytes | BinaryIO) -> None:
    if not isinstance(body, bytes):
        body.close()


def _file_chunks(file: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of an open file from ``start``, a chunk at a time; closes it."""
    with file:
        file.seek(start)
        while length > 0:
            chunk = file.read(min(length, 256 * 1024))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _one_range(value: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` range,
    ``last`` cut to the data; None for no Range, a malformed one or several."""
    found = _RANGE.fullmatch(value.strip())
    if found is None or not (found.group(1) or found.group(2)):
        return None
    first_s, last_s = found.group(1), found.group(2)
    if not first_s:  # the last n bytes
        n = int(last_s)
        return (max(0, size - n), size - 1) if n and size else None
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    return first, min(int(last_s), size - 1) if last_s else size - 1


# At most 19 digits: a byte position of any file there can be (and int() refuses 4,300).
_RANGE = re.compile(r"(?i:bytes)=\s*([0-9]{0,19})-([0-9]{0,19})\s*")
