"""Duplicates: how alike near-copies and look-alikes score, and what a listing costs.

1. Scores (mmr-mini, through the route): for every shape x colour of the synthetic world, a
   render A, three near-copies of it (JPEG at quality 25, resized to half, 6 % cropped off
   each side), B (another render of the same scene) and C (the same shape and colour, small
   and elsewhere). The default threshold is the one with the fewest errors, copies below it
   and look-alikes at or above it weighed alike.
2. Time (the route, cold: nothing cached; the fastest of three runs): exact all-pairs and
   the index path (hnsw), on random unit vectors of 512 dimensions with 2 % planted
   near-copies, beside two baselines in the same run: numpy's blocked all-pairs (rows
   against everything) and FAISS's range_search over a flat index.
3. The duplicates job (POST to succeeded) on the same kind of vectors at 20,000 and 100,000
   items, beside the exact route (bounds lifted) where it runs (``--job SIZES`` alone).

``python -m bench --only duplicates`` runs it within the suite; ``python -m bench.duplicates
--out DIR`` alone writes DIR/results.json and DIR/results.md.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.schemas.duplicates import DEFAULT_THRESHOLD
from app.services import duplicates as service
from app.settings import Settings
from bench.config import BenchConfig
from bench.machine import describe_machine
from index.items import ItemDraft
from models.synth.world import COLOURS, SHAPES
from models.synth.world.images import Scene, render_scene

Log = Callable[[str], None]

COPIES = {
    "jpeg q25": lambda im: _jpeg(im, 25),
    "resized to half": lambda im: im.resize(
        (im.width // 2, im.height // 2), Image.Resampling.BILINEAR
    ),
    "cropped 6 %": lambda im: im.crop(
        (im.width * 6 // 100, im.height * 6 // 100, im.width * 94 // 100, im.height * 94 // 100)
    ),
}
SIZES = (1000, 5000, 20000)
DIM = 512
ALIKE = "look-alike (same scene)"
OTHER = "look-alike (other size, place)"
SWEEP = tuple(round(0.9 + 0.005 * n, 3) for n in range(20))
RUNS = 3  # timings are the fastest of this many
THRESHOLD = 0.95  # of the timing runs (planted copies score about 0.99)
UNBOUNDED = {"duplicates_deadline_s": 3600.0}  # timed at every size, past the route's deadline
JOB_SIZES = (20000, 100000)
ROUTE_MAX = 20000  # the exact route as the job's baseline up to this size (minutes past it)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def _server(root: Path, **overrides: Any) -> Iterator[TestClient]:
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "database_url": f"sqlite:///{root / 'mmr.sqlite3'}",
        "torch_threads": 2,
        "_env_file": None,
        "log_level": "warning",
    }
    settings = Settings(**(values | overrides))
    with TestClient(create_app(settings)) as client:
        yield client


# -- 1. scores ------------------------------------------------------------------------------
def measure_scores(work: Path, log: Log) -> dict[str, Any]:
    """Copies against look-alikes through the route, on mmr-mini."""
    with _server(work / "scores", model="mmr-mini") as client:
        client.post("/v1/collections", json={"name": "w"}).raise_for_status()
        seed = itertools.count(1)
        kinds: dict[tuple[str, str], str] = {}
        for shape, colour in itertools.product(SHAPES, COLOURS):
            base = f"{colour}-{shape}"
            files = _renders(shape, colour, seed)
            for item, image in files.items():
                form = {"id": f"{base}:{item}"}
                got = client.post(
                    "/v1/collections/w/items", files={"file": ("f.png", _png(image))}, data=form
                )
                if got.status_code != 201:
                    raise RuntimeError(f"{item}: {got.status_code} {got.text}")
            # Keys in stored order (a pair's a is stored first): A, B, C, then the copies.
            for name in COPIES:
                kinds[(f"{base}:A", f"{base}:{name}")] = name
                kinds[(f"{base}:B", f"{base}:{name}")] = ALIKE
                kinds[(f"{base}:C", f"{base}:{name}")] = OTHER
            kinds[(f"{base}:A", f"{base}:B")] = ALIKE
            kinds[(f"{base}:A", f"{base}:C")] = OTHER
        pairs = _all(client, "w", threshold=1e-6)
    scores: dict[str, list[float]] = {name: [] for name in [*COPIES, ALIKE, OTHER]}
    for pair in pairs:
        kind = kinds.get((pair["a"], pair["b"]))
        if kind:
            scores[kind].append(pair["score"])
    copies = np.array([v for name in COPIES for v in scores[name]])
    alike = np.array(scores[ALIKE] + scores[OTHER])
    chosen, errors = choose_threshold(copies, alike)
    rows = [_summary(name, values, chosen) for name, values in scores.items()]
    log(
        f"duplicates: threshold {chosen:.2f} misses {errors[0]:.1%} of copies, "
        f"takes {errors[1]:.1%} of look-alikes"
    )
    return {
        "model": "mmr-mini",
        "renders": len(SHAPES) * len(COLOURS),
        "rows": rows,
        "lowest_copy": float(copies.min()),
        "highest_look_alike": float(alike.max()),
        "chosen_threshold": chosen,
        "copies_missed": errors[0],
        "look_alikes_taken": errors[1],
        "sweep": [
            {"threshold": t, "copies_missed": m, "look_alikes_taken": a}
            for t, (m, a) in ((t, _errors(copies, alike, t)) for t in SWEEP)
        ],
        "default_threshold": DEFAULT_THRESHOLD,
    }


def _renders(shape: str, colour: str, seed: Iterator[int]) -> dict[str, Image.Image]:
    """A, B (same scene, another render), C (same shape and colour, small and elsewhere)
    and the near-copies of A."""

    def render(size: str, position: str) -> Image.Image:
        attrs = {"shape": shape, "colour": colour, "size": size, "position": position}
        return render_scene(
            Scene(objects=(attrs,)), np.random.default_rng(next(seed)), style="shifted"
        )

    original = render("large", "center")
    files = {"A": original, "B": render("large", "center"), "C": render("small", "left")}
    return files | {name: copy(original) for name, copy in COPIES.items()}


def _errors(copies: np.ndarray, alike: np.ndarray, t: float) -> tuple[float, float]:
    """Shares of copies below ``t`` and of look-alikes at or above it."""
    return float(np.mean(copies < t)), float(np.mean(alike >= t))


def choose_threshold(copies: np.ndarray, alike: np.ndarray) -> tuple[float, tuple[float, float]]:
    """The threshold (to 0.005) with the fewest errors, both kinds weighed alike; the higher
    one on a tie (a false pair costs a user more than a missed one)."""
    best = max(SWEEP, key=lambda t: (-sum(_errors(copies, alike, t)), t))
    return best, _errors(copies, alike, best)


def _summary(name: str, values: list[float], threshold: float) -> dict[str, Any]:
    a = np.array(values)
    return {
        "kind": name,
        "pairs": len(a),
        "min": float(a.min()),
        "p5": float(np.percentile(a, 5)),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
        "at_or_above_threshold": int((a >= threshold).sum()),
    }


def _all(client: TestClient, name: str, **params: Any) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params | {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/collections/{name}/duplicates", params=query)
        page.raise_for_status()
        pairs += page.json()["pairs"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return pairs


# -- 2. time --------------------------------------------------------------------------------
def planted(n: int, seed: int = 0) -> np.ndarray:
    """Random unit vectors, 2 % of them near-copies of others (cosine about 0.99)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    copies = n // 50
    rows[n - copies :] = rows[:copies] + 0.1 * rng.normal(size=(copies, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def numpy_blocked(vectors: np.ndarray, threshold: float, block: int = 1024) -> int:
    """The baseline: each block of rows against every row, pairs i < j counted."""
    found = 0
    for top in range(0, len(vectors), block):
        scores = vectors[top : top + block] @ vectors.T
        i, j = np.nonzero(scores >= threshold)
        found += int(np.count_nonzero(j > i + top))
    return found


def faiss_range(vectors: np.ndarray, threshold: float) -> int:
    """The baseline: FAISS's range search of every vector over a flat index."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    lims, _, labels = index.range_search(vectors, threshold)
    rows = np.repeat(np.arange(len(vectors)), np.diff(lims).astype(np.int64))
    return int(np.count_nonzero(labels > rows))


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def _fill(client: TestClient, name: str, vectors: np.ndarray, index: str = "hnsw") -> None:
    """A collection of ``vectors`` written straight to SQL (no encoding), then indexed by
    this process's follower."""
    client.post("/v1/collections", json={"name": name, "index": {"type": index}}).raise_for_status()
    services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(name)
    for start in range(0, len(vectors), 2000):
        drafts = [
            ItemDraft(
                external_id=f"v{start + n}",
                modality="image",
                sha256="0" * 64,
                content_type="image/png",
                size_bytes=1,
                feature=v,
                vector=v,
                aligner_version=row.aligner_version,
            )
            for n, v in enumerate(vectors[start : start + 2000])
        ]
        services.stores.items.upsert_many(collection_id=row.id, drafts=drafts)
    deadline = time.monotonic() + 600
    while services.indexes.get(row).index.size < len(vectors):
        if time.monotonic() > deadline:
            raise TimeoutError("the index never caught up")
        time.sleep(0.2)


def measure_time(work: Path, log: Log, sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    """The route's cold time, exact and through an hnsw index, beside the baselines."""
    rows = []
    for n in sizes:
        row = _time_size(work / f"time-{n}", planted(n))
        log(f"duplicates: {row}")
        rows.append(row)
    return rows


def _best(call: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    """The fastest of ``runs`` calls (the VM's cores are shared) and the last one's result."""
    times, out = [], None
    for _ in range(runs):
        seconds, out = _timed(call)
        times.append(seconds)
    return min(times), out


def _cold(client: TestClient, url: str, params: dict[str, Any]) -> Callable[[], Any]:
    """A request that finds no listing kept: it computes one."""
    services = client.app.state.services  # type: ignore[attr-defined]

    def call() -> Any:
        services.duplicates.cache.clear()
        response = client.get(url, params=params)
        response.raise_for_status()
        return response

    return call


def _time_size(root: Path, vectors: np.ndarray) -> dict[str, Any]:
    model = "random:ViT-B-32"  # 512 dimensions; the route never encodes here
    params = {"threshold": THRESHOLD, "limit": 100}
    url = "/v1/collections/t/duplicates"
    with _server(root, model=model, duplicates_exact_max=10**9, **UNBOUNDED) as client:
        _fill(client, "t", vectors)
        time.sleep(5.0)  # the follower's snapshot of the new index, off the clock
        exact_s, _ = _best(_cold(client, url, params))
        cached_s, _ = _best(lambda: client.get(url, params=params))
        exact_pairs = len(_all(client, "t", threshold=THRESHOLD))
    before = service.MAX_WORK
    service.MAX_WORK = 10**12  # the bound lifted: measured at every size
    try:
        with _server(root, model=model, duplicates_exact_max=0, **UNBOUNDED) as client:
            services = client.app.state.services  # type: ignore[attr-defined]
            services.indexes.get(services.stores.collections.get("t"))
            index_s, _ = _best(_cold(client, url, params))
            index_pairs = len(_all(client, "t", threshold=THRESHOLD))
    finally:
        service.MAX_WORK = before
    numpy_s, numpy_pairs = _best(lambda: numpy_blocked(vectors, THRESHOLD))
    faiss_s, faiss_pairs = _best(lambda: faiss_range(vectors, THRESHOLD))
    return {
        "items": len(vectors),
        "route_exact_s": exact_s,
        "route_cached_page_s": cached_s,
        "route_index_s": index_s,
        "numpy_blocked_s": numpy_s,
        "faiss_range_s": faiss_s,
        "pairs_exact": exact_pairs,
        "pairs_index": index_pairs,
        "pairs_numpy": numpy_pairs,
        "pairs_faiss": faiss_pairs,
    }


# -- 3. the duplicates job ------------------------------------------------------------------
def measure_job(work: Path, log: Log, sizes: tuple[int, ...] = JOB_SIZES) -> list[dict[str, Any]]:
    """The duplicates job's time (POST to succeeded) beside the exact route's, where the
    route can run (at most ROUTE_MAX items, its bounds lifted)."""
    rows = []
    for n in sizes:
        row = _job_size(work / f"job-{n}", planted(n))
        log(f"duplicates job: {row}")
        rows.append(row)
    return rows


def _job_size(root: Path, vectors: np.ndarray) -> dict[str, Any]:
    model = "random:ViT-B-32"  # 512 dimensions; nothing is encoded
    url = "/v1/collections/t/duplicates"
    params = {"threshold": THRESHOLD, "limit": 100}
    with _server(root, model=model, job_poll_s=0.1) as client:
        fill_s, _ = _timed(lambda: _fill(client, "t", vectors, index="flat"))
        refused = client.get(url, params=params).status_code
        body = {"type": "duplicates", "collection": "t", "threshold": THRESHOLD}
        job_s, job = _timed(lambda: _job(client, body))
        if job["status"] != "succeeded":
            raise RuntimeError(f"the job ended {job['status']}: {job['error']}")
        page_s, _ = _timed(lambda: client.get(url, params=params).raise_for_status())
        kept_s, _ = _best(lambda: client.get(url, params=params).raise_for_status())
        stored = {(p["a"], p["b"]) for p in _all(client, "t", threshold=THRESHOLD)}
    out: dict[str, Any] = {
        "items": len(vectors),
        "fill_s": fill_s,
        "route_default_status": refused,
        "job_s": job_s,
        "job_compute_s": job["metrics"]["seconds"],
        "first_page_s": page_s,
        "kept_page_s": kept_s,
        "pairs_job": len(stored),
        "route_exact_s": None,
        "pairs_route": None,
    }
    if len(vectors) <= ROUTE_MAX:  # the baseline: the exact route, bounds lifted
        lifted = {"duplicates_exact_max": 10**9, **UNBOUNDED}
        with _server(root, model=model, **lifted) as client:
            route_s, _ = _timed(_cold(client, url, params))
            route = {(p["a"], p["b"]) for p in _all(client, "t", threshold=THRESHOLD)}
        out |= {"route_exact_s": route_s, "pairs_route": len(route), "same": route == stored}
    return out


def _job(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    """Post a job and wait for it to end."""
    response = client.post("/v1/jobs", json=body)
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)


def job_markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The job's table."""
    lines = [
        "# Duplicates: the background job",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
        f"{machine.get('date', '')}. Wall seconds on a VM whose 2 cores other work shared.",
        "",
        f"{DIM} dimensions, threshold {THRESHOLD}, 2 % planted copies, a flat index; the job "
        "from POST to succeeded (its own computation in brackets), the exact route (bounds "
        "lifted, one cold run) as the baseline where it runs.",
        "",
        "| items | route, default bounds | job | route exact (baseline) | first stored page | "
        "a kept page | pairs job / route |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        route = "-" if r["route_exact_s"] is None else f"{r['route_exact_s']:.1f} s"
        pairs = f"{r['pairs_job']} / {'-' if r['pairs_route'] is None else r['pairs_route']}"
        if r.get("same") is not None:
            pairs += " (same)" if r["same"] else " (differ)"
        lines.append(
            f"| {r['items']} | {r['route_default_status']} | {r['job_s']:.1f} s "
            f"({r['job_compute_s']:.1f} s) | {route} | {r['first_page_s'] * 1000:.0f} ms | "
            f"{r['kept_page_s'] * 1000:.1f} ms | {pairs} |"
        )
    return "\n".join(lines) + "\n"


# -- the report -----------------------------------------------------------------------------
def run_duplicates(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Both parts (quick: the smallest size only)."""
    sizes = SIZES[:1] if cfg.quick else SIZES
    jobs = (2000,) if cfg.quick else JOB_SIZES
    return {
        "scores": measure_scores(work, log),
        "time": measure_time(work, log, sizes),
        "job": measure_job(work, log, jobs),
    }


def markdown(results: dict[str, Any], machine: dict[str, Any]) -> str:
    s = results["scores"]
    lines = [
        "# Duplicates",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
        f"{machine.get('date', '')}. Timings are wall seconds on a VM whose 2 cores other "
        "work shared.",
        "",
        f"## Scores ({s['model']}, {s['renders']} shape x colour renders)",
        "",
        "| pair | pairs | min | p5 | median | p95 | max | at or above "
        f"{s['chosen_threshold']:.3f} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['kind']} | {r['pairs']} | {r['min']:.3f} | {r['p5']:.3f} | "
            f"{r['median']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | {r['at_or_above_threshold']} |"
        )
    lines += [
        "",
        f"Lowest copy {s['lowest_copy']:.3f}, highest look-alike {s['highest_look_alike']:.3f}. "
        "Threshold with the fewest errors (both kinds weighed alike): "
        f"{s['chosen_threshold']:.3f}, missing {s['copies_missed']:.1%} of copies and taking "
        f"{s['look_alikes_taken']:.1%} of look-alikes (the route's default: "
        f"{s['default_threshold']}).",
        "",
        "| threshold | copies missed | look-alikes taken |",
        "|---|---|---|",
        *(
            f"| {w['threshold']:.3f} | {w['copies_missed']:.1%} | {w['look_alikes_taken']:.1%} |"
            for w in s["sweep"]
        ),
        "",
        f"## Time of a listing ({DIM} dimensions, threshold {THRESHOLD}, 2 % planted copies)",
        "",
        "Fastest of three runs each; the route's runs start with no listing kept.",
        "",
        "| items | route exact | route index (hnsw) | a cached page | numpy blocked | "
        "faiss range_search | pairs exact / index / numpy / faiss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["time"]:
        lines.append(
            f"| {r['items']} | {r['route_exact_s']:.2f} s | {r['route_index_s']:.2f} s | "
            f"{r['route_cached_page_s'] * 1000:.1f} ms | {r['numpy_blocked_s']:.2f} s | "
            f"{r['faiss_range_s']:.2f} s | {r['pairs_exact']} / {r['pairs_index']} / "
            f"{r['pairs_numpy']} / {r['pairs_faiss']} |"
        )
    text = "\n".join(lines) + "\n"
    if results.get("job"):
        text += "\n" + job_markdown(results["job"], machine).replace("# ", "## ", 1)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    sizes = lambda t: tuple(int(x) for x in t.split(","))  # noqa: E731
    p.add_argument("--sizes", type=sizes, default=SIZES)
    p.add_argument(
        "--job", type=sizes, default=None, help="only the job's table, at these sizes (job.md)"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.job is not None:
        with tempfile.TemporaryDirectory(prefix="mmr-dup-") as tmp:
            rows = measure_job(Path(tmp), log, args.job)
        machine = describe_machine()
        (args.out / "job.json").write_text(json.dumps({"machine": machine, "job": rows}, indent=2))
        (args.out / "job.md").write_text(job_markdown(rows, machine))
        print(job_markdown(rows, machine))
        return 0
    with tempfile.TemporaryDirectory(prefix="mmr-dup-") as tmp:
        work = Path(tmp)
        results = {
            "scores": measure_scores(work, log),
            "time": measure_time(work, log, args.sizes),
        }
    machine = describe_machine()
    (args.out / "results.json").write_text(json.dumps({"machine": machine, **results}, indent=2))
    (args.out / "results.md").write_text(markdown(results, machine))
    print(markdown(results, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
