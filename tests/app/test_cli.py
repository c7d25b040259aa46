"""The mmr command: serve (strict model ids), world (demo data) and eval (a clear error)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.cli import main
from app.settings import get_settings
from models.encoders.aligner import Aligner

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


def test_ctrl_c_stops_serve_cleanly_without_a_traceback(tmp_path: Path) -> None:
    """uvicorn shuts down gracefully on SIGINT, then raises KeyboardInterrupt again: the
    command ends there with the shell's code for an interrupt (130), not a traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "MMR_DATA_DIR": str(tmp_path / "data"),
        "MMR_MODEL": "mmr-mini",
        "MMR_PRECISION": "fp32",
        "MMR_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # As on a terminal: a run started in the background (CI's) inherits SIGINT ignored,
        # and uvicorn, which restores the handler it found, then ends with exit code 0.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "mmr serve never served"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    said = out.decode()
    assert proc.returncode == 130, said
    assert "Traceback" not in said and "Application shutdown complete" in said


def test_unknown_model_syntax_exits_too(tmp_path: Path) -> None:
    done = serve(tmp_path, "clip-please")
    assert done.returncode != 0
    assert "unknown model id 'clip-please'" in done.stderr


def test_world_writes_files_and_captions(tmp_path: Path) -> None:

    assert main(["world", "--out", str(tmp_path / "w"), "--images", "3", "--sounds", "2"]) == 0
    lines = (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        entry = json.loads(line)
        assert (tmp_path / "w" / entry["file"]).is_file() and entry["caption"]


def test_eval_of_a_model_that_cannot_load_says_why(capsys: pytest.CaptureFixture[str]) -> None:

    assert main(["eval", "--model", "mmr-mini@/nonexistent"]) == 1
    assert "mmr train-mini" in capsys.readouterr().out


def test_tiny_clap_then_bootstrap_audio_writes_a_head_the_server_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMR_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        assert main(["tiny-clap", "--out", str(tmp_path / "clap")]) == 0
        corpus = tmp_path / "captions.txt"
        corpus.write_text("\n".join(f"sound number {i} in room {i % 7}" for i in range(200)))
        argv = ["bootstrap-audio", "--model", "random:mmr-tiny", "--corpus", str(corpus)]
        assert main([*argv, "--audio-model", f"clap:{tmp_path / 'clap'}"]) == 0
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert "| contrastive |" in out and "MMR_AUDIO_HEAD=" in out
    # Progress, as plain lines away from a terminal: both towers' captions, then the epochs.
    assert "captions, audio model: 200/200 (100%)" in err
    assert "captions, image model: 200/200 (100%)" in err
    assert "fitting the head: " in err
    (written,) = (tmp_path / "data" / "aligners").glob("*.safetensors")
    aligner = Aligner.load(written)
    assert aligner.meta["corpus"] == "captions.txt" and aligner.heads["audio"].kind == "linear"
    assert aligner.meta["bootstrap"]["pairs"] == 200


def test_bootstrap_audio_needs_a_clap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap-audio", "--model", "random:mmr-tiny", "--audio-model", "none"]) == 1
    assert "nothing to bridge" in capsys.readouterr().out
    assert main(["bootstrap-audio", "--model", "mmr-mini", "--audio-model", "clap:"]) == 1
    assert "unknown audio model id" in capsys.readouterr().out
