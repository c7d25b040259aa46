"""Benchmark inputs, all seeded: clustered unit vectors, structured JPEGs, sentences."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np
from PIL import Image

TOP_K = 10


class Mixture:
    """Unit vectors clustered like real embeddings: not uniform, and of low intrinsic
    dimension.

    CLIP-style embeddings of a collection occupy a few dozen directions of their 512
    (their intrinsic dimension is measured at ~20-60), so centres and the points around
    them lie in a shared ``latent``-dimensional subspace (clusters overlap, as topics do),
    plus a little isotropic noise.
    Each cluster has its own spread, so some neighbourhoods are tight and some loose;
    queries are fresh samples of the same mixture. Isotropic 512-d noise would instead
    make every point nearly equidistant, a worst case no real collection looks like.
    """

    def __init__(self, dim: int, centres: int, seed: int, latent: int = 64) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.latent = min(latent, dim)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, self.latent)))
        self.basis = basis.T.astype(np.float32)  # (latent, dim), orthonormal rows
        middle = rng.standard_normal((centres, self.latent), dtype=np.float32) @ self.basis
        self.centres = _unit(middle)
        self.spread = rng.uniform(0.4, 0.9, size=centres).astype(np.float32)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """n unit vectors, float32 (n, dim)."""
        return np.concatenate(list(self.chunks(n, seed))) if n else np.zeros((0, self.dim))

    def chunks(self, n: int, seed: int, size: int = 100_000) -> Iterator[np.ndarray]:
        """The same vectors as sample(), in chunks (1M x 512 is 2 GB)."""
        rng = np.random.default_rng(seed)
        for start in range(0, n, size):
            m = min(size, n - start)
            which = rng.integers(0, len(self.centres), size=m)
            local = rng.standard_normal((m, self.latent), dtype=np.float32) @ self.basis
            local *= (self.spread[which] / np.sqrt(self.latent))[:, None]
            fine = rng.standard_normal((m, self.dim), dtype=np.float32) * (0.1 / np.sqrt(self.dim))
            yield _unit(self.centres[which] + local + fine)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Ground truth: row numbers of the k best inner products per query, best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 64] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(
    found: list[list[int]], truth: np.ndarray, vectors: np.ndarray, queries: np.ndarray
) -> float:
    """Mean recall@k; a result tied with the k-th exact score (float noise) counts as found."""
    total = 0.0
    for i, ids in enumerate(found):
        want = set(truth[i].tolist())
        kth = float(vectors[truth[i][-1]] @ queries[i])
        hits = sum(
            1 for j in ids[: truth.shape[1]] if j in want or _tied(vectors, queries, i, j, kth)
        )
        total += hits / truth.shape[1]
    return total / max(len(found), 1)


def _tied(vectors: np.ndarray, queries: np.ndarray, i: int, j: int, kth: float) -> bool:
    return 0 <= j < len(vectors) and float(vectors[j] @ queries[i]) >= kth - 1e-5


def structured_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like RGB array: gradients, waves, shapes, fine noise (no flat colour)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(2, 40), rng.uniform(2, 40), rng.uniform(0, 6.3)
        img[:, :, c] = 110 + 60 * x * rng.uniform(-1, 1) + 60 * y * rng.uniform(-1, 1)
        img[:, :, c] += 35 * np.sin(fx * x * 6.3 + phase) * np.cos(fy * y * 6.3)
    for _ in range(12):  # rectangles of other colours
        w, h = rng.integers(width // 20, width // 4), rng.integers(height // 20, height // 4)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 6, size=(height, 1, 1)).astype(np.float32)  # row banding
    img += rng.normal(0, 8, size=(height, width, 1)).astype(np.float32)  # sensor-like grain
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A structured JPEG of the given size."""
    buf = io.BytesIO()
    Image.fromarray(structured_rgb(width, height, seed)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def small_jpegs(count: int, seed: int) -> list[bytes]:
    """Distinct 224x224-ish JPEGs, what an embedding client typically sends."""
    return [jpeg_bytes(256, 224, seed + i) for i in range(count)]


WORDS = re.findall(
    r"\w+",
    """red blue green small large old new quiet loud bright dark wooden metal round square
    dog cat bird boat car house tree river mountain street window garden kitchen market
    runs sleeps stands floats shines waits turns falls near under beside behind above""",
)


def sentences(n: int, seed: int) -> list[str]:
    """n distinct short sentences."""
    rng = np.random.default_rng(seed)
    return [
        f"{i}: " + " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=10))
        for i in range(n)
    ]
