"""Embeddings without storing: /v1/embed."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionStoreDep, IndexesDep, ModelsDep, SettingsDep
from app.routers import body
from app.schemas.embed import EmbedOptions, EmbedRequest, EmbedResponse
from app.services.embed import embed_files, embed_texts, with_model
from app.services.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["embed"])
COLLECTION_NAME = EmbedOptions.model_json_schema()["properties"]["collection"]["anyOf"][0][
    "pattern"
]

EMBED_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "collection": {
            "type": "string",
            "pattern": COLLECTION_NAME,
            "description": "use this collection's aligner heads",
        },
    },
    "additionalProperties": False,  # EmbedOptions refuses other fields
}


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses={
        404: {"description": "no collection of that name"},
        409: {"description": "the collection is of another embedding space than the model"},
    },
    openapi_extra=body.openapi_body(EmbedRequest.model_json_schema(), EMBED_FORM),
)
async def embed(
    request: Request,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
) -> EmbedResponse:
    """Vectors in the shared space (L2-normalised) for texts or uploaded files."""
    body.require_json_or_multipart(request)
    if body.is_multipart(request):
        form = await body.read_form(request)
        if not form.files:
            raise InvalidInput("send one or more 'file' parts")
        given = {k: form.field(k) for k in form.fields}
        opts = body.validate(EmbedOptions, given)
        collection = opts.collection
        run = functools.partial(embed_files, uploads=form.files, collection=collection)
    else:
        req = await body.json_model(request, EmbedRequest)
        collection = req.collection
        run = functools.partial(embed_texts, texts=req.texts, collection=collection)
    return await run_in_threadpool(
        with_model,
        models=models,
        collections=collections,
        indexes=indexes,
        collection=collection,
        run=functools.partial(run, settings=settings, collections=collections, indexes=indexes),
    )
