"""Embeddings on demand, nothing stored."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image

from app.errors import UnprocessableEntity
from app.schemas.embed import EmbedResponse
from app.services.collections import require_space
from app.services.embedding import Encoded, queries
from app.services.media import DecodedMedia, decode_upload, request_budget
from app.state import Services
from models.encoders.aligner import Aligner
from models.runtime.batcher import Pending


def _check_count(services: Services, n: int) -> None:
    if n > services.settings.max_batch_items:
        raise UnprocessableEntity(
            f"{n} inputs; the limit is {services.settings.max_batch_items} (MMR_MAX_BATCH_ITEMS)"
        )


def embed_texts(*, services: Services, texts: list[str], collection: str | None) -> EmbedResponse:
    """Embed texts."""
    _check_count(services, len(texts))
    aligner = _aligner(services, collection, ["text"])
    return _response(services, aligner, services.embedder.texts(texts))


def embed_files(
    *, services: Services, uploads: list[bytes], collection: str | None
) -> EmbedResponse:
    """Embed uploaded images and sounds, in order (every file must decode, else the call fails).

    A recording longer than the audio window gives one vector: the mean of its segments.
    """
    _check_count(services, len(uploads))
    media = _decode_all(services, uploads)
    return embed_decoded(services=services, media=media, collection=collection)


def embed_decoded(
    *, services: Services, media: list[DecodedMedia], collection: str | None
) -> EmbedResponse:
    """``embed_files`` after the decoding."""
    aligner = _aligner(services, collection, [m.modality for m in media])
    encoded = services.embedder.encode_mixed(
        [m.modality for m in media], [m.payload for m in media]
    )
    return _response(services, aligner, encoded)


@dataclass(frozen=True)
class StagedImages:
    """Images queued on the image tower's batcher: ``finish`` answers from the rows."""

    rows: Future[np.ndarray]
    aligner: Aligner


def stage_files(
    *, services: Services, uploads: list[bytes], collection: str | None, pending: Pending
) -> StagedImages | list[DecodedMedia]:
    """``embed_files`` in steps, for a caller that awaits the forward instead of holding a
    thread for it (the embed fast path): the files decoded here; when they are all images,
    packed and queued under ``pending`` (the image tower's ``expect``, taken before this ran),
    else ``pending`` withdrawn and the decoded media returned for ``embed_decoded``. Raises
    what ``embed_files`` raises, with ``pending`` withdrawn."""
    try:
        _check_count(services, len(uploads))
        media = _decode_all(services, uploads)
        if any(m.modality != "image" for m in media):
            pending.withdraw()
            return media
        aligner = _aligner(services, collection, ["image"])
    except BaseException:
        pending.withdraw()
        raise
    images = [cast(Image.Image, m.payload) for m in media]
    rows = services.embedder.encoder.enqueue_images(images, pending)
    return StagedImages(rows, aligner)


def _decode_all(services: Services, uploads: list[bytes]) -> list[DecodedMedia]:
    """Every upload decoded, all within one request's budget of decoded bytes."""
    budget = request_budget(services.settings)
    return [decode_upload(data, services=services, budget=budget) for data in uploads]


def finish(services: Services, staged: StagedImages, rows: np.ndarray) -> EmbedResponse:
    """The answer for staged images, from their rows."""
    encoded = [Encoded("image", row.reshape(1, -1)) for row in rows]
    return _response(services, staged.aligner, encoded)


def _aligner(services: Services, collection: str | None, modalities: list[str]) -> Aligner:
    """A collection's active heads, or the heads a new collection would start from."""
    if collection is None:
        return services.embedder.default_aligner
    row = services.stores.collections.get(collection)
    aligner = services.indexes.get(row).aligner
    for modality in sorted(set(modalities)):
        require_space(row, aligner, services, modality)
    return aligner


def _response(services: Services, aligner: Aligner, encoded: list[Encoded]) -> EmbedResponse:
    vectors = queries(aligner, encoded)
    return EmbedResponse(
        model=services.embedder.model_id,
        dim=services.embedder.dim,
        aligner_version=aligner.version or None,
        embeddings=vectors.tolist(),
    )
