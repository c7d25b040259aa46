"""Jobs through the API: fine-tune, activation and rollback, reindex, cancel, validation.

The in-process worker of the test server runs the jobs (random:mmr-tiny: plumbing, not
meaning; tests/app/test_finetune_quality.py shows a fine-tune that teaches mmr-mini words).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import worker as worker_module
from app.main import create_app
from app.settings import Settings
from app.state import Services
from app.worker import Worker
from index.builds import BuildStopped
from index.columns import from_features
from models.encoders.aligner import Aligner, l2_normalize
from tests.conftest import error_code
from tests.factories import image_bytes

NAME = "pairs"


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(job_poll_s=0.1))) as c:
        yield c


def fill(client: TestClient, groups: int = 40) -> None:
    """A picture and a caption per group, paired by metadata."""
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    for g in range(groups):
        caption = {"text": f"caption of picture {g}", "id": f"t{g}", "metadata": {"group": g}}
        assert client.post(f"/v1/collections/{NAME}/items", json=caption).status_code == 201
        picture = image_bytes("RGB", fmt="PNG", seed=g)
        files = {"file": ("p", picture)}
        form = {"id": f"p{g}", "metadata": f'{{"group": {g}}}'}
        assert client.post(f"/v1/collections/{NAME}/items", files=files, data=form).is_success


def wait(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def start(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"collection": NAME, **body})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_finetune_records_a_version_activates_it_and_rolls_back(client: TestClient) -> None:
    fill(client)
    job = start(client, type="finetune", pair_key="group", activate="always", max_epochs=30)
    assert job["status"] == "queued" and job["params"]["pair_key"] == "group"
    done = wait(client, job["id"])
    assert done["status"] == "succeeded", done
    metrics = done["metrics"]
    assert metrics["aligner_version"] == 2 and metrics["activated"] is True
    assert sorted(metrics["modalities"]) == ["image", "text"] and metrics["pairs_used"] == 40
    for stage in ("before", "after"):
        assert {"a_to_b@1", "a_to_b@5", "a_to_b@10", "b_to_a@5"} <= set(metrics[stage])
    # Few texts outside the pairs: the job brought the model's own captions (a model other
    # than mmr-mini: the general list), and checked what the old heads found first.
    assert metrics["anchors_brought"]["text"] > 1000
    assert metrics["anchor_check"] == {"queries": 512, "gallery": 40, "labelled": False}
    assert metrics["anchors_before"] == {"text_to_image@5": 1.0}
    assert metrics["anchors_after"]["text_to_image@5"] >= 0.98 and metrics["kept"] is True
    assert metrics["tolerance"] == 0.02 and done["params"]["anchor_tolerance"] == 0.02
    assert done["progress"]["fraction"] == 1.0 and done["attempts"] == 1
    aligners = client.get(f"/v1/collections/{NAME}/aligners").json()
    assert aligners["active"] == 2
    v2 = aligners["aligners"][1]
    assert v2["meta"]["kind"] == "finetune" and v2["meta"]["job"] == job["id"]
    assert v2["meta"]["finetune"]["anchors_after"] == metrics["anchors_after"]
    hits = client.post(f"/v1/collections/{NAME}/search", json={"text": "caption of picture 3"})
    assert hits.json()["aligner_version"] == 2
    # Stored items now carry v2 vectors in the index: more-like-this of an item finds itself.
    like = client.post(f"/v1/collections/{NAME}/search", json={"item_id": "p3", "k": 1}).json()
    assert like["results"][0]["item"]["id"] == "p3"
    assert like["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    rolled = client.post(f"/v1/collections/{NAME}/aligners/1/activate").json()
    assert rolled["active"] == 1
    assert client.get(f"/v1/collections/{NAME}").json()["aligner_version"] == 1


def test_never_records_without_activating(client: TestClient) -> None:
    fill(client, groups=20)
    done = wait(client, start(client, type="finetune", pair_key="group", activate="never")["id"])
    assert done["status"] == "succeeded" and done["metrics"]["activated"] is False
    assert client.get(f"/v1/collections/{NAME}/aligners").json()["active"] == 1
    pairs = [[f"t{g}", f"p{g}"] for g in range(12)] + [["t0", "missing"]]
    done = wait(client, start(client, type="finetune", pairs=pairs, activate="never")["id"])
    assert done["metrics"]["pairs_used"] == 12 and done["metrics"]["pairs_missing_items"] == 1
    assert done["metrics"]["aligner_version"] == 3


def test_a_job_without_pairs_fails_with_the_reason(client: TestClient) -> None:
    fill(client, groups=3)
    done = wait(client, start(client, type="finetune", pair_key="no-such-key")["id"])
    assert done["status"] == "failed" and "no pairs" in done["error"]
    few = wait(client, start(client, type="finetune", pair_key="group")["id"])
    assert few["status"] == "failed" and "pairs" in few["error"]
    assert client.get(f"/v1/collections/{NAME}/aligners").json()["active"] == 1


def test_reindex_rebuilds_from_sql_and_swaps(client: TestClient) -> None:
    fill(client, groups=10)
    for g in range(5):
        assert client.delete(f"/v1/collections/{NAME}/items/t{g}").status_code == 204
    done = wait(client, start(client, type="reindex")["id"])
    assert done["status"] == "succeeded"
    assert done["metrics"]["index_epoch"] == 1 and done["metrics"]["items"] == 15
    assert done["metrics"]["index"] == {"type": "flat"}
    body = client.get(f"/v1/collections/{NAME}").json()
    assert body["count"] == body["index"]["size"] == 15
    found = client.post(f"/v1/collections/{NAME}/search", json={"text": "x", "k": 50}).json()
    assert len(found["results"]) == 15


def test_jobs_are_listed_read_and_cancelled(client: TestClient) -> None:
    fill(client, groups=2)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(NAME)
    # Queued straight into SQL while the worker is busy elsewhere: cancel before it runs.
    queued = services.stores.jobs.create(
        type="reindex", collection_id=row.id, collection=NAME, params={}
    )
    cancelled = client.post(f"/v1/jobs/{queued.id}/cancel")
    if cancelled.status_code == 200:
        assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{queued.id}/cancel")
    assert again.status_code == 409 and error_code(again) == "conflict"
    listed = client.get("/v1/jobs", params={"collection": NAME}).json()["jobs"]
    assert [j["id"] for j in listed][:1] == [queued.id]
    assert client.get("/v1/jobs/unknown").status_code == 404
    assert client.post("/v1/jobs/unknown/cancel").status_code == 404
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "explode", "collection": NAME}, 422),
        ({"type": "finetune", "collection": NAME}, 422),
        ({"type": "finetune", "collection": NAME, "pair_key": "g", "pairs": [["a", "b"]]}, 422),
        ({"type": "finetune", "collection": NAME, "pair_key": "g", "activate": "maybe"}, 422),
        ({"type": "finetune", "collection": NAME, "pair_key": "g", "max_pairs": 5}, 422),
        ({"type": "finetune", "collection": "absent", "pair_key": "g"}, 404),
        ({"type": "reindex", "collection": NAME, "extra": 1}, 422),
    ],
)
def test_bad_jobs_are_refused_and_nothing_is_queued(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_searches_during_activations_never_mix_versions(client: TestClient) -> None:
    """Flip between two aligner versions while searching: every answer is scored entirely
    by the version it names (query and items through the same heads)."""
    fill(client, groups=30)
    done = wait(client, start(client, type="finetune", pair_key="group", activate="never")["id"])
    assert done["metrics"]["aligner_version"] == 2
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(NAME)
    versions = {
        a.version: Aligner.from_bytes(a.artefact) for a in services.stores.aligners.list(row.id)
    }
    query = "caption of picture 7"
    raw_query = services.embedder.encoder.encode_texts([query])
    items = {
        r.external_id: (r.modality, from_features(r.feature))
        for r in services.stores.items.page(collection_id=row.id, after_pk=0, limit=1000)
    }
    problems: list[str] = []
    seen: set[int] = set()
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            response = client.post(f"/v1/collections/{NAME}/search", json={"text": query, "k": 5})
            if response.status_code != 200:
                problems.append(response.text)
                continue
            body = response.json()
            aligner = versions[body["aligner_version"]]
            seen.add(body["aligner_version"])
            q = aligner.project("text", raw_query)[0]
            for hit in body["results"]:
                modality, raw = items[hit["item"]["id"]]
                expected = float(l2_normalize(aligner.project(modality, raw))[0] @ q)
                if abs(expected - hit["score"]) > 1e-4:
                    problems.append(f"v{body['aligner_version']}: {hit['score']} != {expected}")

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for flip in range(6):
        version = 2 if flip % 2 == 0 else 1
        swapped = client.post(f"/v1/collections/{NAME}/aligners/{version}/activate")
        assert swapped.status_code == 200, swapped.text
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert problems == []
    assert seen == {1, 2}
    np.testing.assert_equal(client.get(f"/v1/collections/{NAME}").json()["aligner_version"], 1)


def test_cancelling_a_running_finetune_stops_it_and_records_nothing(client: TestClient) -> None:
    fill(client, groups=40)
    body = {"patience": 10_000, "max_epochs": 10_000, "max_seconds": 60}
    job = start(client, type="finetune", pair_key="group", **body)
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job['id']}").json()["progress"].get("epoch", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The worker stops within a batch and takes the next job; no version was recorded.
    after = wait(client, start(client, type="reindex")["id"], timeout=30)
    assert after["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert len(client.get(f"/v1/collections/{NAME}/aligners").json()["aligners"]) == 1


def test_a_cancel_after_training_keeps_the_new_version_out(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands between the last epoch and the activation (before a heartbeat
    could see it): the job ends cancelled and the active version stays."""
    from app.services import finetune as handlers

    fill(client, groups=20)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    trained = handlers.finetune

    def then_cancelled(*args: Any, **kwargs: Any) -> Any:
        result = trained(*args, **kwargs)
        [running] = services.stores.jobs.list(status="running")
        services.stores.jobs.cancel(running.id)
        return result

    monkeypatch.setattr(handlers, "finetune", then_cancelled)
    job = start(client, type="finetune", pair_key="group", activate="always", max_epochs=3)
    done = wait(client, job["id"])
    assert done["status"] == "cancelled", done
    aligners = client.get(f"/v1/collections/{NAME}/aligners").json()
    assert aligners["active"] == 1 and len(aligners["aligners"]) == 1


@pytest.mark.parametrize("type_", ["finetune", "reindex"])
def test_a_job_whose_collection_is_deleted_ends_cancelled_saying_why(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, type_: str
) -> None:
    """Deleted while the job runs (here: while it trains, or before it rebuilds): the job
    ends ``cancelled`` with the reason, not failed with an internal error."""
    from app.services import finetune as handlers

    fill(client, groups=20)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    running = threading.Event()
    gone = threading.Event()
    real = {"finetune": handlers.finetune, "reindex": handlers.aligner_svc.rebuild}[type_]

    def deleted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        running.set()
        assert gone.wait(30)
        return real(*args, **kwargs)

    if type_ == "finetune":
        monkeypatch.setattr(handlers, "finetune", deleted_meanwhile)
    else:
        monkeypatch.setattr(handlers.aligner_svc, "rebuild", deleted_meanwhile)
    extra = {"pair_key": "group", "max_epochs": 3} if type_ == "finetune" else {}
    job = start(client, type=type_, **extra)
    assert running.wait(30)
    assert client.delete(f"/v1/collections/{NAME}").status_code == 204
    gone.set()
    done = wait(client, job["id"])
    assert done["status"] == "cancelled", done
    assert done["error"] == "cancelled: its collection was deleted while the job ran"
    assert services.stores.jobs.get(job["id"]).status == "cancelled"


def test_a_cancel_that_lands_as_the_activation_begins_is_honoured(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel comes after the job's last look at its status and before the activation
    commits: the activation sees it in its own transaction, and nothing is activated."""
    from app.services import finetune as handlers

    fill(client, groups=20)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    activate = handlers.aligner_svc.activate

    def cancelled_on_the_way(**kwargs: Any) -> Any:
        services.stores.jobs.cancel(kwargs["job_id"])
        return activate(**kwargs)

    monkeypatch.setattr(handlers.aligner_svc, "activate", cancelled_on_the_way)
    job = start(client, type="finetune", pair_key="group", activate="always", max_epochs=3)
    done = wait(client, job["id"])
    assert done["status"] == "cancelled", done
    aligners = client.get(f"/v1/collections/{NAME}/aligners").json()
    assert aligners["active"] == 1  # the version trained is recorded, never activated


@pytest.mark.parametrize("stopping", [True, False])
def test_a_job_whose_build_a_shutdown_stopped_goes_back_to_the_queue(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, stopping: bool
) -> None:
    # The server's shutdown stops the index builds in children (index.builds); a job of
    # its in-process worker that needed one before it changed anything (an index not yet
    # loaded here) is put back, not failed. The same error while the worker runs on is a
    # failure like any other.
    def stopped(services: Services, ctx: Any) -> dict[str, Any]:
        if stopping:
            runner.stop()
        raise BuildStopped()

    monkeypatch.setitem(worker_module.HANDLERS, "reindex", stopped)
    with TestClient(create_app(make_settings(worker="off"))) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        job = start(client, type="reindex")
        runner = Worker(client.app.state.services, name="w")  # type: ignore[attr-defined]
        assert runner.run_once() is True
        after = client.get(f"/v1/jobs/{job['id']}").json()
    if stopping:
        assert after["status"] == "queued" and after["error"] is None, after
    else:
        assert after["status"] == "failed" and "BuildStopped" in after["error"], after


def test_a_reindex_whose_swap_a_shutdown_stopped_is_done(
    make_settings: Callable[..., Settings],
) -> None:
    # The reindex committed its new epoch; the swap here needed a build that the shutdown
    # stopped. SQL says what to serve and the next start builds it: the job succeeded and
    # is not run again (a finetune's activation likewise).
    with TestClient(create_app(make_settings(worker="off", build_apart_at=1))) as client:
        fill(client, groups=3)
        services = client.app.state.services  # type: ignore[attr-defined]
        before = services.stores.collections.get(NAME)
        services.indexes.drop(before.id)  # not loaded here: the swap needs a build
        services.indexes.stop_builds()
        job = start(client, type="reindex")
        assert Worker(services, name="w").run_once() is True
        done = client.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done
        assert done["metrics"]["index_epoch"] == before.index_epoch + 1
        assert services.stores.collections.get(NAME).index_epoch == before.index_epoch + 1
