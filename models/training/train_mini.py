"""``mmr train-mini``: mmr-mini from scratch on generated pairs, on CPU, in minutes.

Pools of rendered images and synthesised clips are built once (images preprocessed the
way the service preprocesses them, clips resampled and turned into log-mels); each step
draws a fresh caption for every sampled thing, so captions vary from step to step. Image-text
and audio-text batches alternate through the shared text tower; look-alikes inside a batch
count as positives (``describes``), not as negatives.

It runs the training loop (:mod:`models.training.loop`) as one epoch of ``steps`` steps, with
no early stop, deadline or cancel: there is no fixed training set to go through in epochs
(every step draws afresh), and the held-out check is ``mmr eval`` on rendered media after
training, too slow to run between epochs.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.encoders.mini.audio import pad_window
from models.encoders.mini.model import MiniModel, save_mini
from models.synth.world.images import Scene, caption_scene, render_scene, sample_scene, vary_scene
from models.synth.world.pairs import audio_pair, item_rngs
from models.synth.world.sounds import Sound, caption_sound
from models.synth.world.vocabulary import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Caption,
    Thing,
    describes,
)
from models.training.batches import Steps
from models.training.budget import Budget
from models.training.contrastive import contrastive_loss, cosine_lr
from models.training.loop import Progress, StepLoss, train_epochs
from models.training.optimiser import Stepper

Log = Callable[[str], None]
_CHUNK = 500  # items per generation task


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; stored in the model card so a run can be reproduced."""

    seed: int = 0
    image_pool: int = 24000
    audio_pool: int = 6000
    two_shapes: float = 0.5
    steps: int = 900
    image_batch: int = 128
    audio_batch: int = 64
    audio_every: int = 3  # sounds are learnt faster than shapes: an audio batch every 3rd step
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


def build_image_pool(
    cfg: TrainConfig, model: MiniModel, log: Log, progress: Progress | None = None
) -> Pool:
    """Render, preprocess and stack the training images (float16 to halve the memory).

    Items 2i and 2i+1 are a scene and its sibling (one attribute changed, ``vary_scene``).
    """
    start = time.monotonic()
    jobs = [
        (cfg.seed, a, min(a + _CHUNK, cfg.image_pool // 2), cfg.two_shapes)
        for a in range(0, cfg.image_pool // 2, _CHUNK)
    ]
    scenes, pixels = [], []
    for chunk in _parallel(_render_chunk, jobs, cfg.threads):
        for scene, image in chunk:
            scenes.append(scene)
            pixels.append(model.preprocess(image).half())
        if progress is not None:
            progress("rendering images", len(scenes), 2 * (cfg.image_pool // 2))
    log(f"image pool: {len(scenes)} renders in {time.monotonic() - start:.0f} s")
    return Pool(torch.stack(pixels), scenes, _recaption_image)


def _render_chunk(job: tuple[int, int, int, float]) -> list[tuple[Scene, Image.Image]]:
    seed, first, stop, two_shapes = job
    out = []
    for i in range(first, stop):
        content, _, render_a, render_b = item_rngs(seed, 0, i)
        scene = sample_scene(content, two_shapes=two_shapes)
        for thing, rng in ((scene, render_a), (vary_scene(scene, content), render_b)):
            out.append((thing, render_scene(thing, rng)))
    return out


def build_audio_pool(
    cfg: TrainConfig, model: MiniModel, log: Log, progress: Progress | None = None
) -> Pool:
    """Synthesise clips, resample them to the tower's rate and precompute log-mels."""
    start = time.monotonic()
    rate = model.audio_cfg.sample_rate
    jobs = [
        (cfg.seed + 1, a, min(a + _CHUNK, cfg.audio_pool), rate)
        for a in range(0, cfg.audio_pool, _CHUNK)
    ]
    sounds, waves = [], []
    for chunk in _parallel(_synth_chunk, jobs, cfg.threads):
        for sound, wave in chunk:
            sounds.append(sound)
            waves.append(pad_window(wave, model.audio_cfg))
        if progress is not None:
            progress("synthesising sounds", len(sounds), cfg.audio_pool)
    mels = []
    with torch.inference_mode():
        for i in range(0, len(waves), 256):
            mels.append(model.audio.front(torch.from_numpy(np.stack(waves[i : i + 256]))))
    log(f"audio pool: {len(sounds)} clips in {time.monotonic() - start:.0f} s")
    return Pool(torch.cat(mels).half(), sounds, _recaption_sound)


def _synth_chunk(job: tuple[int, int, int, int]) -> list[tuple[Sound, np.ndarray]]:
    seed, first, stop, rate = job
    out = []
    for i in range(first, stop):
        pair = audio_pair(seed, i)
        out.append((pair.sound, _resample(pair.wave, pair.sample_rate, rate)))
    return out


def _parallel(fn: Callable[[Any], list[Any]], jobs: list[Any], workers: int) -> Iterator[list[Any]]:
    """Generation is pure numpy/Pillow work: spread it over processes (spawned, so no
    process inherits torch's thread pools). Results come in the jobs' order, each as soon as
    it and those before it are done."""
    if workers <= 1 or len(jobs) <= 1:
        yield from (fn(job) for job in jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(fn, jobs)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave.astype(np.float32)
    return np.asarray(soxr.resample(wave, rate, target), dtype=np.float32)


def _recaption_image(thing: Thing, rng: random.Random) -> Caption:
    return caption_scene(thing, np.random.default_rng(rng.getrandbits(32)))


def _recaption_sound(thing: Thing, rng: random.Random) -> Caption:
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


class AttributeHeads(nn.Module):
    """Training-only linear probes that predict the world's attributes from features.

    Contrastive loss alone first settles on colour (the cheapest cue that tells most of a
    batch apart) and stays on that plateau for hundreds of steps; asking both towers to
    expose shape, position and size linearly gets past it. Not part of the saved model.
    """

    def __init__(self, dim: int, facts: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.facts = list(facts)
        self.index = {f: i for i, f in enumerate(self.facts)}
        self.image = nn.Linear(dim, len(self.facts))
        self.text = nn.Linear(dim, len(self.facts))

    def targets(self, groups: Sequence[Sequence[Mapping[str, str]]]) -> torch.Tensor:
        """Multi-hot of the facts each group (a thing's objects, a caption's mentions) has."""
        out = torch.zeros(len(groups), len(self.facts))
        for row, objects in enumerate(groups):
            for fact in _facts(objects):
                if fact in self.index:
                    out[row, self.index[fact]] = 1.0
        return out

    def mask(self, groups: Sequence[Sequence[Mapping[str, str]]]) -> torch.Tensor:
        """1 for the facts of the keys a caption speaks about, 0 for keys it leaves open."""
        keys = [{k for obj in objects for k in obj} for objects in groups]
        return torch.tensor([[float(k in said) for k, _ in self.facts] for said in keys])

    def loss(
        self, image: torch.Tensor, text: torch.Tensor, things: list[Thing], captions: list[Caption]
    ) -> torch.Tensor:
        mentions = [c.mentions for c in captions]
        seen = F.binary_cross_entropy_with_logits(
            self.image(image), self.targets([t.objects for t in things])
        )
        said = F.binary_cross_entropy_with_logits(
            self.text(text), self.targets(mentions), weight=self.mask(mentions)
        )
        return seen + said


IMAGE_FACTS = [
    (key, value)
    for key, values in (
        ("shape", SHAPES),
        ("colour", COLOURS),
        ("position", POSITIONS),
        ("size", SIZES),
    )
    for value in values
]


def _batch_loss(
    model: MiniModel,
    pool: Pool,
    idx: list[int],
    rng: random.Random,
    audio: bool,
    heads: AttributeHeads | None = None,
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
    loss = contrastive_loss(feats, text, scale, positives(captions, things))
    if heads is not None:
        loss = loss + heads.loss(feats, text, things, captions)
    return loss


class _Objective:
    """One step's loss: an image-text batch, and an audio-text batch every ``audio_every`` steps.

    The step's examples are drawn here, not by a batch source, from the one random stream
    that also draws their captions: the draws then stay in the recipe's order (images,
    their captions, sounds, theirs), so a seed trains the same model it always did.
    """

    def __init__(
        self, model: MiniModel, images: Pool, sounds: Pool, heads: AttributeHeads, cfg: TrainConfig
    ) -> None:
        self.model, self.heads, self.cfg = model, heads, cfg
        self.images, self.sounds = images, sounds
        self.rng = random.Random(cfg.seed)
        self.audio_loss = torch.tensor(float("nan"))

    def __call__(self, step: int) -> StepLoss:
        cfg = self.cfg
        img_idx = [
            i
            for s in self.rng.sample(range(len(self.images.things) // 2), cfg.image_batch // 2)
            for i in (2 * s, 2 * s + 1)
        ]
        loss_img = _batch_loss(
            self.model, self.images, img_idx, self.rng, audio=False, heads=self.heads
        )
        loss = loss_img
        if step % cfg.audio_every == 0:
            aud_idx = self.rng.sample(range(len(self.sounds.things)), cfg.audio_batch)
            self.audio_loss = _batch_loss(self.model, self.sounds, aud_idx, self.rng, audio=True)
            loss = loss + self.audio_loss
        return StepLoss(minimise=loss, report=loss_img)


def train_mini(
    cfg: TrainConfig, out_dir: Path, *, log: Log = print, progress: Progress | None = None
) -> dict[str, Any]:
    """Train from scratch and write ``out_dir``; returns the model card (without evaluation).
    ``log`` hears the losses every 25 steps, ``progress(stage, done, total)`` every step."""
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels down by orders of magnitude
    torch.manual_seed(cfg.seed)
    budget = Budget.start()
    model = MiniModel()
    images = build_image_pool(cfg, model, log, progress)
    sounds = build_audio_pool(cfg, model, log, progress)
    heads = AttributeHeads(model.audio.proj.out_features, IMAGE_FACTS)
    model.train()
    named = [*model.named_parameters(), *heads.named_parameters(prefix="heads")]
    decay = [p for n, p in named if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in named if p.ndim < 2 or "logit_scale" in n]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0},
    ]
    schedule = functools.partial(cosine_lr, total=cfg.steps, warmup=cfg.warmup, peak=cfg.lr)
    objective = _Objective(model, images, sounds, heads, cfg)

    def log_step(step: int, loss: StepLoss) -> None:
        if progress is not None:
            progress("training", step + 1, cfg.steps)
        if step % 25 == 0 or step == cfg.steps - 1:
            log(
                f"step {step:4d}/{cfg.steps}  image-text (+ probes) {loss.report.item():.3f}  "
                f"audio-text {objective.audio_loss.item():.3f}  {budget.elapsed():.0f} s"
            )

    train_epochs(
        batches=Steps(cfg.steps),
        objective=objective,
        stepper=Stepper.adamw(groups, lr=cfg.lr, schedule=schedule),
        max_epochs=1,
        budget=budget,
        on_step=log_step,
    )
    model.eval()
    card = {"train": asdict(cfg), "train_seconds": round(budget.elapsed())}
    save_mini(model, out_dir, card)
    return card
