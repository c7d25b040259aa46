"""Each HTTP request that brings work counts as a unit in flight while it is served, whatever
its answer: what keeps a forward off the cores other requests work on (models/runtime/streams).
Reads (GET: a job's progress, health, metrics) do not count."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.runtime import streams


def test_a_request_is_in_flight_while_served_and_only_then(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "_crowded_at", float("-inf"))  # no earlier test's requests
    app = create_app(make_settings(api_keys="k1"))
    probe = lambda: {"units": streams._units, "crowded": streams.crowded()}  # noqa: E731
    app.add_api_route("/probe", probe, methods=["GET", "POST"])
    with TestClient(app) as client:
        before = streams._units
        assert client.post("/probe").json() == {"units": before + 1, "crowded": before > 0}
        assert client.get("/probe").json() == {"units": before, "crowded": before > 1}
        assert streams._units == before
        # Refused in front of everything (no key) or answered by a route: counted and gone.
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 401
        key = {"Authorization": "Bearer k1"}
        assert client.post("/v1/collections", json={"name": "c"}, headers=key).is_success
        assert streams._units == before
