"""A shipped corpus of natural English sound captions, and the generator that wrote it.

The captions (AudioCaps/Clotho-style descriptions and AudioSet/ESC-50-style labels) let an
audio aligner head be bootstrapped from text alone: CLAP's and CLIP's text towers embed the
same captions and a head learns to map one space onto the other. ``sound_captions.txt`` is
``build_sound_captions()`` written out; ``python -m models.synth.captions.sound_captions``
rewrites it.
"""
