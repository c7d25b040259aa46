"""MiniModel: open_clip's image/text towers for ``mmr-mini`` plus the audio tower, one file.

Weights live in a directory: ``model.safetensors`` (every tensor, ``clip.*`` and ``audio.*``)
and ``model.json`` (architecture, audio front end, training recipe, data seed, evaluation
numbers and the weights' sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from models.encoders.architectures import register_project_configs
from models.encoders.mini.audio import AudioConfig, AudioTower
from models.encoders.mini.tokenizer import FoldedTokenizer
from models.runtime.notices import without_notice

ARCH = "mmr-mini"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


class MiniModel(nn.Module):
    """Image, text and audio towers whose outputs share one space (before normalisation)."""

    def __init__(self, audio_cfg: AudioConfig | None = None) -> None:
        super().__init__()
        import open_clip

        register_project_configs()
        # open_clip warns that the model is randomly initialised; our weights come next.
        with without_notice("initialized randomly"):
            clip, _, preprocess = open_clip.create_model_and_transforms(
                ARCH, pretrained=None, image_resize_mode="squash"
            )
        self.clip = clip
        self.preprocess: Callable[[Image.Image], torch.Tensor] = preprocess
        text_cfg = open_clip.get_model_config(ARCH)["text_cfg"]
        self.tokenizer = FoldedTokenizer(
            vocab_size=text_cfg["vocab_size"], context_length=text_cfg["context_length"]
        )
        self.audio_cfg = audio_cfg or AudioConfig()
        embed_dim = int(open_clip.get_model_config(ARCH)["embed_dim"])
        self.audio = AudioTower(self.audio_cfg, embed_dim)
        self.audio_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (n, 3, 64, 64) -> raw features."""
        out: torch.Tensor = self.clip.encode_image(pixels)
        return out

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Folded tokens (n, context) -> raw features."""
        out: torch.Tensor = self.clip.encode_text(tokens)
        return out

    def encode_audio(self, waves: torch.Tensor) -> torch.Tensor:
        """16 kHz windows (n, window_samples) -> raw features."""
        out: torch.Tensor = self.audio(waves)
        return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_mini(model: MiniModel, out_dir: Path, card: dict[str, Any]) -> Path:
    """Write weights + card; the card records the weights' sha256. Returns the weights path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(weights), metadata={"arch": ARCH})
    full = {
        **card,
        "arch": ARCH,
        "audio": model.audio_cfg.to_dict(),
        "sha256": sha256_file(weights),
    }
    (out_dir / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return weights


def read_card(weights_dir: Path) -> dict[str, Any]:
    """The model card of a weights directory."""
    card: dict[str, Any] = json.loads((weights_dir / CARD_FILE).read_text())
    return card


def load_mini(weights_dir: Path, *, device: str = "cpu") -> MiniModel:
    """Load weights written by :func:`save_mini`, refusing a file whose checksum differs."""
    card = read_card(weights_dir)
    weights = weights_dir / WEIGHTS_FILE
    actual = sha256_file(weights)
    if actual != card.get("sha256"):
        raise ValueError(
            f"{weights} does not match the sha256 in its {CARD_FILE} "
            f"({actual} != {card.get('sha256')}); the file is corrupt or from another run"
        )
    model = MiniModel(AudioConfig(**card["audio"]))
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.to(device).eval()
