"""Collections: create, read, list, delete; each is one embedding space."""

from __future__ import annotations

from app.schemas.collections import CollectionCreate, CollectionPublic, IndexSettings
from app.services.embedding import Embedder
from app.services.errors import InvalidInput, SpaceMismatch
from app.services.views import collection_public
from index.blobs import BlobStore
from index.collections import CollectionStore
from index.items import ItemStore
from index.manager import IndexManager
from index.spec import IndexSpec
from index.tables import CollectionRow
from models.encoders.aligner import Aligner


def space_problem(
    row: CollectionRow, aligner: Aligner, embedder: Embedder, modality: str
) -> str | None:
    """Why this process (its encoders: ``embedder``) cannot put ``modality`` into the
    collection's space, or None."""
    if aligner.dim != embedder.dim or row.model != embedder.model_id:
        return (
            f"collection {row.name!r} lives in the space of {row.model} (dim {row.dim}) but "
            f"this server runs {embedder.model_id} (dim {embedder.dim}); start the server with "
            f"MMR_MODEL={row.model} or use another collection"
        )
    wanted = aligner.encoders.get(modality)
    running = embedder.encoder_ids.get(modality)
    if wanted is None:
        return (
            f"collection {row.name!r} was created without an {modality} model, so its aligner "
            f"v{aligner.version} has no {modality} head; create a new collection for {modality}"
        )
    if wanted != running:
        setting = "MMR_AUDIO_MODEL" if modality == "audio" else "MMR_MODEL"
        return (
            f"collection {row.name!r} takes {modality} from {wanted} but this server runs "
            f"{running or 'none'}; start the server with {setting}={wanted}"
        )
    return None


def require_space(row: CollectionRow, aligner: Aligner, embedder: Embedder, modality: str) -> None:
    """Refuse (409) to mix spaces: invariant 4."""
    problem = space_problem(row, aligner, embedder, modality)
    if problem is not None:
        raise SpaceMismatch(problem)


def create_collection(
    *,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
    body: CollectionCreate,
) -> CollectionPublic:
    """Create an empty collection in the active model's space."""
    aligner = embedder.default_aligner
    spec = index_spec(body.index, dim=embedder.dim)
    row = collections.create(
        name=body.name,
        model=embedder.model_id,
        audio_model=embedder.audio_model_id,
        dim=embedder.dim,
        index_type=spec.type,
        index_params=spec.params(),
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )
    live = indexes.create(row, aligner.numbered(row.aligner_version))
    return collection_public(row, count=0, index=live.index.describe(), compatible=True)


def index_spec(settings: IndexSettings, *, dim: int) -> IndexSpec:
    """The index a request asks for, with every parameter (422 when it cannot index ``dim``
    dimensions); the defaults are stored so that later releases do not change it."""
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
    embedder: Embedder,
    name: str,
) -> CollectionPublic:
    """One collection with its counts."""
    return describe(collections.get(name), items=items, indexes=indexes, embedder=embedder)


def list_collections(
    *,
    collections: CollectionStore,
    items: ItemStore,
    indexes: IndexManager[Aligner],
    embedder: Embedder,
) -> list[CollectionPublic]:
    """Every collection, oldest first."""
    return [
        describe(row, items=items, indexes=indexes, embedder=embedder) for row in collections.list()
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
    row: CollectionRow, *, items: ItemStore, indexes: IndexManager[Aligner], embedder: Embedder
) -> CollectionPublic:
    """A collection row with its live numbers."""
    live = indexes.get(row)
    return collection_public(
        row,
        count=items.count(row.id),
        index=live.space.index.describe(),
        compatible=space_problem(row, live.aligner, embedder, "text") is None,
    )
