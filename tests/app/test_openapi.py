"""The OpenAPI document and its pages: offline docs, every error status documented, body rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from app.openapi import error_statuses, id_pattern, key_pattern, text_pattern
from app.services.errors import InvalidInput
from app.services.items import prepare_text
from tests.conftest import error_code

DOC_PAGES = ("/docs", "/redoc")
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Links(HTMLParser):
    """Every URL a page names: src/href/spec-url attributes and url: or url() in scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"""url\s*[:(]\s*['"]?([^'")\s,]+)""", data)
        self.urls += re.findall(r"https?://[^\s'\"<>)]+", data)


def page_urls(html: str) -> list[str]:
    """The URLs a page would load."""
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    urls = page_urls(answer.text)
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert not urlparse(url).netloc, f"{page} loads {url} from another host"
        assert url.startswith("/"), url


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_page_assets_are_served(client: TestClient, page: str) -> None:
    for url in page_urls(client.get(page).text):
        answer = client.get(url)
        assert answer.status_code == 200, url
        suffix = url[url.rfind(".") :]
        if suffix in ASSET_TYPES:
            assert ASSET_TYPES[suffix] in answer.headers["content-type"], url
            assert len(answer.content) > 1000 or suffix == ".png", url
        else:
            assert url == "/openapi.json" and answer.json()["paths"]


def test_swagger_ui_asks_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_every_error_answer_has_the_error_body_and_an_example(doc: dict[str, Any]) -> None:
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, _method, operation in _operations(doc):
        for status, response in operation["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            media = response["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
            assert set(media["example"]["error"]) == {"code", "message", "request_id"}, (
                path,
                status,
            )
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"]


def test_statuses_derive_from_what_a_route_takes(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        documented = {int(s) for s in operation["responses"] if int(s) >= 400}
        if path.startswith("/v1/"):
            assert {401, 403, 503} <= documented, (method, path)
        if "{" in path:
            assert {404, 422} <= documented, (method, path)
        if "requestBody" in operation:
            assert {400, 413, 422, 429} <= documented, (method, path)
        if method in ("post", "patch", "delete") and path.startswith("/v1/"):
            assert 507 in documented, (method, path)
    assert "409" in doc["paths"]["/v1/collections"]["post"]["responses"]
    assert "409" in doc["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "400" in doc["paths"]["/v1/collections/{name}/items"]["get"]["responses"]
    assert "415" in doc["paths"]["/v1/collections/{name}/search"]["post"]["responses"]
    assert "429" in doc["paths"]["/v1/embed"]["post"]["responses"]


def test_error_statuses_of_an_open_route_without_parameters() -> None:
    assert error_statuses("/healthz", "get", {"responses": {"200": {}}}) == set()


def test_every_body_has_an_example(doc: dict[str, Any]) -> None:
    for path, method, operation in _operations(doc):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        media = content["application/json"]
        schema = media["schema"]
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        examples = media.get("examples") or media.get("example") or schema.get("examples")
        branches = [b for b in schema.get("oneOf", []) if "$ref" in b]
        refs = [doc["components"]["schemas"][b["$ref"].rsplit("/", 1)[1]] for b in branches]
        assert examples or (refs and all(r.get("examples") for r in refs)), (method, path)


def _search_body(doc: dict[str, Any]) -> dict[str, Any]:
    route = doc["paths"]["/v1/collections/{name}/search"]["post"]
    schema: dict[str, Any] = route["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_search_says_exactly_one_query(doc: dict[str, Any]) -> None:
    body = _search_body(doc)
    branches = body["oneOf"]
    assert sorted(b["required"][0] for b in branches) == ["item_id", "query", "text", "vector"]
    # A composed query's parts, written in place (no $defs left to resolve), one source each.
    assert "$defs" not in json.dumps(body)
    part = body["properties"]["query"]["anyOf"][0]["items"]
    assert sorted(b["required"][0] for b in part["oneOf"]) == ["data", "item_id", "text", "vector"]


def test_a_finetune_takes_pair_key_or_pairs(doc: dict[str, Any]) -> None:
    branches = doc["components"]["schemas"]["FinetuneJobCreate"]["oneOf"]
    assert sorted(b["required"][0] for b in branches) == ["pair_key", "pairs"]


def test_index_settings_per_type(doc: dict[str, Any]) -> None:
    branches = doc["components"]["schemas"]["IndexSettings"]["oneOf"]
    by_type = {b["properties"]["type"]["const"]: b for b in branches}
    assert by_type["flat"]["properties"]["m"] == {"type": "null"}
    assert by_type["hnsw"]["properties"]["nlist"] == {"type": "null"}
    assert by_type["ivf"]["properties"]["ef_search"] == {"type": "null"}
    assert "anyOf" in by_type["ivf"]  # pq_m only with the pq quantizer


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/collections/{name}/items", {"metadata"}),
        ("/v1/collections/{name}/search", {"filter"}),
    ],
)
def test_multipart_json_fields_are_objects_sent_as_json(
    doc: dict[str, Any], path: str, fields: set[str]
) -> None:
    form = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    for field in fields:
        assert form["schema"]["properties"][field]["type"] == "object"
        assert form["encoding"][field]["contentType"] == "application/json"


def test_identifier_patterns_follow_the_id_rule() -> None:
    ids = re.compile(id_pattern())
    keys = re.compile(key_pattern())
    for good in ("photo-42", "café", "a b", "x" * 255):
        assert ids.match(good), good
    for bad in ("", "a/b", " lead", "trail ", "\u202eevil", "zero\u200bwidth", "x" * 256):
        assert not ids.match(bad), bad
    assert keys.match("album") and keys.match("tab\tkept") and not keys.match("a\u2066b")


@pytest.mark.parametrize(
    "text",
    ["a", " a ", "tab\tkept", "\u3000x", "", " ", "\t\n", "\x1c\x1f", "\u3000", "a\x00", "\x00"],
)
def test_the_text_pattern_is_the_stored_text_rule(text: str) -> None:
    """A fuzzer sends what the pattern allows: the server must take exactly that (a text
    item with a NUL or only spaces was refused while the document allowed it)."""
    try:
        prepare_text(text=text, external_id=None, metadata={})
        taken = True
    except InvalidInput:
        taken = False
    assert bool(re.fullmatch(text_pattern(), text)) == taken


def test_a_text_items_text_has_the_pattern(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/v1/collections/{name}/items"]["post"]["requestBody"]
    text = body["content"]["application/json"]["schema"]["properties"]["text"]
    assert text["pattern"] == text_pattern()


def test_a_path_number_beyond_64_bits_is_refused_not_a_500(
    client: TestClient, collection: str
) -> None:
    huge = 2**64 + 1
    answer = client.post(f"/v1/collections/{collection}/aligners/{huge}/activate")
    assert answer.status_code == 422
    assert error_code(answer) == "validation_error"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/healthz", {"GET"}),
        ("PUT", "/v1/collections", {"GET", "POST"}),
        ("OPTIONS", "/v1/collections/things/items/x", {"GET", "PATCH", "DELETE"}),
        ("PUT", "/v1/jobs", {"GET", "POST"}),
    ],
)
def test_405_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 405
    assert error_code(answer) == "method_not_allowed"
    listed = {m.strip() for m in answer.headers["allow"].split(",")}
    assert allowed <= listed and listed - allowed <= {"HEAD"}, listed


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/collections/things/search", {"text": "a dog", "k": True}),
        ("/v1/jobs", {"type": "finetune", "collection": "things", "pair_key": "g", "seed": False}),
        (
            "/v1/jobs",
            {"type": "finetune", "collection": "things", "pair_key": "g", "holdout": True},
        ),
        ("/v1/collections", {"name": "graph", "index": {"type": "hnsw", "m": True}}),
    ],
)
def test_true_and_false_are_not_numbers(
    client: TestClient, collection: str, path: str, body: dict[str, Any]
) -> None:
    # The document says integer/number; pydantic's lax mode read true as 1 (a fuzzer's find).
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert "not true or false" in answer.json()["error"]["message"]
