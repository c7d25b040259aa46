"""mmr-mini: the project's own small image-text-audio model for its synthetic world.

An open_clip architecture (``encoders/configs/mmr-mini.json``) with a folded CLIP BPE
vocabulary, plus a log-mel audio tower trained into the same space; its shipped weights are in
``weights/``. Trained by ``mmr train-mini`` (``models.training.train_mini``).
"""
