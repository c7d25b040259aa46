"""A tiny random CLAP on disk, built offline, so that the real ``clap:`` loading path is tested
without the hub.

It is a genuine transformers ``ClapModel`` + ``ClapProcessor`` directory, as ``save_pretrained``
writes it for laion/clap-htsat-unfused, only small: its weights are seeded noise, so its
features are deterministic but mean nothing.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

MEL_BINS = 16
# The HTSAT folds time into SPEC_SIZE // MEL_BINS rows of a SPEC_SIZE x SPEC_SIZE image, so it
# takes at most SPEC_SIZE**2 // MEL_BINS time frames; the feature extractor's hop is set to fit.
SPEC_SIZE = 64
TEXT_LEN = 64
PROJECTION_DIM = 32
# RoBERTa's special tokens, in the order that gives its ids: <s>=0, <pad>=1, </s>=2.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_SOURCES = [
    "a dog barking",
    "rain falling",
    "a car engine starting",
    "birds singing",
    "a door slamming",
    "people talking",
    "a baby crying",
    "water running",
    "thunder rumbling",
    "a bell ringing",
    "footsteps",
    "a siren wailing",
    "wind blowing",
    "a guitar playing",
    "glass breaking",
    "a cat meowing",
    "an airplane flying overhead",
    "a clock ticking",
    "keys jingling",
    "a crowd applauding",
    "a kettle whistling",
    "waves crashing",
    "a motorcycle accelerating",
    "a violin melody",
]
_SCENES = [
    "in the distance",
    "on a tin roof",
    "in a busy street",
    "in the morning",
    "inside a small room",
    "near the sea",
    "at night",
    "through an open window",
    "in a forest",
    "on a train",
    "in a kitchen",
    "during a thunderstorm",
    "beside a highway",
]
_MANNERS = ["", "loud ", "faint ", "muffled ", "repeated ", "echoing "]


def build_tiny_clap(
    out_dir: Path,
    *,
    seed: int = 0,
    sample_rate: int = 48000,
    window_s: float = 10.0,
    enable_fusion: bool = False,
) -> Path:
    """Write a tiny random CLAP (model, feature extractor, tokenizer) to ``out_dir``.

    The same seed gives the same weights. ``enable_fusion`` builds the fused variant (as
    laion/clap-htsat-fused), whose feature extractor has randomness to keep out of the way.
    """
    from transformers import ClapModel, ClapProcessor

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    extractor = _feature_extractor(sample_rate, window_s, enable_fusion)
    with torch.random.fork_rng(devices=[]):  # seeded without moving the caller's generator
        torch.manual_seed(seed)
        model = ClapModel(_config(len(tokenizer), enable_fusion))
    model.save_pretrained(out_dir)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def _config(vocab_size: int, enable_fusion: bool) -> Any:
    from transformers import ClapConfig

    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": TEXT_LEN + 2,  # positions start after the pad id 1
    }
    audio = {
        "num_mel_bins": MEL_BINS,
        "spec_size": SPEC_SIZE,
        "patch_size": 4,
        "patch_stride": 4,  # a 16 x 16 grid, then 8 x 8: both divisible by the window
        "window_size": 4,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "num_hidden_layers": 2,
        "patch_embeds_hidden_size": 16,
        "hidden_size": 32,  # the last stage's width: 16 * 2 ** (len(depths) - 1)
        "num_classes": 8,
        "enable_fusion": enable_fusion,
        "fusion_type": "aff_2d" if enable_fusion else None,
    }
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=PROJECTION_DIM)


def _feature_extractor(sample_rate: int, window_s: float, enable_fusion: bool) -> Any:
    from transformers import ClapFeatureExtractor

    window = round(window_s * sample_rate)
    frames = SPEC_SIZE * (SPEC_SIZE // MEL_BINS)
    return ClapFeatureExtractor(
        feature_size=MEL_BINS,
        sampling_rate=sample_rate,
        hop_length=math.ceil(window / (frames - 1)),  # window // hop + 1 frames must fit
        # An int when it can be: the extractor pads to max_length_s * rate samples.
        max_length_s=int(window_s) if float(window_s).is_integer() else window_s,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=min(14000, sample_rate // 2),
        truncation="fusion" if enable_fusion else "rand_trunc",
        padding="repeatpad",
    )


def _tokenizer() -> Any:
    """A byte-level BPE trained on a few sound descriptions, loaded as RoBERTa's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_captions(), trainer)
    # vocab.json + merges.txt is the one form every transformers version loads as RoBERTa.
    with tempfile.TemporaryDirectory() as tmp:
        bpe.model.save(tmp)
        return RobertaTokenizerFast.from_pretrained(tmp, model_max_length=TEXT_LEN)


def _captions() -> list[str]:
    triples = itertools.product(_MANNERS, _SOURCES, _SCENES)
    return [f"{how}{what} {where}" for how, what, where in triples]
