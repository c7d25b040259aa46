"""Collections: create, read, list, delete; each is one embedding space."""

from __future__ import annotations

from typing import Any

from app.schemas.collections import CollectionCreate, CollectionPublic, IndexSettings, SpaceInfo
from app.services.embedding import Embedder
from app.services.errors import InvalidInput, NotAllowed, SpaceMismatch
from app.services.pool import ModelKey, ModelPool
from app.services.views import aware, collection_public
from app.settings import Settings
from index.blobs import BlobStore
from index.collections import CollectionStore
from index.items import ItemStore
from index.manager import IndexManager
from index.spaces import SpaceStore
from index.spec import AUTO, IndexSpec, auto_params, auto_spec
from index.tables import CollectionRow
from models.encoders.aligner import VIDEO, Aligner


def space_problem(
    row: CollectionRow, aligner: Aligner, embedder: Embedder, modality: str
) -> str | None:
    """Why ``embedder`` cannot put ``modality`` into the space of the collection's aligner
    version ``aligner`` (the live index's), or None. A video needs the image head and, when
    this model hears its sound, the audio head."""
    if modality == VIDEO:
        parts = ("image", "audio") if embedder.audio is not None else ("image",)
        problems = (space_problem(row, aligner, embedder, part) for part in parts)
        return next((p for p in problems if p is not None), None)
    wanted = aligner.encoders.get(modality)
    running = embedder.encoder_ids.get(modality)
    if wanted is None:
        return (
            f"collection {row.name!r} was created without an {modality} model, so its aligner "
            f"v{aligner.version} has no {modality} head; create a new collection for {modality}"
        )
    if aligner.dim != embedder.dim or wanted != running:
        return (
            f"collection {row.name!r} takes {modality} from {wanted} (dim {aligner.dim}) but "
            f"this request was encoded by {running or 'none'} (dim {embedder.dim}): the "
            "collection moved to another model while the request ran; send it again"
        )
    return None


def require_space(row: CollectionRow, aligner: Aligner, embedder: Embedder, modality: str) -> None:
    """Refuse (409) to mix spaces: invariant 4."""
    problem = space_problem(row, aligner, embedder, modality)
    if problem is not None:
        raise SpaceMismatch(problem)


def create_collection(
    *,
    settings: Settings,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    body: CollectionCreate,
) -> CollectionPublic:
    """Create an empty collection in the space of the model the body names (loaded now if
    this process does not have it; 422 unless MMR_ALLOWED_MODELS allows it), else of the
    process's own model."""
    if body.model is not None:
        require_allowed(settings, body.model)
    if body.model is None:
        return _create(collections, indexes, models.default, body)
    with models.use_own(body.model) as embedder:
        return _create(collections, indexes, embedder, body)


def require_allowed(settings: Settings, model: str) -> None:
    """403 for a model collections may not be created with or migrated to."""
    if not settings.model_allowed(model):
        raise NotAllowed(
            f"model {model!r} is not allowed here: collections may use MMR_MODEL "
            f"({settings.model}), mmr-mini, or a model listed in MMR_ALLOWED_MODELS"
        )


def _create(
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    body: CollectionCreate,
) -> CollectionPublic:
    aligner = embedder.default_aligner
    index_type, index_params = stored_index(body.index, dim=embedder.dim, vectors=0)
    row = collections.create(
        name=body.name,
        model=embedder.model_id,
        audio_model=embedder.audio_model_id,
        dim=embedder.dim,
        index_type=index_type,
        index_params=index_params,
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )
    live = indexes.create(row, aligner.numbered(row.aligner_version))
    return collection_public(row, count=0, index=live.index.describe(), compatible=True)


def stored_index(settings: IndexSettings, *, dim: int, vectors: int) -> tuple[str, dict[str, Any]]:
    """What SQL records for the index a request asks for (422 when it cannot index ``dim``
    dimensions): its type and every parameter, or ``auto`` and the spec it chooses for a
    collection of ``vectors`` vectors (index.spec.auto_spec)."""
    if settings.type == AUTO:
        return AUTO, auto_params(vectors, dim)
    spec = index_spec(settings, dim=dim)
    return spec.type, spec.params()


def index_spec(settings: IndexSettings, *, dim: int) -> IndexSpec:
    """The index a request asks for, with every parameter (422 when it cannot index ``dim``
    dimensions); the defaults are stored so that later releases do not change it. For
    ``auto``, the spec of an empty collection."""
    if settings.type == AUTO:
        return auto_spec(0, dim)
    spec = IndexSpec.of(settings.type, settings.params())
    try:
        spec.check(dim)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return spec


def get_collection(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
    spaces: SpaceStore,
    name: str,
) -> CollectionPublic:
    """One collection with its counts and the spaces beside its own."""
    row = collections.get(name)
    found = describe(row, items=items, indexes=indexes, models=models)
    found.other_spaces = [
        SpaceInfo(
            model=s.model,
            audio_model=s.audio_model,
            dim=s.dim,
            state=s.state,
            job_id=s.job_id,
            items=spaces.count(collection_id=row.id, key=s.key),
            created_at=aware(s.created_at),
        )
        for s in spaces.of(row.id)
    ]
    return found


def list_collections(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    models: ModelPool,
) -> list[CollectionPublic]:
    """Every collection, oldest first."""
    return [
        describe(row, items=items, indexes=indexes, models=models) for row in collections.list()
    ]


def delete_collection(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    blobs: BlobStore,
    name: str,
) -> None:
    """Delete a collection, its items and its index."""
    row = collections.get(name)
    live = indexes.get(row)
    with indexes.writing(live):
        shas = items.collection_shas(row.id)
        collections.delete(row.id)
        indexes.drop(row.id)
    blobs.remove_unused(shas, items.shas_in_use)


def describe(
    row: CollectionRow, *, items: ItemStore, indexes: IndexManager[Aligner], models: ModelPool
) -> CollectionPublic:
    """A collection row with its live numbers."""
    live = indexes.get(row)
    return collection_public(
        row,
        count=items.count(row.id),
        index=live.space.index.describe(),
        compatible=ModelKey(row.model, row.audio_model) not in models.failed,
    )
