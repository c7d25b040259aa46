"""Configuration: environment variables with the MMR_ prefix (and a .env file), read once."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told at start-up."""

    model_config = SettingsConfigDict(env_prefix="MMR_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str = ""
    model: str = "auto"
    audio_model: str = Field(
        default="", description="empty: the model's own audio tower; none; clap:REPO or clap:/dir"
    )
    audio_head: Path | None = Field(
        default=None, description="aligner artefact new collections start from (bootstrap-audio)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "fp32-onnx"] = Field(
        default="auto",
        description="auto: fp16 on CUDA; on a CPU the fastest on a probe of bf16 (where it is "
        "native) and image and text towers in ONNX Runtime (int8, and fp32-onnx: fp32 without "
        "torch), among those that keep its cosine >= 0.99 to fp32 and beat fp32 by more than "
        "1.2x; else fp32",
    )
    batch_size: int = Field(default=32, ge=1, description="most inputs in one encoder forward")
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        description="longest a forward waits for company: requests still preparing their "
        "inputs, or as many rows as the forward running beside it",
    )
    batch_queue: int = Field(
        default=512, ge=1, description="inputs waiting per encoder before requests get 429"
    )
    batch_streams: int = Field(
        default=0,
        ge=0,
        description="forwards of one model at once, each on a share of the torch threads (a "
        "lone request still gets them all); 0 = auto: 2 on a CPU with 2+ threads, 1 on CUDA",
    )
    api_keys: str = ""
    max_upload_mb: float = 50.0
    max_bodies_mb: float = Field(
        default=200.0,
        gt=0,
        description="request bodies the process holds at once, in MB (each from its first "
        "byte until its response has finished); when full, a new body waits up to 2 s, then "
        "429; keep it at least MMR_MAX_UPLOAD_MB, or the largest uploads get 413",
    )
    max_image_pixels: int = 64_000_000
    max_audio_seconds: float = Field(default=600.0, gt=0, description="longest audio upload")
    max_decoded_mb: float = Field(
        default=256.0,
        gt=0,
        description="decoded media (pixels, audio samples) the process holds at once, in MB: "
        "decodes in progress and inputs waiting for their forward; when full, a new decode "
        "waits up to 2 s, then 429",
    )
    max_decoded_mb_per_request: float = Field(
        default=128.0,
        gt=0,
        description="decoded media the inputs of one request may hold together, in MB (413 "
        "above it)",
    )
    max_batch_items: int = 256
    torch_threads: int = Field(
        default=0,
        description="threads of a lone forward and of a training run (streams share them); "
        "0 = one per CPU core",
    )
    faiss_threads: int = 1
    snapshot_every: int = Field(default=1000, description="changes between index snapshots")
    worker: Literal["on", "off"] = Field(
        default="on", description="run a job worker inside `mmr serve`"
    )
    job_lease_s: float = Field(default=30.0, gt=0, description="a job's lease per heartbeat")
    job_poll_s: float = Field(default=2.0, gt=0, description="idle worker's polling interval")
    job_max_attempts: int = Field(default=3, ge=1, description="runs before a job is failed")
    max_queued_jobs: int = Field(
        default=1000, ge=1, description="queued jobs in all before POST /v1/jobs gets 429"
    )
    max_queued_jobs_per_collection: int = Field(
        default=20, ge=1, description="queued jobs of one collection before POST /v1/jobs gets 429"
    )
    sql_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="longest one SQL statement of the server may run (0: no limit); a request "
        "whose statement is stopped gets 503 query_timeout",
    )
    log_level: str = "info"

    @field_validator("max_upload_mb")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

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
