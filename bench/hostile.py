"""Hostile input: a real server with default settings under lying audio headers, pixel
bombs, huge batches, deep JSON and unauthenticated large bodies, all at once.

Measured: the server's peak resident memory (VmHWM, and VmRSS sampled every 10 ms) against
the documented bound, beside a baseline of the same server after normal requests, and every
answer counted by status. Nothing timed is asserted; a 500 is recorded, never hidden.
"""

from __future__ import annotations

import io
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from PIL import Image

from bench.config import BenchConfig
from bench.data import jpeg_bytes, sentences
from bench.server import Server

Log = Callable[[str], None]

BOUND_MB = 2048  # the target with default settings
KEY = "bench-hostile-key"  # auth on, so that unauthenticated bodies mean something
AUTH = {"Authorization": f"Bearer {KEY}"}
ITEMS = "/v1/collections/c/items"


@dataclass(frozen=True)
class Attack:
    """One kind of hostile request: how to send it (a client in, a status out)."""

    name: str
    what: str
    send: Callable[[httpx.Client], int]


def run_hostile(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Normal requests first (the baseline), then every attack from concurrent clients."""
    h = cfg.hostile
    data_dir = Path(tempfile.mkdtemp(prefix="hostile-", dir=work)) / "data"
    srv = Server(
        data_dir,
        model=h.model,
        ready_timeout_s=cfg.ready_timeout_s,
        env={"MMR_API_KEYS": KEY},
    )
    with srv, srv.client(timeout=300.0) as client:
        client.headers.update(AUTH)
        client.post("/v1/collections", json={"name": "c"}).raise_for_status()
        ready = _memory(srv.pid)
        normal = _normal(client, cfg)
        baseline = _memory(srv.pid)
        log(f"hostile: server RSS {baseline['rss_mb']:.0f} MB after {normal} normal requests")
        attacks = build_attacks(cfg)
        with _Sampler(srv.pid) as sampler:
            answers, seconds = _attack(srv.url, attacks, h.clients, h.rounds)
        after = _memory(srv.pid)
        alive = client.get("/readyz").status_code == 200
    peak = max(after["hwm_mb"], sampler.max_rss_mb)
    rows: list[dict[str, Any]] = [
        {
            "name": a.name,
            "what": a.what,
            "requests": sum(answers[a.name].values()),
            "statuses": {str(k): v for k, v in sorted(answers[a.name].items())},
        }
        for a in attacks
    ]
    out: dict[str, Any] = {
        "model": h.model,
        "settings": "defaults, MMR_API_KEYS set",
        "clients": h.clients,
        "rounds": h.rounds,
        "seconds": seconds,
        "ready": ready,
        "baseline": baseline,
        "normal_requests": normal,
        "peak_rss_mb": peak,
        "peak_sampled_rss_mb": sampler.max_rss_mb,
        "after": after,
        "bound_mb": BOUND_MB,
        "under_bound": peak <= BOUND_MB,
        "any_500": 500 in _statuses(answers),
        "ready_after": alive,
        "attacks": rows,
    }
    log(
        f"hostile: {sum(r['requests'] for r in rows)} requests in {seconds:.0f} s, "
        f"peak RSS {peak:.0f} MB (bound {BOUND_MB}), any 500: {out['any_500']}"
    )
    return out


def _statuses(answers: dict[str, Counter[int]]) -> list[int]:
    return [status for counts in answers.values() for status in counts]


def _normal(client: httpx.Client, cfg: BenchConfig) -> int:
    """What a well-behaved client does: texts, small photos, a short recording, searches."""
    texts = sentences(32, seed=cfg.seed)
    jpegs = [jpeg_bytes(640, 480, seed=cfg.seed + i) for i in range(8)]
    clip = _wav(np.zeros(16000 * 5, np.float32), 16000)
    requests = [
        lambda: client.post(f"{ITEMS}/batch", json=[{"text": t} for t in texts]),
        lambda: client.post(f"{ITEMS}/batch", files=_files(jpegs)),
        lambda: client.post("/v1/collections/c/search", json={"text": "a red square"}),
        lambda: client.post("/v1/collections/c/search", files=_files(jpegs[:1])),
        lambda: client.post("/v1/embed", files=_files(jpegs[:4])),
    ]
    if "audio" in client.get("/v1/models").json()["active"]["modalities"]:
        requests.append(lambda: client.post(ITEMS, files=_files([clip])))
    for send in requests * 2:
        send().raise_for_status()
    return 2 * len(requests)


def build_attacks(cfg: BenchConfig) -> list[Attack]:
    """Every attack, its payload made once (the lying files are real files, patched)."""
    h = cfg.hostile
    bomb = _png(Image.new("L", (h.bomb_side, h.bomb_side)))
    rgba_bomb = _png(Image.new("RGBA", (h.bomb_side, h.bomb_side)))
    photos = [jpeg_bytes(1024, 768, seed=cfg.seed + i, quality=60) for i in range(4)]
    huge_batch = [photos[i % len(photos)] for i in range(h.batch)]
    silence = np.zeros(16000 * h.audio_seconds, np.float32)
    vorbis = _ogg_with_rate(_encoded(silence, 16000, "OGG"), 2_000_000_000)
    flac_mhz = _flac_with_rate(_encoded(silence, 16000, "FLAC"), 1_000_000)
    flac_384k = _flac_with_rate(_encoded(silence, 16000, "FLAC"), 384_000)
    deep = "[" * h.depth + "]" * h.depth
    large = b"\0" * h.large_body
    return [
        Attack("lying_ogg", "Ogg Vorbis claiming 2 GHz", _post_files(ITEMS, [vorbis])),
        Attack("lying_flac", "FLAC claiming 1 MHz", _post_files(ITEMS, [flac_mhz])),
        Attack(
            "flac_384k",
            f"{h.audio_seconds} s FLAC claiming 384 kHz (decodes {h.audio_seconds} s of frames)",
            _post_files(ITEMS, [flac_384k]),
        ),
        Attack(
            "pixel_bomb",
            f"{len(bomb) // 1024} KB PNG of {h.bomb_side}x{h.bomb_side}",
            _post_files(ITEMS, [bomb]),
        ),
        Attack(
            "pixel_bombs_embed",
            f"{h.bombs} of them in one /v1/embed",
            _post_files("/v1/embed", [bomb] * h.bombs),
        ),
        Attack(
            "rgba_bomb",
            f"{len(rgba_bomb) // 1024} KB RGBA PNG of {h.bomb_side}x{h.bomb_side}",
            _post_files("/v1/collections/c/search", [rgba_bomb]),
        ),
        Attack(
            "huge_batch",
            f"{h.batch} JPEGs of 1024x768 in one batch",
            _post_files(f"{ITEMS}/batch", huge_batch),
        ),
        Attack(
            "deep_json",
            f"JSON nested {h.depth} deep (body, metadata, filter)",
            _deep(deep),
        ),
        Attack(
            "unauthenticated_large",
            f"{h.large_body // 2**20} MB bodies without a key",
            _unauthenticated(large),
        ),
    ]


def _post_files(url: str, uploads: list[bytes]) -> Callable[[httpx.Client], int]:
    def send(client: httpx.Client) -> int:
        return client.post(url, files=_files(uploads)).status_code

    return send


def _deep(nested: str) -> Callable[[httpx.Client], int]:
    """A deep JSON body to three routes, in turn: a search's filter, an item's metadata,
    and a whole body."""
    bodies = [
        ("/v1/collections/c/search", '{"text": "x", "filter": {"k": ' + nested + "}}"),
        (ITEMS, '{"text": "x", "metadata": {"k": ' + nested + "}}"),
        ("/v1/embed", nested),
    ]
    turn = iter(range(10**9))

    def send(client: httpx.Client) -> int:
        url, body = bodies[next(turn) % len(bodies)]
        headers = {"content-type": "application/json"}
        return client.post(url, content=body.encode(), headers=headers).status_code

    return send


def _unauthenticated(body: bytes) -> Callable[[httpx.Client], int]:
    routes = [
        (ITEMS, "multipart/form-data; boundary=x"),
        ("/v1/embed", "application/json"),
        ("/v1/collections/c/search", "application/json"),
        ("/v1/collections", "application/json"),
    ]
    turn = iter(range(10**9))

    def send(client: httpx.Client) -> int:
        url, ctype = routes[next(turn) % len(routes)]
        # A client of its own: the shared one carries the key.
        with httpx.Client(base_url=client.base_url, timeout=client.timeout) as bare:
            return bare.post(url, content=body, headers={"content-type": ctype}).status_code

    return send


def _attack(
    url: str, attacks: list[Attack], clients: int, rounds: int
) -> tuple[dict[str, Counter[int]], float]:
    """Every client sends every attack ``rounds`` times, in its own shuffled order."""
    answers: dict[str, Counter[int]] = {a.name: Counter() for a in attacks}
    lock = threading.Lock()

    def client_loop(seed: int) -> None:
        order = attacks * rounds
        random.Random(seed).shuffle(order)
        with httpx.Client(base_url=url, timeout=300.0, headers=AUTH) as client:
            for attack in order:
                try:
                    status = attack.send(client)
                except httpx.HTTPError:
                    status = 0  # the connection dropped: counted, as "no answer"
                with lock:
                    answers[attack.name][status] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return answers, time.perf_counter() - t0


class _Sampler:
    """The server's VmRSS every 10 ms while the attacks run, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.max_rss_mb = max(self.max_rss_mb, _memory(self.pid)["rss_mb"])

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _memory(pid: int) -> dict[str, float]:
    """The process's resident memory now and its high-water mark, MB (0 when unreadable)."""
    fields = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return {"rss_mb": fields["VmRSS"], "hwm_mb": fields["VmHWM"]}


def _files(uploads: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"f{i}", data, "application/octet-stream")) for i, data in enumerate(uploads)]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    return _encoded(samples, rate, "WAV")


def _encoded(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    with sf.SoundFile(buffer, "w", rate, 1, format=fmt, subtype=subtype) as out:
        for start in range(0, len(samples), 1 << 20):
            out.write(samples[start : start + (1 << 20)])
    return buffer.getvalue()


def _flac_with_rate(data: bytes, rate: int) -> bytes:
    """The FLAC with the 20-bit sample rate of its STREAMINFO block replaced."""
    patched = bytearray(data)
    field = int.from_bytes(patched[18:26], "big")
    patched[18:26] = ((field & ((1 << 44) - 1)) | (rate << 44)).to_bytes(8, "big")
    return bytes(patched)


def _ogg_with_rate(data: bytes, rate: int) -> bytes:
    """The Ogg Vorbis file with the rate of its identification header replaced."""
    packet = 27 + data[26]
    page_end = packet + sum(data[27:packet])
    page = bytearray(data[:page_end])
    page[packet + 12 : packet + 16] = rate.to_bytes(4, "little")
    page[22:26] = bytes(4)
    page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
    return bytes(page) + data[page_end:]


def ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc
