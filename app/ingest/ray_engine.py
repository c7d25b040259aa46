"""``mmr ingest --engine ray``: images decoded and encoded on a Ray cluster, by actors that
load the collection's model once each (one per GPU where the cluster has GPUs, CPU actors
otherwise), with the very code a server runs (``decode_upload``, the model registry); the
driver then sends each image's original with its features through the batch route, which
checks the space they name against its own (409 for another model, width or
preprocessing). Texts and audio are left to the server. Ray is an optional extra
(``pip install 'mmr[ray]'``) and is imported only here.

The files are read by the actors from their paths: on a real cluster the folder must be on
storage every node mounts at the same path (docs/ingest.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from app.ingest.files import IMAGE, Found

RAY_CHUNK = 10_000  # images encoded per Ray pass: the driver holds a pass's features only


class ImageEncoder:
    """A Ray actor: the model loaded once; a batch of image paths in, each one's features,
    whether it decoded, and the space the features are in."""

    def __init__(self, model: str, device: str, cache_dir: str) -> None:
        from app.services.embedding import Embedder
        from app.services.items import feature_space
        from app.settings import Settings
        from models.encoders.registry import load_model

        self.settings = Settings(
            model=model,
            audio_model="none",
            device=device,
            precision=os.environ.get("MMR_PRECISION", "fp32"),
            data_dir=Path(cache_dir),
            _env_file=None,
        )
        # As the server loads it (app.lifespan.load_encoder), without its batching settings:
        # an actor is handed whole batches.
        self.embedder = Embedder(
            load_model(
                model,
                audio_model="none",
                device=device,
                cache_dir=self.settings.data_dir / "models",
                precision=self.settings.precision,
            )
        )
        self.space = json.dumps(feature_space(self.embedder), sort_keys=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from app.services.media import decode_upload

        paths = [str(p) for p in batch["path"]]
        payloads, decoded = [], []
        for path in paths:
            try:
                media = decode_upload(
                    Path(path).read_bytes(), settings=self.settings, embedder=self.embedder
                )
            except Exception:
                decoded.append(False)
                continue
            decoded.append(media.modality == "image")
            if media.modality == "image":
                payloads.append(media.payload)
        encoded = iter(self.embedder.encode_mixed(["image"] * len(payloads), payloads))
        features = np.zeros((len(paths), self.embedder.dim), dtype=np.float32)
        for i, ok in enumerate(decoded):
            if ok:
                features[i] = next(encoded).raw[0]
        return {
            "path": np.array(paths, dtype=object),
            "feature": features,
            "ok": np.array(decoded),
            "space": np.array([self.space] * len(paths), dtype=object),
        }


def images(found: Iterable[Found]) -> list[Found]:
    """The files Ray encodes: images (texts and audio go to the server as they are)."""
    return [f for f in found if f.kind == "file" and f.path.suffix.lower() in IMAGE]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode(
    paths: list[Path], *, model: str, address: str | None, batch: int, cache_dir: Path
) -> tuple[dict[Path, list[float]], dict[str, Any] | None]:
    """Each decodable image's features, by path, and the space they are in (None when no
    image decoded). Connects to the cluster at ``address`` (a local one when None)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = gpus or max(1, int(resources.get("CPU", 1)) // 2)
    mapped = ray.data.from_items([{"path": str(p)} for p in paths]).map_batches(
        ImageEncoder,
        fn_constructor_kwargs={
            "model": model,
            "device": "cuda" if gpus else "cpu",
            "cache_dir": str(cache_dir),
        },
        batch_size=batch,
        concurrency=actors,
        num_gpus=1 if gpus else 0,
        num_cpus=1,
        batch_format="numpy",
    )
    features: dict[Path, list[float]] = {}
    space = None
    for row in mapped.iter_rows():
        if row["ok"]:
            features[Path(row["path"])] = [float(v) for v in row["feature"]]
            space = json.loads(row["space"])
    return features, space
