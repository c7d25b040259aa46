"""A shipped corpus of natural English sound captions.

The captions (AudioCaps/Clotho-style descriptions and AudioSet/ESC-50-style labels) let an
audio aligner head be bootstrapped from text alone: CLAP's and CLIP's text towers embed the
same captions and a head learns to map one space onto the other. ``sound_captions.txt`` is
``build_sound_captions()`` written out; ``python -m models.corpus.sounds`` rewrites it.

The names below load ``models.corpus.sounds`` on first use, so running that module with
``-m`` does not import it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.corpus.sounds import (
        SHIPPED_CAPTIONS,
        Caption,
        build_caption_records,
        build_sound_captions,
        load_sound_captions,
    )

__all__ = [
    "SHIPPED_CAPTIONS",
    "Caption",
    "build_caption_records",
    "build_sound_captions",
    "load_sound_captions",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models.corpus import sounds

        return getattr(sounds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
