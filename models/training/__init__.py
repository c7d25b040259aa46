"""Where training runs: aligner heads bootstrapped from captions and fine-tuned on a
collection's pairs, mmr-mini trained on the generated world, and their evaluation."""
