"""What turns media into vectors: the model registry, the open_clip dual encoder, mmr-mini,
CLAP audio towers, and the aligner heads that bring every tower into one shared space."""
