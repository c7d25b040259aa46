"""The routes' dependencies (app/deps.py): each one thing a route touches, never the whole
``Services``; each async (FastAPI runs a sync one in the thread pool, a hop per request)
and reading the request alone (FastAPI solves a dependency's own dependencies again for
every dependency that names them)."""

from __future__ import annotations

import inspect
import typing

import pytest
from fastapi.routing import APIRoute

from app.routers import collections, embed, health, items, jobs, keys, models, search
from app.state import Services

ROUTES = [
    route
    for module in (collections, embed, health, items, jobs, keys, models, search)
    for route in module.router.routes
    if isinstance(route, APIRoute)
]


def route_id(route: APIRoute) -> str:
    return f"{','.join(sorted(route.methods or ()))} {route.path}"


def test_every_route_is_checked() -> None:
    assert len(ROUTES) >= 25


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_no_route_takes_the_whole_services(route: APIRoute) -> None:
    assert Services not in typing.get_type_hints(route.endpoint).values()


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_each_dependency_is_async_and_reads_the_request_alone(route: APIRoute) -> None:
    for dependency in route.dependant.dependencies:
        assert inspect.iscoroutinefunction(dependency.call), dependency.call
        assert not dependency.dependencies, dependency.call
