"""The mmr command: serve (strict model ids), world (demo data) and eval (a clear error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, model: str) -> subprocess.CompletedProcess[str]:
    """Run `mmr serve` with a model id until it exits."""
    env = os.environ | {
        "MMR_DATA_DIR": str(tmp_path / "data"),
        "MMR_MODEL": model,
        "MMR_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_exits_when_an_explicit_model_cannot_load(tmp_path: Path) -> None:
    done = serve(tmp_path, f"open_clip:mmr-tiny@{tmp_path / 'missing.pt'}")
    assert done.returncode != 0
    assert "missing.pt does not exist" in done.stderr
    assert "cannot start" in done.stderr


def test_unknown_model_syntax_exits_too(tmp_path: Path) -> None:
    done = serve(tmp_path, "clip-please")
    assert done.returncode != 0
    assert "unknown model id 'clip-please'" in done.stderr


def test_world_writes_files_and_captions(tmp_path: Path) -> None:
    from app.cli import main

    assert main(["world", "--out", str(tmp_path / "w"), "--images", "3", "--sounds", "2"]) == 0
    lines = (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        entry = json.loads(line)
        assert (tmp_path / "w" / entry["file"]).is_file() and entry["caption"]


def test_eval_of_a_model_that_cannot_load_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    assert main(["eval", "--model", "mmr-mini@/nonexistent"]) == 1
    assert "mmr train-mini" in capsys.readouterr().out
