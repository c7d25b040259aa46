"""Search: /v1/collections/{name}/search."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionStoreDep, IndexesDep, ItemStoreDep, ModelsDep, SettingsDep
from app.routers import body
from app.schemas.search import MAX_K, SearchOptions, SearchRequest, SearchResponse
from app.services import items as item_svc
from app.services.errors import InvalidInput
from app.services.search import (
    Constraints,
    Query,
    request_constraints,
    request_query,
    search,
)

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"])

SEARCH_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "an image query"},
        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_K},
        "modalities": {"type": "string", "description": "comma separated, e.g. image,text"},
        "filter": {"type": "string", "description": 'a JSON object, e.g. {"album": "2024"}'},
    },
}


@router.post(
    "/search",
    response_model=SearchResponse,
    responses={409: {"description": "the query is of another embedding space or dimension"}},
    openapi_extra=body.openapi_body(SearchRequest.model_json_schema(), SEARCH_FORM),
)
async def search_collection(
    name: str,
    request: Request,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
) -> Response:
    """Nearest items to a text, an uploaded file, a stored item or a raw vector."""
    body.require_json_or_multipart(request)
    if body.is_multipart(request):
        query, constraints = await _from_form(request)
    else:
        req = await body.json_model(request, SearchRequest)
        query, constraints = request_query(req), request_constraints(req)
    found = await run_in_threadpool(
        search,
        settings=settings,
        collections=collections,
        items=items,
        indexes=indexes,
        models=models,
        name=name,
        query=query,
        constraints=constraints,
    )
    # Serialised here, once: FastAPI would validate the finished model again first.
    return Response(found.model_dump_json(), media_type="application/json")


async def _from_form(request: Request) -> tuple[Query, Constraints]:
    form = await body.read_form(request)
    if len(form.files) != 1:
        raise InvalidInput("send exactly one 'file' part as the query")
    fields: dict[str, object] = {}
    if (k := form.field("k")) is not None:
        fields["k"] = k
    if modalities := form.field("modalities"):
        fields["modalities"] = [m.strip() for m in modalities.split(",") if m.strip()]
    if raw_filter := form.field("filter"):
        fields["filter"] = item_svc.parse_json_field(raw_filter, "filter")
    req = body.validate(SearchOptions, fields)
    return Query(data=form.files[0]), request_constraints(req)
