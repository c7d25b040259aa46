"""Closed-loop load from ``wrk`` (a C load generator, Debian's ``wrk``) where it is
installed: on a small machine, clients that are threads of the bench's Python process take
a good share of the cores the server needs (0.44 of 2 cores against two server processes),
while wrk takes a few percent. The same bodies, connections and durations as the Python
clients; the same keys in its summary."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def post_load(
    url: str,
    path: str,
    bodies: list[bytes],
    *,
    connections: int,
    duration_s: float,
) -> dict[str, Any]:
    """POST the JSON bodies in turn from ``connections`` keep-alive connections (one wrk
    thread) for ``duration_s`` (whole seconds, at least one); wrk's own CPU time too."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_lua(path, bodies))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = _run(url, script, connections, duration_s)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**parse(out, connections, duration_s), "generator_cpu_s": cpu}


def _lua(path: str, bodies: list[bytes]) -> str:
    quoted = ",".join(_lua_string(b.decode()) for b in bodies)
    return (
        f"bodies = {{{quoted}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        f"  return wrk.format('POST', {_lua_string(path)}, "
        "{['Content-Type'] = 'application/json'}, bodies[i])\n"
        "end\n"
    )


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _run(url: str, script: Path, connections: int, seconds: float) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    done = subprocess.run(
        [*argv, "-s", str(script), url], capture_output=True, text=True, check=True
    )
    return done.stdout


def parse(out: str, connections: int, duration_s: float) -> dict[str, Any]:
    """wrk's report as the Python clients' summary: requests, errors, per_s, latencies."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done is None or rate is None:
        raise ValueError(f"not a wrk report:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    latency = {
        f"p{pct}_ms": float(value) * _UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    return {
        "clients": connections,
        "duration_s": duration_s,
        "requests": int(done.group(1)) - errors,
        "errors": errors,
        "per_s": float(rate.group(1)) * (1 - errors / max(1, int(done.group(1)))),
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": None,  # wrk reports 50/75/90/99
        "p99_ms": latency.get("p99_ms"),
        "mean_ms": None,
        "generator": "wrk",
    }
