"""The hub check that registry and CLAP loaders ask before a download."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from models.encoders import hub


def test_offline_is_unreachable_without_dialling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("dialled"))
    assert hub.reachable() is False


def test_the_endpoints_host_is_dialled(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[Any] = []

    def refuse(address: tuple[str, int], timeout: float) -> None:
        dialled.append((address, timeout))
        raise ConnectionRefusedError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org/mirror")
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub.reachable(timeout=0.5) is False
    assert dialled == [(("hub.example.org", 443), 0.5)]
