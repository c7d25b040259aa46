"""Progress of the long commands: a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest

import models.training.train_mini as train_mini
from app.cli import main
from app.progress import PLAIN_EVERY_S, Stages


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_come_first_then_now_and_then_then_last() -> None:
    err, clock = io.StringIO(), Clock()
    with Stages(err, clock=clock) as stages:
        for done in range(1, 101):
            clock.now += PLAIN_EVERY_S / 40  # 100 steps in 2.5 periods
            stages("training", done, 100)
    lines = err.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        "training: 1/100 (1%)",
        "training: 41/100 (41%)",
        "training: 81/100 (81%)",
        "training: 100/100 (100%)",
    ]
    assert lines[1] == "training: 41/100 (41%) · 0m10s · ETA 0m14s"
    assert lines[-1] == "training: 100/100 (100%) · 0m24s"


def test_a_stage_cut_short_ends_with_its_last_report() -> None:
    err, clock = io.StringIO(), Clock()
    with Stages(err, clock=clock) as stages:
        stages("fitting", 1, 200)
        stages("fitting", 37, 200)  # early stop: never 200/200
        stages("saving", 1, 1)
        stages("checking", 2, 5)
    lines = [line.split(" · ")[0] for line in err.getvalue().splitlines()]
    assert lines == [
        "fitting: 1/200 (0%)",
        "fitting: 37/200 (18%)",
        "saving: 1/1 (100%)",
        "checking: 2/5 (40%)",
        "checking: 2/5 (40%)",
    ]


def test_a_terminal_gets_one_bar_rewritten_in_place() -> None:
    err, clock = Terminal(), Clock()
    with Stages(err, clock=clock) as stages:
        for done in range(1, 11):
            clock.now += 0.1
            stages("rendering", done, 10)
    out = err.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # the finished bar stays
    frames = [frame.split(" · ")[0] for frame in out.split("\r\x1b[2K")[1:]]
    assert frames == [  # at most one every TTY_EVERY_S, and the last
        "rendering: [##----------------------] 1/10 (10%)",
        "rendering: [##########--------------] 4/10 (40%)",
        "rendering: [#################-------] 7/10 (70%)",
        "rendering: [########################] 10/10 (100%)",
    ]


def test_a_line_said_during_a_bar_does_not_tear_it(capsys: pytest.CaptureFixture[str]) -> None:
    err, clock = Terminal(), Clock()
    stages = Stages(err, clock=clock)
    stages("training", 1, 4)
    stages.say("step 1/4 loss 2.0")
    assert capsys.readouterr().out == "step 1/4 loss 2.0\n"
    assert err.getvalue().endswith(
        "\r\x1b[2K\r\x1b[2Ktraining: [######------------------] 1/4 (25%) · 0m00s · ETA 0m00s"
    )


def test_world_reports_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "--out", str(tmp_path / "w"), "--images", "3", "--sounds", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" · ")[0] for line in err] == [
        "writing images: 1/3 (33%)",
        "writing images: 3/3 (100%)",
        "writing sounds: 1/2 (50%)",
        "writing sounds: 2/2 (100%)",
    ]


def test_eval_reports_each_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--pairs", "8"]) == 0
    err = capsys.readouterr().err
    for stage in ("held-out images", "held-out sounds", "shifted images", "shifted sounds"):
        assert f"encoding {stage}: 8/8 (100%)" in err


def test_train_mini_reports_its_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = functools.partial(
        train_mini.TrainConfig, image_pool=16, audio_pool=8, image_batch=8, audio_batch=4
    )
    monkeypatch.setattr(train_mini, "TrainConfig", tiny)
    argv = ["train-mini", "--out", str(tmp_path / "mini"), "--steps", "3", "--eval-pairs", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "step    2/3" in out  # the losses still go to stdout
    for line in (
        "rendering images: 16/16 (100%)",
        "synthesising sounds: 8/8 (100%)",
        "training: 1/3 (33%)",
        "training: 3/3 (100%)",
        "encoding shifted sounds: 4/4 (100%)",
    ):
        assert line in err, err
