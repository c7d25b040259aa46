"""Collections on SQLite and Postgres: lookups by name are kept briefly, and dropped at once
when this process changes a collection."""

from __future__ import annotations

import time

import pytest

from index.errors import NotFoundError
from index.stores import Stores
from tests.factories import new_collection


def test_collection_lookups_follow_own_changes_at_once_and_others_within_the_ttl(
    stores: Stores,
) -> None:
    collections = stores.collections
    row = new_collection(stores)
    assert collections.get("c").index_epoch == 0
    collections.set_space(collection_id=row.id, bump_epoch=True)
    assert collections.get("c").index_epoch == 1  # this store's own change: at once
    other = Stores.over(stores.sessions)  # another process (a worker) on the same database
    other.collections.set_space(collection_id=row.id, bump_epoch=True)
    assert collections.get("c").index_epoch == 1  # within the TTL: the kept row
    time.sleep(collections.cache.ttl_s + 0.05)
    assert collections.get("c").index_epoch == 2
    collections.delete(row.id)
    with pytest.raises(NotFoundError):
        collections.get("c")
