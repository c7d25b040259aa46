"""Request ids and the access log: every answer carries X-Request-ID (the client's when
sane), an error body and the request's log lines carry the same id, JSON lines parse."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import app.fastpath.embed as fastembed
import app.fastpath.search as fastsearch
from app.logs import resolve_format
from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code

UUID_HEX = 32


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hot routes the fast path answered, one entry per call."""
    seen: list[str] = []
    search, embed = fastsearch.search, fastembed.embed_texts

    def spy_search(**kwargs: Any) -> Any:
        seen.append("search")
        return search(**kwargs)

    def spy_embed(**kwargs: Any) -> Any:
        seen.append("embed")
        return embed(**kwargs)

    monkeypatch.setattr(fastsearch, "search", spy_search)
    monkeypatch.setattr(fastembed, "embed_texts", spy_embed)
    return seen


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mmr.access"]


def test_an_id_is_made_for_each_request(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    ids = [r.headers["x-request-id"] for r in (first, second)]
    assert all(len(i) == UUID_HEX and int(i, 16) >= 0 for i in ids)
    assert ids[0] != ids[1]


def test_a_sane_id_is_echoed(client: TestClient) -> None:
    for sane in ("abc-123", "trace=00-4bf9/2;x", "x" * 128):
        response = client.get("/healthz", headers={"X-Request-ID": sane})
        assert response.headers["x-request-id"] == sane


@pytest.mark.parametrize(
    "bad",
    ["x" * 129, "has space", "tab\there", "", b"caf\xc3\xa9", b"\x01\x02"],
    ids=["too-long", "space", "tab", "empty", "non-ascii", "control"],
)
def test_an_insane_id_is_replaced(client: TestClient, bad: str | bytes) -> None:
    response = client.get("/healthz", headers=[(b"x-request-id", _bytes(bad))])
    made = response.headers["x-request-id"]
    assert made != bad and len(made) == UUID_HEX


def test_an_error_body_and_its_log_line_carry_the_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mmr.access"):
        response = client.get("/v1/collections/nope", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert response.json()["error"]["request_id"] == "req-404"
    (line,) = [r for r in access_records(caplog) if getattr(r, "request_id", None) == "req-404"]
    assert (line.method, line.route, line.status) == ("GET", "/v1/collections/{name}", 404)  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]


def test_an_unmatched_path_is_logged_as_sent_without_line_breaks(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mmr.access"):
        response = client.get("/no/such%0Apage")
    assert response.status_code == 404 and error_code(response) == "not_found"
    (line,) = access_records(caplog)
    assert line.route == "/no/such\\npage"  # type: ignore[attr-defined]
    assert "\n" not in line.getMessage()


def test_probes_that_pass_are_logged_at_debug_and_failures_at_info(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer polls /readyz every few seconds and Prometheus scrapes /metrics: their
    successes would bury every other line at INFO. A probe that fails is still news."""
    with caplog.at_level(logging.DEBUG, logger="mmr.access"):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        assert client.post("/healthz").status_code == 405
        assert client.get("/v1/collections").status_code == 200
    said = {(r.route, r.levelno) for r in access_records(caplog)}  # type: ignore[attr-defined]
    assert said == {
        ("/healthz", logging.DEBUG),
        ("/readyz", logging.DEBUG),
        ("/metrics", logging.DEBUG),
        ("/healthz", logging.INFO),
        ("/v1/collections", logging.INFO),
    }


def test_every_line_logged_while_serving_carries_the_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """In the event loop and in the thread pool a plain `def` route runs in."""
    app = create_app(settings)
    said = logging.getLogger("app.probe")

    @app.get("/probe-sync")
    def probe_sync() -> dict[str, str]:
        said.info("in a thread")
        return {}

    @app.get("/probe-async")
    async def probe_async() -> dict[str, str]:
        said.info("in the loop")
        return {}

    with TestClient(app) as client, caplog.at_level(logging.INFO):
        client.get("/probe-sync", headers={"X-Request-ID": "sync-1"})
        client.get("/probe-async", headers={"X-Request-ID": "async-1"})
    stamped = {r.getMessage(): getattr(r, "request_id", None) for r in caplog.records}
    assert stamped["in a thread"] == "sync-1" and stamped["in the loop"] == "async-1"
    outside = logging.getLogger("app.probe").makeRecord("app.probe", 20, "", 0, "x", (), None)
    assert getattr(outside, "request_id", None) is None


def test_answers_of_every_layer_carry_the_id(make_settings: Callable[..., Settings]) -> None:
    """The key check's 401 and the body limit's 413 answer before FastAPI does."""
    settings = make_settings(api_keys="k", max_upload_mb=0.01)
    with TestClient(create_app(settings)) as client:
        refused = client.get("/v1/collections", headers={"X-Request-ID": "no-key"})
        assert refused.status_code == 401 and error_code(refused) == "unauthorized"
        assert refused.headers["x-request-id"] == "no-key"
        key = {"Authorization": "Bearer k", "X-Request-ID": "too-big"}
        big = client.post("/v1/embed", content=b"x" * 200_000, headers=key)
        assert big.status_code == 413 and error_code(big) == "payload_too_large"
        assert big.headers["x-request-id"] == "too-big"


def test_the_fast_path_answers_carry_the_id(
    client: TestClient, collection: str, fast: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mmr.access"):
        embedded = client.post("/v1/embed", json={"texts": ["a"]}, headers={"X-Request-ID": "e"})
        searched = client.post(
            f"/v1/collections/{collection}/search",
            json={"text": "a"},
            headers={"X-Request-ID": "s"},
        )
        missing = client.post("/v1/collections/nope/search", json={"text": "a"})
    assert fast == ["embed", "search", "search"]  # all three answered by the fast path
    assert embedded.status_code == searched.status_code == 200
    assert embedded.headers["x-request-id"] == "e" and searched.headers["x-request-id"] == "s"
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    routes = [(r.request_id, r.route) for r in access_records(caplog)]  # type: ignore[attr-defined]
    assert routes[:2] == [("e", "/v1/embed"), ("s", "/v1/collections/{name}/search")]


@pytest.fixture
def json_log(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[dict[str, Any]]]:
    """A reader of the JSON lines the process's log wrote on stderr since the last read."""

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    return lines


def test_json_lines_parse_with_their_keys(
    settings: Settings, json_log: Callable[[], list[dict[str, Any]]]
) -> None:
    with TestClient(create_app(settings.model_copy(update={"log_format": "json"}))) as client:
        json_log()  # the start-up block
        client.get("/v1/collections/nope", headers={"X-Request-ID": "json-1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("app.probe").exception("it failed")
        access, failure = json_log()
    assert access == {
        "time": access["time"],
        "level": "INFO",
        "logger": "mmr.access",
        "message": f"GET /v1/collections/{{name}} 404 {access['duration_ms']:.1f} ms",
        "request_id": "json-1",
        "method": "GET",
        "route": "/v1/collections/{name}",
        "status": 404,
        "duration_ms": access["duration_ms"],
    }
    assert access["time"].endswith("Z") and access["time"][10] == "T"
    assert failure["level"] == "ERROR" and failure["message"] == "it failed"
    assert "ValueError: boom" in failure["exc_info"] and "request_id" not in failure


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert resolve_format("auto", Stream(True)) == "text"  # type: ignore[arg-type]
    assert resolve_format("auto", Stream(False)) == "json"  # type: ignore[arg-type]
    assert resolve_format("text", Stream(False)) == "text"  # type: ignore[arg-type]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
