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
from typing import Protocol

import numpy as np

from models.aligner import Aligner, AlignerFormatError
from models.audio import AudioEncoder
from models.bootstrap import FitConfig, bootstrap_audio_head
from models.corpus import SHIPPED_CAPTIONS, load_sound_captions
from models.encoders import Encoder
from models.errors import ModelLoadError

log = logging.getLogger(__name__)


class TextTower(Protocol):
    """An audio encoder that also embeds text in its own space (CLAP does)."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text features in the audio tower's space."""
        ...


def encoder_ids(encoder: Encoder, audio: AudioEncoder | None) -> dict[str, str]:
    """Per modality, the id of the encoder whose raw features its head takes."""
    ids = {"image": encoder.model_id, "text": encoder.model_id}
    if audio is not None:
        ids["audio"] = audio.model_id
    return ids


def needs_bridge(encoder: Encoder, audio: AudioEncoder | None) -> bool:
    """Whether the audio tower lives in a space of its own (and needs a trained head)."""
    return audio is not None and (audio.model_id != encoder.model_id or audio.dim != encoder.dim)


def identity_aligner(encoder: Encoder, audio: AudioEncoder | None) -> Aligner:
    """Identity heads for every modality (no bridge needed)."""
    return Aligner.identity(encoder.dim, encoder_ids(encoder, audio))


def check_serves(aligner: Aligner, encoder: Encoder, audio: AudioEncoder | None) -> None:
    """ModelLoadError unless an aligner's heads take exactly these encoders' features."""
    want = encoder_ids(encoder, audio)
    if aligner.encoders != want or aligner.dim != encoder.dim:
        raise ModelLoadError(
            f"the aligner was built for {aligner.encoders} (dim {aligner.dim}) but this "
            f"server runs {want} (dim {encoder.dim}); build one for this pair with "
            "`mmr bootstrap-audio`"
        )
    audio_head = aligner.heads.get("audio")
    if audio is not None and audio_head is not None and audio_head.in_dim != audio.dim:
        raise ModelLoadError(
            f"the audio head takes {audio_head.in_dim} dims, CLAP gives {audio.dim}"
        )


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
) -> Aligner:
    """Identity image and text heads plus an audio head bootstrapped from captions."""
    tower = _text_tower(audio)
    started = time.monotonic()
    head, report = bootstrap_audio_head(
        captions=captions, source_text=tower, target_text=encoder.encode_texts, cfg=cfg
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
