"""The generated world mmr-mini is trained on: captioned images of shapes and captioned sounds.

Everything is deterministic by seed. Captions and things are attribute dicts, so one matcher
(``describes``) serves both modalities. Two rendering styles with separate code paths:
"train" for training data and "shifted" for an evaluation set drawn differently.

What a trainer needs to know: "train" images are RGB, 64-160 px a side (30% mildly
non-square, aspect 0.8-1.25), "shifted" ones square 96-256 px, so resize to the model's
input. Clips are mono float32, 1-3 s, at 8-48 kHz (or a fixed ``sample_rate``), so resample.
Captions use only the words in ``WORDS``.
"""

from models.synth.world.images import (
    Scene,
    caption_scene,
    image_file_bytes,
    render_scene,
    sample_scene,
)
from models.synth.world.pairs import (
    AudioPair,
    ImagePair,
    audio_pair,
    audio_pairs,
    image_pair,
    image_pairs,
    write_demo_set,
)
from models.synth.world.sounds import (
    Sound,
    audio_file_bytes,
    caption_sound,
    sample_sound,
    synthesize,
)
from models.synth.world.vocabulary import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    WORDS,
    Attrs,
    Caption,
    Thing,
    describes,
    parse_caption,
)

__all__ = [
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "WORDS",
    "Attrs",
    "AudioPair",
    "Caption",
    "ImagePair",
    "Scene",
    "Sound",
    "Thing",
    "audio_file_bytes",
    "audio_pair",
    "audio_pairs",
    "caption_scene",
    "caption_sound",
    "describes",
    "image_file_bytes",
    "image_pair",
    "image_pairs",
    "parse_caption",
    "render_scene",
    "sample_scene",
    "sample_sound",
    "synthesize",
    "write_demo_set",
]
