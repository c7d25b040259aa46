"""Migrate jobs: a collection moved to another model (another dimension) in place.

The collection starts in the space of random:mmr-tiny (64 dimensions, random weights: its
text search means nothing) and moves to mmr-mini (128 dimensions, trained on the project's
world), after which "a red circle" finds the red circle. Writes during the build land in
both spaces; cancel and failure leave the collection as it was; a job taken back from a
stopped worker goes on where it stopped; the old space is kept for a rollback that encodes
only what changed, until the switch is confirmed.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import migrate
from app.services.jobs import JobContext
from app.services.pool import in_space
from app.services.search import Constraints, Query, search
from app.settings import Settings
from index.columns import from_blob, from_features
from index.errors import SpaceChangedError
from index.jobs import RUNNING
from index.locks import WouldBlock
from models.encoders.mini.model import SHIPPED_DIR
from models.synth.world.images import Scene, image_file_bytes, render_scene
from models.training.finetune import Cancelled
from tests.conftest import TEST_MODEL, error_code
from tests.factories import audio_bytes, item_draft, samples_bytes, services_of, tone

NAME = "world"
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


def picture(colour: str, shape: str, seed: int = 0) -> bytes:
    thing = Scene(
        objects=({"shape": shape, "colour": colour, "size": "large", "position": "center"},)
    )
    rng = np.random.default_rng(seed)
    return image_file_bytes(render_scene(thing, rng, style="shifted"), rng)[0]


def fill(client: TestClient) -> int:
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    files = [
        ("file", (f"{c}-{s}.png", picture(c, s))) for c, s in itertools.product(COLOURS, SHAPES)
    ]
    ids = [f"{c}-{s}" for c, s in itertools.product(COLOURS, SHAPES)]
    got = client.post(f"/v1/collections/{NAME}/items/batch", files=files, data={"id": ids}).json()[
        "results"
    ]
    assert all(r["status"] == 201 for r in got), got
    texts = [{"text": f"note {n}", "id": f"note-{n}"} for n in range(4)]
    got = client.post(f"/v1/collections/{NAME}/items/batch", json={"items": texts}).json()
    assert all(r["status"] == 201 for r in got["results"]), got
    return len(ids) + len(texts)


def first_hit(client: TestClient, text: str) -> str:
    body = {"text": text, "k": 1, "modalities": ["image"]}
    response = client.post(f"/v1/collections/{NAME}/search", json=body)
    assert response.status_code == 200, response.text
    hit: str = response.json()["results"][0]["item"]["id"]
    return hit


def right_first_hits(client: TestClient) -> int:
    return sum(
        first_hit(client, f"a {c} {s}") == f"{c}-{s}" for c, s in itertools.product(COLOURS, SHAPES)
    )


def serving_the_switched_space(client: TestClient, timeout: float = 30) -> None:
    """Wait until this process's index of the collection is of the space SQL records."""
    services = services_of(client)
    deadline = time.monotonic() + timeout
    while True:
        row = services.stores.collections.get(NAME)
        if in_space(services.indexes.get(row), row):
            return
        assert time.monotonic() < deadline, "the process never swapped to the new space"
        time.sleep(0.02)


def served_index(client: TestClient, expected: str, timeout: float = 30) -> str:
    """The type of the index the collection serves, once it is ``expected`` (the follower
    may still be building it when the job ends) or the timeout passed."""
    deadline = time.monotonic() + timeout
    while True:
        served: str = client.get(f"/v1/collections/{NAME}").json()["index"]["type"]
        if served == expected or time.monotonic() > deadline:
            return served
        time.sleep(0.05)


def wait(client: TestClient, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def start_migrate(client: TestClient, model: str = "mmr-mini", **extra: Any) -> dict[str, Any]:
    body = {"type": "migrate", "collection": NAME, "model": model, **extra}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(job_poll_s=0.05))) as c:
        yield c


@pytest.fixture
def idle(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A server without a worker: jobs stay queued, or are run by the test itself."""
    with TestClient(create_app(make_settings(worker="off"))) as c:
        yield c


def test_a_migration_moves_a_collection_to_another_model_and_dimension(
    client: TestClient,
) -> None:
    count = fill(client)
    before = client.get(f"/v1/collections/{NAME}").json()
    assert (before["model"], before["dim"]) == (TEST_MODEL, 64)
    random_right = right_first_hits(client)
    job = start_migrate(client)
    done = wait(client, job["id"])
    assert done["status"] == "succeeded", done
    metrics = done["metrics"]
    assert (metrics["previous_model"], metrics["previous_dim"]) == (TEST_MODEL, 64)
    assert (metrics["model"], metrics["dim"]) == ("mmr-mini", 128)
    assert metrics["encoded"] == count and metrics["reused"] == 0 and metrics["passes"] == 1
    assert done["progress"]["fraction"] == 1.0
    after = client.get(f"/v1/collections/{NAME}").json()
    assert (after["model"], after["dim"], after["count"]) == ("mmr-mini", 128, count)
    assert after["audio_model"] == "mmr-mini" and after["aligner_version"] == 1
    assert after["index"]["size"] == count
    # The collection asked for auto (the default): the new space's index is auto too.
    assert after["index_type"] == "auto" and after["index"]["type"] == "flat"
    assert metrics["index_type"] == "auto" and metrics["index"] == {"type": "flat"}
    [kept] = after["other_spaces"]
    assert (kept["model"], kept["dim"], kept["state"], kept["items"]) == (
        TEST_MODEL,
        64,
        "kept",
        count,
    )
    # The new model means something: random weights found few pictures by name. (Measured
    # once this process serves the new space: a text search in the moment between the
    # switch in SQL and the swap here is still answered in the old one, by design.)
    serving_the_switched_space(client)
    assert right_first_hits(client) >= 10 > random_right + 3
    # Stored items and raw vectors follow the new space.
    hits = client.post(f"/v1/collections/{NAME}/search", json={"item_id": "red-circle", "k": 1})
    assert hits.json()["results"][0]["item"]["id"] == "red-circle"
    assert (
        client.post(f"/v1/collections/{NAME}/search", json={"vector": [0.1] * 128}).status_code
        == 200
    )
    assert (
        error_code(client.post(f"/v1/collections/{NAME}/search", json={"vector": [0.1] * 64}))
        == "embedding_space_mismatch"
    )
    # The aligner history restarted for the new model.
    aligners = client.get(f"/v1/collections/{NAME}/aligners").json()
    assert aligners["active"] == 1 and len(aligners["aligners"]) == 1
    assert aligners["aligners"][0]["heads"]["text"]["encoder"] == "mmr-mini"
    # Both models are loaded, each collection served with its own.
    loaded = {m["id"] for m in client.get("/v1/models").json()["loaded"]}
    assert {TEST_MODEL, "mmr-mini"} <= loaded
    added = client.post(
        f"/v1/collections/{NAME}/items", files={"file": ("p", picture("blue", "square", 7))}
    )
    assert added.status_code == 201, added.text
    # Confirmed: the old space is dropped.
    confirmed = client.post(f"/v1/collections/{NAME}/migration/confirm").json()
    assert confirmed == {"collection": NAME, "model": "mmr-mini", "dropped": [TEST_MODEL]}
    assert client.get(f"/v1/collections/{NAME}").json()["other_spaces"] == []
    assert error_code(client.post(f"/v1/collections/{NAME}/migration/rollback")) == "conflict"


def test_a_rollback_encodes_only_what_changed_since_the_switch(client: TestClient) -> None:
    count = fill(client)
    done = wait(client, start_migrate(client, index={"type": "hnsw"})["id"])
    assert done["status"] == "succeeded", done
    assert served_index(client, "hnsw") == "hnsw"
    client.post(f"/v1/collections/{NAME}/items", json={"text": "after the switch", "id": "late"})
    back = client.post(f"/v1/collections/{NAME}/migration/rollback")
    assert back.status_code == 202, back.text
    done = wait(client, back.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"]["encoded"] == 1 and done["metrics"]["reused"] == count
    info = client.get(f"/v1/collections/{NAME}").json()
    assert (info["model"], info["dim"], info["count"]) == (TEST_MODEL, 64, count + 1)
    assert served_index(client, "flat") == "flat"  # the kept space's index comes back
    assert info["index_type"] == "auto"  # as the kept space asked for it
    assert [s["model"] for s in info["other_spaces"]] == ["mmr-mini"]
    hits = client.post(f"/v1/collections/{NAME}/search", json={"item_id": "late", "k": 1})
    assert hits.json()["results"][0]["item"]["id"] == "late"


def _context(services: Any, job: dict[str, Any]) -> JobContext:
    """The job claimed as a worker would, to run its handler in the test's thread."""
    claimed = services.stores.jobs.claim(worker="test", lease_s=60, types=["migrate"])
    assert claimed is not None and claimed.id == job["id"] and claimed.status == RUNNING
    return JobContext(claimed)


def test_items_written_during_the_build_land_in_both_spaces(
    idle: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = fill(idle)
    services = services_of(idle)
    monkeypatch.setattr(migrate, "BATCH", 4)
    ctx = _context(services, start_migrate(idle))
    report = ctx.report
    writes: list[int] = []

    def write_once(**progress: Any) -> None:
        report(**progress)
        if not writes:  # after the first batch: a new item, and a replaced one
            writes.append(1)
            for body in (
                {"text": "written meanwhile", "id": "new"},
                {"text": "no longer a picture", "id": "red-circle"},
            ):
                assert idle.post(f"/v1/collections/{NAME}/items", json=body).is_success

    ctx.report = write_once  # type: ignore[method-assign]
    metrics = migrate.run_migrate(services, ctx)
    assert metrics["items"] == count + 1
    # red-circle twice: encoded in the first batch, replaced, encoded again in a second pass.
    assert metrics["encoded"] == count + 1 + 1 and metrics["passes"] == 2
    idle.get(f"/v1/collections/{NAME}")
    for item_id in ("new", "red-circle"):
        hits = idle.post(f"/v1/collections/{NAME}/search", json={"item_id": item_id, "k": 1})
        assert hits.json()["results"][0]["item"]["id"] == item_id
    found = idle.get(f"/v1/collections/{NAME}/items/red-circle").json()
    assert found["modality"] == "text"
    assert idle.get(f"/v1/collections/{NAME}").json()["dim"] == 128


def test_a_stopped_worker_s_migration_goes_on_where_it_stopped(
    idle: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = fill(idle)
    services = services_of(idle)
    monkeypatch.setattr(migrate, "BATCH", 4)
    job = start_migrate(idle)
    ctx = _context(services, job)
    report = ctx.report

    def stop_after_first(**progress: Any) -> None:
        report(**progress)
        ctx.stop.set()  # the worker shuts down: the job goes back to the queue

    ctx.report = stop_after_first  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        migrate.run_migrate(services, ctx)
    [building] = idle.get(f"/v1/collections/{NAME}").json()["other_spaces"]
    assert (building["state"], building["items"]) == ("building", 4)
    services.stores.jobs.release(job["id"], worker="test")
    metrics = migrate.run_migrate(services, _context(services, job))
    assert (metrics["reused"], metrics["encoded"]) == (4, count - 4)
    assert idle.get(f"/v1/collections/{NAME}").json()["model"] == "mmr-mini"


def test_a_cancelled_or_failed_migration_leaves_the_collection_as_it_was(
    idle: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = fill(idle)
    services = services_of(idle)
    monkeypatch.setattr(migrate, "BATCH", 4)
    job = start_migrate(idle)
    ctx = _context(services, job)
    report = ctx.report

    def cancel_after_first(**progress: Any) -> None:
        report(**progress)
        assert idle.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200

    ctx.report = cancel_after_first  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        migrate.run_migrate(services, ctx)
    info = idle.get(f"/v1/collections/{NAME}").json()
    assert (info["model"], info["dim"], info["count"], info["other_spaces"]) == (
        TEST_MODEL,
        64,
        count,
        [],
    )
    # A failure: an original gone from the data directory.
    row = services.stores.collections.get(NAME)
    item = services.stores.items.get(collection_id=row.id, external_id="green-square")
    (services.blobs.path(item.sha256)).unlink()
    job = start_migrate(idle)
    with pytest.raises(ValueError, match="cannot be encoded again"):
        migrate.run_migrate(services, _context(services, job))
    info = idle.get(f"/v1/collections/{NAME}").json()
    assert (info["model"], info["dim"], info["other_spaces"]) == (TEST_MODEL, 64, [])
    assert (
        idle.post(f"/v1/collections/{NAME}/search", json={"text": "a red circle"}).status_code
        == 200
    )


def test_other_jobs_wait_for_a_migration_and_bad_targets_are_refused(idle: TestClient) -> None:
    fill(idle)
    job = start_migrate(idle)
    for body in (
        {"type": "finetune", "collection": NAME, "pair_key": "group"},
        {"type": "reindex", "collection": NAME},
        {"type": "migrate", "collection": NAME, "model": "mmr-mini"},
    ):
        response = idle.post("/v1/jobs", json=body)
        assert response.status_code == 409, response.text
        assert job["id"] in response.json()["error"]["message"]
    assert idle.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    for model in ("nonsense", "auto", "open_clip:"):
        response = idle.post(
            "/v1/jobs", json={"type": "migrate", "collection": NAME, "model": model}
        )
        assert response.status_code == 422, (model, response.text)
    # Not in MMR_ALLOWED_MODELS: a key cannot make the workers load any architecture.
    body = {"type": "migrate", "collection": NAME, "model": "random:ViT-bigG-14"}
    refused = idle.post("/v1/jobs", json=body)
    assert error_code(refused) == "forbidden" and "MMR_ALLOWED_MODELS" in refused.text
    assert idle.post("/v1/jobs", json={"type": "reindex", "collection": NAME}).status_code == 202


def test_a_write_encoded_before_the_switch_is_encoded_again_with_the_new_model(
    idle: TestClient,
) -> None:
    fill(idle)
    services = services_of(idle)
    collections = services.stores.collections
    before = collections.get(NAME)
    migrate.run_migrate(services, _context(services, start_migrate(idle)))
    # As another process would still see it for up to the cache's TTL: the old model.
    collections.cache.keep(NAME, time.monotonic(), before)
    response = idle.post(f"/v1/collections/{NAME}/items", json={"text": "raced", "id": "raced"})
    assert response.status_code == 201, response.text
    row = services.stores.items.get(collection_id=before.id, external_id="raced")
    # A feature of the new model (its vector, the feature normalised, is not stored).
    assert row.vector == b"" and from_features(row.feature).shape == (1, 128)
    hits = idle.post(f"/v1/collections/{NAME}/search", json={"item_id": "raced", "k": 1})
    assert hits.json()["results"][0]["item"]["id"] == "raced"
    with pytest.raises(SpaceChangedError):
        services.stores.items.upsert_many(
            collection_id=before.id, drafts=[item_draft("x")], space=(TEST_MODEL, None, 64)
        )


def test_until_this_process_swaps_texts_search_the_old_space_and_stored_vectors_wait(
    idle: TestClient,
) -> None:
    fill(idle)
    services = services_of(idle)
    live = services.indexes.get(services.stores.collections.get(NAME))
    migrate.run_migrate(services, _context(services, start_migrate(idle)))
    asked: list[Any] = []
    item_query = {"item_id": "red-circle", "k": 1}
    waiting = threading.Thread(
        target=lambda: asked.append(idle.post(f"/v1/collections/{NAME}/search", json=item_query))
    )
    assert live.rebuilding.acquire(timeout=5)  # as if another request were rebuilding it
    try:
        text = idle.post(f"/v1/collections/{NAME}/search", json={"text": "a red circle"})
        assert text.status_code == 200 and live.space.aligner.dim == 64  # the old space
        with pytest.raises(WouldBlock):
            search(
                settings=services.settings,
                collections=services.stores.collections,
                items=services.stores.items,
                indexes=services.indexes,
                models=services.models,
                name=NAME,
                query=Query(item_id="red-circle"),
                constraints=Constraints(k=1),
                wait=False,
            )
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # waits for the swap rather than mix spaces
    finally:
        live.rebuilding.release()
    waiting.join(60)
    assert asked[0].status_code == 200, asked[0].text
    assert asked[0].json()["results"][0]["item"]["id"] == "red-circle"
    assert live.space.aligner.dim == 128


def test_an_item_deleted_during_the_build_is_left_out_not_a_failure(
    idle: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = fill(idle)
    services = services_of(idle)
    monkeypatch.setattr(migrate, "BATCH", 4)
    listed = services.stores.spaces.missing
    deleted: list[str] = []

    def listed_then_deleted(**kwargs: Any) -> Any:
        found = listed(**kwargs)
        if found and not deleted:  # listed, then deleted (its original with it) before encoding
            deleted.append("red-square")
            assert idle.delete(f"/v1/collections/{NAME}/items/red-square").status_code == 204
        return found

    monkeypatch.setattr(services.stores.spaces, "missing", listed_then_deleted)
    metrics = migrate.run_migrate(services, _context(services, start_migrate(idle)))
    assert (metrics["items"], metrics["encoded"]) == (count - 1, count - 1)
    assert idle.get(f"/v1/collections/{NAME}").json()["model"] == "mmr-mini"


def test_a_migration_waits_for_other_jobs_and_holds_off_activations_and_confirms(
    idle: TestClient,
) -> None:
    fill(idle)
    reindex = idle.post("/v1/jobs", json={"type": "reindex", "collection": NAME}).json()
    refused = idle.post(
        "/v1/jobs", json={"type": "migrate", "collection": NAME, "model": "mmr-mini"}
    )
    assert refused.status_code == 409 and reindex["id"] in refused.text
    assert idle.post(f"/v1/jobs/{reindex['id']}/cancel").status_code == 200
    job = start_migrate(idle)
    for response in (
        idle.post(f"/v1/collections/{NAME}/aligners/1/activate"),
        idle.post(f"/v1/collections/{NAME}/migration/confirm"),
    ):
        assert response.status_code == 409 and job["id"] in response.text
    assert idle.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    body = {"type": "migrate", "collection": NAME, "model": "mmr-mini", "audio_model": "clap:x/y"}
    assert error_code(idle.post("/v1/jobs", json=body)) == "forbidden"
    assert idle.post(f"/v1/collections/{NAME}/aligners/1/activate").status_code == 200


def test_a_follower_keeps_the_next_space_out_of_the_index_it_is_leaving(idle: TestClient) -> None:
    fill(idle)
    services = services_of(idle)
    # The test runs the passes itself: the process's own follower thread (every 0.2 s, and
    # at once on a Postgres notification) could swap to the new space before it looks.
    services.indexes.follow = False
    before = services.stores.collections.get(NAME)
    live = services.indexes.get(before)
    migrate.run_migrate(services, _context(services, start_migrate(idle)))
    # Another process writes in the new space before this one swapped; this follower read
    # the collection row before the switch (as follow_all does at the start of a pass).
    vector = np.ones(128, dtype=np.float32) / np.sqrt(128)
    draft = dataclasses.replace(
        item_draft("elsewhere"), feature=vector, vector=vector, aligner_version=1
    )
    [written] = services.stores.items.upsert_many(collection_id=before.id, drafts=[draft])
    services.indexes.catch_up(live, before)
    assert live.space.aligner.dim == 64 and written.row.pk not in set(live.index.ids())
    services.indexes.follow = True
    services.indexes.follow_all()  # the next pass swaps to the new space, the write in it
    assert live.space.aligner.dim == 128 and written.row.pk in set(live.index.ids())


def test_recordings_are_cut_and_encoded_again_by_the_new_audio_tower(
    make_settings: Callable[..., Settings],
) -> None:
    """mmr-mini to the same weights under another id (its own tower both times): every
    recording comes back with the same segments, spans and vectors, searchable by sound."""
    again = f"mmr-mini@{SHIPPED_DIR}"
    settings = make_settings(model="mmr-mini", allowed_models=again, worker="off")
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/collections", json={"name": NAME}).status_code == 201
        long = samples_bytes(tone(9.0, freq=330.0), 16000)
        for item_id, data in (("long", long), ("short", audio_bytes(seconds=1.0, freq=880.0))):
            response = c.post(
                f"/v1/collections/{NAME}/items",
                files={"file": ("a.wav", data)},
                data={"id": item_id},
            )
            assert response.status_code == 201, response.text
        c.post(f"/v1/collections/{NAME}/items", json={"text": "a low hum", "id": "words"})
        services = services_of(c)
        row = services.stores.collections.get(NAME)
        before = services.stores.items.get(collection_id=row.id, external_id="long")
        assert before.spans is not None and len(before.spans) > 1
        metrics = migrate.run_migrate(services, _context(services, start_migrate(c, model=again)))
        assert metrics["encoded"] == 3 and metrics["audio_model"] == again
        after = services.stores.items.get(collection_id=row.id, external_id="long")
        assert after.spans == before.spans
        old = from_blob(before.vector, row.dim)
        new = from_blob(after.vector, row.dim)
        assert old.shape == new.shape and float(np.min(np.sum(old * new, axis=1))) > 0.999
        form = {"k": "1", "modalities": "audio"}
        hits = c.post(
            f"/v1/collections/{NAME}/search", files={"file": ("q.wav", long)}, data=form
        ).json()["results"]
        assert hits[0]["item"]["id"] == "long" and hits[0]["start"] is not None


def test_a_rebuild_a_switch_overtakes_is_not_swapped_in(
    idle: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(idle)
    services = services_of(idle)
    indexes, collections = services.indexes, services.stores.collections
    row = collections.get(NAME)
    live = indexes.get(row)
    build = indexes._build
    job = start_migrate(idle)

    def overtaken(at: Any, aligner: Any) -> Any:
        built = build(at, aligner)  # read in the old space; the switch lands right after
        migrate.run_migrate(services, _context(services, job))
        return built

    monkeypatch.setattr(indexes, "_build", overtaken)
    reindexed = collections.set_space(collection_id=row.id, bump_epoch=True)
    indexes.get(reindexed, wait=True)
    assert live.space.epoch == 0 and live.space.aligner.dim == 64  # nothing swapped in
    monkeypatch.undo()
    indexes.follow_all()
    assert live.space.epoch == 2 and live.space.aligner.dim == 128
    hits = idle.post(f"/v1/collections/{NAME}/search", json={"item_id": "red-circle", "k": 1})
    assert hits.json()["results"][0]["item"]["id"] == "red-circle"
