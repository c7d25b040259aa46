"""``mmr ingest`` against a real server: a folder's images and texts with their ids and
metadata (sidecar, EXIF), a failed file listed and the exit code set, a second run that
uploads nothing already stored, a changed file sent again; and the retry rules (429 with
Retry-After, 5xx, a lost connection) against a scripted transport."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.ingest.files import Found, Loaded, item_id, load, walk
from app.ingest.run import Options, Tally, _send
from tests.app.test_crash import REPO, Server, serve, server_env

NAME = "folder"


def picture(seed: int, *, exif: dict[int, str] | None = None, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    info = Image.Exif()
    for tag, value in (exif or {}).items():
        info[tag] = value
    buf = io.BytesIO()
    image.save(buf, fmt, **({"exif": info} if exif else {}))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with serve(env, tmp_path / "server.log") as srv:
        yield srv


def run_ingest(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "app.cli", "ingest", *args, "--server", server.url]
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def batch_requests(server: Server) -> float:
    """How many batch requests the server answered so far (its own count)."""
    route = 'route="/v1/collections/{name}/items/batch"'
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    counted = [
        line for line in lines if line.startswith("mmr_http_requests_total") and route in line
    ]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counted)


def test_a_folder_is_ingested_then_resumed_without_uploading_again(
    server: Server, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "cat.jpg").write_bytes(
        picture(1, exif={0x010F: "Canon", 0x0110: "EOS 5D", 0x0132: "2024:05:01 10:20:30"})
    )
    (folder / "2024" / "dog.png").write_bytes(picture(2, fmt="PNG"))
    (folder / "2024" / "dog.png.json").write_text(json.dumps({"album": "summer"}))
    (folder / "note.txt").write_text("a red kite over the hill\n", encoding="utf-8")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "readme.md").write_text("not sent")
    (folder / ".hidden.jpg").write_bytes(picture(3))

    first = run_ingest(server, tmp_path, str(folder), "--collection", NAME, "--create")
    assert first.returncode == 1, first.stderr
    assert first.stdout.splitlines()[0] == "ingested 3, skipped 0, failed 1"
    with (tmp_path / "mmr-ingest-failures.csv").open() as f:
        (failure,) = list(csv.DictReader(f))
    assert failure["path"].endswith("broken.jpg") and failure["status"] == "415"
    assert failure["code"] == "unsupported_media"

    items = f"{server.url}/v1/collections/{NAME}/items"
    listed = httpx.get(items, params={"limit": 100}).json()["items"]
    assert sorted(i["id"] for i in listed) == ["2024%2Fdog.png", "cat.jpg", "note.txt"]
    cat = httpx.get(f"{items}/cat.jpg").json()["metadata"]
    assert cat["camera"] == "Canon EOS 5D"
    assert (cat["taken_at"], cat["taken_date"], cat["taken_year"]) == (
        "2024-05-01T10:20:30",
        "2024-05-01",
        2024,
    )
    assert httpx.get(f"{items}/2024%252Fdog.png").json()["metadata"] == {"album": "summer"}
    assert httpx.get(f"{items}/note.txt").json()["text"] == "a red kite over the hill\n"

    before = batch_requests(server)
    again = run_ingest(server, tmp_path, str(folder), "--collection", NAME)
    assert again.stdout.splitlines()[0] == "ingested 0, skipped 3, failed 1"
    assert batch_requests(server) - before == 1  # the broken file's batch alone

    (folder / "note.txt").write_text("a blue kite\n", encoding="utf-8")
    (folder / "broken.jpg").unlink()
    third = run_ingest(server, tmp_path, str(folder), "--collection", NAME)
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines() == ["ingested 1, skipped 2, failed 0"]
    assert httpx.get(f"{items}/note.txt").json()["text"] == "a blue kite\n"
    assert "files/s" in third.stderr  # progress, as plain lines when not on a terminal


def test_a_missing_collection_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("words")
    done = run_ingest(server, tmp_path, str(tmp_path / "a.txt"), "--collection", "absent")
    assert done.returncode == 2
    assert "no collection 'absent'" in done.stderr and "--create" in done.stderr


def test_a_server_with_keys_takes_the_key_and_says_when_it_is_missing(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}") | {
        "MMR_API_KEYS": "sekrit-admin-key"
    }
    (tmp_path / "a.txt").write_text("words")
    with serve(env, tmp_path / "server.log") as srv:
        args = (str(tmp_path / "a.txt"), "--collection", "keyed", "--create")
        refused = run_ingest(srv, tmp_path, *args)
        assert refused.returncode == 2 and "--api-key" in refused.stderr
        done = run_ingest(srv, tmp_path, *args, "--api-key", "sekrit-admin-key")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["ingested 1, skipped 0, failed 0"]


def test_ids_keep_the_relative_path_one_to_one() -> None:
    assert item_id(Path("2024/05/cat.jpg")) == "2024%2F05%2Fcat.jpg"
    assert item_id(Path("100%/a.jpg")) == "100%25%2Fa.jpg"  # not the same as "100/a.jpg"
    assert item_id(Path("100/a.jpg")) != item_id(Path("100%2Fa.jpg"))


def test_video_files_are_found_and_sent_as_files(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.MOV", "c.mkv", "d.webm", "e.m4v", "f.avi", "g.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = {f.item_id: f.kind for f in walk([tmp_path])}
    assert found == {n: "file" for n in ("a.mp4", "b.MOV", "c.mkv", "d.webm", "e.m4v")} | {
        "g.txt": "text"
    }
    assert load(next(walk([tmp_path / "a.mp4"])), {}).metadata == {}


def scripted(answers: list[object]) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose requests get these answers in turn (an exception is raised)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    return httpx.Client(base_url="http://server", transport=httpx.MockTransport(handle)), seen


def ok(*statuses: int) -> httpx.Response:
    results = [
        {"status": s, "item": {}, "error": None}
        if s < 300
        else {"status": s, "item": None, "error": {"code": "busy", "message": "try later"}}
        for s in statuses
    ]
    return httpx.Response(200, json={"results": results})


def texts(n: int) -> list[Loaded]:
    return [
        Loaded(Found(Path(f"t{i}.txt"), f"t{i}.txt", "text", 1), b"x", "0" * 64) for i in range(n)
    ]


def test_busy_and_failing_servers_are_retried_then_items_end_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("app.ingest.run.time.sleep", waits.append)
    busy = httpx.Response(
        429, headers={"Retry-After": "7"}, json={"error": {"code": "c", "message": "m"}}
    )
    client, seen = scripted(
        [busy, httpx.Response(502), httpx.ConnectError("refused"), ok(201, 429), ok(201)]
    )
    tally = Tally()
    _send(client, Options(server="", collection="c"), texts(2), tally)
    assert tally.ingested == 2 and not tally.failures
    assert len(seen) == 5 and waits[0] == 7.0  # Retry-After is honoured
    assert len(json.loads(seen[-1].content)) == 1  # only the item answered 429 is sent again


def test_an_item_still_refused_after_the_retries_is_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.ingest.run.time.sleep", lambda _: None)
    client, _ = scripted([httpx.Response(503)] * 3)
    tally = Tally()
    _send(client, Options(server="", collection="c", retries=2), texts(1), tally)
    assert tally.ingested == 0 and [f.status for f in tally.failures] == [503]


def test_a_batch_refused_as_a_whole_is_sent_in_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    """413 (too large together) or 422 (over the server's MMR_MAX_BATCH_ITEMS): halves, down
    to single items; a single item refused so is that item's failure."""
    monkeypatch.setattr("app.ingest.run.time.sleep", lambda _: None)
    too_many = httpx.Response(422, json={"error": {"code": "validation_error", "message": "n"}})
    too_large = httpx.Response(413, json={"error": {"code": "payload_too_large", "message": "l"}})
    client, seen = scripted([too_many, ok(201, 201), too_large, ok(201), too_large])
    tally = Tally()
    _send(client, Options(server="", collection="c"), texts(4), tally)
    assert [len(json.loads(r.content)) for r in seen] == [4, 2, 2, 1, 1]
    assert tally.ingested == 3 and [f.status for f in tally.failures] == [413]
