"""Embedding throughput: images/s through POST /v1/embed at 1..N concurrent clients, against
the raw model (best batch: the ceiling) and one-request-one-forward (a naive server)."""

from __future__ import annotations

import gc
import json
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.clients import RawHttp, closed_loop, multipart_file
from bench.config import BenchConfig
from bench.data import small_jpegs
from bench.rawmodel import RawModel, batched_rates
from bench.server import Server

Log = Callable[[str], None]


def run_embed(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Every (model, precision): the service over HTTP, then the baselines in-process."""
    jpegs = small_jpegs(cfg.embed_images, seed=cfg.seed)
    http: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for model in cfg.models:
        for precision in cfg.precisions:
            served = _service(cfg, model, precision, jpegs, work, log)
            http.extend(served)
            # Server stopped: the baseline has the cores to itself, and runs in the
            # precision the server resolved ("auto" measures; two processes can disagree).
            resolved = str(served[0]["server_model"].get("precision") or precision)
            raw.extend(_baselines(cfg, model, precision, resolved, jpegs, work, log))
    return {"http": http, "raw": raw, "summary": summarise(http, raw)}


def _service(
    cfg: BenchConfig, model: str, precision: str, jpegs: list[bytes], work: Path, log: Log
) -> list[dict[str, Any]]:
    rows = []
    data_dir = Path(tempfile.mkdtemp(prefix="embed-", dir=work)) / "data"
    with Server(
        data_dir,
        model=model,
        precision=precision,
        ready_timeout_s=cfg.ready_timeout_s,
        env={"MMR_DEVICE": cfg.device},
    ) as srv:
        with srv.client() as c:
            models = c.get("/v1/models").json()

        # Bodies encoded once and sent by http.client: the load generator shares the cores.
        bodies = [multipart_file(j, f"img{i}.jpg", "image/jpeg") for i, j in enumerate(jpegs)]
        local = threading.local()

        def request(client: httpx.Client, n: int) -> bool:
            raw = getattr(local, "raw", None)
            if raw is None:
                raw = local.raw = RawHttp(srv.url)
            body, ctype = bodies[n % len(bodies)]
            status, data = raw.post("/v1/embed", body, ctype)
            return status == 200 and len(json.loads(data)["embeddings"]) == 1

        for clients in cfg.clients:
            res = closed_loop(
                srv.url,
                request,
                clients=clients,
                warmup_s=cfg.warmup_s,
                duration_s=cfg.duration_s,
            )
            row = {"model": model, "precision": precision, **res.summary()}
            row["images_per_s"] = row.pop("per_s")
            row["server_model"] = models.get("active", {})
            row["rss_kb"] = srv.rss_kb()
            rows.append(row)
            log(
                f"embed {model} {precision} x{clients}: {row['images_per_s']:.1f} img/s "
                f"(p50 {row['p50_ms'] or 0:.0f} ms, {row['errors']} errors)"
            )
    return rows


def _baselines(
    cfg: BenchConfig,
    model: str,
    precision: str,
    resolved: str,
    jpegs: list[bytes],
    work: Path,
    log: Log,
) -> list[dict[str, Any]]:
    raw = RawModel(model, resolved, cache_dir=work / "models", device=cfg.device)
    rows = batched_rates(raw, jpegs, cfg.batch_sizes, cfg.raw_duration_s)
    for row in rows:
        row.update(
            model=model,
            precision=precision,
            resolved_precision=raw.precision,
            path="pack_images/forward" if raw.native else "open_clip preprocess/encode_image",
        )
        log(
            f"raw {model} {precision} ({raw.precision}) batch {row['batch']}: "
            f"{row['images_per_s']:.1f} img/s"
        )
    raw.close()
    del raw
    gc.collect()
    return rows


def summarise(http: list[dict[str, Any]], raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, precision): service at the most clients vs the raw ceiling (same
    precision) and vs the naive fp32 server."""
    out = []
    for model, precision in dict.fromkeys((r["model"], r["precision"]) for r in http):
        service = max(
            (r for r in http if (r["model"], r["precision"]) == (model, precision)),
            key=lambda r: r["clients"],
        )
        same = [r for r in raw if (r["model"], r["precision"]) == (model, precision)]
        naive32 = [r for r in raw if r["model"] == model and r["precision"] == "fp32"]
        best = max(same, key=lambda r: r["images_per_s"], default=None)
        naive = _batch1(same)
        naive_fp32 = _batch1(naive32)
        out.append(
            {
                "model": model,
                "precision": precision,
                "service_clients": service["clients"],
                "service_images_per_s": service["images_per_s"],
                "raw_best_images_per_s": best["images_per_s"] if best else None,
                "raw_best_batch": best["batch"] if best else None,
                "naive_images_per_s": naive,
                "naive_fp32_images_per_s": naive_fp32,
                "vs_raw_best": _ratio(
                    service["images_per_s"], best["images_per_s"] if best else None
                ),
                "vs_naive_fp32": _ratio(service["images_per_s"], naive_fp32),
            }
        )
    return out


def _batch1(rows: list[dict[str, Any]]) -> float | None:
    return next((r["images_per_s"] for r in rows if r["batch"] == 1), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
