"""Load generators: closed-loop client threads (one keep-alive httpx.Client each) and a
sequential timer. Numbers only; nothing here asserts on time."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


class RawHttp:
    """A keep-alive HTTP/1.1 client on the standard library, for the search benchmark.

    Client and server share the machine's cores, so every microsecond the load generator
    spends is taken from the server: http.client costs a fraction of httpx per request.
    """

    def __init__(self, base_url: str) -> None:
        host, _, port = base_url.removeprefix("http://").rstrip("/").partition(":")
        self._conn = http.client.HTTPConnection(host, int(port or 80), timeout=600)

    def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a ready JSON body; the status and the response body."""
        return self.post(path, body, "application/json")

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST a ready body; the status and the response body."""
        return self._send("POST", path, body, {"Content-Type": content_type})

    def get(self, path: str) -> tuple[int, bytes]:
        """GET; the status and the response body."""
        return self._send("GET", path, None, {})

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request. A connection the server closed while idle (uvicorn's keep-alive
        is 5 s) is opened again, once."""
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body, headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


BOUNDARY = "mmr-bench-boundary-7d1f"


def multipart_file(data: bytes, filename: str, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one ``file`` part, and its content type."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


# One request: (client, request number of this thread) -> True when it succeeded.
Request = Callable[[httpx.Client, int], bool]


@dataclass
class LoadResult:
    """Requests completed inside the measured window, and their latencies."""

    clients: int
    duration_s: float
    ok: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self, items_per_request: int = 1) -> dict[str, Any]:
        """JSON-able numbers."""
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 3),
            "requests": self.ok,
            "errors": self.errors,
            "per_s": self.per_s * items_per_request,
            **latency_summary(self.latencies_s),
        }


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 and mean in milliseconds (None without samples)."""
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
    }


def closed_loop(
    base_url: str, request: Request, *, clients: int, warmup_s: float, duration_s: float
) -> LoadResult:
    """``clients`` threads send back to back; the requests completing within the window
    (after warm-up) are counted: in steady state, completions per second are throughput."""
    result = LoadResult(clients=clients, duration_s=duration_s)
    lock = threading.Lock()
    start = time.perf_counter() + 0.2  # every thread has its client before the clock runs
    window = (start + warmup_s, start + warmup_s + duration_s)

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=600.0) as client:
            n = 0
            while time.perf_counter() < start:
                time.sleep(0.005)
            while True:
                t0 = time.perf_counter()
                if t0 >= window[1]:
                    return
                try:
                    ok = request(client, n)
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                n += 1
                if window[0] <= t1 <= window[1]:
                    with lock:
                        result.ok += ok
                        result.errors += not ok
                        if ok:
                            result.latencies_s.append(t1 - t0)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def sequential(
    client: httpx.Client, request: Request, *, count: int, budget_s: float, minimum: int = 5
) -> LoadResult:
    """One request at a time: ``count`` of them, or fewer when the budget runs out."""
    result = LoadResult(clients=1, duration_s=0.0)
    t_start = time.perf_counter()
    for n in range(count):
        t0 = time.perf_counter()
        ok = request(client, n)
        if ok:
            result.latencies_s.append(time.perf_counter() - t0)
        result.ok += ok
        result.errors += not ok
        if n + 1 >= minimum and time.perf_counter() - t_start > budget_s:
            break
    result.duration_s = time.perf_counter() - t_start
    return result
