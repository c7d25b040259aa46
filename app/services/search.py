"""Search: encode the query in the collection's space, filtered top-k in FAISS, hydrate from SQL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.schemas.search import SearchHit, SearchOptions, SearchRequest, SearchResponse
from app.services.collections import require_space
from app.services.embedding import Embedder, Encoded
from app.services.errors import InvalidInput, SpaceMismatch
from app.services.media import decode_upload
from app.services.pool import ModelPool, in_space, key_of_aligner
from app.services.views import item_public
from app.settings import Settings
from index.collections import CollectionStore
from index.columns import Scalar
from index.items import ItemStore, stored_of
from index.locks import WouldBlock
from index.manager import IndexManager, current_vectors
from index.summaries import ItemSummary
from index.tables import CollectionRow
from models.encoders.aligner import Aligner, l2_normalize
from models.encoders.audio import pooled


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


def request_query(req: SearchRequest) -> Query:
    """The query of a JSON search body."""
    return Query(text=req.text, item_id=req.item_id, vector=req.vector)


def request_constraints(req: SearchOptions) -> Constraints:
    """The constraints of a search body (JSON, or a form's fields)."""
    return Constraints(
        k=req.k, modalities=list(req.modalities or []), filter=dict(req.filter or {})
    )


def search(
    *,
    settings: Settings,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    name: str,
    query: Query,
    constraints: Constraints,
    wait: bool = True,
) -> SearchResponse:
    """Top-k items of a collection for a query, best first. Without ``wait``, WouldBlock
    instead of waiting for the index (a write to it, its loading or its swap)."""
    row = collections.get(name)
    live = indexes.get(row) if wait else indexes.ready(row)
    if live is None:  # to be loaded or brought to a new version first: no waiting here
        raise WouldBlock
    if (query.item_id is not None or query.vector is not None) and not in_space(live, row):
        # A migration's switch reached SQL but not yet this index: a stored item's vectors
        # and a raw vector are in the new space, so they wait for the swap (a text or a
        # file is encoded by the model of the index being searched, and need not).
        if not wait:
            raise WouldBlock
        live = indexes.get(row, wait=True)
    # One read of the pair: the query is projected by the heads that made the index,
    # even if a swap lands while this search runs.
    space = live.space
    aligner, index = space.aligner, space.index
    vector, modality = _query_vector(settings, items, models, row, aligner, query)
    allowed = None
    if constraints.modalities or constraints.filter:
        # Filters narrow the candidates before the cut, so k results come when k items match.
        allowed = items.matching_pks(
            collection_id=row.id,
            modalities=constraints.modalities,
            filters=constraints.filter,
        )
    hits = index.search(vector, constraints.k, allowed, wait=wait)
    found = items.summaries(collection_id=row.id, pks=[h.pk for h in hits])
    results = [
        _hit(found[h.pk], row.name, h.score, h.segment)
        for h in hits
        if h.pk in found  # deleted between search and hydration
    ]
    return SearchResponse(results=results, query_modality=modality, aligner_version=aligner.version)


def _hit(item: ItemSummary, collection: str, score: float, segment: int) -> SearchHit:
    """A result; a recording's carries the span of the segment that matched best."""
    span = item.spans[segment] if item.spans and segment < len(item.spans) else None
    return SearchHit(
        item=item_public(item, collection),
        score=score,
        start=span[0] if span else None,
        end=span[1] if span else None,
    )


def _query_vector(
    settings: Settings,
    items: ItemStore,
    models: ModelPool,
    row: CollectionRow,
    aligner: Aligner,
    query: Query,
) -> tuple[np.ndarray, str]:
    if query.item_id is not None:
        # A stored item is already in the collection's space, whatever model runs now;
        # a recording stands for itself as the mean of its segments.
        item = items.get(collection_id=row.id, external_id=query.item_id)
        vectors = current_vectors(stored_of(item), aligner, row.dim)
        return l2_normalize(pooled(vectors).reshape(1, -1))[0], item.modality
    if query.vector is not None:
        return _raw_vector(row, query.vector), "vector"
    # The model that made the index being searched (the collection's, but for the moments
    # a migration's switch takes to reach this process): the query meets its own space.
    with models.use(*key_of_aligner(aligner)) as embedder:
        modality, payload = _decode_query(settings, embedder, query)
        # Checked before the forward pass: a refused query costs no inference.
        require_space(row, aligner, embedder, modality)
        encoded: Encoded = embedder.encode(modality, [payload])[0]
    return encoded.query(aligner), modality


def _decode_query(settings: Settings, embedder: Embedder, query: Query) -> tuple[str, object]:
    if query.text is not None:
        return "text", query.text
    if query.data is None:
        raise InvalidInput("give exactly one of text, item_id, vector or file")
    media = decode_upload(query.data, settings=settings, embedder=embedder)
    return media.modality, media.payload


def _raw_vector(row: CollectionRow, values: list[float]) -> np.ndarray:
    """A client's vector at unit length. Scaled by its largest magnitude in float64 first:
    in float32 the squares of 1e-30 vanish and those of 1e30 overflow, and normalising
    would give zeros or NaN where the direction is perfectly well defined."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (row.dim,):
        raise SpaceMismatch(
            f"the vector has {vector.size} dimensions but collection {row.name!r} has {row.dim}"
        )
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidInput("the vector must be finite and not all zeros")
    unit = l2_normalize((vector / np.max(np.abs(vector))).reshape(1, -1))[0]
    if not np.all(np.isfinite(unit)) or abs(float(np.linalg.norm(unit)) - 1.0) > 1e-3:
        raise InvalidInput("the vector cannot be normalised to unit length")
    return unit
