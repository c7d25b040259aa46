"""``python -m bench``: the service against baselines measured in the same run.

Writes results.md, results.json and PNG plots to ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import INDEX_TYPES, PHASES, BenchConfig, quick_config
from bench.machine import describe_machine

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str]) -> tuple[BenchConfig, Path, bool, bool]:
    """Options -> (config, output folder, keep temporary data, merge with earlier results)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (smoke test)")
    p.add_argument("--only", type=_words, help=f"phases, comma separated: {','.join(PHASES)}")
    p.add_argument("--sizes", type=_ints, help="collection sizes, e.g. 10000,100000,1000000")
    p.add_argument("--types", type=_words, help=f"index types: {','.join(INDEX_TYPES)}")
    p.add_argument("--models", type=_words, help="embedding models, e.g. random:ViT-B-32,mmr-mini")
    p.add_argument("--precisions", type=_words, help="MMR_PRECISION values, e.g. fp32,auto")
    p.add_argument(
        "--device", choices=["cpu", "cuda"], help="the embedding phase's MMR_DEVICE (cpu)"
    )
    p.add_argument("--clients", type=_ints, help="concurrent embedding clients, e.g. 1,4,16")
    p.add_argument("--duration", type=float, help="seconds measured per client count")
    p.add_argument("--warmup", type=float, help="seconds of load before each measurement")
    p.add_argument("--raw-duration", type=float, help="seconds per baseline batch size")
    p.add_argument("--queries", type=int, help="search queries per setting")
    p.add_argument("--max-build-min", type=float, help="skip index builds estimated longer")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the phases this run skips from the results.json already in --out",
    )
    args = p.parse_args(argv)
    cfg = quick_config() if args.quick else BenchConfig()
    for opt, attr in [
        ("only", "phases"),
        ("sizes", "sizes"),
        ("types", "types"),
        ("models", "models"),
        ("precisions", "precisions"),
        ("clients", "clients"),
        ("device", "device"),
        ("duration", "duration_s"),
        ("warmup", "warmup_s"),
        ("raw_duration", "raw_duration_s"),
        ("queries", "queries"),
        ("max_build_min", "max_build_min"),
    ]:
        value = getattr(args, opt)
        if value is not None:
            setattr(cfg, attr, tuple(value) if attr == "phases" else value)
    unknown = set(cfg.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}: use {','.join(PHASES)}")
    return cfg, args.out, args.keep, args.merge


def main(argv: list[str] | None = None) -> int:
    """Run the phases, then write the report (also after a phase failed)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg, out, keep, merge = parse_args(argv)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mmr-bench-"))
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {line}", flush=True)

    results: dict[str, Any] = {
        "argv": " ".join(argv),
        "config": cfg.as_dict(),
        "machine": describe_machine(),
        "errors": [],
    }
    log(f"bench: phases {','.join(cfg.phases)}, work dir {work}")
    try:
        for phase in cfg.phases:
            _run_phase(phase, cfg, work, log, results)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - t0
    if merge:
        _merge_earlier(results, out / "results.json", cfg.phases, log)
    _write(results, out, log)
    return 1 if results["errors"] else 0


def _run_phase(
    phase: str, cfg: BenchConfig, work: Path, log: Callable[[str], None], results: dict[str, Any]
) -> None:
    from bench.bulk import run_bulk
    from bench.duplicates import run_duplicates
    from bench.embed import run_embed
    from bench.filtered import run_filtered
    from bench.finetune import run_finetune
    from bench.footprint import run_footprint
    from bench.hostile import run_hostile
    from bench.hybrid import run_hybrid
    from bench.ingest import run_ingest
    from bench.ondisk import run_ondisk
    from bench.replicas import run_replicas
    from bench.search import run_search
    from bench.video import run_video

    runners = {
        "embed": run_embed,
        "search": run_search,
        "ingest": run_ingest,
        "hostile": run_hostile,
        "replicas": run_replicas,
        "bulk": run_bulk,
        "finetune": run_finetune,
        "duplicates": run_duplicates,
        "video": run_video,
        "hybrid": run_hybrid,
        "footprint": run_footprint,
        "filtered": run_filtered,
        "ondisk": run_ondisk,
    }
    try:
        results[phase] = runners[phase](cfg, work, log)
    except Exception as exc:  # a failed phase is reported; the others still run
        log(f"{phase} failed: {exc}")
        results["errors"].append(f"{phase}: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def _merge_earlier(
    results: dict[str, Any], path: Path, ran: tuple[str, ...], log: Callable[[str], None]
) -> None:
    """Take the phases this run skipped from an earlier results.json (their own dates), and
    the embedding rows of the (model, precision) pairs it did not measure."""
    if not path.exists():
        return
    earlier = json.loads(path.read_text())
    kept = [p for p in PHASES if p not in ran and p in earlier]
    for phase in kept:
        results[phase] = earlier[phase]
    if "embed" in ran and results.get("embed") and earlier.get("embed"):
        pairs = merge_embed(results["embed"], earlier["embed"])
        if pairs:
            kept.append(f"embed rows of {', '.join(pairs)}")
    results["merged"] = {p: earlier.get("machine", {}).get("date") for p in kept}
    log(f"kept {', '.join(kept) or 'no phase'} from {path}")


def merge_embed(now: dict[str, Any], earlier: dict[str, Any]) -> list[str]:
    """Put the earlier rows of (model, precision) pairs this run did not measure before this
    run's, and summarise again; returns those pairs as "model precision"."""
    from bench.embed import summarise

    measured = {(r["model"], r["precision"]) for r in now["http"] + now["raw"]}
    older = {
        key: [r for r in earlier.get(key, []) if (r["model"], r["precision"]) not in measured]
        for key in ("http", "raw")
    }
    for key, rows in older.items():
        now[key] = rows + now[key]
    now["summary"] = summarise(now["http"], now["raw"])
    pairs = {(r["model"], r["precision"]) for rows in older.values() for r in rows}
    return [f"{model} {precision}" for model, precision in sorted(pairs)]


def _write(results: dict[str, Any], out: Path, log: Callable[[str], None]) -> None:
    from bench.plots import write_plots
    from bench.report import targets, write_json, write_markdown

    results["targets"] = targets(results)
    plots = write_plots(results, out)
    write_json(results, out)
    md = write_markdown(results, out, plots)
    log(f"wrote {md}, results.json and {len(plots)} plots in {out}")
    text = md.read_text()
    start = text.find("## Targets")
    end = text.find("\n## ", start + 1)
    print(text[start:end].strip() if start >= 0 else text, flush=True)  # the table, printed


if __name__ == "__main__":
    sys.exit(main())
