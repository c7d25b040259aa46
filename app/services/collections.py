"""Collections: create, read, list, delete; each is one embedding space."""

from __future__ import annotations

from app.errors import SpaceMismatch
from app.schemas import CollectionCreate, CollectionPublic
from app.services.views import collection_public
from app.state import Services
from index.tables import CollectionRow


def same_space(row: CollectionRow, services: Services) -> bool:
    """Whether the active model writes and queries this collection's space."""
    emb = services.embedder
    return (
        row.model == emb.model_id
        and row.dim == emb.dim
        and row.aligner_version == emb.aligner.version
    )


def require_same_space(row: CollectionRow, services: Services) -> None:
    """Refuse (409) to mix spaces: invariant 4."""
    if not same_space(row, services):
        emb = services.embedder
        raise SpaceMismatch(
            f"collection {row.name!r} lives in the space of {row.model} (dim {row.dim}, "
            f"aligner v{row.aligner_version}) but this server runs {emb.model_id} (dim "
            f"{emb.dim}); start the server with MMR_MODEL={row.model} or use another collection"
        )


def create_collection(*, services: Services, body: CollectionCreate) -> CollectionPublic:
    """Create an empty collection in the active model's space."""
    row = services.store.create_collection(
        name=body.name,
        model=services.embedder.model_id,
        dim=services.embedder.dim,
        index_type=body.index.type,
        index_params=body.index.model_dump(exclude={"type"}),
    )
    services.indexes.create(row)
    return collection_public(row, count=0, index_size=0, compatible=True)


def get_collection(*, services: Services, name: str) -> CollectionPublic:
    """One collection with its counts."""
    return describe(services, services.store.get_collection(name))


def list_collections(*, services: Services) -> list[CollectionPublic]:
    """Every collection, oldest first."""
    return [describe(services, row) for row in services.store.list_collections()]


def delete_collection(*, services: Services, name: str) -> None:
    """Delete a collection, its items and its index."""
    row = services.store.get_collection(name)
    live = services.indexes.get(row)
    with services.indexes.writing(live):
        shas = services.store.collection_shas(row.id)
        services.store.delete_collection(row.id)
        services.indexes.drop(row.id)
    services.blobs.remove_unused(shas, services.store.shas_in_use)


def describe(services: Services, row: CollectionRow) -> CollectionPublic:
    """A collection row with its live numbers."""
    return collection_public(
        row,
        count=services.store.count_items(row.id),
        index_size=services.indexes.get(row).index.size,
        compatible=same_space(row, services),
    )
