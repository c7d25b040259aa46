"""What `mmr serve` prints until it listens: the start-up block an operator reads (model,
precision, device, database, data dir, warnings, the address) and none of the libraries'
chatter (ONNX Runtime's quantiser alone said 48 lines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.app.test_crash import serve, server_env

MAX_START_LINES = 12  # the block (6 lines), the address, warnings, a first start's exports
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:\d+ ")
CHATTER = ("quantiz", "onnxruntime", "alembic", "open_clip", "root:", "Started server process")


def start_lines(log: Path) -> list[str]:
    """The lines a server wrote up to the one that says where it listens."""
    lines = log.read_text().splitlines()
    ends = [i for i, line in enumerate(lines) if LISTENING.search(line)]
    assert ends, "\n".join(lines)
    return lines[: ends[0] + 1]


def test_start_up_prints_the_block_and_no_chatter(tmp_path: Path, database_url: str) -> None:
    """The first start of a model, with MMR_PRECISION=auto: it exports ONNX towers and
    quantises one to int8 for the probe, which is when ONNX Runtime's quantiser talked."""
    url = database_url
    if url.startswith("postgresql"):  # trust auth: the password is ignored, and must not show
        url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
    env = server_env(tmp_path, url) | {
        "MMR_LOG_LEVEL": "info",
        "MMR_LOG_FORMAT": "text",
        "MMR_PRECISION": "auto",
    }
    log = tmp_path / "server.log"
    with serve(env, log):
        pass
    lines = start_lines(log)
    text = "\n".join(lines)
    assert len(lines) <= MAX_START_LINES, text
    for chatter in CHATTER:
        assert chatter.lower() not in text.lower(), text
    for label, value in (
        ("model", "random:mmr-tiny (dim 64; image, text; audio none)"),
        ("precision", "(MMR_PRECISION=auto: "),
        ("device", "cpu"),
        ("data dir", str((tmp_path / "data").resolve())),
        ("jobs", "run in this process"),
    ):
        assert re.search(rf"INFO mmr: {label} +.*{re.escape(value)}", text), (label, text)
    (database,) = [line for line in lines if "INFO mmr: database" in line]
    assert "s3cret-pw" not in text
    if url.startswith("postgresql"):
        assert "postgres:***@127.0.0.1" in database, database
    else:
        assert database.endswith(url.removeprefix("sqlite:///")), database
    assert "WARNING" not in text


def test_a_fallback_is_said_in_the_block_and_warned_last(tmp_path: Path) -> None:
    """MMR_MODEL=auto offline: the fallback model; away from a terminal every line is JSON."""
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'mmr.sqlite3'}") | {
        "MMR_MODEL": "auto",
        "MMR_PRECISION": "fp32",
        "MMR_LOG_LEVEL": "info",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MMR_LOG_FORMAT", None)  # auto: JSON, as the log goes to a file
    log = tmp_path / "server.log"
    with serve(env, log):
        pass
    entries = [json.loads(line) for line in start_lines(log)]
    assert len(entries) <= MAX_START_LINES
    said = [(e["level"], e["logger"], e["message"]) for e in entries]
    model = next(m for _, logger, m in said if logger == "mmr" and m.startswith("model "))
    assert "mmr-mini" in model and "the offline fallback of MMR_MODEL=auto" in model
    # The warning is the block's last word, just before the address.
    level, logger, message = said[-2]
    assert (level, logger) == ("WARNING", "mmr") and "could not be loaded" in message
    assert sum("could not be loaded" in m for _, _, m in said) == 1  # said once, not twice
    assert all(e["time"].endswith("Z") for e in entries)
