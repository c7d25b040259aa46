"""What a benchmark run measures: full sizes (``make bench``) or tiny ones (``--quick``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

PHASES = (
    "embed",
    "search",
    "ingest",
    "hostile",
    "replicas",
    "bulk",
    "finetune",
    "duplicates",
    "video",
    "hybrid",
    "footprint",
    "filtered",
    "ondisk",
)
# Run when named (--only): ondisk builds its own index of each --sizes in process, minutes
# at 1M and most of an hour at 10M on the reference machine.
OPT_IN = ("ondisk",)

# Index settings per benchmark type name (the collection's ``index`` body).
INDEX_TYPES: dict[str, dict[str, Any]] = {
    # The default: the server chooses the type and its settings from the size.
    "auto": {"type": "auto"},
    "flat": {"type": "flat"},
    "hnsw": {"type": "hnsw", "m": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"type": "ivf", "nlist": None, "nprobe": 16, "quantizer": "flat"},
    "ivf-sq8": {"type": "ivf", "nlist": None, "nprobe": 16, "quantizer": "sq8"},
    # The same lists, half as many probed: the operating point a user tunes to the data.
    "ivf-sq8-np8": {"type": "ivf", "nlist": None, "nprobe": 8, "quantizer": "sq8"},
    "ivf-pq": {"type": "ivf", "nlist": None, "nprobe": 16, "quantizer": "pq", "pq_m": 64},
}


@dataclass
class HostileConfig:
    """The hostile-input phase: a server with default settings under attack."""

    model: str = "mmr-mini"
    clients: int = 8  # concurrent attackers
    rounds: int = 2  # times each attacker sends each attack
    bomb_side: int = 8000  # pixel bombs: PNGs of bomb_side x bomb_side
    bombs: int = 8  # pixel bombs in one /v1/embed
    batch: int = 256  # JPEGs in the huge batch (MMR_MAX_BATCH_ITEMS)
    audio_seconds: int = 3600  # real length of the FLAC that claims 384 kHz
    depth: int = 100_000  # nesting of the deep JSON
    large_body: int = 45 * 1024 * 1024  # unauthenticated bodies, under MMR_MAX_UPLOAD_MB


@dataclass
class ReplicasConfig:
    """Several server processes on one database: visibility lag and search throughput."""

    model: str = "random:mmr-tiny"  # cheap: the writes' forwards stay out of the way
    writers: int = 4  # concurrent clients posting text items through server A
    write_rate: float = 20.0  # items per second, all writers together
    lag_duration_s: float = 30.0  # how long the writers write
    probe_interval_s: float = 0.02  # pause between a prober's searches
    missed_after_s: float = 10.0  # an item not found this long after its acknowledgement
    vectors: int = 5000  # the throughput collection (flat), loaded below HTTP
    centres: int = 200
    clients: int = 8  # concurrent search clients
    warmup_s: float = 3.0
    duration_s: float = 20.0  # measured per server setting
    workers: int = 2  # ``mmr serve --workers N`` against one process
    # The lag is measured again on this server (a schema of its own), when it answers.
    postgres_url: str = field(default_factory=lambda: _postgres_url())


def _postgres_url() -> str:
    return os.environ.get("MMR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class BulkConfig:
    """Batch writes against /v1/embed on one server, SQLite then Postgres (bench/bulk.py)."""

    model: str = "mmr-mini"
    texts: int = 4096
    images: int = 2048  # distinct small JPEGs (256x224) a round: four turns
    batch: int = 64  # items per request, both routes
    clients: int = 2  # concurrent clients: one request encodes while another is stored
    # This many rounds (a fresh collection each), each in turns of ``turn`` batches: embed
    # the turn, then write it (bench/bulk.py, _measure).
    rounds: int = 3
    turn: int = 8
    postgres_url: str = field(default_factory=_postgres_url)


@dataclass
class FinetuneBenchConfig:
    """Teaching mmr-mini a new vocabulary from its pairs alone (bench/finetune.py)."""

    model: str = "mmr-mini"
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: int = 8  # renders of each colour and shape: 192 pictures


@dataclass
class BenchConfig:
    """Every knob of a run; recorded in results.json."""

    quick: bool = False
    phases: tuple[str, ...] = tuple(p for p in PHASES if p not in OPT_IN)
    # -- embedding throughput
    models: list[str] = field(default_factory=lambda: ["random:ViT-B-32", "mmr-mini"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "auto"])
    clients: list[int] = field(default_factory=lambda: [1, 4, 16])
    warmup_s: float = 5.0
    duration_s: float = 20.0
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32, 64])
    raw_duration_s: float = 4.0
    embed_images: int = 8  # distinct small JPEGs the clients cycle through
    # MMR_DEVICE of the embedding phase's server and its baselines: "cpu", or "cuda" on a GPU
    # machine (search and ingest run on the CPU: FAISS here is faiss-cpu).
    device: str = "cpu"
    # -- search
    search_model: str = "random:ViT-B-32"
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    types: list[str] = field(default_factory=lambda: list(INDEX_TYPES))
    centres: int = 2000
    queries: int = 500
    search_budget_s: float = 60.0  # per (size, type) and for the numpy baseline
    search_clients: list[int] = field(default_factory=lambda: [1, 4, 8])
    search_warmup: int = 200  # searches before each measurement, by queries not measured
    max_build_min: float = 30.0
    seed: int = 0
    # -- ingest
    ingest_model: str = "random:ViT-B-32"
    texts: int = 2048
    text_batch: int = 64
    jpeg_size: tuple[int, int] = (4000, 3000)
    jpeg_distinct: int = 6
    jpegs: int = 48
    jpeg_batch: int = 4
    decode_budget_s: float = 20.0
    # -- hostile input
    hostile: HostileConfig = field(default_factory=HostileConfig)
    # -- several server processes
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    # -- bulk writes against the encoder
    bulk: BulkConfig = field(default_factory=BulkConfig)
    # -- what a stored item costs (bench/footprint.py): items of each kind, format, database
    footprint_items: int = 20_000
    # -- teaching a vocabulary
    finetune: FinetuneBenchConfig = field(default_factory=FinetuneBenchConfig)
    # -- plumbing
    ready_timeout_s: float = 1800.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return dataclasses.asdict(self)


def quick_config() -> BenchConfig:
    """Tiny sizes: the whole run takes seconds (CI smoke test)."""
    return BenchConfig(
        quick=True,
        models=["random:mmr-tiny"],
        precisions=["fp32", "auto"],
        clients=[1, 2],
        warmup_s=0.3,
        duration_s=1.0,
        batch_sizes=[1, 4],
        raw_duration_s=0.3,
        embed_images=4,
        search_model="random:mmr-tiny",
        sizes=[2000],
        centres=20,
        queries=40,
        search_budget_s=5.0,
        search_clients=[1, 2],
        search_warmup=10,
        max_build_min=5.0,
        ingest_model="random:mmr-tiny",
        texts=64,
        text_batch=32,
        jpeg_size=(1600, 1200),
        jpeg_distinct=2,
        jpegs=4,
        jpeg_batch=2,
        decode_budget_s=1.0,
        footprint_items=256,
        hostile=HostileConfig(
            model="random:mmr-tiny",
            clients=2,
            rounds=1,
            bomb_side=3000,
            bombs=2,
            batch=8,
            audio_seconds=60,
            depth=10_000,
            large_body=2 * 1024 * 1024,
        ),
        replicas=ReplicasConfig(
            writers=2,
            write_rate=10.0,
            lag_duration_s=2.0,
            vectors=500,
            centres=10,
            clients=8,  # a few per process: a burst of two can land on one process
            warmup_s=0.3,
            duration_s=1.0,
        ),
        bulk=BulkConfig(model="random:mmr-tiny", texts=96, images=16, batch=16, rounds=1),
        finetune=FinetuneBenchConfig(seeds=(0,), variants=2),
        ready_timeout_s=300.0,
    )
