"""``POST /v1/embed``: JSON texts, or multipart ``file`` parts (images, sounds).

The route's own steps (``app.routers.embed``) without FastAPI around them: the body read by
pydantic's JSON parser or the strict multipart reader, the same service functions in a
thread, the answer serialised by pydantic. Images are announced to the image tower's batcher
on arrival, decoded and packed by one of a few decoding threads, and their forward awaited
here: no thread waits for it, so a batch is as large as the requests in flight, not as the
threads (sounds and texts go through the service functions whole, in the blocking pool).
"""

from __future__ import annotations

import asyncio
import functools
import re

from pydantic import ValidationError

from app import multipart
from app.fastpath import pool
from app.routers.body import is_json_type
from app.schemas.embed import EmbedOptions, EmbedRequest, EmbedResponse
from app.services.embed import StagedImages, embed_decoded, embed_texts, finish, stage_files
from app.services.pool import ModelKey
from app.state import Services
from index.errors import NotFoundError

FILE_FIELD = "file"


def reads(content_type: str) -> bool:
    """JSON, or multipart with a boundary."""
    return is_json_type(content_type) or multipart.boundary_of(content_type) is not None


async def answer(services: Services, _: re.Match[str], ctype: str, raw: bytes) -> bytes | None:
    """The embeddings' JSON, or None when the body is not one the route would take as it
    is (the route answers it, errors included)."""
    boundary = multipart.boundary_of(ctype)
    if boundary is None:
        try:
            req = EmbedRequest.model_validate_json(raw)
        except ValidationError:
            return None
        if not _own_model(services, req.collection):
            return None
        run = functools.partial(
            embed_texts,
            settings=services.settings,
            collections=services.stores.collections,
            indexes=services.indexes,
            embedder=services.embedder,
            texts=req.texts,
            collection=req.collection,
        )
    else:
        parts = multipart.read_parts(raw, boundary)
        if parts is None or set(parts.files) != {FILE_FIELD} or FILE_FIELD in parts.fields:
            return None
        try:
            opts = EmbedOptions.model_validate({k: v[0] for k, v in parts.fields.items()})
        except ValidationError:
            return None
        if not _own_model(services, opts.collection):
            return None
        return (await _files(services, parts.files[FILE_FIELD], opts.collection)).encode()
    found: EmbedResponse = await asyncio.get_running_loop().run_in_executor(pool.pool(), run)
    return found.model_dump_json().encode()


def _own_model(services: Services, collection: str | None) -> bool:
    """Whether the collection (if any) is served by this process's own model: one of
    another model is the route's (which loads models in a thread); a missing one is
    answered here as the route would (404)."""
    if collection is None:
        return True
    try:
        row = services.stores.collections.get(collection)
    except NotFoundError:
        return True
    return ModelKey(row.model, row.audio_model) == services.models.key(services.embedder)


async def _files(services: Services, uploads: list[bytes], collection: str | None) -> str:
    loop = asyncio.get_running_loop()
    pending = services.embedder.encoder.expect("image")
    try:
        staged = await loop.run_in_executor(
            pool.decoders(),
            functools.partial(
                stage_files,
                settings=services.settings,
                collections=services.stores.collections,
                indexes=services.indexes,
                embedder=services.embedder,
                uploads=uploads,
                collection=collection,
                pending=pending,
            ),
        )
    finally:
        pending.withdraw()  # nothing once queued; here when the request ended before
    if isinstance(staged, StagedImages):
        rows = await asyncio.wrap_future(staged.rows)
        found = finish(embedder=services.embedder, staged=staged, rows=rows)
    else:  # a sound among them: the whole call in the blocking pool
        run = functools.partial(
            embed_decoded,
            collections=services.stores.collections,
            indexes=services.indexes,
            embedder=services.embedder,
            media=staged,
            collection=collection,
        )
        found = await loop.run_in_executor(pool.pool(), run)
    return found.model_dump_json()
