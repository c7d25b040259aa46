"""Search: encode the query in the collection's space, filtered top-k in FAISS, hydrate from SQL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import SpaceMismatch, UnprocessableEntity
from app.schemas import SearchHit, SearchResponse
from app.services.collections import require_same_space
from app.services.media import decode_upload
from app.services.views import item_public
from app.state import Services
from index.store import Scalar
from index.tables import CollectionRow
from models.aligner import l2_normalize


@dataclass
class Query:
    """What to search with: exactly one of text, file bytes, item id, vector."""

    text: str | None = None
    data: bytes | None = None
    item_id: str | None = None
    vector: list[float] | None = None


@dataclass
class Constraints:
    """How many and which items may be returned."""

    k: int = 10
    modalities: list[str] | None = None
    filter: dict[str, Scalar | list[Scalar]] | None = None


def search(
    *, services: Services, name: str, query: Query, constraints: Constraints
) -> SearchResponse:
    """Top-k items of a collection for a query, best first."""
    row = services.store.get_collection(name)
    vector, modality = _query_vector(services, row, query)
    live = services.indexes.get(row)
    allowed = None
    if constraints.modalities or constraints.filter:
        # Filters narrow the candidates before the cut, so k results come when k items match.
        allowed = services.store.matching_pks(
            collection_id=row.id,
            modalities=constraints.modalities,
            filters=constraints.filter,
        )
    hits = live.index.search(vector, constraints.k, allowed)
    items = services.store.items_by_pk(collection_id=row.id, pks=[pk for pk, _ in hits])
    results = [
        SearchHit(item=item_public(items[pk], row.name), score=score)
        for pk, score in hits
        if pk in items  # deleted between search and hydration
    ]
    return SearchResponse(results=results, query_modality=modality)


def _query_vector(services: Services, row: CollectionRow, query: Query) -> tuple[np.ndarray, str]:
    if query.item_id is not None:
        # A stored item is already in the collection's space, whatever model runs now.
        item = services.store.get_item(collection_id=row.id, external_id=query.item_id)
        return np.frombuffer(item.vector, dtype=np.float32), item.modality
    if query.vector is not None:
        return _raw_vector(row, query.vector), "vector"
    require_same_space(row, services)
    if query.text is not None:
        return services.embedder.texts([query.text]).vectors[0], "text"
    if query.data is None:
        raise UnprocessableEntity("give exactly one of text, item_id, vector or file")
    media = decode_upload(query.data, services=services)
    return services.embedder.encode(media.modality, [media.payload]).vectors[0], media.modality


def _raw_vector(row: CollectionRow, values: list[float]) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (row.dim,):
        raise SpaceMismatch(
            f"the vector has {vector.size} dimensions but collection {row.name!r} has {row.dim}"
        )
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise UnprocessableEntity("the vector must be finite and not all zeros")
    return l2_normalize(vector.reshape(1, -1))[0]
