"""Search: encode the query in the collection's space, filtered top-k in FAISS, hydrate from SQL."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from app.schemas.search import (
    MAX_K,
    MAX_LEXICAL_WEIGHT,
    SearchHit,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
from app.services.collections import require_space
from app.services.embedding import Embedder, Encoded
from app.services.errors import InvalidInput, SpaceMismatch
from app.services.media import decode_upload
from app.services.pool import ModelPool, in_space, key_of_aligner
from app.services.views import item_public
from app.settings import Settings
from index.builds import current_vectors
from index.collections import CollectionStore
from index.columns import Scalar
from index.items import ItemStore, stored_of
from index.locks import WouldBlock
from index.manager import IndexManager
from index.summaries import ItemSummary
from index.tables import CollectionRow
from index.vector_index import VectorIndex
from models.encoders.aligner import Aligner, l2_normalize
from models.encoders.audio import pooled


@dataclass
class Query:
    """What to search with: exactly one of text, file bytes, item id, vector, or weighted
    parts (each a query of one of the others)."""

    text: str | None = None
    data: bytes | None = None
    item_id: str | None = None
    vector: list[float] | None = None
    parts: list[tuple[Query, float]] | None = None

    def names_stored_vectors(self) -> bool:
        """Whether it holds a stored item or a raw vector (of the collection's space)."""
        if self.parts is not None:
            return any(part.names_stored_vectors() for part, _ in self.parts)
        return self.item_id is not None or self.vector is not None


@dataclass
class Constraints:
    """How many and which items may be returned."""

    k: int = 10
    modalities: list[str] | None = None
    filter: dict[str, Scalar | list[Scalar]] | None = None
    offset: int = 0
    min_score: float | None = None
    mode: str = "vector"  # "vector" | "lexical" | "hybrid"


def request_query(req: SearchRequest) -> Query:
    """The query of a JSON search body (a part's file decoded from base64)."""
    if req.query is None:
        return Query(text=req.text, item_id=req.item_id, vector=req.vector)
    parts = []
    for n, part in enumerate(req.query):
        data = None
        if part.data is not None:
            try:
                data = base64.b64decode(part.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(
                    f"query part {n}: 'data' is not base64 ({exc}); send the file's bytes "
                    "base64-encoded, or search by the file in a multipart body"
                ) from exc
        query = Query(text=part.text, item_id=part.item_id, vector=part.vector, data=data)
        parts.append((query, part.weight))
    return Query(parts=parts)


def request_constraints(req: SearchOptions) -> Constraints:
    """The constraints of a search body (JSON, or a form's fields)."""
    return Constraints(
        k=req.k,
        modalities=list(req.modalities or []),
        filter=dict(req.filter or {}),
        offset=req.offset,
        min_score=req.min_score,
        mode=req.mode,
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
    """Top-k items of a collection for a query, best first, ranked as ``constraints.mode``
    says. Without ``wait``, WouldBlock instead of waiting for the index (a write to it, its
    loading or its swap)."""
    row = collections.get(name)
    words = None if constraints.mode == "vector" else lexical_text(query, constraints.mode)
    # A page: the best offset + k (MAX_K deep at most), less the first offset; none below
    # min_score.
    depth = min(constraints.offset + constraints.k, MAX_K)
    if words is not None and constraints.mode == "lexical":
        ranked = [
            Ranked(pk, score) for pk, score in _lexical(items, row, words, constraints, depth)
        ]
        modality, version = "text", row.aligner_version
    else:
        # Hybrid blends two lists at least HYBRID_DEPTH deep: an item ranked low in one and
        # high in the other must be in the union to be scored at all.
        deep = depth if words is None else min(max(depth, HYBRID_DEPTH), MAX_K)
        near = _vector_hits(settings, items, indexes, models, row, query, constraints, deep, wait)
        ranked, modality, version = near.hits, near.modality, near.aligner_version
        if words is not None:
            lexical = dict(_lexical(items, row, words, constraints, deep))
            # Each side's figure for the items only the other side found: exact, not 0.
            lexical |= _lexical(items, row, words, constraints, deep, near.pks() - lexical.keys())
            weight = lexical_weight(items.specificity(collection_id=row.id, query=words))
            ranked = blend(near.hits + near.cosines(lexical.keys() - near.pks()), lexical, weight)
    hits = ranked[constraints.offset : depth]
    if constraints.min_score is not None:
        hits = [h for h in hits if h.score >= constraints.min_score]
    found = items.summaries(collection_id=row.id, pks=[h.pk for h in hits])
    results = [
        _hit(found[h.pk], row.name, h.score, h.segment)
        for h in hits
        if h.pk in found  # deleted between search and hydration
    ]
    return SearchResponse(results=results, query_modality=modality, aligner_version=version)


@dataclass(frozen=True)
class Ranked:
    """An item in a ranking: its key, its score, and the segment that matched best."""

    pk: int
    score: float
    segment: int = 0


# Hybrid's score, over the union of the vector and the lexical top HYBRID_DEPTH (an item
# found by one side only gets the other side's exact figure too: its cosine, its lexical
# score, 0 when no word of the query is in it): (1 - w) x cosine + w x lexical score, the
# weight w per query from how specific its rarest word is (lexical_weight). A fixed weight
# cannot serve both kinds of query: the lexical score r/(1+r) saturates, so an item
# holding three common words of the query scores nearly as high as the one holding its
# rare product code, and a weight that lets the code win lets common words outvote the
# cosine of a paraphrase. Fixed weights, min-max ("relative score") fusion and others were
# compared with it on dev seeds 7 and 5 (docs/search.md, "How it was chosen");
# bench/hybrid.py measures it and reciprocal rank fusion on seed 11.
HYBRID_DEPTH = 100


def lexical_weight(specificity: float) -> float:
    """Hybrid's lexical weight for a query whose rarest matching word has this
    specificity (index.fulltext.specificity, in [0, 1]): MAX_LEXICAL_WEIGHT x s^2. A word
    only one item holds leans the blend on the words (0.9); words half the items hold
    barely move the cosine's order. Anything outside [0, 1] is held to it, NaN to 0."""
    s = 0.0 if math.isnan(specificity) else min(1.0, max(0.0, specificity))
    return MAX_LEXICAL_WEIGHT * s * s


def blend(vector: list[Ranked], lexical: dict[int, float], weight: float) -> list[Ranked]:
    """Items scored (1 - weight) x cosine + weight x lexical score, best first (ties: the
    older item first). ``vector`` holds the cosines; an item of ``lexical`` without one
    (not in this process's index yet) counts a cosine of 0, an item missing from
    ``lexical`` a lexical score of 0."""
    cosine = {h.pk: h for h in vector}
    scored = [
        Ranked(
            pk,
            (1 - weight) * (cosine[pk].score if pk in cosine else 0.0)
            + weight * lexical.get(pk, 0.0),
            cosine[pk].segment if pk in cosine else 0,
        )
        for pk in cosine.keys() | lexical.keys()
    ]
    return sorted(scored, key=lambda h: (-h.score, h.pk))


def lexical_text(query: Query, mode: str) -> str:
    """The words a lexical or hybrid search looks for: a text query's, or those of a
    composed query's text parts of positive weight (a negative part only steers the
    vector). InvalidInput when there are none."""
    if query.text is not None:
        return query.text
    if query.parts is not None:
        words = [part.text for part, weight in query.parts if part.text is not None and weight > 0]
        if words:
            return " ".join(words)
    raise InvalidInput(
        f"mode {mode!r} searches words, and this query has none: give a 'text' query (or a "
        "text part of positive weight in 'query'), or use mode 'vector' to search by "
        "file, item or vector"
    )


def _lexical(
    items: ItemStore,
    row: CollectionRow,
    words: str,
    constraints: Constraints,
    limit: int,
    among: set[int] | None = None,
) -> list[tuple[int, float]]:
    if among is not None and not among:
        return []
    return items.lexical(
        collection_id=row.id,
        query=words,
        modalities=constraints.modalities,
        filters=constraints.filter,
        limit=limit,
        among=None if among is None else sorted(among),
    )


@dataclass
class VectorHits:
    """A vector search's hits, and how to score more items against the same query."""

    hits: list[Ranked]
    modality: str
    aligner_version: int
    query: np.ndarray
    index: VectorIndex
    wait: bool

    def pks(self) -> set[int]:
        return {h.pk for h in self.hits}

    def cosines(self, pks: Iterable[int]) -> list[Ranked]:
        """These items' cosines with the query (those in the index)."""
        wanted = np.fromiter(pks, dtype=np.int64)
        if not wanted.size:
            return []
        found = self.index.search(self.query, int(wanted.size), wanted, wait=self.wait)
        return [Ranked(h.pk, h.score, h.segment) for h in found]


def _vector_hits(
    settings: Settings,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    row: CollectionRow,
    query: Query,
    constraints: Constraints,
    depth: int,
    wait: bool,
) -> VectorHits:
    """The ``depth`` nearest items in the collection's index, the query's modality and the
    aligner version that scored them."""
    live = indexes.get(row) if wait else indexes.ready(row)
    if live is None:  # to be loaded or brought to a new version first: no waiting here
        raise WouldBlock
    if query.names_stored_vectors() and not in_space(live, row):
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
    hits = [
        Ranked(h.pk, h.score, h.segment) for h in index.search(vector, depth, allowed, wait=wait)
    ]
    return VectorHits(hits, modality, aligner.version, vector, index, wait)


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
    if query.parts is not None:
        return _composed(settings, items, models, row, aligner, query.parts), "composed"
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


def _composed(
    settings: Settings,
    items: ItemStore,
    models: ModelPool,
    row: CollectionRow,
    aligner: Aligner,
    parts: list[tuple[Query, float]],
) -> np.ndarray:
    """The weighted sum of the parts' unit vectors in the collection's space, at unit
    length: each part counts by its weight whatever its modality's typical scale."""
    total = np.zeros(row.dim, dtype=np.float64)
    for part, weight in parts:
        vector, _ = _query_vector(settings, items, models, row, aligner, part)
        total += weight * vector.astype(np.float64)
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-6:
        raise InvalidInput(
            "the query's weighted parts cancel out (their sum is zero): change a weight, or "
            "leave out a part"
        )
    return (total / norm).astype(np.float32)


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
