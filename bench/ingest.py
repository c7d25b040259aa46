"""Ingest: texts and 12-megapixel JPEGs through the batch endpoint, and the JPEG decode the
service does (reduced DCT scale) against plain Pillow, speed and embedding agreement."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.config import BenchConfig
from bench.data import jpeg_bytes, sentences
from bench.rawmodel import RawModel, timed_rate
from bench.server import Server

Log = Callable[[str], None]


def run_ingest(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """HTTP ingestion first, then the in-process decode baseline with the server stopped."""
    width, height = cfg.jpeg_size
    jpegs = [jpeg_bytes(width, height, seed=cfg.seed + 100 + i) for i in range(cfg.jpeg_distinct)]
    out: dict[str, Any] = {
        "model": cfg.ingest_model,
        "jpeg": {
            "width": width,
            "height": height,
            "quality": 90,
            "distinct": len(jpegs),
            "mean_bytes": int(np.mean([len(j) for j in jpegs])),
        },
    }
    data_dir = Path(tempfile.mkdtemp(prefix="ingest-", dir=work)) / "data"
    srv = Server(data_dir, model=cfg.ingest_model, ready_timeout_s=cfg.ready_timeout_s)
    with srv, srv.client() as client:
        out["texts"] = _texts(client, cfg)
        log(f"ingest texts: {out['texts']['items_per_s']:.1f} items/s")
        out["images"] = _images(client, cfg, jpegs)
        log(f"ingest {width}x{height} JPEGs: {out['images']['items_per_s']:.2f} images/s")
    out["decode"] = decode_baseline(cfg, jpegs, work)
    d = out["decode"]
    log(
        f"decode: plain {d['plain_per_s']:.2f}/s, service {d['service_per_s']:.2f}/s "
        f"(x{d['speedup']:.2f}), cosine min {d['cosine_min']:.4f}"
    )
    return out


def _texts(client: Any, cfg: BenchConfig) -> dict[str, Any]:
    client.post("/v1/collections", json={"name": "texts"}).raise_for_status()
    texts = sentences(cfg.texts, seed=cfg.seed)
    client.post("/v1/collections/texts/items/batch", json=[{"text": "warm-up"}])
    batches = [texts[i : i + cfg.text_batch] for i in range(0, len(texts), cfg.text_batch)]
    ok = 0
    t0 = time.perf_counter()
    for batch in batches:
        r = client.post("/v1/collections/texts/items/batch", json=[{"text": t} for t in batch])
        if r.status_code == 200:
            ok += sum(1 for e in r.json()["results"] if e["status"] in (200, 201))
    elapsed = time.perf_counter() - t0
    return {
        "items": ok,
        "sent": len(texts),
        "batch": cfg.text_batch,
        "seconds": elapsed,
        "items_per_s": ok / elapsed,
    }


def _images(client: Any, cfg: BenchConfig, jpegs: list[bytes]) -> dict[str, Any]:
    client.post("/v1/collections", json={"name": "images"}).raise_for_status()
    url = "/v1/collections/images/items/batch"
    client.post(url, files=[("file", ("w.jpg", jpegs[0], "image/jpeg"))])  # warm-up
    ok, sent, errors = 0, 0, []
    t0 = time.perf_counter()
    while sent < cfg.jpegs:
        count = min(cfg.jpeg_batch, cfg.jpegs - sent)
        files = [
            ("file", (f"{sent + i}.jpg", jpegs[(sent + i) % len(jpegs)], "image/jpeg"))
            for i in range(count)
        ]
        r = client.post(url, files=files)
        sent += count
        if r.status_code != 200:
            errors.append(f"{r.status_code}: {r.text[:200]}")
            continue
        ok += sum(1 for e in r.json()["results"] if e["status"] in (200, 201))
    elapsed = time.perf_counter() - t0
    return {
        "items": ok,
        "sent": sent,
        "batch": cfg.jpeg_batch,
        "seconds": elapsed,
        "items_per_s": ok / elapsed,
        "errors": errors[:5],
    }


def plain_decode(data: bytes) -> Image.Image:
    """What a service without draft decoding does: the full-size decode, then RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def decode_baseline(cfg: BenchConfig, jpegs: list[bytes], work: Path) -> dict[str, Any]:
    """Decode + preprocess to the encoder input, plain Pillow vs the service's decode;
    then the cosine between the embeddings of the two decodes of each JPEG."""
    raw = RawModel(cfg.ingest_model, "fp32", cache_dir=work / "models")
    k = [0]

    def step(decode: Callable[[bytes], Image.Image]) -> int:
        raw.prepare([decode(jpegs[k[0] % len(jpegs)])])
        k[0] += 1
        return 1

    plain = timed_rate(lambda: step(plain_decode), cfg.decode_budget_s)
    service = timed_rate(lambda: step(raw.decode), cfg.decode_budget_s)
    a = raw.embed([plain_decode(j) for j in jpegs])
    b = raw.embed([raw.decode(j) for j in jpegs])
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    with Image.open(io.BytesIO(jpegs[0])) as probe:
        full = probe.size
    decoded = raw.decode(jpegs[0]).size
    raw.close()
    return {
        "plain_per_s": plain["per_s"],
        "service_per_s": service["per_s"],
        "speedup": service["per_s"] / plain["per_s"],
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "full_size": list(full),
        "service_decoded_size": list(decoded),
        "encoder_input": raw.image_size,
    }
