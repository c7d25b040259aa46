"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.manager import Followed


class Metrics:
    """Request counters and latencies, and how far this process follows SQL."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mmr_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mmr_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )

        self.replication_lag = Gauge(
            "mmr_replication_lag_seconds",
            "Seconds since the least recent of this process's indexes last matched SQL",
            registry=self.registry,
        )
        self.collection_lag = Gauge(
            "mmr_replication_collection_lag_seconds",
            "Seconds since this process's index of a collection last matched SQL",
            ["collection"],
            registry=self.registry,
        )
        self.position = Gauge(
            "mmr_replication_position",
            "The change-log sequence up to which this process's index of a collection is current",
            ["collection"],
            registry=self.registry,
        )

    def follows(self, followed: Sequence[tuple[str, Followed]]) -> None:
        """Set the replication gauges: one series per collection followed now (a dropped
        collection's series go), named by collection (by id when the name is unknown)."""
        self.collection_lag.clear()
        self.position.clear()
        for name, f in followed:
            label = name or str(f.collection_id)
            self.collection_lag.labels(label).set(f.lag_s)
            self.position.labels(label).set(f.position)
        self.replication_lag.set(max((f.lag_s for _, f in followed), default=0.0))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
