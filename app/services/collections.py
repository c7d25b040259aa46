"""Collections: create, read, list, delete; each is one embedding space."""

from __future__ import annotations

from app.errors import SpaceMismatch, UnprocessableEntity
from app.schemas.collections import CollectionCreate, CollectionPublic, IndexSettings
from app.services.views import collection_public
from app.state import Services
from index.spec import IndexSpec
from index.tables import CollectionRow
from models.encoders.aligner import Aligner


def space_problem(
    row: CollectionRow, aligner: Aligner, services: Services, modality: str
) -> str | None:
    """Why this process cannot put ``modality`` into the collection's space, or None."""
    emb = services.embedder
    if aligner.dim != emb.dim or row.model != emb.model_id:
        return (
            f"collection {row.name!r} lives in the space of {row.model} (dim {row.dim}) but "
            f"this server runs {emb.model_id} (dim {emb.dim}); start the server with "
            f"MMR_MODEL={row.model} or use another collection"
        )
    wanted = aligner.encoders.get(modality)
    running = emb.encoder_ids.get(modality)
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


def require_space(row: CollectionRow, aligner: Aligner, services: Services, modality: str) -> None:
    """Refuse (409) to mix spaces: invariant 4."""
    problem = space_problem(row, aligner, services, modality)
    if problem is not None:
        raise SpaceMismatch(problem)


def create_collection(*, services: Services, body: CollectionCreate) -> CollectionPublic:
    """Create an empty collection in the active model's space."""
    emb = services.embedder
    aligner = emb.default_aligner
    spec = index_spec(body.index, dim=emb.dim)
    row = services.stores.collections.create(
        name=body.name,
        model=emb.model_id,
        audio_model=emb.audio_model_id,
        dim=emb.dim,
        index_type=spec.type,
        index_params=spec.params(),
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )
    live = services.indexes.create(row, aligner.numbered(row.aligner_version))
    return collection_public(row, count=0, index=live.index.describe(), compatible=True)


def index_spec(settings: IndexSettings, *, dim: int) -> IndexSpec:
    """The index a request asks for, with every parameter (422 when it cannot index ``dim``
    dimensions); the defaults are stored so that later releases do not change it."""
    spec = IndexSpec.of(settings.type, settings.params())
    try:
        spec.check(dim)
    except ValueError as exc:
        raise UnprocessableEntity(str(exc)) from exc
    return spec


def get_collection(*, services: Services, name: str) -> CollectionPublic:
    """One collection with its counts."""
    return describe(services, services.stores.collections.get(name))


def list_collections(*, services: Services) -> list[CollectionPublic]:
    """Every collection, oldest first."""
    return [describe(services, row) for row in services.stores.collections.list()]


def delete_collection(*, services: Services, name: str) -> None:
    """Delete a collection, its items and its index."""
    row = services.stores.collections.get(name)
    live = services.indexes.get(row)
    with services.indexes.writing(live):
        shas = services.stores.items.collection_shas(row.id)
        services.stores.collections.delete(row.id)
        services.indexes.drop(row.id)
    services.blobs.remove_unused(shas, services.stores.items.shas_in_use)


def describe(services: Services, row: CollectionRow) -> CollectionPublic:
    """A collection row with its live numbers."""
    live = services.indexes.get(row)
    return collection_public(
        row,
        count=services.stores.items.count(row.id),
        index=live.space.index.describe(),
        compatible=space_problem(row, live.aligner, services, "text") is None,
    )
