"""Embeddings on demand, nothing stored."""

from __future__ import annotations

import numpy as np

from app.errors import UnprocessableEntity
from app.schemas import EmbedResponse
from app.services.collections import require_space
from app.services.embedding import Encoded
from app.services.media import decode_upload
from app.state import Services
from models.aligner import Aligner


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
    media = [decode_upload(data, services=services) for data in uploads]
    aligner = _aligner(services, collection, [m.modality for m in media])
    encoded = services.embedder.encode_mixed(
        [m.modality for m in media], [m.payload for m in media]
    )
    return _response(services, aligner, encoded)


def _aligner(services: Services, collection: str | None, modalities: list[str]) -> Aligner:
    """A collection's active heads, or the heads a new collection would start from."""
    if collection is None:
        return services.embedder.default_aligner
    row = services.store.get_collection(collection)
    aligner = services.indexes.get(row).aligner
    for modality in sorted(set(modalities)):
        require_space(row, aligner, services, modality)
    return aligner


def _response(services: Services, aligner: Aligner, encoded: list[Encoded]) -> EmbedResponse:
    vectors = np.stack([e.query(aligner) for e in encoded])
    return EmbedResponse(
        model=services.embedder.model_id,
        dim=services.embedder.dim,
        aligner_version=aligner.version or None,
        embeddings=vectors.tolist(),
    )
