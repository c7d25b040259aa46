"""The OpenAPI document as the server behaves, and the pages that show it without internet.

FastAPI's document knows each route's 200 and its parameters' 422. The server answers more:
every error status below, each with the one error body of API.md, and request bodies whose
rules (exactly one of several fields, fields per index type, JSON inside multipart fields)
a plain pydantic schema cannot say. :func:`complete` adds them once, when the document is
first built; an outside fuzzer (``make fuzz``) holds the server to it.
"""

from __future__ import annotations

import copy
import functools
import sys
import unicodedata
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.responses import HTMLResponse

from app.auth import document_security
from app.ids import HIDDEN, KEY_HIDDEN, MAX_ID_CHARS, MAX_KEY_CHARS
from app.schemas.common import ItemId
from index.spec import AUTO, TYPE_FIELDS

# Swagger UI and ReDoc come from an installed package (fastapi-offline ships both bundles):
# an air-gapped host shows the same pages, and no page loads anything from another host.
ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"

WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_BODY = {
    "title": "ErrorBody",
    "description": "Every non-2xx answer: what went wrong (`code`), what to do (`message`) "
    "and the request's id, as in its `X-Request-ID` header and the server's log.",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": "#/components/schemas/RequestError"}},
}
REQUEST_ERROR = {
    "title": "RequestError",
    "description": "The error of a failed call.",
    "type": "object",
    "required": ["code", "message", "request_id"],
    "properties": {
        "code": {"type": "string", "title": "Code", "description": "snake_case, stable"},
        "message": {"type": "string", "title": "Message", "description": "for people"},
        "request_id": {
            "type": "string",
            "title": "Request Id",
            "description": "the X-Request-ID of the answer: the client's when it sent a sane "
            "one, else one the server made; the server's log lines of the request carry it",
        },
    },
}
EXAMPLE_REQUEST_ID = "5f0c6d1e8a2b4c7d9e1f2a3b4c5d6e7f"
ERROR_DETAIL = {
    "title": "ErrorDetail",
    "description": "The error of one entry of a batch (a failed call's is RequestError).",
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "title": "Code", "description": "snake_case, stable"},
        "message": {"type": "string", "title": "Message", "description": "for people"},
    },
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string"},
    }
}

# status -> (description, example code, example message): what the status means here.
STATUSES: dict[int, tuple[str, str, str]] = {
    400: (
        "Malformed request: the body is not JSON, a multipart body or form field does not "
        "parse, or a cursor is not one the server gave",
        "malformed_json",
        "the body is not valid JSON: expected value at line 1 column 1",
    ),
    401: (
        "Missing or invalid API key",
        "unauthorized",
        "an API key is required: send 'Authorization: Bearer <key>'",
    ),
    403: (
        "The key's scope does not allow this route",
        "forbidden",
        "this key is read-only: use a key with the write scope",
    ),
    404: (
        "No such collection, item, aligner version or job (or not visible to this key)",
        "not_found",
        "no collection named 'photos'",
    ),
    409: ("Conflict", "conflict", "a collection named 'photos' already exists"),
    413: (
        "The body, or a decoded file, is over a limit",
        "payload_too_large",
        "the request body is over the 50 MB limit (MMR_MAX_UPLOAD_MB); send a smaller file",
    ),
    415: (
        "Not JSON or multipart, or a file the server cannot decode",
        "unsupported_media",
        "unsupported file type: send an image (JPEG, PNG, GIF, WebP, BMP, TIFF)",
    ),
    422: (
        "The request does not validate; the message says which field and why",
        "validation_error",
        "k: Input should be less than or equal to 1000",
    ),
    429: (
        "Over a limit of work in flight (bodies, decoded media, encoder queues, queued "
        "jobs): retry after `Retry-After` seconds",
        "overloaded",
        "the text encoder's queue is full; retry shortly",
    ),
    503: (
        "Starting, or the database cannot be reached: retry after `Retry-After` seconds",
        "database_unavailable",
        "the database cannot be reached; nothing was changed by this request, retry later",
    ),
    507: (
        "The server's disk is full: nothing was stored",
        "insufficient_storage",
        "the server's disk is full; nothing was stored, retry once an operator frees space",
    ),
}


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc from local assets and complete the document when first built."""
    _install_pages(app)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        services = app.state.services
        schema = complete(
            document_security(build()),
            max_batch_items=app.state.settings.max_batch_items,
            dim=None if services is None else services.embedder.dim,
        )
        if services is not None:  # kept once it can say the model's dimension
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_pages(app: FastAPI) -> None:
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    title = app.title

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title}: Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            # The default validator badge is an image from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title}: ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def complete(
    schema: dict[str, Any], *, max_batch_items: int, dim: int | None = None
) -> dict[str, Any]:
    """The document with every error status each route can answer and the body rules
    (``dim``: the active model's, which a pq index's ``pq_m`` must divide)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ERROR_BODY
    components["RequestError"] = REQUEST_ERROR
    components["ErrorDetail"] = ERROR_DETAIL
    components["MetadataValue"] = metadata_value()
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for found in _titled(schema):
        BODY_RULES[found["title"]](found)
    _spell_identifiers(schema)
    if dim is not None and "IndexSettings" in components:
        pq_m = components["IndexSettings"]["properties"]["pq_m"]
        pq_m["anyOf"][0]["enum"] = [d for d in range(1, min(dim, 1024) + 1) if dim % d == 0]
    for path, method, operation in _operations(schema):
        _document_errors(path, method, operation)
        _document_forms(operation, max_batch_items=max_batch_items)
    _batch_takes_a_list(schema, max_batch_items)
    _link_jobs(schema)
    return schema


def _link_jobs(schema: dict[str, Any]) -> None:
    """A queued job's id leads to reading and cancelling it (OpenAPI links: clients and the
    fuzzer's stateful phase follow them)."""
    paths = schema["paths"]
    created = paths.get("/v1/jobs", {}).get("post", {}).get("responses", {}).get("202")
    if created is None:
        return
    links = {}
    for name, path, method in (
        ("GetJob", "/v1/jobs/{job_id}", "get"),
        ("CancelJob", "/v1/jobs/{job_id}/cancel", "post"),
    ):
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            links[name] = {
                "operationId": operation["operationId"],
                "parameters": {"job_id": "$response.body#/id"},
            }
    created["links"] = links


def _batch_takes_a_list(schema: dict[str, Any], max_batch_items: int) -> None:
    """A JSON batch is {"items": [...]} or the bare list; each entry is judged on its own
    (a bad one gets its error in place), so any JSON value is an entry."""
    route = schema["paths"].get("/v1/collections/{name}/items/batch", {}).get("post")
    if route is None:
        return
    media = route["requestBody"]["content"]["application/json"]
    batch = media["schema"]
    entries = {"type": "array", "minItems": 1, "maxItems": max_batch_items, "items": {}}
    batch["properties"]["items"]["maxItems"] = max_batch_items
    media["schema"] = {"anyOf": [batch, entries | {"title": "TextBatchList"}]}
    media["example"] = {
        "items": [
            {"text": "a red kite over the beach", "metadata": {"album": "2024"}},
            {"text": "a dog barking in the rain", "id": "note-7"},
        ]
    }


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            yield path, method, operation


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses a route can answer, derived from what it takes.

    Statuses a route declares itself (409, a query's 400) are kept; these are added:
    any /v1 route 401, 403 and 503, a write 507; a path parameter 404 and 422; any
    other parameter 422; a body 400, 413, 422 and 429 (the bodies in flight are budgeted,
    ``app.limits``); a body that may be multipart 415 (and 429 as it decodes files and runs
    the encoders).
    """
    statuses = {int(s) for s in operation.get("responses", {}) if s.isdigit() and int(s) >= 400}
    params = operation.get("parameters", [])
    if path.startswith("/v1/"):
        statuses |= {401, 403, 503}
        if method in WRITE_METHODS:
            statuses.add(507)
    if any(p.get("in") == "path" for p in params):
        statuses |= {404, 422}
    if params:
        statuses.add(422)
    content = operation.get("requestBody", {}).get("content", {})
    if content:
        statuses |= {400, 413, 422, 429}
    if "multipart/form-data" in content:
        statuses |= {415, 429}
    return statuses


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status in sorted(error_statuses(path, method, operation)):
        described, code, message = STATUSES.get(status, ("Error", "error", "what went wrong"))
        declared = responses.get(str(status), {})
        example = declared.pop("x-example", {"code": code, "message": message})
        example = {**example, "request_id": EXAMPLE_REQUEST_ID}
        description = declared.get("description")
        if not description or description == "Validation Error":
            description = described
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": ERROR_REF, "example": {"error": example}}},
        }
        if status in (429, 503):
            response["headers"] = RETRY_AFTER
        responses[str(status)] = response


# --- request bodies: rules pydantic's schemas do not carry ---


def _only(present: str, absent: list[str]) -> dict[str, Any]:
    """A schema: `present` is given (not null), each of `absent` is missing or null."""
    return {
        "required": [present],
        "properties": {present: {"not": {"type": "null"}}}
        | {name: {"type": "null"} for name in absent},
    }


def _titled(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema in the document that a rule of BODY_RULES applies to (components, and
    the bodies inlined by routes that take JSON or multipart)."""
    if isinstance(node, dict):
        if node.get("title") in BODY_RULES and "properties" in node:
            yield node
        for value in node.values():
            yield from _titled(value)
    elif isinstance(node, list):
        for value in node:
            yield from _titled(value)


def _exactly_one_query(search: dict[str, Any]) -> None:
    """A search takes exactly one of text, item_id, vector or query (its parts)."""
    names = ("text", "item_id", "vector", "query")
    fields = [f for f in names if f in search.get("properties", {})]
    search["oneOf"] = [_only(f, [o for o in fields if o != f]) for f in fields]
    worded_part = {
        "required": ["text"],
        "properties": {"text": {"type": "string"}, "weight": {"exclusiveMinimum": 0}},
    }
    search["allOf"] = [
        words_for_word_modes(
            _only("text", []),
            {
                "required": ["query"],
                "properties": {"query": {"type": "array", "contains": worded_part}},
            },
        )
    ]
    search["description"] = (
        search.get("description", "") + "\n\nGive exactly one of " + ", ".join(fields) + "."
    )


# Lexical and hybrid modes search words: a text, or a text part of positive weight.
def words_for_word_modes(*words: dict[str, Any]) -> dict[str, Any]:
    """A schema: the mode is vector (or left out), or one of ``words`` holds (what gives a
    lexical or hybrid search its words). Said without if/then, which fuzzers' generators
    do not all follow."""
    return {"anyOf": [{"properties": {"mode": {"enum": ["vector", None]}}}, *words]}


def _one_part_source(part: dict[str, Any]) -> None:
    """A query part is exactly one of text, item_id, vector or data."""
    fields = [f for f in ("text", "item_id", "vector", "data") if f in part.get("properties", {})]
    part["oneOf"] = [_only(f, [o for o in fields if o != f]) for f in fields]


def _one_pair_source(finetune: dict[str, Any]) -> None:
    """A fine-tune takes its pairs from pair_key or from pairs, never both."""
    finetune["oneOf"] = [_only("pair_key", ["pairs"]), _only("pairs", ["pair_key"])]


def _index_settings_per_type(settings: dict[str, Any]) -> None:
    """Each index type takes its own fields; pq_m only with the pq quantizer."""
    branches = []
    types: dict[str, tuple[str, ...]] = {AUTO: (), **TYPE_FIELDS}
    for index_type, fields in types.items():
        others = [f for t, names in TYPE_FIELDS.items() if t != index_type for f in names]
        branch: dict[str, Any] = {
            "properties": {"type": {"const": index_type}} | {f: {"type": "null"} for f in others}
        }
        if index_type != AUTO:  # auto is the default: the type may be left out
            branch["required"] = ["type"]
        if "pq_m" in fields:
            branch["anyOf"] = [
                {"properties": {"pq_m": {"type": "null"}}},
                {"required": ["quantizer"], "properties": {"quantizer": {"const": "pq"}}},
            ]
        branches.append(branch)
    settings["oneOf"] = branches


def _stored_text(item: dict[str, Any]) -> None:
    item["properties"]["text"]["pattern"] = text_pattern()


BODY_RULES = {
    "TextItemCreate": _stored_text,
    "SearchRequest": _exactly_one_query,
    "QueryPart": _one_part_source,
    "FinetuneJobCreate": _one_pair_source,
    "IndexSettings": _index_settings_per_type,
}


# --- identifiers (app/ids.py): the rule as a pattern, so a fuzzer sends ids the server takes ---


@functools.cache
def _hidden_class(categories: frozenset[str] = HIDDEN) -> str:
    """The characters of these Unicode categories (app/ids.py refuses them), as the inside of
    a regex class (literal characters: every regex dialect reads them alike; none of them is
    special in a class)."""
    spans: list[str] = []
    start = None
    for code in range(sys.maxunicode + 2):
        hidden = code <= sys.maxunicode and unicodedata.category(chr(code)) in categories
        if hidden and start is None:
            start = code
        elif not hidden and start is not None:
            last = code - 1
            spans.append(chr(start) if start == last else f"{chr(start)}-{chr(last)}")
            start = None
    return "".join(spans)


@functools.cache
def id_pattern() -> str:
    """An item id: 1-255 characters, no '/', none hidden, no space at either end."""
    hidden = _hidden_class()
    spaces = "".join(
        chr(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace() and unicodedata.category(chr(c)) not in HIDDEN
    )
    edge = f"[^/{spaces}{hidden}]"
    return f"^{edge}(?:[^/{hidden}]{{0,{MAX_ID_CHARS - 2}}}{edge})?$"


@functools.cache
def text_pattern() -> str:
    """A stored text (app/services/items.py prepare_text): no NUL, and something besides
    the characters ``str.strip()`` removes."""
    spaces = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    return f"^[^\x00]*[^\x00{spaces}][^\x00]*$"


@functools.cache
def key_pattern() -> str:
    """A metadata key: at most 255 characters, none hidden (controls are kept in keys)."""
    return f"^[^{_hidden_class(KEY_HIDDEN)}]{{0,{MAX_KEY_CHARS}}}$"


def metadata_value() -> dict[str, Any]:
    """Any JSON value whose objects' keys follow the key rule, at any depth. One schema, not
    an anyOf of types: a fuzzer that turns one branch's array into a string would call the
    still valid value invalid."""
    ref = {"$ref": "#/components/schemas/MetadataValue"}
    return {
        "title": "MetadataValue",
        "description": "any JSON value; keys of objects follow the metadata key rule",
        "items": ref,
        "propertyNames": {"pattern": key_pattern()},
        "additionalProperties": ref,
    }


def _spell_identifiers(schema: dict[str, Any]) -> None:
    """Item ids (described as app.schemas.common.ItemId) and metadata keys get their patterns."""
    id_description = TypeAdapter(ItemId).json_schema().get("description")

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("title") == "ItemPublic":  # answers show what is stored: no rule
                return
            if node.get("type") == "string" and node.get("description") == id_description:
                node["pattern"] = id_pattern()
                node["not"] = {"enum": [".", ".."]}
            if node.get("type") == "object" and node.get("title") == "Metadata":
                node["propertyNames"] = {"pattern": key_pattern()}
                node["additionalProperties"] = {"$ref": "#/components/schemas/MetadataValue"}
            if node.get("title") == "Filter" and "anyOf" in node:
                node["anyOf"][0]["propertyNames"] = {"pattern": key_pattern()}
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)


# --- multipart forms: which fields are JSON, which are repeated, and nothing else ---

JSON_OBJECT: dict[str, Any] = {
    "type": "object",
    "title": "Metadata",
    "description": "a JSON object (sent as a JSON string)",
}
SCALARS = ["string", "number", "boolean", "null"]

FORM_JSON_FIELDS: dict[str, dict[str, Any]] = {
    "metadata": JSON_OBJECT,
    "filter": {
        "type": "object",
        "description": "a JSON object (sent as a JSON string): metadata key -> value, or a list "
        'meaning "any of"; e.g. {"album": ["2024", "2025"]}',
        # One schema rather than anyOf of scalar and list (see metadata_value).
        "additionalProperties": {"type": [*SCALARS, "array"], "items": {"type": SCALARS}},
    },
    "features": {
        "type": "array",
        "description": "a JSON list (sent as a JSON string), per file its image features or "
        "null to encode it here",
        "items": {"type": ["array", "null"], "items": {"type": "number"}},
    },
    "space": {
        "type": "object",
        "description": "a JSON object (sent as a JSON string): the space of `features`",
        "required": ["model", "dim", "preprocess"],
        "properties": {
            "model": {"type": ["string", "null"]},
            "dim": {"type": "integer"},
            "preprocess": {"type": "string"},
        },
        "additionalProperties": False,
    },
}


def _document_forms(operation: dict[str, Any], *, max_batch_items: int) -> None:
    content = operation.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data")
    if form is None:
        return
    schema = form["schema"] = copy.deepcopy(form["schema"])
    properties = schema.get("properties", {})
    upload = properties.get("file", {})
    encoding = {}
    for name, field in FORM_JSON_FIELDS.items():
        if name in properties:
            described = properties[name].get("description") or field["description"]
            properties[name] = copy.deepcopy(field) | {"description": described}
            encoding[name] = {"contentType": "application/json"}
    if properties.get("id", {}).get("type") == "string":
        # Not also `not: {enum: [".", ".."]}` as in JSON bodies: schemathesis 4.32's coverage
        # phase cannot judge a `not` beside a file part (ValueError: Unsupported type 'Binary').
        properties["id"]["pattern"] = id_pattern()
    if "filter" in properties:
        properties["filter"]["propertyNames"] = {"pattern": key_pattern()}
    # A batch reports a bad `metadata` in each entry's result (the call answers 200).
    if "metadata" in properties and upload.get("type") != "array":
        properties["metadata"] |= {
            "propertyNames": {"pattern": key_pattern()},
            "additionalProperties": {"$ref": "#/components/schemas/MetadataValue"},
        }
    if properties.get("modalities", {}).get("type") == "string":
        one = r"\s*(?:image|text|audio)?\s*"
        properties["modalities"]["pattern"] = f"^(?:{one},)*{one}$"
    if upload.get("type") == "array":
        upload |= {"minItems": 1, "maxItems": max_batch_items}
    if encoding:
        form["encoding"] = encoding
    operation["requestBody"]["description"] = (
        "JSON, or multipart/form-data with the file in `file`"
        + (" and JSON objects in " + ", ".join(f"`{n}`" for n in encoding) if encoding else "")
    )
