"""``mmr eval``: recall@k of any encoder on held-out generated pairs, both ways, per modality.

Media travel the service's path: each render or clip is written to a file (JPEG/PNG/WebP,
WAV/FLAC/OGG/MP3), decoded by the upload decoders and encoded. A retrieved item counts as
correct when the caption is true of the thing (``describes``): the world has look-alikes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.encoders.aligner import l2_normalize
from models.encoders.audio import AudioEncoder, AudioSegments, pooled
from models.encoders.openclip import Encoder
from models.media.audio import decode_audio
from models.media.image import decode_image
from models.synth.world.images import image_file_bytes
from models.synth.world.pairs import audio_pairs, image_pairs
from models.synth.world.sounds import audio_file_bytes
from models.synth.world.vocabulary import Caption, Thing, describes
from models.training.loop import Progress

KS = (1, 5, 10)
SETS = {"held-out": "train", "shifted": "shifted"}
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Recall:
    """Recall@1/5/10 over ``n`` queries."""

    direction: str
    subset: str
    n: int
    at: dict[int, float]


def recall_at(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    """Share of queries (rows) with a relevant gallery item in their top k."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def relevance(captions: Sequence[Caption], things: Sequence[Thing]) -> np.ndarray:
    """``[i, j]`` true where caption i is true of thing j."""
    return np.array([[describes(c.mentions, t.objects) for t in things] for c in captions])


def _both_ways(
    encoder: Encoder,
    name: str,
    media: np.ndarray,
    captions: Sequence[Caption],
    things: Sequence[Thing],
    subset: np.ndarray | None,
) -> list[Recall]:
    """text->media with every caption as a query, and media->text over the distinct captions
    (a gallery of repeated texts would fill the top k with copies of one answer)."""
    texts = _embed(encoder.encode_texts, [c.text for c in captions], _unsaid)
    rel = relevance(captions, things)
    distinct = list({c.text: c for c in captions}.values())
    gallery = _embed(encoder.encode_texts, [c.text for c in distinct], _unsaid)
    rel_back = relevance(distinct, things).T
    out = []
    for label, rows in (("all", np.ones(len(things), dtype=bool)), ("two shapes", subset)):
        if rows is None or not rows.any():
            continue
        n = int(rows.sum())
        forward = recall_at((texts @ media.T)[rows], rel[rows])
        back = recall_at((media @ gallery.T)[rows], rel_back[rows])
        out.append(Recall(f"text->{name}", label, n, forward))
        out.append(Recall(f"{name}->text", label, n, back))
    return out


def evaluate(
    encoder: Encoder,
    *,
    audio: AudioEncoder | None = None,
    pairs: int = 600,
    seed: int = 1000,
    progress: Progress | None = None,
) -> dict[str, list[Recall]]:
    """Recall tables per evaluation set ("held-out": training renderer, new seed;
    "shifted": the other renderer and synthesiser). ``progress(stage, done, total)`` hears
    of each batch of media encoded."""
    results: dict[str, list[Recall]] = {}
    for offset, (set_name, style) in enumerate(SETS.items()):
        base = seed + 100 * offset
        said = _stage(progress, f"encoding {set_name} images")
        results[set_name] = _image_recalls(encoder, pairs, base, style, said)
        if audio is not None:
            said = _stage(progress, f"encoding {set_name} sounds")
            results[set_name] += _audio_recalls(encoder, audio, pairs, base + 1, style, said)
    return results


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None]:
    """``(done, total)`` of one stage, told to ``progress`` (or to nobody)."""
    if progress is None:
        return _unsaid
    return lambda done, total: progress(stage, done, total)


def _image_recalls(
    encoder: Encoder, n: int, seed: int, style: str, said: Callable[[int, int], None]
) -> list[Recall]:
    pairs = image_pairs(n, seed=seed, style=style)
    rng = np.random.default_rng(seed)
    images = [decode_image(image_file_bytes(p.image, rng)[0], max_pixels=MAX_PIXELS) for p in pairs]
    media = _embed(encoder.encode_images, images, said)
    two = np.array([len(p.scene.objects) == 2 for p in pairs])
    captions, scenes = [p.caption for p in pairs], [p.scene for p in pairs]
    return _both_ways(encoder, "image", media, captions, scenes, two)


def _audio_recalls(
    encoder: Encoder,
    audio: AudioEncoder,
    n: int,
    seed: int,
    style: str,
    said: Callable[[int, int], None],
) -> list[Recall]:
    """Audio against captions; a clip is the mean of its segments, as a search query is."""
    pairs = audio_pairs(n, seed=seed, style=style)
    rng = np.random.default_rng(seed)
    rate = audio.sample_rate
    waves = [
        decode_audio(
            audio_file_bytes(p.wave, p.sample_rate, rng)[0], target_rate=rate, max_seconds=600
        )
        for p in pairs
    ]
    media = _embed(lambda batch: _clips(audio.encode_audio(batch)), waves, said)
    captions, sounds = [p.caption for p in pairs], [p.sound for p in pairs]
    return _both_ways(encoder, "audio", media, captions, sounds, None)


def _clips(recordings: Sequence[AudioSegments]) -> np.ndarray:
    return np.stack([pooled(l2_normalize(r.features)) for r in recordings])


def _unsaid(done: int, total: int) -> None:
    pass


def _embed(
    fn: Callable[[Sequence[Any]], np.ndarray],
    items: Sequence[Any],
    said: Callable[[int, int], None],
) -> np.ndarray:
    parts = []
    for i in range(0, len(items), 128):
        parts.append(fn(items[i : i + 128]))
        said(min(i + 128, len(items)), len(items))
    return l2_normalize(np.concatenate(parts))


def format_table(results: dict[str, list[Recall]]) -> str:
    """A plain-text table, one row per set, direction and subset."""
    head = f"{'set':<9} {'direction':<12} {'subset':<11} {'n':>5}" + "".join(
        f" {'R@' + str(k):>6}" for k in KS
    )
    lines = [head, "-" * len(head)]
    for set_name, rows in results.items():
        for r in rows:
            cells = "".join(f" {r.at[k]:>6.3f}" for k in KS)
            lines.append(f"{set_name:<9} {r.direction:<12} {r.subset:<11} {r.n:>5}{cells}")
    return "\n".join(lines)


def as_card(results: dict[str, list[Recall]], *, pairs: int) -> dict[str, Any]:
    """Evaluation numbers in the model card's JSON form."""
    return {
        "pairs_per_set": pairs,
        "sets": {
            name: [
                {"direction": r.direction, "subset": r.subset, "n": r.n}
                | {f"recall@{k}": round(v, 4) for k, v in r.at.items()}
                for r in rows
            ]
            for name, rows in results.items()
        },
    }
