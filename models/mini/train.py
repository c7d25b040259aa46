"""``mmr train-mini``: mmr-mini from scratch on generated pairs, on CPU, in minutes.

Pools of rendered images and synthesised clips are built once (images preprocessed the
way the service preprocesses them, clips resampled and turned into log-mels); each step
draws a fresh caption for every sampled thing, so captions vary across epochs. Image-text
and audio-text batches alternate through the shared text tower; look-alikes inside a batch
count as positives (``describes``), not as negatives.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch

from models.mini.audio import windows
from models.mini.model import MiniModel, save_mini
from models.training import contrastive_loss, cosine_lr
from models.world.pairs import audio_pairs, image_pairs
from models.world.vocabulary import Caption, Thing, describes

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; stored in the model card so a run can be reproduced."""

    seed: int = 0
    image_pool: int = 20000
    audio_pool: int = 6000
    two_shapes: float = 0.5
    steps: int = 450
    image_batch: int = 128
    audio_batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 40
    threads: int = 2


@dataclass
class Pool:
    """Model inputs built once, the things they show, and how to caption them afresh."""

    inputs: torch.Tensor
    things: list[Thing]
    caption: Callable[[Thing, random.Random], Caption]


def build_image_pool(cfg: TrainConfig, model: MiniModel, log: Log) -> Pool:
    """Render, preprocess and stack the training images (float16 to halve the memory)."""
    start = time.monotonic()
    pairs = image_pairs(cfg.image_pool, seed=cfg.seed, two_shapes=cfg.two_shapes)
    pixels = torch.stack([model.preprocess(p.image) for p in pairs]).half()
    log(f"image pool: {len(pairs)} renders in {time.monotonic() - start:.0f} s")
    return Pool(pixels, [p.scene for p in pairs], _recaption_image)


def build_audio_pool(cfg: TrainConfig, model: MiniModel, log: Log) -> Pool:
    """Synthesise clips, resample them to the tower's rate and precompute log-mels."""
    start = time.monotonic()
    pairs = audio_pairs(cfg.audio_pool, seed=cfg.seed + 1)
    rate = model.audio_cfg.sample_rate
    waves = [windows(_resample(p.wave, p.sample_rate, rate), model.audio_cfg)[0] for p in pairs]
    mels = []
    with torch.inference_mode():
        for i in range(0, len(waves), 256):
            mels.append(model.audio.front(torch.from_numpy(np.stack(waves[i : i + 256]))))
    log(f"audio pool: {len(pairs)} clips in {time.monotonic() - start:.0f} s")
    return Pool(torch.cat(mels).half(), [p.sound for p in pairs], _recaption_sound)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave.astype(np.float32)
    return np.asarray(soxr.resample(wave, rate, target), dtype=np.float32)


def _recaption_image(thing: Thing, rng: random.Random) -> Caption:
    from models.world.images import caption_scene

    return caption_scene(thing, np.random.default_rng(rng.getrandbits(32)))


def _recaption_sound(thing: Thing, rng: random.Random) -> Caption:
    from models.world.sounds import caption_sound

    return caption_sound(thing, np.random.default_rng(rng.getrandbits(32)))


def positives(captions: Sequence[Caption], things: Sequence[Thing]) -> torch.Tensor:
    """``[i, j]`` is 1 where caption i is true of thing j."""
    said = [_facts(c.mentions) for c in captions]
    has = [_facts(t.objects) for t in things]
    out = torch.zeros(len(captions), len(things))
    for i, caption in enumerate(captions):
        for j, thing in enumerate(things):
            # Every stated fact must hold for some object: a cheap filter before the matcher.
            if said[i] <= has[j] and describes(caption.mentions, thing.objects):
                out[i, j] = 1.0
    return out


def _facts(objects: Sequence[Mapping[str, str]]) -> frozenset[tuple[str, str]]:
    return frozenset(item for obj in objects for item in obj.items())


def _batch_loss(
    model: MiniModel, pool: Pool, idx: list[int], rng: random.Random, audio: bool
) -> torch.Tensor:
    things = [pool.things[i] for i in idx]
    captions = [pool.caption(t, rng) for t in things]
    tokens = model.tokenizer([c.text for c in captions])
    inputs = pool.inputs[idx].float()
    if audio:
        feats, scale = model.audio.encode_mels(inputs), model.audio_logit_scale
    else:
        feats, scale = model.encode_image(inputs), model.clip.logit_scale
    text = model.encode_text(tokens)
    return contrastive_loss(feats, text, scale, positives(captions, things))


def train_mini(cfg: TrainConfig, out_dir: Path, *, log: Log = print) -> dict[str, Any]:
    """Train from scratch and write ``out_dir``; returns the model card (without evaluation)."""
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels down by orders of magnitude
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    model = MiniModel()
    images = build_image_pool(cfg, model, log)
    sounds = build_audio_pool(cfg, model, log)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
    )
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, total=cfg.steps, warmup=cfg.warmup, peak=cfg.lr)
        img_idx = rng.sample(range(len(images.things)), cfg.image_batch)
        aud_idx = rng.sample(range(len(sounds.things)), cfg.audio_batch)
        loss_img = _batch_loss(model, images, img_idx, rng, audio=False)
        loss_aud = _batch_loss(model, sounds, aud_idx, rng, audio=True)
        opt.zero_grad(set_to_none=True)
        (loss_img + loss_aud).backward()
        opt.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            log(
                f"step {step:4d}/{cfg.steps}  image-text {loss_img.item():.3f}  "
                f"audio-text {loss_aud.item():.3f}  {time.monotonic() - started:.0f} s"
            )
    model.eval()
    card = {"train": asdict(cfg), "train_seconds": round(time.monotonic() - started)}
    save_mini(model, out_dir, card)
    return card
