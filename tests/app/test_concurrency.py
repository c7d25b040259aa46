"""Concurrent writers of the same items leave the index exactly like SQL (invariant 5)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient


def test_racing_writes_and_deletes_keep_index_and_sql_equal(
    client: TestClient, collection: str
) -> None:
    url = f"/v1/collections/{collection}/items"

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(25):
            item_id = f"i{rng.randrange(6)}"
            if rng.random() < 0.3:
                assert client.delete(f"{url}/{item_id}").status_code in (204, 404)
            else:
                body = {"text": f"{seed} {n}", "id": item_id, "metadata": {"w": seed}}
                assert client.post(url, json=body).status_code in (200, 201)
            if rng.random() < 0.2:
                search = client.post(f"/v1/collections/{collection}/search", json={"text": "x"})
                assert search.status_code == 200

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(worker, range(6)))

    services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(collection)
    in_sql = {r.pk for r in services.stores.items.page(collection_id=row.id, after_pk=0, limit=100)}
    in_index = set(services.indexes.get(row).index.ids().tolist())
    assert in_index == in_sql
    # Each item's vector in the index is the one SQL holds (the last writer won in both).
    for item in services.stores.items.page(collection_id=row.id, after_pk=0, limit=100):
        hits = client.post(
            f"/v1/collections/{collection}/search", json={"item_id": item.external_id, "k": 1}
        ).json()["results"]
        assert hits[0]["item"]["id"] == item.external_id
        assert hits[0]["score"] > 0.999
