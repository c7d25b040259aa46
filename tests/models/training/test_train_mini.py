"""Training mmr-mini: the contrastive loss with look-alikes, and a tiny training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoders.mini.audio import AudioConfig
from models.encoders.mini.model import load_mini
from models.encoders.registry import load_model
from models.training.contrastive import contrastive_loss
from models.training.train_mini import TrainConfig, train_mini


def test_contrastive_loss_lets_look_alikes_stay_together() -> None:
    scale = torch.tensor(np.log(10.0))
    tied = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two captions of the same kind of thing
    apart = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    both = torch.ones(2, 2)
    # Plain InfoNCE rewards pushing look-alikes apart; with them marked positive the loss
    # prefers them together, which is what a query for either should find.
    assert contrastive_loss(apart, apart, scale) < contrastive_loss(tied, tied, scale)
    assert contrastive_loss(tied, tied, scale, both) < contrastive_loss(apart, apart, scale, both)


@pytest.mark.slow
def test_a_tiny_training_run_writes_a_loadable_model(tmp_path: Path) -> None:
    cfg = TrainConfig(image_pool=48, audio_pool=24, steps=3, image_batch=16, audio_batch=8)
    card = train_mini(cfg, tmp_path / "mini", log=lambda line: None)
    assert card["train"]["steps"] == 3
    loaded = load_mini(tmp_path / "mini")
    assert loaded.audio_cfg == AudioConfig()
    encoder = load_model(f"mmr-mini@{tmp_path / 'mini'}", device="cpu").encoder
    assert encoder.encode_texts(["two beeps"]).shape == (1, 128)
