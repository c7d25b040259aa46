"""``POST /v1/embed``: JSON texts, or multipart ``file`` parts (images, sounds).

The route's own steps (``app.routers.embed``) without FastAPI around them: the body read by
pydantic's JSON parser or the strict multipart reader, the same service functions in a
thread, the answer serialised by pydantic.
"""

from __future__ import annotations

import asyncio
import functools
import re

from pydantic import ValidationError

from app.fastpath import multipart, pool
from app.routers.body import is_json_type
from app.schemas import EmbedOptions, EmbedRequest, EmbedResponse
from app.services.embed import embed_files, embed_texts
from app.state import Services

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
        run = functools.partial(
            embed_texts, services=services, texts=req.texts, collection=req.collection
        )
    else:
        parts = multipart.read_parts(raw, boundary)
        if parts is None or set(parts.files) != {FILE_FIELD} or FILE_FIELD in parts.fields:
            return None
        try:
            opts = EmbedOptions.model_validate({k: v[0] for k, v in parts.fields.items()})
        except ValidationError:
            return None
        run = functools.partial(
            embed_files,
            services=services,
            uploads=parts.files[FILE_FIELD],
            collection=opts.collection,
        )
    found: EmbedResponse = await asyncio.get_running_loop().run_in_executor(pool.pool(), run)
    return found.model_dump_json().encode()
