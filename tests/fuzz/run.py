"""Schemathesis against a live ``mmr serve``: the contract proven by an outside tool.

``python -m tests.fuzz.run [--max-examples N] [--seed S] [--backend sqlite|postgres ...]``
starts a real server per backend (the tiny random model, API keys on, a fresh database
and data directory in a temporary folder), runs every check of schemathesis with its
stateful phase against ``/openapi.json`` with a key, then once without one (every /v1 route
must answer its documented 401), and exits non-zero on any failure. ``make fuzz`` runs a
long one; ``tests/fuzz/test_schemathesis.py`` a short, seeded one in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import postgres_schema_url

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
BIN = Path(sys.executable).parent
KEY = "fuzz-admin-key"


@dataclass
class Outcome:
    """One schemathesis run: its exit code and what it printed."""

    label: str
    returncode: int
    output: str

    @property
    def summary(self) -> str:
        """The run's closing summary (from the SUMMARY rule on)."""
        at = self.output.rfind("SUMMARY")
        return self.output[self.output.rfind("\n", 0, at) + 1 :] if at >= 0 else self.output[-3000:]


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(workdir: Path, database_url: str) -> Iterator[str]:
    """A real ``mmr serve`` subprocess with keys on; yields its base URL."""
    port = free_port()
    env = os.environ | {
        "MMR_DATA_DIR": str(workdir / "data"),
        "MMR_DATABASE_URL": database_url,
        "MMR_MODEL": "random:mmr-tiny",
        "MMR_DEVICE": "cpu",
        "MMR_PRECISION": "fp32",
        "MMR_TORCH_THREADS": "1",
        "MMR_API_KEYS": KEY,
        "MMR_LOG_LEVEL": "warning",
    }
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "mmr"), "serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_ready(url, server)
        except RuntimeError as exc:
            log.flush()
            tail = (workdir / "server.log").read_text(errors="replace")[-5000:]
            raise RuntimeError(f"{exc}; its log:\n{tail}") from exc
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def schemathesis(
    url: str, workdir: Path, *, max_examples: int, seed: int, key: str | None, label: str
) -> Outcome:
    """Every check, every phase (stateful included) against the live server's document."""
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--generation-database",
        "none",
    ]
    if key is not None:
        command += ["-H", f"Authorization: Bearer {key}"]
    else:  # without a key every /v1 route is a 401: the fuzzer checks that it is documented
        command += ["--phases", "examples,coverage,fuzzing"]
    # It writes .schemathesis/ where it runs: a temporary folder, never the repository.
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, check=False, env=os.environ
    )
    return Outcome(label, done.returncode, done.stdout + done.stderr)


def fuzz(backend: str, *, max_examples: int, seed: int, without_key: bool = True) -> list[Outcome]:
    """Runs against one backend's live server: with the key, then without one."""
    with tempfile.TemporaryDirectory(prefix="mmr-fuzz-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            if backend == "postgres":
                database_url = stack.enter_context(contextlib.contextmanager(postgres_schema_url)())
            else:
                database_url = f"sqlite:///{workdir / 'mmr.sqlite3'}"
            url = stack.enter_context(live_server(workdir, database_url))
            runs = [
                schemathesis(
                    url,
                    workdir,
                    max_examples=max_examples,
                    seed=seed,
                    key=KEY,
                    label=f"{backend}, with a key",
                )
            ]
            if without_key:
                runs.append(
                    schemathesis(
                        url,
                        workdir,
                        max_examples=max(1, max_examples // 10),
                        seed=seed,
                        key=None,
                        label=f"{backend}, without a key",
                    )
                )
            log = (workdir / "server.log").read_text(errors="replace")
        for run in runs:
            if run.returncode != 0:
                run.output += f"\n--- server log ---\n{log[-20000:]}"
        return runs


def main(argv: list[str] | None = None) -> int:
    """Fuzz every backend asked for; print each run's summary; non-zero on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    args = parser.parse_args(argv)
    failed = False
    for backend in args.backend or ["sqlite", "postgres"]:
        for run in fuzz(backend, max_examples=args.max_examples, seed=args.seed):
            print(f"=== {run.label} ===")
            print(run.output if run.returncode else run.summary, flush=True)
            failed |= run.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
