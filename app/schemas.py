"""Request and response bodies (API.md is the contract; extra fields are ours)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.ids import check_id, check_key
from index.spec import TYPE_FIELDS

Modality = Literal["image", "text", "audio"]
Scalar = str | int | float | bool | None
CollectionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ItemId = Annotated[
    str,
    AfterValidator(check_id),
    Field(
        description="1-255 characters after NFC normalisation; no '/', no control, format or "
        "bidi characters, not '.' or '..', no leading or trailing whitespace"
    ),
]
Metadata = dict[str, Any]
MAX_TEXT_CHARS = 20_000
MAX_K = 1000


def _not_a_bool(value: Any) -> Any:
    """JSON true and false are not numbers: pydantic's lax mode would read them as 1 and 0,
    which the OpenAPI document (integer, number) refuses."""
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true or false")
    return value


NoBool = BeforeValidator(_not_a_bool)
# Filters: each key is a subquery and each value a bound parameter; beyond these a search
# costs the database more than it can answer in time (hundreds of keys took Postgres
# minutes to plan). Values longer than a tag holds could never match anything.
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 1000
MAX_FILTER_VALUES_TOTAL = 4000
MAX_FILTER_VALUE_CHARS = 1024
# Explicit fine-tune pairs: a job body is stored in SQL and read by every listing.
MAX_JOB_PAIRS = 50_000
MAX_JOB_PAIRS_CHARS = 2_000_000


class IndexSettings(BaseModel):
    """How a collection's vectors are indexed: exactly (`flat`) or approximately.

    `hnsw` is a graph (fast at any size, more memory, deletions masked until a reindex);
    `ivf` clusters vectors into lists trained on the collection's own vectors (searched
    exactly until it holds enough to train), optionally storing 8-bit (`sq8`) or product
    quantised (`pq`) codes. Omitted fields take the defaults shown.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "flat"},
                {"type": "hnsw", "m": 32, "ef_construction": 80, "ef_search": 64},
                {"type": "ivf", "nprobe": 16, "quantizer": "sq8"},
            ]
        },
    )
    type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat = exact search")
    m: Annotated[int | None, NoBool] = Field(
        None, ge=4, le=128, description="hnsw: links per node (32)"
    )
    ef_construction: Annotated[int | None, NoBool] = Field(
        None, ge=8, le=2048, description="hnsw: candidates while inserting (80)"
    )
    ef_search: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=4096, description="hnsw: candidates while searching (64; at least k)"
    )
    nlist: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=65536, description="ivf: lists (default: about 4*sqrt(n) at training)"
    )
    nprobe: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=65536, description="ivf: lists scanned (16)"
    )
    quantizer: Literal["flat", "sq8", "pq"] | None = Field(
        None, description="ivf: full vectors (flat), 1 byte per dimension (sq8), or pq codes"
    )
    pq_m: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=1024, description="ivf + pq: bytes per vector, divides the dim (64)"
    )

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> IndexSettings:
        for owner, names in TYPE_FIELDS.items():
            given = [n for n in names if getattr(self, n) is not None]
            if given and owner != self.type:
                raise ValueError(f"{given[0]} applies to {owner} indexes, not {self.type}")
        if self.pq_m is not None and self.quantizer != "pq":
            raise ValueError('pq_m applies with "quantizer": "pq"')
        return self

    def params(self) -> dict[str, Any]:
        """The fields given (the rest take the type's defaults)."""
        return self.model_dump(exclude={"type"}, exclude_none=True)


class CollectionCreate(BaseModel):
    """POST /v1/collections."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "photos"},
                {"name": "archive", "index": {"type": "ivf", "quantizer": "sq8"}},
            ]
        },
    )
    name: CollectionName
    index: IndexSettings = Field(default_factory=IndexSettings)


class IndexInfo(BaseModel):
    """A collection's live index."""

    type: str
    params: dict[str, Any] = Field(
        default_factory=dict, description="the type's settings (ivf: nlist once trained)"
    )
    size: int = Field(description="items in the index")
    vectors: int = Field(0, description="vectors (recordings have one per segment)")
    deleted: int = Field(0, description="deleted vectors still held (masked); a reindex drops them")
    trained: bool = Field(True, description="false while an ivf index still searches exactly")
    bytes: int = Field(0, description="estimated memory of the index")


class CollectionPublic(BaseModel):
    """A collection and its embedding space."""

    name: str
    model: str
    dim: int
    aligner_version: int = Field(description="the active aligner version (heads per modality)")
    audio_model: str | None = Field(None, description="the audio tower behind the audio head")
    count: int
    index: IndexInfo
    compatible: bool = Field(description="false when the active model is another space")
    created_at: datetime


class CollectionList(BaseModel):
    """GET /v1/collections."""

    collections: list[CollectionPublic]


class TextItemCreate(BaseModel):
    """A text item as JSON."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "a dog barking in the rain", "metadata": {"source": "notes"}}]
        },
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    id: ItemId | None = None
    metadata: Metadata = Field(default_factory=dict)


class TextBatch(BaseModel):
    """POST .../items/batch as JSON: a list of text items."""

    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] = Field(min_length=1)


class ItemPublic(BaseModel):
    """An item as clients see it."""

    id: str
    collection: str
    modality: str
    metadata: Metadata
    sha256: str
    content_type: str
    size_bytes: int
    text: str | None = None
    duration: float | None = Field(None, description="audio: seconds")
    segments: int | None = Field(None, description="audio: how many indexed segments")
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items, oldest first."""

    items: list[ItemPublic]
    next_cursor: str | None


class ItemPatch(BaseModel):
    """PATCH an item's metadata (replaces it; the vector stays)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"metadata": {}}]})
    metadata: Metadata


class ErrorDetail(BaseModel):
    """The error of a failed call or batch entry."""

    code: str
    message: str


class BatchEntry(BaseModel):
    """One batch item's outcome, at its input position."""

    status: int
    item: ItemPublic | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    """POST .../items/batch."""

    results: list[BatchEntry]


class SearchOptions(BaseModel):
    """How many and which items a search may return (JSON fields or multipart form fields)."""

    model_config = ConfigDict(extra="forbid")
    k: Annotated[int, NoBool] = Field(10, ge=1, le=MAX_K)
    modalities: list[Modality] | None = None
    filter: dict[str, Scalar | list[Scalar]] | None = Field(
        None,
        description=f"metadata equality, a list meaning any of: at most {MAX_FILTER_KEYS} "
        f"keys, {MAX_FILTER_VALUES} values a key, {MAX_FILTER_VALUES_TOTAL} in all, strings "
        f"of at most {MAX_FILTER_VALUE_CHARS} characters",
    )

    @field_validator("filter")
    @classmethod
    def _bounded_filter(
        cls, value: dict[str, Scalar | list[Scalar]] | None
    ) -> dict[str, Scalar | list[Scalar]] | None:
        return None if value is None else check_filter(value)


class SearchRequest(SearchOptions):
    """A search by text, by stored item, or by raw vector."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a dog in the rain", "k": 5, "modalities": ["image"]},
                {"item_id": "photo-42", "k": 10, "filter": {"album": ["2024", "2025"]}},
            ]
        },
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None
    item_id: ItemId | None = None
    vector: list[float] | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [f for f in ("text", "item_id", "vector") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, item_id or vector")
        return self


class SearchHit(BaseModel):
    """One result."""

    item: ItemPublic
    score: float
    start: float | None = Field(None, description="audio: start of the best segment, seconds")
    end: float | None = Field(None, description="audio: end of the best segment, seconds")


class SearchResponse(BaseModel):
    """Results best first."""

    results: list[SearchHit]
    query_modality: str
    aligner_version: int = Field(
        0, description="the collection's aligner version that scored every result"
    )


class EmbedOptions(BaseModel):
    """What /v1/embed takes besides the inputs (multipart: form fields)."""

    model_config = ConfigDict(extra="forbid")
    collection: CollectionName | None = Field(
        None, description="embed with this collection's active aligner heads"
    )


class EmbedRequest(EmbedOptions):
    """POST /v1/embed as JSON."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["a cat", "a dog"]}]}
    )
    texts: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=1
    )


class EmbedResponse(BaseModel):
    """Vectors in the shared space, L2-normalised."""

    model: str
    dim: int
    aligner_version: int | None = Field(
        None, description="the collection's aligner version used; null: a new collection's heads"
    )
    embeddings: list[list[float]]


class AlignerPublic(BaseModel):
    """One version of a collection's aligner heads."""

    version: int
    active: bool
    sha256: str
    heads: dict[str, dict[str, str | int]] = Field(
        description="per modality: kind, in_dim, out_dim and the encoder it takes"
    )
    meta: dict[str, Any] = Field(description="how the version was made (and its metrics)")
    created_at: datetime


class AlignerList(BaseModel):
    """A collection's aligner versions, oldest first."""

    active: int
    aligners: list[AlignerPublic]


class AudioModelInfo(BaseModel):
    """The audio tower and the head that bridges it into the space."""

    id: str
    raw_dim: int = Field(description="width of the tower's own feature, before its head")
    sample_rate: int
    window_s: float = Field(description="seconds per segment; longer files are cut")
    hop_s: float = Field(description="seconds between segment starts")
    head: dict[str, Any] = Field(description="the audio head new collections start from")


class ModelInfo(BaseModel):
    """The model this process serves."""

    id: str
    requested: str
    dim: int
    modalities: list[str]
    fallback: bool
    device: str
    warning: str | None = None
    audio: AudioModelInfo | None = None
    precision: str = Field(
        "fp32", description="fp32, bf16, fp16 or int8 (MMR_PRECISION; int8: ONNX Runtime)"
    )
    precision_probe_min_cosine: float | None = Field(
        None, description="auto only: the probe's lowest cosine to fp32 on its fixed inputs"
    )


class ModelsResponse(BaseModel):
    """GET /v1/models."""

    active: ModelInfo
    syntax: list[str]
    audio_syntax: list[str]
    architectures: list[str]


class FinetuneJobCreate(BaseModel):
    """A fine-tune of a collection's aligner heads on pairs of its items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "finetune", "collection": "photos", "pair_key": "group"},
                {
                    "type": "finetune",
                    "collection": "photos",
                    "pairs": [["cat-1.jpg", "cat-1-caption"], ["dog-7.jpg", "dog-7-caption"]],
                    "activate": "always",
                },
            ]
        },
    )
    type: Literal["finetune"]
    collection: CollectionName
    pair_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="items sharing a value under this metadata key are pairs",
    )
    pairs: list[tuple[ItemId, ItemId]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_JOB_PAIRS,
        description=f"explicit item-id pairs (at most {MAX_JOB_PAIRS}, "
        f"{MAX_JOB_PAIRS_CHARS:,} characters of ids in all); listings show their count",
    )
    activate: Literal["if_better", "always", "never"] = Field(
        "if_better", description="swap the new version in when its held-out recall is better"
    )
    holdout: Annotated[float, NoBool] = Field(
        0.2, gt=0.0, lt=0.9, description="share of pairs held out"
    )
    max_pairs: Annotated[int, NoBool] = Field(50_000, ge=10, le=100_000)
    max_epochs: Annotated[int, NoBool] = Field(200, ge=1, le=10_000)
    max_seconds: Annotated[float, NoBool] = Field(900.0, gt=0, le=86_400)
    patience: Annotated[int, NoBool] = Field(
        30, ge=1, le=10_000, description="epochs without held-out improvement before stopping"
    )
    seed: Annotated[int, NoBool] = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _one_source(self) -> FinetuneJobCreate:
        if (self.pair_key is None) == (self.pairs is None):
            raise ValueError("give exactly one of pair_key or pairs")
        chars = sum(len(a) + len(b) for a, b in self.pairs or ())
        if chars > MAX_JOB_PAIRS_CHARS:
            raise ValueError(
                f"pairs hold {chars:,} characters of ids; the limit is {MAX_JOB_PAIRS_CHARS:,}: "
                "split the pairs over several jobs or pair items by a metadata key (pair_key)"
            )
        return self


class ReindexJobCreate(BaseModel):
    """A rebuild of a collection's index from SQL, swapped in like an activation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "reindex", "collection": "photos"},
                {"type": "reindex", "collection": "photos", "index": {"type": "hnsw"}},
            ]
        },
    )
    type: Literal["reindex"]
    collection: CollectionName
    index: IndexSettings | None = Field(
        None, description="new index settings (type and parameters); omitted: keep them"
    )


JobCreate = Annotated[FinetuneJobCreate | ReindexJobCreate, Field(discriminator="type")]


class JobPublic(BaseModel):
    """A background job and where it stands."""

    id: str
    type: str
    collection: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: dict[str, Any] = Field(
        description="fraction (0-1), epoch, max_epochs, loss and eta_s while it runs"
    )
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="finetune: recall@1/5/10 before and after on held-out pairs, the new "
        "aligner version and whether it was activated"
    )
    error: str | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobPublic]


def check_filter(value: dict[str, Scalar | list[Scalar]]) -> dict[str, Scalar | list[Scalar]]:
    """A search filter within the bounds above, its keys normalised like metadata keys."""
    if len(value) > MAX_FILTER_KEYS:
        raise ValueError(f"the filter has {len(value)} keys; the limit is {MAX_FILTER_KEYS}")
    total = 0
    checked: dict[str, Scalar | list[Scalar]] = {}
    for key, wanted in value.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if len(values) > MAX_FILTER_VALUES:
            raise ValueError(
                f"filter key {key!r} has {len(values)} values; the limit is {MAX_FILTER_VALUES}"
            )
        total += len(values)
        for v in values:
            if isinstance(v, str) and len(v) > MAX_FILTER_VALUE_CHARS:
                raise ValueError(
                    f"a value of filter key {key!r} is over {MAX_FILTER_VALUE_CHARS} characters"
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"filter key {key!r}: numbers must be finite")
        name = check_key(key)
        if name in checked:  # the last would silently replace the other's condition
            raise ValueError(f"two filter keys are {name!r} once normalised to NFC")
        checked[name] = wanted
    if total > MAX_FILTER_VALUES_TOTAL:
        raise ValueError(f"the filter has {total} values; the limit is {MAX_FILTER_VALUES_TOTAL}")
    return checked
