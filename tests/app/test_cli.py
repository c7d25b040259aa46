"""`mmr serve`: an explicit model that cannot load stops the server with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
