"""mmr backup / mmr restore: one point in time of a running server, searches answered as
the original did, damaged or partial backups refused naming the file, SQLite -> Postgres."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text

import app.lifespan as lifespan
import index.backup as backup_module
import index.blobs as blobs
from app.cli import main
from app.main import create_app
from app.settings import Settings, get_settings
from index.backup import BackupError, backup
from index.db import downgrade, make_engine
from index.restore import restore
from index.tables import Base
from tests.conftest import postgres_schema_url
from tests.factories import image_bytes

NAME = "things"


def populate(client: TestClient) -> None:
    """Texts with metadata, images, deleted items (keys not to reuse) and a patched item."""
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    batch = [
        {"id": f"t{i}", "text": f"sentence number {i}", "metadata": {"n": i, "odd": i % 2 == 1}}
        for i in range(12)
    ]
    done = client.post(f"/v1/collections/{NAME}/items/batch", json=batch).json()["results"]
    assert all(r["status"] == 201 for r in done), done
    for seed in range(3):
        files = {"file": (f"i{seed}.png", image_bytes("RGB", seed=seed))}
        added = client.post(f"/v1/collections/{NAME}/items", files=files, data={"id": f"i{seed}"})
        assert added.status_code == 201, added.text
    assert client.post(f"/v1/collections/{NAME}/items", json={"id": "last", "text": "l"}).is_success
    for gone in ("t11", "last"):  # the largest key deleted: a restore must not give it out again
        assert client.delete(f"/v1/collections/{NAME}/items/{gone}").status_code == 204
    patched = client.patch(f"/v1/collections/{NAME}/items/t3", json={"metadata": {"n": 33}})
    assert patched.status_code == 200, patched.text


def answers(client: TestClient, words: bool = True) -> list[Any]:
    """Ids and scores of text, vector, item and filtered searches (and lexical and hybrid
    ones, with ``words``: each database has its own relevance), and items' content."""
    dim = client.get(f"/v1/collections/{NAME}").json()["dim"]
    vector = np.random.default_rng(0).standard_normal(dim).tolist()
    bodies: list[dict[str, Any]] = [
        {"text": "sentence number 4", "k": 20},
        {"vector": vector, "k": 20},
        {"item_id": "i1", "k": 20},
        {"text": "number", "k": 5, "filter": {"odd": True}},
    ]
    if words:  # the full-text index is derived: made again from the restored rows
        bodies += [
            {"text": "sentence 4 33", "k": 20, "mode": "lexical"},
            {"text": "number 7", "k": 10, "mode": "hybrid"},
        ]
    found: list[Any] = []
    for body in bodies:
        response = client.post(f"/v1/collections/{NAME}/search", json=body)
        assert response.status_code == 200, response.text
        found.append(
            [
                (h["item"]["id"], h["score"], h["item"]["metadata"])
                for h in response.json()["results"]
            ]
        )
    for item in ("t0", "t3", "i2"):
        found.append(client.get(f"/v1/collections/{NAME}/items/{item}/content").content)
    return found


def run_cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *argv: str) -> int:
    """``mmr ARGV`` with the MMR_* variables of a deployment."""
    monkeypatch.setenv("MMR_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MMR_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        return main(list(argv))
    finally:
        get_settings.cache_clear()


def sql(settings: Settings, query: str) -> list[Any]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def back_up(settings: Settings, out: Path) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    try:
        return backup(engine=engine, data_dir=settings.data_dir, out=out, say=lambda _: None)
    finally:
        engine.dispose()


def restore_into(settings: Settings, source: Path) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    try:
        return restore(engine=engine, data_dir=settings.data_dir, source=source, say=lambda _: None)
    finally:
        engine.dispose()


def test_a_restore_answers_every_search_as_the_original(
    settings: Settings, target: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "backup"
    head = settings.data_dir / "aligners" / "bridge.npz"  # a bootstrapped audio head, cached
    with TestClient(create_app(settings)) as client:
        populate(client)
        before = answers(client)
        head.parent.mkdir(exist_ok=True)
        head.write_bytes(b"head" * 100)
        assert run_cli(monkeypatch, settings, "backup", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())["manifest"]
    assert manifest["tables"]["items"]["rows"] == 14
    assert manifest["blobs"] == 3  # the images' originals; a text's is its row (answers' content)
    assert run_cli(monkeypatch, target, "restore", "--from", str(out)) == 0
    assert (target.data_dir / "aligners" / "bridge.npz").read_bytes() == head.read_bytes()
    with TestClient(create_app(target)) as client:
        assert answers(client) == before
        added = client.post(f"/v1/collections/{NAME}/items", json={"id": "new", "text": "x"})
        assert added.status_code == 201, added.text
    # Keys go on past the deleted "last": a new item never takes a deleted item's key.
    pks = dict(sql(target, "SELECT external_id, pk FROM items"))
    assert pks["new"] == 17 and max(pks.values()) == 17


@pytest.fixture
def other_url(tmp_path: Path, database_url: str) -> Iterator[str]:
    """An empty database of the other kind than ``database_url``."""
    if database_url.startswith("sqlite"):
        yield from postgres_schema_url()
        return
    yield f"sqlite:///{tmp_path / 'other.sqlite3'}"


@pytest.mark.postgres  # both ways: the SQLite run restores into Postgres
def test_a_backup_restores_into_the_other_database(
    settings: Settings, make_settings: Callable[..., Settings], tmp_path: Path, other_url: str
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
        before = answers(client, words=False)
    back_up(settings, tmp_path / "backup")
    target = make_settings(data_dir=tmp_path / "other", database_url=other_url)
    restore_into(target, tmp_path / "backup")
    with TestClient(create_app(target)) as client:
        assert answers(client, words=False) == before


def consistent(settings: Settings) -> set[str]:
    """Check a restored database holds together; return its item ids."""
    items = {pk: ext for pk, ext in sql(settings, "SELECT pk, external_id FROM items")}
    last: dict[int, str] = {}
    for pk, op in sql(settings, "SELECT item_pk, op FROM changes ORDER BY seq"):
        last[pk] = op
    assert {pk for pk, op in last.items() if op == "upsert"} == set(items)
    assert {pk for (pk,) in sql(settings, "SELECT item_pk FROM item_tags")} <= set(items)
    return set(items.values())


def test_the_backup_is_one_point_in_time_while_writers_go_on(
    settings: Settings, target: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    with TestClient(create_app(settings)) as client:
        populate(client)

        def write() -> None:
            n = 0
            while not stop.is_set():
                body = {"id": f"w{n}", "text": f"writer {n}", "metadata": {"n": n}}
                assert client.post(f"/v1/collections/{NAME}/items", json=body).status_code == 201
                n += 1

        dump = backup_module._dump_table

        def dump_then_write(conn: Any, name: str, *args: Any) -> int:
            rows = dump(conn, name, *args)
            if name == "items":  # committed between two tables' reads: must not show
                body = {"id": "late", "text": "late", "metadata": {"late": True}}
                assert client.post(f"/v1/collections/{NAME}/items", json=body).status_code == 201
            return rows

        monkeypatch.setattr(backup_module, "_dump_table", dump_then_write)
        writer = threading.Thread(target=write)
        writer.start()
        try:
            back_up(settings, tmp_path / "backup")
        finally:
            stop.set()
            writer.join()
    restore_into(target, tmp_path / "backup")
    ids = consistent(target)
    assert "late" not in ids and {"t0", "i2"} <= ids
    # The writer's items up to some instant, none after it: w0 .. w(n-1).
    written = sorted(int(i[1:]) for i in ids if i.startswith("w"))
    assert written == list(range(len(written)))
    with TestClient(create_app(target)) as client:
        for item in ids:
            assert client.get(f"/v1/collections/{NAME}/items/{item}/content").status_code == 200


@pytest.fixture
def made(settings: Settings, tmp_path: Path) -> Path:
    """A finished backup of a populated deployment."""
    with TestClient(create_app(settings)) as client:
        populate(client)
    (settings.data_dir / "aligners").mkdir(exist_ok=True)
    (settings.data_dir / "aligners" / "bridge.npz").write_bytes(b"head" * 100)
    back_up(settings, tmp_path / "backup")
    return tmp_path / "backup"


def test_a_backup_an_earlier_release_made_restores(made: Path, target: Settings) -> None:
    """Up to v1.0 originals lay two folders deep (``ab/cd/<sha256>``), in the data dir and
    in its backups: such a backup is verified and restored, into today's layout."""
    moved = []
    for path in [p for p in (made / "blobs").rglob("*") if p.is_file()]:
        earlier = path.parent / path.name[2:4] / path.name
        earlier.parent.mkdir()
        path.rename(earlier)
        moved.append(path.name)
    assert len(moved) == 3
    restore_into(target, made)
    root = target.data_dir / "blobs"
    for sha in moved:
        assert hashlib.sha256(blobs.blob_path(root, sha).read_bytes()).hexdigest() == sha
    with TestClient(create_app(target)) as client:
        for (external_id,) in sql(target, "SELECT external_id FROM items WHERE modality = 'image'"):
            got = client.get(f"/v1/collections/{NAME}/items/{external_id}/content")
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() in moved


def refused(target: Settings, source: Path) -> str:
    with pytest.raises(BackupError) as caught:
        restore_into(target, source)
    # Refused before anything was written: no file, no row, no table.
    assert not any(p.is_file() for p in target.data_dir.rglob("*"))
    engine = make_engine(target.database_url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()
    return str(caught.value)


def a_blob(source: Path) -> Path:
    return next(p for p in sorted((source / "blobs").rglob("*")) if p.is_file())


@pytest.mark.parametrize("part", ["blob", "table", "aligner", "index"])
def test_a_damaged_file_is_refused_by_name(made: Path, target: Settings, part: str) -> None:
    path = {
        "blob": lambda: a_blob(made),
        "table": lambda: made / "tables" / "items.jsonl.gz",
        "aligner": lambda: made / "aligners" / "bridge.npz",
        "index": lambda: made / "indexes" / "collection-1.faiss",  # the stop's snapshot
    }[part]()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    message = refused(target, made)
    assert str(path) in message and "damaged" in message


def test_a_missing_file_is_refused_by_name(made: Path, target: Settings) -> None:
    path = a_blob(made)
    path.unlink()
    message = refused(target, made)
    assert str(path) in message and "missing" in message


def test_a_backup_without_its_manifest_is_partial(made: Path, target: Settings) -> None:
    (made / "manifest.json").unlink()
    assert "partial" in refused(target, made)


def test_a_damaged_manifest_is_refused(made: Path, target: Settings) -> None:
    manifest = made / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"rows": 14', '"rows": 15'))
    assert "manifest.json is damaged" in refused(target, made)


def test_a_truncated_table_file_is_refused(made: Path, target: Settings) -> None:
    path = made / "tables" / "changes.jsonl.gz"
    with gzip.open(path, "rt") as f:
        lines = f.readlines()
    with gzip.open(path, "wt") as f:
        f.writelines(lines[:-1])
    assert str(path) in refused(target, made)


def test_a_deployment_with_data_is_not_a_restore_target(
    made: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(monkeypatch, settings, "restore", "--from", str(made)) == 1
    assert "already holds rows (table " in capsys.readouterr().out


def test_backup_refuses_a_folder_in_use_and_names_a_lost_original(
    settings: Settings, tmp_path: Path
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        back_up(settings, tmp_path / "used")
    live = (p for p in (settings.data_dir / "blobs").rglob("*") if blobs.TRASH not in p.parts)
    damaged, lost = sorted(p for p in live if p.is_file())[:2]
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-1])
    with pytest.raises(BackupError, match=f"original {damaged} is damaged"):
        back_up(settings, tmp_path / "backup")
    assert not any((tmp_path / "backup").iterdir())  # nothing half-written is left
    damaged.write_bytes(good)
    lost.unlink()
    with pytest.raises(BackupError, match=f"{lost}.*items \\['") as caught:
        back_up(settings, tmp_path / "backup")
    assert "older backup" in str(caught.value)


@pytest.mark.parametrize("gone", [False, True])
def test_an_item_deleted_during_the_copy_is_copied_from_the_trash(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: bool
) -> None:
    """The snapshot's i0 is deleted before its original is copied: the copy takes it from
    the trash. Gone from the trash too (a server of an older release unlinks originals),
    the backup starts again from a new snapshot, which no longer has i0."""
    with TestClient(create_app(settings)) as client:
        populate(client)
        copy = backup_module._copy_blobs
        deleted: list[str] = []

        def delete_then_copy(*args: Any) -> int:
            if not deleted:  # the snapshot still has i0; its original goes now
                assert client.delete(f"/v1/collections/{NAME}/items/i0").status_code == 204
                deleted.append("i0")
                for trashed, _ in blobs.trashed(settings.data_dir / "blobs"):
                    if gone:
                        trashed.unlink()
            return copy(*args)

        monkeypatch.setattr(backup_module, "_copy_blobs", delete_then_copy)
        manifest = back_up(settings, tmp_path / "backup")
    assert manifest["tables"]["items"]["rows"] == (13 if gone else 14)


def image_of(label: str) -> bytes:
    """The image a churned item holds under this label: files, whose originals the blob
    store keeps (a text's original is its row)."""
    return image_bytes("RGB", seed=int(hashlib.sha256(label.encode()).hexdigest()[:8], 16))


class Churn:
    """Replaces, deletes and re-adds images with new content until stopped, and logs each
    acknowledged write in order: the state after any prefix of the log is known."""

    POOL = 24

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.log: list[tuple[str, str | None]] = []  # (id, its label now; None: deleted)
        self.stop = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self.run)

    def fill(self) -> dict[str, str]:
        assert self.client.post("/v1/collections", json={"name": NAME}).status_code == 201
        start = {f"p{i}": f"first image of p{i}" for i in range(self.POOL)}
        for item, body in start.items():
            self.put(item, body, 201)
        return start

    def put(self, item: str, label: str, status: int) -> None:
        files = {"file": (f"{item}.png", image_of(label), "image/png")}
        added = self.client.post(f"/v1/collections/{NAME}/items", files=files, data={"id": item})
        assert added.status_code == status, added.text

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                item = f"p{n % self.POOL}"
                if (n // self.POOL) % 2:  # every other round: deleted, then added again
                    assert self.client.delete(f"/v1/collections/{NAME}/items/{item}").is_success
                    self.log.append((item, None))
                    self.put(item, f"back {n}", 201)
                    self.log.append((item, f"back {n}"))
                else:  # the item stays, its content changes: the old original goes
                    self.put(item, f"replaced {n}", 200)
                    self.log.append((item, f"replaced {n}"))
                n += 1
        except BaseException as exc:
            self.failed = exc
            raise

    def states(self, start: dict[str, str]) -> list[dict[str, str]]:
        """The collection after each prefix of the log."""
        state, found = dict(start), [dict(start)]
        for item, body in self.log:
            if body is None:
                state.pop(item)
            else:
                state[item] = body
            found.append(dict(state))
        return found

    def wait_for_more(self) -> None:
        seen = len(self.log)
        while len(self.log) == seen:
            assert self.thread.is_alive(), f"the writer stopped: {self.failed!r}"
            self.stop.wait(0.002)


def test_a_backup_under_steady_deletes_and_replacements_is_one_point_in_time(
    settings: Settings, target: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every original is copied after at least one more write: most of the snapshot's are
    replaced or deleted by then. The backup succeeds on its first try, and restores to the
    state after some prefix of the acknowledged writes, each original matching its sha256."""
    said: list[str] = []
    with TestClient(create_app(settings)) as client:
        churn = Churn(client)
        start = churn.fill()
        copy = backup_module._copy_blob

        def copy_after_a_write(*args: Any) -> int:
            churn.wait_for_more()
            return copy(*args)

        monkeypatch.setattr(backup_module, "_copy_blob", copy_after_a_write)
        churn.thread.start()
        try:
            for _ in range(3):  # acknowledged before the backup began: in its snapshot
                churn.wait_for_more()
            engine = make_engine(settings.database_url)
            try:
                backup(
                    engine=engine, data_dir=settings.data_dir, out=tmp_path / "b", say=said.append
                )
            finally:
                engine.dispose()
        finally:
            churn.stop.set()
            churn.thread.join()
        assert churn.failed is None, f"the writer failed: {churn.failed!r}"
        assert len(churn.log) > Churn.POOL, "the writer must have replaced the snapshot's items"
    assert not [line for line in said if "starting again" in line], said
    restore_into(target, tmp_path / "b")
    with TestClient(create_app(target)) as client:
        restored = {}
        for item, sha in sql(target, "SELECT external_id, sha256 FROM items"):
            content = client.get(f"/v1/collections/{NAME}/items/{item}/content")
            assert content.status_code == 200, content.text
            assert hashlib.sha256(content.content).hexdigest() == sha
            restored[item] = content.content
    states = [{k: image_of(v) for k, v in state.items()} for state in churn.states(start)[3:]]
    assert restored in states


def test_backup_of_a_database_that_is_not_mmr_says_so(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    with pytest.raises(BackupError, match="no mmr schema"):
        backup(engine=engine, data_dir=tmp_path, out=tmp_path / "b", say=lambda _: None)
    engine.dispose()


def test_every_table_and_the_keys_come_back(
    make_settings: Callable[..., Settings], target: Settings, tmp_path: Path
) -> None:
    root = {"Authorization": "Bearer root"}
    source = make_settings(api_keys="root")
    with TestClient(create_app(source)) as client:
        made = client.post("/v1/keys", json={"name": "app", "scope": "read"}, headers=root)
        assert made.status_code == 201, made.text
    manifest = back_up(source, tmp_path / "backup")
    assert set(manifest["tables"]) == set(Base.metadata.tables)  # a new table needs no change
    restore_into(target, tmp_path / "backup")
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    with TestClient(create_app(target.model_copy(update={"api_keys": "root"}))) as client:
        assert client.get("/v1/collections", headers=key).status_code == 200
        assert client.get("/v1/keys", headers=root).json()["keys"][0]["name"] == "app"


def test_an_older_schema_restores_into_a_newer_empty_database(
    settings: Settings, target: Settings, tmp_path: Path
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
        before = answers(client)
    engine = make_engine(settings.database_url)
    downgrade(engine, "0004")  # as a deployment of the release before keys left it
    engine.dispose()
    manifest = back_up(settings, tmp_path / "backup")
    assert manifest["schema_revision"] == "0004" and "api_keys" not in manifest["tables"]
    with TestClient(create_app(target)):
        pass  # the target started once: empty, at this release's schema
    restore_into(target, tmp_path / "backup")
    with TestClient(create_app(target)) as client:
        assert answers(client) == before


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_subnormal=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Times that name an instant: a day inside datetime's range on each side (0001-01-01 east of
# UTC has no UTC time Python can represent) and no local time a clock change skipped.
aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.timezones(),
    allow_imaginary=False,
) | st.datetimes(timezones=st.just(UTC))


@given(blob=st.binary(), stamp=aware, naive=st.datetimes(), meta=json_values)
def test_values_come_back_as_they_went_in(
    blob: bytes, stamp: datetime, naive: datetime, meta: Any
) -> None:
    """A row line of the backup: bytes, times of any zone (the same instant, in UTC), JSON."""
    kinds = ["bytes", "datetime", "datetime", "json"]
    values = [blob, stamp, naive, meta]
    line = json.dumps([backup_module.encode(v, k) for v, k in zip(values, kinds, strict=True)])
    back = [backup_module.decode(v, k) for v, k in zip(json.loads(line), kinds, strict=True)]
    assert back[0] == blob and back[3] == meta
    assert back[1] == stamp and back[1].tzinfo == UTC
    assert back[2] == naive.replace(tzinfo=UTC)  # SQLite's naive times are the store's UTC


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_says_what_failed(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "file").write_text("x")
    assert run_cli(monkeypatch, settings, "backup", "--out", str(tmp_path / "file")) == 1
    assert "is not empty" in capsys.readouterr().out
    nowhere = settings.model_copy(update={"database_url": "postgresql+psycopg://x@127.0.0.1:9/x"})
    assert run_cli(monkeypatch, nowhere, "backup", "--out", str(tmp_path / "b")) == 1
    assert "check MMR_DATABASE_URL" in capsys.readouterr().out
    assert run_cli(monkeypatch, settings, "restore", "--from", str(tmp_path / "none")) == 1
    assert "manifest.json is missing" in capsys.readouterr().out


def test_a_manifest_naming_a_file_outside_the_backup_is_refused(
    made: Path, target: Settings
) -> None:
    # A sealed manifest (anyone can seal one) whose path climbs out of the folders: restore
    # would write the file outside the data dir.
    outside = made.parent / "outside.txt"
    outside.write_bytes(b"planted")
    body = json.loads((made / "manifest.json").read_text())["manifest"]
    rel = "aligners/../../outside.txt"
    body["files"][rel] = {"size": 7, "sha256": hashlib.sha256(b"planted").hexdigest()}
    reseal(made, body)
    escaped = target.data_dir / rel
    assert rel in refused(target, made)
    assert not escaped.exists()


def reseal(backup: Path, body: dict[str, Any]) -> None:
    """Write a backup's manifest with this body, sealed as mmr seals one."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    (backup / "manifest.json").write_text(json.dumps({"manifest": body, "sha256": digest}))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_server_sweeps_temp_files_a_killed_writer_left(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sweeper removes old temp files from the fan-out folders, one folder a turn
    (every folder in 256 turns); young ones may be a live writer's and stay."""
    monkeypatch.setattr(lifespan, "TRASH_SWEEP_S", 0.05)
    folder = settings.data_dir / "blobs" / "00"
    folder.mkdir(parents=True)
    old, young = folder / f".{'0' * 64}.1.ab.0.tmp", folder / f".{'0' * 64}.1.ab.1.tmp"
    old.write_bytes(b"left by a writer killed mid-write")
    young.write_bytes(b"being written")
    aged = time.time() - blobs.TEMP_GRACE_S - 60
    os.utime(old, (aged, aged))
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 60
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not old.exists() and young.exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_server_sweeps_deleted_originals_off_the_request_path(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete or a replacement trashes the old original; the server's sweeper removes it
    once its grace period is over: the disk space comes back."""
    monkeypatch.setattr(lifespan, "TRASH_SWEEP_S", 0.05)
    monkeypatch.setattr(blobs, "TRASH_GRACE_S", 0.2)
    root = settings.data_dir / "blobs"
    with TestClient(create_app(settings)) as client:
        populate(client)  # deletes two items
        [(old,)] = sql(settings, "SELECT sha256 FROM items WHERE external_id = 'i0'")
        files = {"file": ("new.png", image_bytes("RGB", seed=99), "image/png")}
        replaced = client.post(f"/v1/collections/{NAME}/items", files=files, data={"id": "i0"})
        assert replaced.status_code == 200, replaced.text
        assert not blobs.blob_path(root, old).exists()
        deadline = time.monotonic() + 10
        while list(blobs.trashed(root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(blobs.trashed(root)) == []
        kept = {p.name for p in root.rglob("*") if p.is_file()}
        files_only = "SELECT sha256 FROM items WHERE modality <> 'text'"  # a text's is its row
        assert kept == {sha for (sha,) in sql(settings, files_only)}
