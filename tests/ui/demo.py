"""A collection the page can show: renders, captions and sounds of mmr-mini's own world.

Used by the browser tests (tests/ui) and by ``python -m tests.ui.demo URL`` to fill a running
server for a look (or the docs' screenshots, tests/ui/screenshots.py).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field

import httpx
import numpy as np

from models.synth.world.images import caption_scene, render_scene, sample_scene
from models.synth.world.sounds import Sound, synthesize

COLLECTION = "demo"
RATE = 16_000


@dataclass
class Demo:
    """What was stored: ids by kind, each render's caption, and the long sound's layout."""

    images: dict[str, str] = field(default_factory=dict)  # id -> its caption
    texts: dict[str, str] = field(default_factory=dict)  # id -> text
    sounds: list[str] = field(default_factory=list)
    long_sound: str = "sound-long.wav"
    tone_at: float = 0.0  # where the high tone starts in the long sound, seconds


def jpeg(image: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)  # type: ignore[attr-defined]
    return out.getvalue()


def wav(wave: np.ndarray) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, np.clip(wave, -1, 1), RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def clip(attrs: dict[str, str], rng: np.random.Generator) -> np.ndarray:
    wave, _ = synthesize(Sound(objects=(attrs,)), rng, style="train", sample_rate=RATE)
    return wave.astype(np.float32)


def seed(url: str, *, key: str | None = None, images: int = 12, seed_: int = 0) -> Demo:
    """Create the demo collection on a server of mmr-mini and fill it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    rng = np.random.default_rng(seed_)
    demo = Demo()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        http.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
        base = f"/v1/collections/{COLLECTION}/items"
        for n in range(images):
            scene = sample_scene(rng, two_shapes=0.0)
            caption = caption_scene(scene, rng, detail="full").text
            item_id = f"picture-{n:02d}.jpg"
            picture = jpeg(render_scene(scene, np.random.default_rng([seed_, n])))
            files = {"file": (f"{n}.jpg", picture, "image/jpeg")}
            data = {"id": item_id, "metadata": f'{{"group": "g{n}", "kind": "picture"}}'}
            http.post(base, files=files, data=data).raise_for_status()
            demo.images[item_id] = caption
            text_id = f"caption-{n:02d}"
            http.post(
                base, json={"id": text_id, "text": caption, "metadata": {"group": f"g{n}"}}
            ).raise_for_status()
            demo.texts[text_id] = caption
        # Short sounds of a few kinds, and a long one: noise, then a high tone, then noise.
        for n, attrs in enumerate(
            [{"kind": "chirp", "direction": "rising"}, {"kind": "noise"}, {"kind": "chord"}]
        ):
            item_id = f"sound-{n}.wav"
            files = {"file": (f"{n}.wav", wav(clip(attrs, rng)), "audio/wav")}
            http.post(base, files=files, data={"id": item_id}).raise_for_status()
            demo.sounds.append(item_id)
        noise = clip({"kind": "noise"}, rng) * 0.3
        tone = clip({"kind": "tone", "pitch": "high"}, rng)
        quiet = np.zeros(RATE * 4, dtype=np.float32)
        long = np.concatenate([quiet, noise, quiet, tone, quiet])
        demo.tone_at = (2 * len(quiet) + len(noise)) / RATE
        files = {"file": ("long.wav", wav(long), "audio/wav")}
        http.post(base, files=files, data={"id": demo.long_sound}).raise_for_status()
        demo.sounds.append(demo.long_sound)
    return demo


if __name__ == "__main__":
    seed(sys.argv[1], key=sys.argv[2] if len(sys.argv) > 2 else None)
