"""The project's own open_clip architectures (``configs/*.json`` here), registered once."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
PROJECT_ARCHS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))


def register_project_configs() -> None:
    """Make ``mmr-tiny``, ``mmr-mini``, ... known to open_clip (idempotent)."""
    import open_clip

    if not set(PROJECT_ARCHS) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)
