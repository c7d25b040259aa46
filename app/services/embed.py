"""Embeddings on demand, nothing stored."""

from __future__ import annotations

from app.errors import UnprocessableEntity
from app.schemas import EmbedResponse
from app.services.embedding import Embedded
from app.services.media import decode_upload
from app.state import Services


def _check_count(services: Services, n: int) -> None:
    if n > services.settings.max_batch_items:
        raise UnprocessableEntity(
            f"{n} inputs; the limit is {services.settings.max_batch_items} (MMR_MAX_BATCH_ITEMS)"
        )


def embed_texts(*, services: Services, texts: list[str]) -> EmbedResponse:
    """Embed texts."""
    _check_count(services, len(texts))
    return _response(services, services.embedder.texts(texts))


def embed_files(*, services: Services, uploads: list[bytes]) -> EmbedResponse:
    """Embed uploaded images and sounds, in order (every file must decode, else the call fails)."""
    _check_count(services, len(uploads))
    media = [decode_upload(data, services=services) for data in uploads]
    embedded = services.embedder.encode_mixed(
        [m.modality for m in media], [m.payload for m in media]
    )
    return _response(services, embedded)


def _response(services: Services, embedded: Embedded) -> EmbedResponse:
    return EmbedResponse(
        model=services.embedder.model_id,
        dim=services.embedder.dim,
        embeddings=embedded.vectors.tolist(),
    )
