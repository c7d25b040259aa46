"""Configuration: environment variables with the MMR_ prefix (and a .env file), read once.

Each field's description is its documentation: ``python -m app.settings_doc`` writes the
manual's settings reference (docs/settings.md) and .env.example from them. Descriptions are
Markdown; links are relative to docs/.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told at start-up."""

    model_config = SettingsConfigDict(env_prefix="MMR_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("./data"),
        description="Where the service keeps its files: the SQLite database (`mmr.sqlite3`), "
        "uploaded files (`blobs/`; a text is kept in its row), index snapshots (`indexes/`), "
        "audio heads (`aligners/`) and the model cache (`models/`: weights, ONNX exports, "
        "the precision verdict).",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the database; empty means SQLite at "
        "`MMR_DATA_DIR/mmr.sqlite3`. Postgres: `postgresql+psycopg://user:password@host:5432/db`.",
    )
    model: str = Field(
        default="auto",
        description="[Model id](models.md#model-ids) the server encodes with; new "
        "collections are made in its space. `auto`, `mmr-mini`, `mmr-mini@/dir`, "
        "`open_clip:ARCH/PRETRAINED`, `open_clip:ARCH@/path/to/checkpoint` or `random:ARCH`; a "
        "model named explicitly loads or the server does not start.",
    )
    audio_model: str = Field(
        default="",
        description="[Audio model id](models.md#audio-model-ids): empty = the model's own audio "
        "tower (`mmr-mini` has one, `open_clip:` and `random:` models none), `none`, "
        "`clap:ORG/REPO` or `clap:/path/to/dir`.",
    )
    audio_head: Path | None = Field(
        default=None,
        description="Aligner artefact from `mmr bootstrap-audio` that new collections start "
        "from; empty = the cached bootstrap head of the pair in `MMR_DATA_DIR/aligners`, "
        "trained at the first start when missing.",
    )
    allowed_models: str = Field(
        default="",
        max_length=8192,
        description="Comma-separated model ids that collections may be created with "
        "(`POST /v1/collections` `model`) or migrated to (`migrate` jobs: `model`, and an "
        "`audio_model` such as `clap:ORG/REPO`), besides `MMR_MODEL`, `mmr-mini` and "
        "`MMR_AUDIO_MODEL`, which always may. A request naming another is refused "
        "with 403: a key cannot make the server load any architecture it likes. Collections "
        "keep the model they record whatever this says.",
    )
    model_memory_mb: float = Field(
        default=4096.0,
        gt=0,
        description="Memory budget of the model weights a process keeps loaded. Collections "
        "record their model; one of another model than `MMR_MODEL` (created with `model`, or "
        "migrated) loads it on first use; past the budget the least recently used idle "
        "model is unloaded. `MMR_MODEL` itself is never unloaded. `GET /v1/models` lists "
        "what is loaded.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="`auto`: CUDA when a GPU is visible, else the CPU; `cuda` fails to start "
        "without a GPU.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "fp32-onnx"] = Field(
        default="auto",
        description="Number format of the encoders. `auto` measures the candidates at the first "
        "start and keeps the verdict ([the rule](models.md#precision)); `int8` and `fp32-onnx` "
        "(fp32 towers in ONNX Runtime) are taken without the probe and need a CPU and "
        "`onnxruntime`. `GET /v1/models` shows the choice.",
    )
    batch_size: int = Field(
        default=32,
        ge=1,
        description="Most inputs in one encoder forward; concurrent requests share forwards up "
        "to it, a larger request runs in chunks.",
    )
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        description="Longest a forward waits for company once a worker is free, in "
        "milliseconds: requests still decoding and preprocessing their inputs, or (with "
        "streams) as many rows as the forward running beside it. A lone request never waits.",
    )
    batch_queue: int = Field(
        default=512,
        ge=1,
        description="Inputs waiting per encoder tower before new requests get 429 `overloaded` "
        "with `Retry-After: 1`.",
    )
    batch_streams: int = Field(
        default=0,
        ge=0,
        description="Forwards of one model that run at once under load, each on its share of "
        "the torch threads (a lone request still gets them all); `0` = auto: 2 on a CPU with 2 "
        "or more threads, 1 on CUDA. int8 towers follow the same rule with a second ONNX "
        "Runtime session ([streams](architecture.md#streams)).",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated admin keys; empty turns auth off. More keys, with scopes "
        "and limited to collections, live in SQL ([security](security.md#api-keys-and-scopes)).",
    )
    max_upload_mb: float = Field(
        default=50.0,
        description="Largest request body, in MB; a larger one gets 413 while it streams in. "
        "Must be positive.",
    )
    max_bodies_mb: float = Field(
        default=200.0,
        gt=0,
        description="Request bodies one server process holds at once, in MB, each from its "
        "first byte until its response has finished; when full, a new body waits up to 2 s, "
        "then gets 429 `overloaded` with `Retry-After: 1`. Keep it at least "
        "`MMR_MAX_UPLOAD_MB`: a body larger than the whole budget gets 413 "
        "([hostile input](reliability.md#hostile-input)).",
    )
    max_image_pixels: int = Field(
        default=64_000_000,
        description="Largest image, width times height, read from the header before any pixel is "
        "decoded; a larger one gets 413.",
    )
    max_audio_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest audio file, in seconds, read from the header and checked again "
        "while decoding; a longer one gets 413.",
    )
    max_video_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest video, in seconds, checked on the timestamps of what decodes "
        "(frames and sound), not on what the container claims; a longer one gets 413.",
    )
    max_video_frames: int = Field(
        default=36_000,
        gt=0,
        description="Most frames decoded from one video (all of them, not only those kept); "
        "more get 413.",
    )
    max_video_pixels: int = Field(
        default=8_294_400,
        gt=0,
        description="Largest video frame, width times height (default: 3840x2160), checked on "
        "the stream's header and on every decoded frame; larger gets 413.",
    )
    video_decode_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock seconds the videos of one request (a batch, an embed) may "
        "take to decode, all together; past it the upload gets 413 and the worker thread is "
        "free again ([video](video.md#limits)).",
    )
    video_sample_frames: int = Field(
        default=64,
        gt=0,
        le=1024,
        description="Most frames of one video that are embedded: frames are kept at scene "
        "changes and at least every `MMR_VIDEO_FRAME_INTERVAL_S`; past this many, the frames "
        "that changed least are merged into the one before.",
    )
    video_frame_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="Longest time, in seconds, between two embedded frames of a video, "
        "whatever the scene changes.",
    )
    max_decoded_mb: float = Field(
        default=256.0,
        gt=0,
        description="Decoded media (pixels, audio samples) one server process holds at once, "
        "in MB: decodes in progress and inputs waiting for their forward. When full, a decode "
        "waits up to 2 s, then gets 429 `overloaded` with `Retry-After: 1`; a file that alone "
        "needs more gets 413 ([hostile input](reliability.md#hostile-input)).",
    )
    max_decoded_mb_per_request: float = Field(
        default=128.0,
        gt=0,
        description="Decoded media the inputs of one request keep together, in MB; past it "
        "413 `media_too_large` (in a batch, for the entries past it).",
    )
    duplicates_exact_max: int = Field(
        default=12_000,
        ge=0,
        description="Collections of at most this many items have their duplicates listed "
        "exactly (every pair compared, in blocks); larger ones through their index, refused "
        "(422) where that would cost more than the largest exact listing, or from the "
        "listing a `duplicates` job stored ([duplicates](duplicates.md)).",
    )
    duplicates_deadline_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds one duplicates listing may compute; past them it stops between "
        "blocks of work and answers 422 ([duplicates](duplicates.md)).",
    )
    max_batch_items: int = Field(
        default=256,
        description="Most items in one batch call, or inputs in one `/v1/embed` call; more get "
        "422.",
    )
    torch_threads: int = Field(
        default=0,
        description="Torch threads of a lone forward and of a training run (under load the "
        "streams share them); `0` = one per CPU core. Decoding and preprocessing use one.",
    )
    faiss_threads: int = Field(
        default=1,
        description="FAISS (OpenMP) threads per search, set in each request thread: a single "
        "query is memory-bound and more threads only contend. Index training and bulk adds "
        "use every core.",
    )
    # Below 50,000 a child's start (~1 s of imports) costs more than the build, and what the
    # build leaves in the server's arenas is a few MB (index.builds).
    build_apart_at: int = Field(
        default=50_000,
        ge=0,
        description="Collections of at least this many vectors have their indexes built (at "
        "start-up without a snapshot, by a reindex or an aligner's activation) in a child "
        "process that reads SQL and writes the index for the server to read in: what a build "
        "leaves in the allocator stays out of the server ([memory](performance.md#memory)). "
        "`0`: every build in the server's process.",
    )
    snapshot_every: int = Field(
        default=1000,
        description="Changes to a collection between index snapshots; a collection with older "
        "unsnapshotted changes is snapshotted after 60 s "
        "([durability](architecture.md#durability)).",
    )
    follow_interval_s: float = Field(
        default=0.2,
        ge=0.01,
        le=60.0,
        description="How often each server process applies the writes other processes "
        "committed to SQL and swaps in new aligner versions and index epochs "
        "([several processes](replicas.md)): the most a write made through one process "
        "waits to be found through another.",
    )
    worker: Literal["on", "off"] = Field(
        default="on",
        description="`on`: `mmr serve` runs a job worker in a thread; `off`: jobs wait for "
        "`mmr worker` processes ([workers](workers.md)).",
    )
    ray_address: str = Field(
        default="",
        max_length=512,
        description="A Ray cluster that decodes and encodes the images of `migrate` jobs "
        "(needs `pip install 'mmr[ray]'`, and the data directory's `blobs/` at the same path "
        "on every node): an address as `ray.init` takes it (`auto`, `ray://HOST:10001`), or "
        "`local` for a Ray started in the worker; empty: the worker encodes everything "
        "([migrate](migrate.md)).",
    )
    job_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a worker holds a job between heartbeats; the job of a worker that "
        "died is taken again once its lease runs out.",
    )
    job_poll_s: float = Field(
        default=2.0, gt=0, description="Seconds an idle worker waits between looks at the queue."
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Runs of a job (its worker dying each time) before it is failed with the "
        "reason.",
    )
    max_queued_jobs: int = Field(
        default=1000,
        ge=1,
        description="Queued jobs in all before `POST /v1/jobs` gets 429 `overloaded`.",
    )
    max_queued_jobs_per_collection: int = Field(
        default=20,
        ge=1,
        description="Queued jobs of one collection before `POST /v1/jobs` gets 429 `overloaded`.",
    )
    sql_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="Longest one SQL statement of the server may run, in seconds (Postgres "
        "`statement_timeout`, SQLite a progress handler); a request whose statement is stopped "
        "gets 503 `query_timeout`. `0` = no limit. Migrations, deleting a collection and "
        "`mmr backup` / `mmr restore` run without it ([limits](security.md#limits)).",
    )
    log_level: str = Field(
        default="info",
        description="`debug`, `info`, `warning` or `error`: the level of the service's own "
        "log and uvicorn's; the libraries it loads log their warnings only "
        "([logging](monitoring.md#logs)).",
    )
    log_format: Literal["auto", "text", "json"] = Field(
        default="auto",
        description="`text`: a line for people; `json`: one JSON object a line (`time`, "
        "`level`, `logger`, `message`, and `request_id`, `method`, `route`, `status`, "
        "`duration_ms` where they apply) for log shippers; `auto`: `text` when stderr is a "
        "terminal, else `json` ([logging](monitoring.md#logs)).",
    )

    @field_validator("max_upload_mb")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    def model_allowed(self, model: str) -> bool:
        """Whether collections may be created with, or migrated to, ``model``."""
        allowed = {m.strip() for m in self.allowed_models.split(",") if m.strip()}
        return model in allowed | {self.model, "mmr-mini"}

    def audio_allowed(self, audio_model: str) -> bool:
        """Whether a migration may name this audio tower (as MMR_AUDIO_MODEL does): the
        model's own, none, MMR_AUDIO_MODEL's, or one of MMR_ALLOWED_MODELS."""
        allowed = {m.strip() for m in self.allowed_models.split(",") if m.strip()}
        return audio_model in allowed | {"", "none", self.audio_model}

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mmr.sqlite3').resolve()}"

    @property
    def keys(self) -> frozenset[str]:
        """The accepted API keys; empty means auth is off."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def max_upload_bytes(self) -> int:
        """MMR_MAX_UPLOAD_MB in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_bodies_bytes(self) -> int:
        """MMR_MAX_BODIES_MB in bytes."""
        return int(self.max_bodies_mb * 1024 * 1024)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
