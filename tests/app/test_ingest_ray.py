"""``mmr ingest --engine ray`` on a local Ray cluster of two simulated nodes (Ray's own
cluster utilities): the same folder ingested locally and through Ray gives the same ids and
the same vectors (cosine >= 0.999), texts and broken files included; run again, nothing is
encoded or sent."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.columns import from_blob, from_features
from models.encoders.aligner import l2_normalize
from tests.app.test_crash import REPO, Server, log_tail, serve, server_env

ray = pytest.importorskip("ray", reason="Ray is the optional extra mmr[ray] (make install has it)")
from ray.cluster_utils import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node, 2 logical CPUs each (docs: one CPU each starves the read
    task); its workers import this checkout. One for the module's tests."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(REPO))
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        try:
            yield cluster.address
        finally:
            cluster.shutdown()


def picture(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def ingest(server: Server, folder: Path, tmp: Path, *args: str) -> tuple[list[str], str]:
    argv = [sys.executable, "-m", "app.cli", "ingest", str(folder), "--server", server.url]
    env = {
        "PYTHONPATH": str(REPO),
        "PATH": os.environ["PATH"],
        "MMR_DATA_DIR": str(tmp / "client-data"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    done = subprocess.run(
        [*argv, "--create", "--batch", "4", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.stdout.splitlines(), done.stderr


def vectors(db: Path, collection: str) -> dict[str, np.ndarray]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT items.external_id, items.feature, items.vector FROM items JOIN collections "
            "ON items.collection_id = collections.id WHERE collections.name = ?",
            (collection,),
        ).fetchall()
    # Images' vectors are their features normalised, where SQL keeps no vector.
    return {
        external_id: from_blob(vector) if vector else l2_normalize(from_features(feature))[0]
        for external_id, feature, vector in rows
    }


def test_a_folder_through_ray_is_the_folder_ingested_here(cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for n in range(6):
        (folder / f"p{n}.png").write_bytes(picture(n, "PNG"))
    for n in range(4):
        (folder / "sub" / f"j{n}.jpg").write_bytes(picture(10 + n, "JPEG"))
    (folder / "note.txt").write_text("a kite over the hill")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not an image")
    db = tmp_path / "db.sqlite"
    with serve(server_env(tmp_path, f"sqlite:///{db}"), tmp_path / "server.log") as server:
        here = ingest(server, folder, tmp_path, "--collection", "here")
        there = ingest(
            server,
            folder,
            tmp_path,
            "--collection",
            "there",
            "--engine",
            "ray",
            "--ray-address",
            cluster,
        )
        again = ingest(
            server,
            folder,
            tmp_path,
            "--collection",
            "there",
            "--engine",
            "ray",
            "--ray-address",
            cluster,
        )
    assert here[0][0] == there[0][0] == "ingested 11, skipped 0, failed 1"
    assert "ray: 10 of 11 images encoded on the cluster" in there[1]  # the broken one: not
    assert again[0][0] == "ingested 0, skipped 11, failed 1"
    assert "ray: 0 of 1 images encoded on the cluster" in again[1]
    local, remote = vectors(db, "here"), vectors(db, "there")
    assert set(local) == set(remote) and len(local) == 11
    for item_id, vector in local.items():
        cosine = float(vector @ remote[item_id]) / float(
            np.linalg.norm(vector) * np.linalg.norm(remote[item_id])
        )
        assert cosine >= 0.999, (item_id, cosine)


def test_a_migration_with_a_ray_address_encodes_its_images_on_the_cluster(
    cluster: str, tmp_path: Path
) -> None:
    import httpx

    from app.services.embedding import Embedder
    from app.services.media import decode_upload
    from app.settings import Settings
    from models.encoders.registry import load_model

    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    env.update(MMR_RAY_ADDRESS=cluster, MMR_JOB_POLL_S="0.1", RAY_USAGE_STATS_ENABLED="0")
    pictures = {f"p{n}": picture(n, "PNG") for n in range(5)}
    with serve(env, tmp_path / "server.log") as server, httpx.Client(base_url=server.url) as c:
        assert c.post("/v1/collections", json={"name": "moved"}).status_code == 201
        files = [("file", (f"{k}.png", data)) for k, data in pictures.items()]
        got = c.post("/v1/collections/moved/items/batch", files=files, data={"id": list(pictures)})
        assert all(r["status"] == 201 for r in got.json()["results"]), got.text
        c.post("/v1/collections/moved/items", json={"text": "a kite", "id": "note"})
        job = c.post(
            "/v1/jobs", json={"type": "migrate", "collection": "moved", "model": "mmr-mini"}
        )
        assert job.status_code == 202, job.text
        for _ in range(1200):
            done = c.get(f"/v1/jobs/{job.json()['id']}").json()
            if done["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert done["status"] == "succeeded", (done, log_tail(server.log))
    assert done["metrics"]["encoded"] == 6 and done["metrics"]["encoded_on_ray"] == 5
    stored = vectors(tmp_path / "db.sqlite", "moved")
    settings = Settings(data_dir=tmp_path / "here", device="cpu", _env_file=None)
    embedder = Embedder(load_model("mmr-mini", device="cpu"))
    try:
        for item_id, data in pictures.items():
            media = decode_upload(data, settings=settings, embedder=embedder)
            here = l2_normalize(embedder.encode("image", [media.payload])[0].raw)[0]
            assert float(here @ stored[item_id]) >= 0.999, item_id
    finally:
        embedder.close()
