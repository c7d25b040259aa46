"""Search: /v1/collections/{name}/search."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionStoreDep, IndexesDep, ItemStoreDep, ModelsDep, SettingsDep
from app.openapi import words_for_word_modes
from app.routers import body
from app.schemas.common import MAX_TEXT_CHARS, InputText
from app.schemas.search import (
    MAX_K,
    MIN_SCORE_DESCRIPTION,
    MODE_DESCRIPTION,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
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
    "anyOf": [{"required": ["file"]}, {"required": ["text"]}],
    "allOf": [words_for_word_modes({"required": ["text"]})],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "an image, sound or video query",
        },
        "text": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT_CHARS,
            "description": "a text query; with a file too, the two are searched together "
            "(the sum of their vectors, as a `query` of two parts of weight 1)",
        },
        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_K},
        "offset": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_K - 1},
        "min_score": {
            "type": "number",
            "minimum": -1,
            "maximum": 1,
            "description": MIN_SCORE_DESCRIPTION,
        },
        "mode": {
            "type": "string",
            "enum": ["vector", "lexical", "hybrid"],
            "default": "vector",
            "description": MODE_DESCRIPTION,
        },
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
    text = form.field("text")
    if len(form.files) > 1 or (not form.files and text is None):
        raise InvalidInput("send one 'file' part, a 'text' field, or both, as the query")
    fields: dict[str, object] = {}
    for name in ("k", "offset", "min_score", "mode"):
        if (value := form.field(name)) is not None:
            fields[name] = value
    if modalities := form.field("modalities"):
        fields["modalities"] = [m.strip() for m in modalities.split(",") if m.strip()]
    if raw_filter := form.field("filter"):
        fields["filter"] = item_svc.parse_json_field(raw_filter, "filter")
    req = body.validate(SearchOptions, fields)
    constraints = request_constraints(req)
    if text is not None:
        words = Query(text=body.validate(FormText, {"text": text}).text)
        if not form.files:
            return words, constraints
        return Query(parts=[(Query(data=form.files[0]), 1.0), (words, 1.0)]), constraints
    return Query(data=form.files[0]), constraints


class FormText(BaseModel):
    """A form's ``text`` query, held to the rules of a JSON one."""

    text: InputText
