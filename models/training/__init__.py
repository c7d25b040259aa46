"""Where training runs: one loop (:mod:`models.training.loop`) and its parts, used by the
aligner heads bootstrapped from captions and fine-tuned on a collection's pairs and by
mmr-mini trained on the generated world; and their evaluation."""
