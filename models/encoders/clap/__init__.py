"""CLAP as an audio tower: LAION's audio-text model through transformers, cut into windows."""

from models.encoders.clap.encoder import ClapAudioEncoder, load_clap
from models.encoders.clap.tiny import build_tiny_clap

__all__ = ["ClapAudioEncoder", "build_tiny_clap", "load_clap"]
