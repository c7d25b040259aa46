"""The server under test: a real ``mmr serve`` subprocess on a free port, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS), 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_spawned_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return False


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets a process holds open."""
    out = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


class ServerError(RuntimeError):
    """The server did not come up (its log tail is in the message)."""


class Server:
    """``python -m app.cli serve`` with its own data dir; use as a context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        model: str,
        precision: str | None = None,
        ready_timeout_s: float = 600.0,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.model = model
        self.precision = precision
        self.ready_timeout_s = ready_timeout_s
        self.extra_env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMR_")}
        env.update(
            MMR_DATA_DIR=str(self.data_dir),
            MMR_MODEL=self.model,
            MMR_DEVICE="cpu",
            MMR_WORKER="on",
            MMR_LOG_LEVEL="warning",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        if self.precision:
            env["MMR_PRECISION"] = self.precision
        env.update(self.extra_env)
        return env

    def start(self) -> Server:
        """Start and wait for GET /readyz 200 (start-up builds every index from SQL)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        with self.log_path.open("wb") as log:
            # cwd outside the repository: a developer's .env must not leak into the run.
            self.proc = subprocess.Popen(
                argv,
                cwd=self.data_dir.parent,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(t0)
        self.startup_s = time.perf_counter() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.perf_counter() - t0 < self.ready_timeout_s:
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The processes that serve: the server itself, or the workers ``--workers`` started
        (its children that run uvicorn's spawned worker; Linux)."""
        if self.workers <= 1:
            return [self.pid]
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children if _is_spawned_worker(int(pid))]

    def connections(self) -> dict[int, int]:
        """Established client connections each serving process holds now (Linux)."""
        inodes = _established_inodes(self.port)
        return {pid: len(_socket_inodes(pid) & inodes) for pid in self.worker_pids()}

    def rss_kb(self) -> int:
        """The server's resident memory now, KiB."""
        return rss_kb(self.pid)

    def client(self, timeout: float = 600.0) -> httpx.Client:
        """A keep-alive client of this server."""
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM (a clean shutdown snapshots indexes), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
