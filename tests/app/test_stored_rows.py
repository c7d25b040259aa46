"""What SQL keeps of an item (docs/performance.md, "What a stored item costs"): raw features
in float16, and no vectors where the collection's head for the modality is the identity
(images and texts until a fine-tune): an index rebuilt from those rows is the index the
writes made, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.services.embedding import Encoded, kept_vectors
from app.state import Services
from index.columns import HALF
from index.manager import IndexManager
from models.encoders.aligner import Aligner, AlignerHead, l2_normalize
from tests.factories import image_case

TEXTS = [f"caption number {n} of a harbour at dusk" for n in range(40)]


def fill(client: TestClient, name: str) -> None:
    body = {"items": [{"id": f"t{n}", "text": t} for n, t in enumerate(TEXTS)]}
    assert client.post(f"/v1/collections/{name}/items/batch", json=body).status_code == 200
    for n, case in enumerate(["rgb_jpeg", "rgb_png", "p_png"]):
        files = {"file": (f"{n}.img", image_case(case), "application/octet-stream")}
        got = client.post(f"/v1/collections/{name}/items", files=files, data={"id": f"i{n}"})
        assert got.status_code == 201, got.text


def test_images_and_texts_store_half_features_and_no_vectors(
    client: TestClient, collection: str
) -> None:
    fill(client, collection)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(collection)
    stored = [s for c in services.stores.items.iter_stored(collection_id=row.id) for s in c]
    assert len(stored) == len(TEXTS) + 3
    for s in stored:
        assert s.vector == b""
        assert s.feature[:4] == HALF
        width = services.embedder.encoder.dim
        assert len(s.feature) == 8 + 2 * width
    # Each still counts one vector: what an auto index is chosen by.
    assert services.stores.items.vector_count(row.id, row.dim) == len(stored)


def test_an_index_rebuilt_from_the_rows_is_the_index_the_writes_made(
    client: TestClient, collection: str, tmp_path: Path
) -> None:
    fill(client, collection)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(collection)
    written = services.indexes.get(row).index
    fresh = IndexManager(
        collections=services.stores.collections,
        items=services.stores.items,
        changes=services.stores.changes,
        aligner_of=services.indexes.aligner_of,
        root=tmp_path / "fresh",
        follow=False,
    )
    rebuilt = fresh.load(row).index
    queries = l2_normalize(
        np.random.default_rng(3).standard_normal((20, row.dim)).astype(np.float32)
    )
    everything = len(TEXTS) + 3
    for q in queries:
        got, want = rebuilt.search(q, everything), written.search(q, everything)
        assert [h.pk for h in got] == [h.pk for h in want]
        assert [h.score for h in got] == [h.score for h in want]  # the same bits


def test_a_trained_head_keeps_its_vectors() -> None:
    dim = 4
    weight = np.eye(dim, dtype=np.float32) + 0.1
    aligner = Aligner(
        dim,
        {"image": AlignerHead.linear(weight), "text": AlignerHead.identity(dim)},
        {"image": "enc", "text": "enc"},
    )
    raw = np.ones((1, dim), np.float32)
    vectors = aligner.project("image", raw)
    # A matrix product's last bits depend on the batch it ran in: such vectors are stored.
    assert kept_vectors(aligner, Encoded("image", raw), vectors) is vectors
    assert kept_vectors(aligner, Encoded("text", raw), vectors) is None
    assert kept_vectors(aligner, Encoded("audio", raw), vectors) is vectors


def test_identity_projection_does_not_depend_on_the_batch() -> None:
    rows = np.random.default_rng(5).standard_normal((300, 512)).astype(np.float16)
    rows = rows.astype(np.float32) * 7.3
    aligner = Aligner.identity(512, {"text": "enc"})
    together = aligner.project("text", rows)
    alone = np.concatenate([aligner.project("text", r[None]) for r in rows])
    halves = np.concatenate(
        [aligner.project("text", rows[:123]), aligner.project("text", rows[123:])]
    )
    assert np.array_equal(together, alone) and np.array_equal(together, halves)
