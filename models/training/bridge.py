"""The first aligner of a collection: which head each modality gets before any fine-tuning.

Image and text heads start as the identity: the dual encoder's own space. The audio head is
the identity for a model's own audio tower (mmr-mini), and for a CLAP tower the *bridge*: a
linear head bootstrapped from text alone. CLAP's text tower and CLIP's text tower embed the
same sound captions; the head learns to map one onto the other; CLAP audio, which shares
CLAP text's space, then lands next to CLIP text and CLIP images.

    CLAP audio ──► audio head (bootstrapped) ──┐
    CLIP image ──► image head (identity)     ──┼──► shared space (CLIP's)
    CLIP text  ──► text head  (identity)     ──┘
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.encoders.aligner import (
    Aligner,
    AlignerFormatError,
    check_serves,
    identity_aligner,
    needs_bridge,
)
from models.encoders.audio import AudioEncoder
from models.encoders.openclip import Encoder
from models.errors import ModelLoadError
from models.synth.captions.sound_captions import SHIPPED_CAPTIONS, load_sound_captions
from models.training.bootstrap import FitConfig, bootstrap_audio_head
from models.training.loop import Progress

log = logging.getLogger(__name__)


def bridge_file(root: Path, encoder: Encoder, audio: AudioEncoder, corpus: Sequence[str]) -> Path:
    """Where the bootstrap head of this encoder pair and corpus is cached."""
    digest = hashlib.sha256("\n".join(corpus).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{audio.model_id}--{encoder.model_id}")[:160]
    return root / f"{slug}--{digest}.safetensors"


def build_bridge(
    encoder: Encoder,
    audio: AudioEncoder,
    *,
    captions: Sequence[str],
    cfg: FitConfig = FitConfig(),
    corpus_name: str = "shipped",
    progress: Progress | None = None,
) -> Aligner:
    """Identity image and text heads plus an audio head bootstrapped from captions
    (``progress`` hears of the captions embedded and the epochs fitted)."""
    tower = _text_tower(audio)
    started = time.monotonic()
    head, report = bootstrap_audio_head(
        captions=captions,
        source_text=tower,
        target_text=encoder.encode_texts,
        cfg=cfg,
        progress=progress,
    )
    base = identity_aligner(encoder, None)
    return base.with_head(
        "audio",
        head,
        audio.model_id,
        kind="bootstrap",
        corpus=corpus_name,
        bootstrap=report.as_meta(),
        seconds=round(time.monotonic() - started, 1),
    )


def _text_tower(audio: AudioEncoder) -> Callable[[list[str]], np.ndarray]:
    encode: Callable[[list[str]], np.ndarray] | None = getattr(audio, "encode_texts", None)
    if encode is None:
        raise ModelLoadError(f"{audio.model_id} has no text tower to bootstrap a head from")
    return encode


def default_aligner(
    encoder: Encoder,
    audio: AudioEncoder | None,
    *,
    head_file: Path | None,
    cache_dir: Path,
    say: Callable[[str], None] = log.warning,
) -> Aligner:
    """The aligner new collections start from.

    With a CLAP tower: the artefact in ``head_file`` when given (strict), else the cached
    bootstrap for this pair, else a bootstrap trained now on the shipped corpus and cached.
    """
    if audio is None or not needs_bridge(encoder, audio):
        return identity_aligner(encoder, audio)
    if head_file is not None:
        return _read(head_file, encoder, audio)
    captions = load_sound_captions()
    cached = bridge_file(cache_dir, encoder, audio, captions)
    if cached.is_file():
        return _read(cached, encoder, audio)
    say(
        f"no audio head for {audio.model_id} -> {encoder.model_id}: bootstrapping one from "
        f"{len(captions)} captions in {SHIPPED_CAPTIONS.name} (once; cached in {cached})"
    )
    aligner = build_bridge(encoder, audio, captions=captions)
    aligner.save(cached)
    return aligner


def _read(path: Path, encoder: Encoder, audio: AudioEncoder) -> Aligner:
    try:
        aligner = Aligner.load(path)
    except (OSError, AlignerFormatError) as exc:
        raise ModelLoadError(f"cannot read the aligner head {path}: {exc}") from exc
    check_serves(aligner, encoder, audio)
    return aligner
