"""Embeddings on demand, nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
from PIL import Image

from app.schemas.embed import EmbedResponse
from app.services.collections import require_space
from app.services.embedding import Embedder, Encoded, queries
from app.services.errors import InvalidInput
from app.services.media import DecodedMedia, decode_upload, request_budget
from app.services.pool import ModelPool, key_of_aligner
from app.settings import Settings
from index.collections import CollectionStore
from index.manager import IndexManager
from models.encoders.aligner import Aligner
from models.runtime.batcher import Pending

T = TypeVar("T")


def _check_count(settings: Settings, n: int) -> None:
    if n > settings.max_batch_items:
        raise InvalidInput(
            f"{n} inputs; the limit is {settings.max_batch_items} (MMR_MAX_BATCH_ITEMS)"
        )


def with_model(
    *,
    models: ModelPool,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    collection: str | None,
    run: Callable[..., T],
) -> T:
    """``run(embedder=...)`` with the model of the collection's live space, or the
    process's own model without a collection."""
    if collection is None:
        return run(embedder=models.default)
    row = collections.get(collection)
    with models.use(*key_of_aligner(indexes.get(row).aligner)) as embedder:
        return run(embedder=embedder)


def embed_texts(
    *,
    settings: Settings,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    texts: list[str],
    collection: str | None,
) -> EmbedResponse:
    """Embed texts (with ``collection``'s active heads, or a new collection's)."""
    _check_count(settings, len(texts))
    aligner = _aligner(collections, indexes, embedder, collection, ["text"])
    return _response(embedder, aligner, embedder.texts(texts))


def embed_files(
    *,
    settings: Settings,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    uploads: list[bytes],
    collection: str | None,
) -> EmbedResponse:
    """Embed uploaded images and sounds, in order (every file must decode, else the call fails).

    A recording longer than the audio window gives one vector: the mean of its segments.
    """
    _check_count(settings, len(uploads))
    media = _decode_all(settings, embedder, uploads)
    return embed_decoded(
        collections=collections,
        indexes=indexes,
        embedder=embedder,
        media=media,
        collection=collection,
    )


def embed_decoded(
    *,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    media: list[DecodedMedia],
    collection: str | None,
) -> EmbedResponse:
    """``embed_files`` after the decoding."""
    aligner = _aligner(collections, indexes, embedder, collection, [m.modality for m in media])
    encoded = embedder.encode_mixed([m.modality for m in media], [m.payload for m in media])
    return _response(embedder, aligner, encoded)


@dataclass(frozen=True)
class StagedImages:
    """Images queued on the image tower's batcher: ``finish`` answers from the rows."""

    rows: Future[np.ndarray]
    aligner: Aligner


def stage_files(
    *,
    settings: Settings,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    uploads: list[bytes],
    collection: str | None,
    pending: Pending,
) -> StagedImages | list[DecodedMedia]:
    """``embed_files`` in steps, for a caller that awaits the forward instead of holding a
    thread for it (the embed fast path): the files decoded here; when they are all images,
    packed and queued under ``pending`` (the image tower's ``expect``, taken before this ran),
    else ``pending`` withdrawn and the decoded media returned for ``embed_decoded``. Raises
    what ``embed_files`` raises, with ``pending`` withdrawn."""
    try:
        _check_count(settings, len(uploads))
        media = _decode_all(settings, embedder, uploads)
        if any(m.modality != "image" for m in media):
            pending.withdraw()
            return media
        aligner = _aligner(collections, indexes, embedder, collection, ["image"])
    except BaseException:
        pending.withdraw()
        raise
    images = [cast(Image.Image, m.payload) for m in media]
    rows = embedder.encoder.enqueue_images(images, pending)
    return StagedImages(rows, aligner)


def _decode_all(settings: Settings, embedder: Embedder, uploads: list[bytes]) -> list[DecodedMedia]:
    """Every upload decoded, all within one request's budget of decoded bytes."""
    budget = request_budget(settings)
    return [
        decode_upload(data, settings=settings, embedder=embedder, budget=budget) for data in uploads
    ]


def finish(*, embedder: Embedder, staged: StagedImages, rows: np.ndarray) -> EmbedResponse:
    """The answer for staged images, from their rows."""
    encoded = [Encoded("image", row.reshape(1, -1)) for row in rows]
    return _response(embedder, staged.aligner, encoded)


def _aligner(
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    collection: str | None,
    modalities: list[str],
) -> Aligner:
    """A collection's active heads, or the heads a new collection would start from."""
    if collection is None:
        return embedder.default_aligner
    row = collections.get(collection)
    aligner = indexes.get(row).aligner
    for modality in sorted(set(modalities)):
        require_space(row, aligner, embedder, modality)
    return aligner


def _response(embedder: Embedder, aligner: Aligner, encoded: list[Encoded]) -> EmbedResponse:
    vectors = queries(aligner, encoded)
    return EmbedResponse(
        model=embedder.model_id,
        dim=embedder.dim,
        aligner_version=aligner.version or None,
        embeddings=vectors.tolist(),
    )
