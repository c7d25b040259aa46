"""Bodies that may be JSON or multipart: parse on the loop, validate into schemas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from app import multipart
from app.errors import ApiError
from app.services.errors import InvalidInput, Malformed, MalformedJson
from app.services.items import loads

M = TypeVar("M", bound=BaseModel)


class UnsupportedBody(ApiError):
    """Neither JSON nor multipart (415)."""

    status, code = 415, "unsupported_media_type"


def is_multipart(request: Request) -> bool:
    """Whether the request carries multipart/form-data."""
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def is_json(request: Request) -> bool:
    """Whether the request carries JSON (or declares nothing)."""
    return is_json_type(request.headers.get("content-type", ""))


def is_json_type(ctype: str) -> bool:
    """Whether a Content-Type value is JSON (or empty: nothing declared)."""
    return ctype == "" or ctype.startswith("application/json") or ctype.endswith("+json")


async def json_payload(request: Request) -> Any:
    """The decoded JSON body; 400 when it is not JSON."""
    raw = await request.body()
    try:
        return loads(raw)
    except RecursionError as exc:  # Python's parser recurses once per nesting level
        raise MalformedJson("the body is nested too deeply to parse") from exc
    except ValueError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc


async def json_model(request: Request, model: type[M]) -> M:
    """The JSON body parsed and validated in one pass by pydantic's own parser (a search's
    512 floats cost a sixth of ``json.loads`` plus validation); 400 when it is not JSON,
    422 with what is wrong otherwise."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        broken = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        if broken is not None:
            message = f"the body is not valid JSON: {broken['msg'].removeprefix('Invalid JSON: ')}"
            raise MalformedJson(message) from exc
        raise InvalidInput(describe_validation(exc)) from exc


def validate(model: type[M], payload: Any) -> M:
    """A schema instance, or 422 with what is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc)) from exc


def describe_validation(exc: ValidationError) -> str:
    """One line per problem: where and what."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


@dataclass
class Form:
    """A parsed multipart body: the uploaded files' bytes and the text fields."""

    files: list[bytes]
    fields: dict[str, list[str]]

    def field(self, name: str) -> str | None:
        """The first value of a text field, or None when absent."""
        values = self.fields.get(name)
        return values[0] if values else None

    def field_list(self, name: str) -> list[str]:
        """Every value of a repeated text field."""
        return self.fields.get(name, [])


async def read_form(request: Request, file_field: str = "file") -> Form:
    """Read a multipart body's files and text fields, holding the files about once (the body
    budget, ``app.limits``, counts them once). A body in the plain shape that clients send is
    read as it arrives by the strict reader (``app.multipart``); any other goes, as read so
    far and then the rest, to Starlette's parser, which has the last word on odd bodies."""
    boundary = multipart.boundary_of(request.headers.get("content-type", ""))
    if boundary is None:
        return await _starlette_form(request, file_field)
    reader = multipart.PartReader(boundary)
    more = True
    while more and reader.plain:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        reader.feed(message.get("body", b""))
        more = message.get("more_body", False)
    parts = reader.finish() if not more else None
    if parts is not None:
        return _form_of(parts, file_field)
    # The bytes read, and nothing else of the reader's: each is let go once replayed.
    spent = list(reader.spent())
    del reader
    return await _starlette_form(
        Request(request.scope, _replay(spent, request, more=more)), file_field
    )


def _form_of(parts: multipart.Parts, file_field: str) -> Form:
    """The form of a plain body's parts, refused as Starlette's reading of it would be."""
    for is_file, key in parts.order:
        if is_file and key != file_field:
            raise InvalidInput(f"unexpected file field {key!r}; use {file_field!r}")
        if not is_file and key == file_field:
            raise InvalidInput(f"{file_field} must be a file upload, not a text field")
    return Form(parts.files.get(file_field, []), parts.fields)


def _replay(spent: list[bytes], request: Request, *, more: bool) -> Receive:
    """A receive that gives back the bytes a reader spent (the list let go of each as it is
    given), then the rest of the body."""
    spent.reverse()

    async def receive() -> Message:
        if spent:
            return {"type": "http.request", "body": spent.pop(), "more_body": bool(spent) or more}
        if more:
            return await request.receive()
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


async def _starlette_form(request: Request, file_field: str) -> Form:
    """Starlette's parser: it spools every part to a temporary file; each is given back as
    soon as its bytes are read, so that the files are held about once, not as spooled copies
    and bytes both."""
    try:
        data = await request.form(max_files=1000, max_fields=1000)
    except MultiPartException as exc:
        raise _unparsed(exc.message) from exc
    except HTTPException as exc:  # what Starlette makes of the above inside an app
        if exc.status_code != 400:
            raise
        raise _unparsed(exc.detail) from exc
    try:
        files: list[bytes] = []
        fields: dict[str, list[str]] = {}
        for key, value in data.multi_items():
            if isinstance(value, UploadFile):
                if key != file_field:
                    raise InvalidInput(f"unexpected file field {key!r}; use {file_field!r}")
                files.append(await value.read())
                await value.close()
            elif key == file_field:
                raise InvalidInput(f"{file_field} must be a file upload, not a text field")
            else:
                fields.setdefault(key, []).append(value)
        return Form(files, fields)
    finally:
        await data.close()


def _unparsed(why: str) -> Malformed:
    return Malformed(
        f"the multipart body could not be parsed ({why}): send multipart/form-data with a "
        "boundary in its Content-Type, each part opened by --BOUNDARY and the body closed by "
        "--BOUNDARY-- (curl -F does this)"
    )


def require_json_or_multipart(request: Request) -> None:
    """415 for any other body type."""
    if not (is_json(request) or is_multipart(request)):
        raise UnsupportedBody(
            "send application/json or multipart/form-data (field 'file' for uploads)"
        )


def openapi_body(json_schema: dict[str, Any], form_schema: dict[str, Any]) -> dict[str, Any]:
    """Document a route that takes JSON or multipart. A model's schema names its nested
    models in its own ``$defs``, which nothing resolves once it sits inside the OpenAPI
    document: they are written in place."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inlined(json_schema)},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every ``#/$defs/...`` reference replaced by its definition."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined
