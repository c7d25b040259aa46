"""The ``mmr`` command: ``serve`` runs the API; ``train-mini``, ``eval`` and ``world`` work on
the project's own model and the synthetic world it is trained on; ``bootstrap-audio`` builds
the CLAP -> CLIP audio head from captions; ``tiny-clap`` writes a tiny random CLAP;
``backup`` and ``restore`` copy a deployment (docs/backup.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="mmr", description="multimodal retrieval service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API (configuration: MMR_* variables)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, the database and the data directory "
        "(docs/replicas.md)",
    )
    sub.add_parser("worker", help="run background jobs (fine-tune, reindex) in this process")
    train = sub.add_parser("train-mini", help="train mmr-mini from scratch, then evaluate it")
    train.add_argument("--out", type=Path, default=Path("data/mmr-mini"))
    train.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-pairs", type=int, default=600)
    ev = sub.add_parser("eval", help="recall@1/5/10 of a model on held-out generated pairs")
    ev.add_argument("--model", default="mmr-mini", help="a model id (default mmr-mini)")
    ev.add_argument("--pairs", type=int, default=600)
    ev.add_argument("--seed", type=int, default=1000)
    world = sub.add_parser("world", help="write generated images and sounds with captions")
    world.add_argument("--out", type=Path, default=Path("data/world"))
    world.add_argument("--images", type=int, default=40)
    world.add_argument("--sounds", type=int, default=24)
    world.add_argument("--seed", type=int, default=7)
    world.add_argument("--style", choices=["train", "shifted"], default="shifted")
    boot = sub.add_parser(
        "bootstrap-audio", help="train the audio head of a CLAP -> CLIP bridge from captions"
    )
    boot.add_argument("--model", default=None, help="image/text model id (default: MMR_MODEL)")
    boot.add_argument("--audio-model", default=None, help="clap:... (default: MMR_AUDIO_MODEL)")
    boot.add_argument("--corpus", type=Path, default=None, help="captions, one per line")
    boot.add_argument(
        "--out", type=Path, default=None, help="artefact file (default: the server's cache)"
    )
    boot.add_argument("--holdout", type=float, default=0.1)
    boot.add_argument("--seed", type=int, default=0)
    tiny = sub.add_parser("tiny-clap", help="write a tiny random CLAP (offline plumbing, demos)")
    tiny.add_argument("--out", type=Path, default=Path("data/tiny-clap"))
    tiny.add_argument("--seed", type=int, default=0)
    back = sub.add_parser(
        "backup", help="copy rows, originals, aligner artefacts and index snapshots (online)"
    )
    back.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    rest = sub.add_parser("restore", help="fill an empty database and data dir from a backup")
    rest.add_argument("--from", dest="source", type=Path, required=True, help="a backup folder")
    _ingest_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "ingest":
        return _ingest(args)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    if args.command == "worker":
        return _worker()
    if args.command == "bootstrap-audio":
        return _bootstrap_audio(args)
    if args.command == "tiny-clap":
        return _tiny_clap(args.out, args.seed)
    if args.command == "serve":
        if args.workers > 1:
            return _serve_many(args.host, args.port, args.workers)
        return _serve(args.host, args.port)
    if args.command == "train-mini":
        return _train_mini(args.out, args.steps, args.seed, args.eval_pairs)
    if args.command == "eval":
        return _eval(args.model, args.pairs, args.seed)
    if args.command == "world":
        return _world(args.out, args.images, args.sounds, args.seed, args.style)
    return 2


INTERRUPTED = 130  # the shell's exit code for a process stopped by Ctrl-C (128 + SIGINT)


def _serve(host: str, port: int) -> int:
    from app.main import create_app

    app = create_app()  # configures the log (app.logs)
    config = uvicorn.Config(app, host=host, port=port, **_uvicorn_logging(app.state.settings))
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shut down gracefully on Ctrl-C and then raises it again: end here.
        return INTERRUPTED
    # uvicorn returns normally when start-up fails (e.g. a strict model id that cannot load).
    return 0 if server.started else 1


def _serve_many(host: str, port: int, workers: int) -> int:
    """``workers`` processes of the app on one socket (uvicorn's supervisor restarts one
    that dies), each following SQL (docs/replicas.md). Torch threads are shared out between
    them unless MMR_TORCH_THREADS says otherwise, and the precision probe runs once first."""
    from app.lifespan import settle_precision
    from app.logs import configure_logging
    from app.settings import Settings

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    if settings.torch_threads == 0:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["MMR_TORCH_THREADS"] = str(threads)
        settings = Settings()
    settle_precision(settings)
    try:
        uvicorn.run(
            "app.main:app", host=host, port=port, workers=workers, **_uvicorn_logging(settings)
        )
    except KeyboardInterrupt:
        return INTERRUPTED
    return 0


def _uvicorn_logging(settings: Settings) -> dict[str, Any]:
    """uvicorn logs through the app's handler and format (app.logs), at MMR_LOG_LEVEL, and
    leaves the access log to app.access (one line a request, with its id)."""
    return {"log_config": None, "log_level": settings.log_level, "access_log": False}


def _train_mini(out: Path, steps: int | None, seed: int, eval_pairs: int) -> int:
    from app.progress import Stages
    from models.encoders.mini.encoder import MiniEncoder
    from models.encoders.mini.model import CARD_FILE, load_mini, read_card
    from models.training.evaluate import as_card, evaluate, format_table
    from models.training.train_mini import TrainConfig, train_mini

    cfg = TrainConfig(seed=seed)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    with Stages() as stages:
        train_mini(cfg, out, log=stages.say, progress=stages)
        encoder = MiniEncoder(model_id=f"mmr-mini@{out}", model=load_mini(out), device="cpu")
        results = evaluate(encoder, audio=encoder.audio, pairs=eval_pairs, progress=stages)
    card = read_card(out)
    card["evaluation"] = as_card(results, pairs=eval_pairs)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    _say(format_table(results))
    _say(f"weights in {out}; serve them with MMR_MODEL=mmr-mini@{out.resolve()}")
    return 0


def _eval(model_id: str, pairs: int, seed: int) -> int:
    from app.progress import Stages
    from models.encoders.registry import load_model
    from models.errors import ModelLoadError
    from models.training.evaluate import evaluate, format_table

    try:
        loaded = load_model(model_id, device="cpu")
    except ModelLoadError as exc:
        _say(f"mmr eval: {exc}")
        return 1
    if loaded.warning:
        _say(f"mmr eval: {loaded.warning}")
    with Stages() as stages:
        results = evaluate(
            loaded.encoder, audio=loaded.audio, pairs=pairs, seed=seed, progress=stages
        )
    _say(format_table(results))
    return 0


def _worker() -> int:
    import signal

    from app.lifespan import build_services, log_start
    from app.logs import configure_logging
    from app.settings import get_settings
    from app.worker import Worker
    from models.errors import ModelLoadError

    settings = get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    try:
        services = build_services(settings, holds_indexes=False)
    except ModelLoadError as exc:
        _say(f"mmr worker: {exc}")
        return 1
    worker = Worker(services)
    log_start(services, jobs=f"run by this worker, {worker.name}")
    # SIGTERM (docker stop) ends the loop; a running job goes back to the queue.
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop()
    finally:
        services.models.close()
        services.engine.dispose()
    return 0


def _bootstrap_audio(args: argparse.Namespace) -> int:
    from app.progress import Stages
    from app.settings import get_settings
    from models.encoders.aligner import needs_bridge
    from models.encoders.registry import load_model
    from models.errors import ModelLoadError
    from models.synth.captions.sound_captions import SHIPPED_CAPTIONS, load_sound_captions
    from models.training.bootstrap import FitConfig
    from models.training.bridge import bridge_file, build_bridge

    settings = get_settings()
    audio_id = args.audio_model if args.audio_model is not None else settings.audio_model
    try:
        loaded = load_model(
            args.model or settings.model,
            audio_model=audio_id,
            device=settings.device,
            cache_dir=settings.data_dir / "models",
        )
    except ModelLoadError as exc:
        _say(f"mmr bootstrap-audio: {exc}")
        return 1
    if loaded.warning:
        _say(f"mmr bootstrap-audio: {loaded.warning}")
    if loaded.audio is None or not needs_bridge(loaded.encoder, loaded.audio):
        _say("mmr bootstrap-audio: nothing to bridge: set --audio-model clap:... (a CLAP tower)")
        return 1
    captions = load_sound_captions(args.corpus)
    corpus = args.corpus.name if args.corpus else SHIPPED_CAPTIONS.name
    cfg = FitConfig(holdout=args.holdout, seed=args.seed)
    _say(f"embedding {len(captions)} captions with both text towers, then fitting the head")
    with Stages() as stages:
        aligner = build_bridge(
            loaded.encoder,
            loaded.audio,
            captions=captions,
            cfg=cfg,
            corpus_name=corpus,
            progress=stages,
        )
    out = args.out or bridge_file(
        settings.data_dir / "aligners", loaded.encoder, loaded.audio, captions
    )
    aligner.save(out)
    _say(_recall_table(aligner.meta["bootstrap"]))
    _say(f"wrote {out}")
    _say(
        f"serve with MMR_MODEL={loaded.encoder.model_id} MMR_AUDIO_MODEL={loaded.audio.model_id} "
        f"MMR_AUDIO_HEAD={out.resolve()}"
    )
    return 0


def _recall_table(report: dict[str, Any]) -> str:
    """Held-out recall of the head, CLAP text -> CLIP text and back, at each stage."""
    ks = (1, 5, 10)
    head = "| stage | " + " | ".join(f"{d} R@{k}" for d in ("CLAP->CLIP", "CLIP->CLAP") for k in ks)
    lines = [head + " |", "|---" * (1 + 2 * len(ks)) + "|"]
    for stage, label in (("before", "chance"), ("init", "ridge"), ("after", "contrastive")):
        cells = [
            f"{report[stage][f'{d}@{k}']:.3f}"
            for d in ("source_to_target", "target_to_source")
            for k in ks
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tiny_clap(out: Path, seed: int) -> int:
    from models.encoders.clap import build_tiny_clap

    build_tiny_clap(out, seed=seed)
    _say(f"wrote a tiny random CLAP to {out}; try MMR_AUDIO_MODEL=clap:{out.resolve()}")
    return 0


def _world(out: Path, images: int, sounds: int, seed: int, style: str) -> int:
    from app.progress import Stages
    from models.synth.world.pairs import write_demo_set

    with Stages() as stages:
        manifest = write_demo_set(
            out, n_images=images, n_sounds=sounds, seed=seed, style=style, progress=stages
        )
    _say(f"wrote {images} images and {sounds} sounds; captions in {manifest}")
    return 0


def _backup_or_restore(args: argparse.Namespace) -> int:
    """`mmr backup` / `mmr restore` on the deployment the MMR_* settings describe."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.settings import get_settings
    from index.backup import BackupError, backup
    from index.db import make_engine
    from index.restore import restore

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        if args.command == "backup":
            done = backup(engine=engine, data_dir=settings.data_dir, out=args.out, say=_say)
            _say(f"backup of {done['created_at']} in {args.out}: {_summary(done)}")
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            done = restore(engine=engine, data_dir=settings.data_dir, source=args.source, say=_say)
            _say(f"restored the backup of {done['created_at']}: {_summary(done)}")
    except (BackupError, OSError) as exc:
        _say(f"mmr {args.command}: {exc}")
        return 1
    except SQLAlchemyError as exc:
        _say(f"mmr {args.command}: the database failed ({exc}); check MMR_DATABASE_URL")
        return 1
    finally:
        engine.dispose()
    return 0


def _summary(manifest: dict[str, Any]) -> str:
    rows = sum(t["rows"] for t in manifest["tables"].values())
    # (a backup of format 1 holds no index snapshots)
    snapshots = sum("file" in e for e in manifest.get("indexes", {}).values())
    return (
        f"{rows} rows, {manifest['blobs']} originals, {snapshots} index snapshots, "
        f"schema {manifest['schema_revision']}"
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _ingest_parser(sub: Any) -> None:
    ing = sub.add_parser(
        "ingest",
        help="send a folder's images, audio and .txt files to a running server (resumable)",
    )
    ing.add_argument("paths", nargs="+", type=Path, help="files and folders (recursive)")
    ing.add_argument("--collection", required=True)
    ing.add_argument(
        "--server",
        default=os.environ.get("MMR_SERVER", "http://127.0.0.1:8000"),
        help="the server's URL (default: MMR_SERVER or http://127.0.0.1:8000)",
    )
    ing.add_argument(
        "--api-key", default=os.environ.get("MMR_API_KEY"), help="a write key (or MMR_API_KEY)"
    )
    ing.add_argument("--create", action="store_true", help="create the collection if missing")
    ing.add_argument("--batch", type=int, default=32, help="items per request (default 32)")
    ing.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    ing.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="metadata per file: CSV with a 'path' column, or JSON Lines with 'path'",
    )
    ing.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: decode and encode images on a Ray cluster (pip install 'mmr[ray]')",
    )
    ing.add_argument(
        "--ray-address", default=None, help="the cluster (ray.init's address); local if unset"
    )
    ing.add_argument(
        "--failures",
        type=Path,
        default=Path("mmr-ingest-failures.csv"),
        help="where the failed files are listed (path, status, code, message)",
    )


def _ingest(args: argparse.Namespace) -> int:
    from app.ingest.files import IngestError
    from app.ingest.run import Options, ingest

    opts = Options(
        server=args.server,
        collection=args.collection,
        api_key=args.api_key,
        create=args.create,
        batch=max(1, args.batch),
        concurrency=max(1, args.concurrency),
        manifest=args.manifest,
        failures=args.failures,
        engine=args.engine,
        ray_address=args.ray_address,
        cache_dir=Path(os.environ.get("MMR_DATA_DIR", "data")) / "models",
    )
    try:
        return ingest(args.paths, opts)
    except IngestError as exc:
        print(f"mmr ingest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
