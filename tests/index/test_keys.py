"""Keys in SQL and the stores a key limited to collections sees, on SQLite and Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from index.db import downgrade, make_sessionmaker, migrate
from index.errors import NotFoundError, OutOfScopeError
from index.jobs import JobStore
from index.keys import KeyStore, ScopedCollections, ScopedJobs, key_hash
from index.stores import Stores
from tests.factories import new_collection


def test_keys_are_found_by_their_hash_until_deleted(engine: Engine) -> None:
    keys = KeyStore(make_sessionmaker(engine))
    row, key = keys.create(name="app", scope="read", collections=["a"])
    assert key.startswith("mmr_") and len(key) > 40
    assert row.key_hash == key_hash(key) != key
    found = keys.find(key)
    assert found is not None and (found.id, found.collections) == (row.id, ["a"])
    assert keys.find(key + "x") is None
    assert [r.id for r in keys.list()] == [row.id]
    keys.delete(row.id)
    assert keys.find(key) is None
    with pytest.raises(NotFoundError):
        keys.delete(row.id)


def test_two_keys_never_share_a_secret(engine: Engine) -> None:
    keys = KeyStore(make_sessionmaker(engine))
    made = {keys.create(name="k", scope="read", collections=None)[1] for _ in range(20)}
    assert len(made) == 20


def test_a_scoped_store_hides_other_collections(engine: Engine) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    store = stores.collections
    for name in ("a", "b"):
        new_collection(stores, name)
    scoped = ScopedCollections(store, {"a"})
    assert [r.name for r in scoped.list()] == ["a"]
    assert scoped.get("a").name == "a"
    with pytest.raises(NotFoundError) as hidden:
        scoped.get("b")
    with pytest.raises(NotFoundError) as missing:
        store.get("zz")
    assert str(hidden.value) == str(missing.value).replace("zz", "b")  # word for word
    with pytest.raises(OutOfScopeError):
        scoped.create(name="c")
    assert scoped.get_by_id(store.get("a").id).name == "a"  # the rest is the store's


def test_scoped_jobs_list_newest_first_within_the_limit(engine: Engine) -> None:
    jobs = JobStore(make_sessionmaker(engine))
    made = [
        jobs.create(type="reindex", collection_id=i % 3, collection="abc"[i % 3], params={})
        for i in range(9)
    ]
    scoped = ScopedJobs(jobs, {"a", "b"})
    everything = [r.id for r in jobs.list(limit=100)]
    theirs = {r.id for r in made if r.collection == "c"}
    assert [r.id for r in scoped.list(limit=100)] == [i for i in everything if i not in theirs]
    assert [r.id for r in scoped.list(limit=2)] == [i for i in everything if i not in theirs][:2]
    assert scoped.list(collection="c") == []
    other = next(iter(theirs))
    for call in (scoped.get, scoped.cancel):
        with pytest.raises(NotFoundError, match=f"no job '{other}'"):
            call(other)
    with pytest.raises(NotFoundError):
        scoped.create(type="reindex", collection_id=2, collection="c", params={})
    assert jobs.get(other).status == "queued"


def test_the_keys_migration_goes_both_ways(engine: Engine) -> None:
    downgrade(engine, "0004")
    assert "api_keys" not in inspect(engine).get_table_names()
    migrate(engine)
    assert "api_keys" in inspect(engine).get_table_names()
