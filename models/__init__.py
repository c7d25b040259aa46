"""Everything learned or computed about media, by role.

- ``encoders/``  what turns media into vectors: the model registry, open_clip, mmr-mini,
                 CLAP audio towers, aligner heads
- ``runtime/``   how encoders run: micro-batcher, forward streams, torch threads, precision,
                 ONNX Runtime towers
- ``media/``     decoding uploads: images and audio, checked before they are decoded
- ``training/``  where training runs: aligner heads (bootstrap, fine-tune), mmr-mini, evaluation
- ``synth/``     the generated data mmr-mini and the audio bootstrap learn from

Knows nothing of HTTP or SQL: imports nothing from app/ or index/ (tests/test_layers.py).
"""
