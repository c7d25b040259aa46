"""Teaching mmr-mini a vocabulary from a collection that holds nothing else (issue 23).

The scenario: renders of every colour and shape of mmr-mini's world, several of each, each
paired (by a ``group`` key) with one caption in a language the model never saw: French, or
a language of invented words (a new one for each seed). Nothing else is stored. The measure
is precision@3 of text -> image over the collection's pictures, for "a red circle" and every
other colour and shape, asked in the new language and in English, before and after.

- **Variants**, in this process: :func:`models.training.finetune.finetune` on the stored raw
  features, with the anchors and the anchor check the job would bring
  (``app.services.finetune.with_model_anchors``' sources), one setting changed at a time.
  The baseline is the release before: an affine head, batches of 256, no anchors.
- **The job**: a real ``mmr serve`` subprocess; the pairs uploaded through the batch route,
  a ``finetune`` job with every default (``activate: if_better``), precision@3 asked through
  the search route before and after.

Nothing timed is asserted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.bulk import _job, _multipart
from bench.clients import RawHttp
from bench.config import BenchConfig
from bench.server import Server

Log = Callable[[str], None]
LANGUAGES = ("french", "invented")


@dataclass(frozen=True)
class Scenario:
    """One collection's pictures and captions, and the queries asked of it."""

    language: str
    seed: int
    objects: list[tuple[str, str]]  # (colour, shape) of each picture
    images: list[Image.Image]
    captions: list[str]  # in the new language, one per picture
    queries: list[tuple[str, str]]  # (colour, shape)
    asked_new: list[str]
    asked_english: list[str]


def scenario(language: str, seed: int, variants: int) -> Scenario:
    """Every colour x shape, ``variants`` renders of each (size, place and style drawn)."""
    from models.synth.world.french import to_french
    from models.synth.world.images import Scene, caption_scene, render_scene, sample_scene
    from models.synth.world.invented import translator
    from models.synth.world.vocabulary import COLOURS, SHAPES

    translate = to_french if language == "french" else translator(seed)
    rng = np.random.default_rng([seed, 23])
    objects: list[tuple[str, str]] = []
    images: list[Image.Image] = []
    captions: list[str] = []
    for colour in COLOURS:
        for shape in SHAPES:
            for _ in range(variants):
                drawn = dict(sample_scene(rng, two_shapes=0.0).objects[0])
                drawn |= {"colour": colour, "shape": shape}
                scene = Scene(objects=(drawn,))
                n = len(images)
                images.append(
                    render_scene(scene, np.random.default_rng([seed, 24, n]), style="shifted")
                )
                caption = caption_scene(scene, np.random.default_rng([seed, 25, n])).text
                captions.append(translate(caption))
                objects.append((colour, shape))
    queries = [(c, s) for c in COLOURS for s in SHAPES]
    english = [f"a {c} {s}" for c, s in queries]
    return Scenario(
        language, seed, objects, images, captions, queries, [translate(q) for q in english], english
    )


def precision_at_3(found: list[list[int]], scene: Scenario) -> float:
    """Mean share of each query's top 3 pictures that show its colour and shape."""
    shares = [
        np.mean([scene.objects[j] == wanted for j in top[:3]])
        for wanted, top in zip(scene.queries, found, strict=True)
    ]
    return float(np.mean(shares))


def run_finetune(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    f = cfg.finetune
    scenes = [scenario(lang, seed, f.variants) for lang in LANGUAGES for seed in f.seeds]
    variants = _variants(f.model, scenes, log)
    counts = _pair_counts(f.model, f.seeds, log)
    jobs = _jobs(cfg, f.model, scenes, work, log)
    return {
        "model": f.model,
        "seeds": list(f.seeds),
        "variants_per_object": f.variants,
        "pictures": len(scenes[0].images),
        "study": variants,
        "pair_counts": counts,
        "jobs": jobs,
    }


# -- the variants, in this process ------------------------------------------------------------


Setting = tuple[str, Any, bool, bool]  # name, FinetuneConfig, anchors, image anchors too


def variant_settings(default: Any) -> list[Setting]:
    """The study's rows: (name, config, with the job's anchors, with image anchors too)."""
    return [
        (
            "release before: affine head, batch 256, no anchors",
            replace(default, form="affine", batch=256),
            False,
            False,
        ),
        ("affine head, anchors", replace(default, form="affine"), True, False),
        ("residual head, no anchors", default, False, False),
        ("**residual head, anchors (default)**", default, True, False),
        ("residual head, anchors, keep 3", replace(default, keep=3.0), True, False),
        ("residual head, anchors, keep 30", replace(default, keep=30.0), True, False),
        ("residual head, anchors, batch 256", replace(default, batch=256), True, False),
        ("residual head, anchors, hidden 64", replace(default, hidden=64), True, False),
        ("residual head, anchors, both heads learn", replace(default, train="both"), True, True),
        ("residual head, anchors, hard negatives", replace(default, hard=True), True, False),
        (
            "residual head, anchors, noise 0.05 on inputs",
            replace(default, augment=0.05),
            True,
            False,
        ),
        (
            "residual head, anchors, temperature fixed 0.07",
            replace(default, temperature=0.07),
            True,
            False,
        ),
        (
            "residual head, anchors, temperature fixed 0.02",
            replace(default, temperature=0.02),
            True,
            False,
        ),
        (
            "residual head, anchors, no tolerance check",
            replace(default, tolerance=1.0),
            True,
            False,
        ),
    ]


def _variants(
    model: str, scenes: list[Scenario], log: Log, settings: list[Setting] | None = None
) -> list[dict[str, Any]]:
    from models.training.anchors import mini_scenes
    from models.training.finetune import FinetuneConfig, Pairs, finetune

    encoder, base, texts, check = _setup(model)
    image_anchors = encoder.encode_images(mini_scenes(1024, seed=1).images)
    settings = settings or variant_settings(FinetuneConfig())
    encoded = _encoded(encoder, scenes)
    rows = []
    for name, config, anchored, both in settings:
        per: dict[str, list[tuple[float, float, float, float, float]]] = {}
        for scene, images, captions, new, english in encoded:
            anchors = {"text": texts} | ({"image": image_anchors} if both else {})
            pairs = Pairs(
                "image",
                "text",
                images,
                captions,
                anchors if anchored else {},
                check if anchored else None,
            )
            started = time.perf_counter()
            tuned, _ = finetune(base, pairs, config)
            seconds = time.perf_counter() - started
            gallery = tuned.project("image", images)
            old_gallery = base.project("image", images)

            per.setdefault(scene.language, []).append(
                (
                    _p3(base, new, old_gallery, scene),
                    _p3(tuned, new, gallery, scene),
                    _p3(base, english, old_gallery, scene),
                    _p3(tuned, english, gallery, scene),
                    seconds,
                )
            )
        row: dict[str, Any] = {"name": name}
        for language, results in per.items():
            r = np.array(results)
            row[language] = {
                "new_before": float(r[:, 0].mean()),
                "new_after": float(r[:, 1].mean()),
                "english_before": float(r[:, 2].mean()),
                "english_after": float(r[:, 3].mean()),
                "worst_english_change": float((r[:, 3] - r[:, 2]).min()),
                "seconds": float(r[:, 4].mean()),
            }
        rows.append(row)
        log(
            "finetune variant "
            + name
            + ": "
            + "; ".join(
                f"{lang} new {v['new_after'] - v['new_before']:+.2f}, english "
                f"{v['english_after'] - v['english_before']:+.2f}"
                for lang, v in row.items()
                if lang != "name"
            )
        )
    return rows


def _setup(model: str) -> tuple[Any, Any, np.ndarray, Any]:
    """The encoder, its identity aligner, the job's text anchors and its anchor check."""
    from models.encoders.aligner import Aligner
    from models.encoders.registry import load_model
    from models.training.anchors import anchor_captions, mini_scenes
    from models.training.finetune import AnchorCheck

    encoder = load_model(model, device="cpu").encoder
    base = Aligner.identity(encoder.dim, {"image": encoder.model_id, "text": encoder.model_id})
    checked = mini_scenes(512)
    # As the job: the check's captions are not among the anchors.
    held = set(checked.captions)
    captions = [t for t in anchor_captions(model, 2048 + len(held)) if t not in held][:2048]
    texts = encoder.encode_texts(captions)
    check = AnchorCheck(
        "text",
        encoder.encode_texts(checked.captions),
        "image",
        encoder.encode_images(checked.images),
        checked.relevant,
    )
    return encoder, base, texts, check


PAIRED = (1, 2, 4, 8, 16)  # captioned pictures of each colour and shape, of 16 stored


def _pair_counts(model: str, seeds: tuple[int, ...], log: Log) -> list[dict[str, Any]]:
    """The default fine-tune with fewer or more pairs: 16 pictures of every colour and shape
    stored (384), of which 1 to 16 of each have a caption (24 to 384 pairs)."""
    from models.training.finetune import Pairs, finetune

    encoder, base, texts, check = _setup(model)
    rows = []
    scenes = [scenario(lang, seed, max(PAIRED)) for lang in LANGUAGES for seed in seeds]
    encoded = _encoded(encoder, scenes)
    for paired in PAIRED:
        per: dict[str, list[tuple[float, float]]] = {}
        for scene, images, captions, new, english in encoded:
            rows_of = np.array([i % max(PAIRED) < paired for i in range(len(images))])
            pairs = Pairs(
                "image", "text", images[rows_of], captions[rows_of], {"text": texts}, check
            )
            tuned, _ = finetune(base, pairs)
            gallery, old = tuned.project("image", images), base.project("image", images)
            per.setdefault(scene.language, []).append(
                (
                    _p3(tuned, new, gallery, scene) - _p3(base, new, old, scene),
                    _p3(tuned, english, gallery, scene) - _p3(base, english, old, scene),
                )
            )
        row: dict[str, Any] = {"pairs": paired * 24}
        for language, results in per.items():
            r = np.array(results)
            row[language] = {"new": float(r[:, 0].mean()), "english": float(r[:, 1].mean())}
        rows.append(row)
        log(
            f"finetune with {paired * 24} pairs: "
            + "; ".join(
                f"{lang} new {v['new']:+.2f}, english {v['english']:+.2f}"
                for lang, v in row.items()
                if lang != "pairs"
            )
        )
    return rows


def _encoded(encoder: Any, scenes: list[Scenario]) -> list[tuple[Scenario, Any, Any, Any, Any]]:
    """Each scenario with the raw features of its pictures, captions and both query sets."""
    return [
        (
            s,
            encoder.encode_images(s.images),
            encoder.encode_texts(s.captions),
            encoder.encode_texts(s.asked_new),
            encoder.encode_texts(s.asked_english),
        )
        for s in scenes
    ]


def _p3(aligner: Any, asked: np.ndarray, pictures: np.ndarray, scene: Scenario) -> float:
    """precision@3 of text queries' raw features against projected pictures."""
    ranked = np.argsort(-(aligner.project("text", asked) @ pictures.T), axis=1)
    return precision_at_3([list(r[:3]) for r in ranked], scene)


# -- the job, through a server ----------------------------------------------------------------


def _jobs(
    cfg: BenchConfig, model: str, scenes: list[Scenario], work: Path, log: Log
) -> list[dict[str, Any]]:
    from models.synth.world.images import image_file_bytes

    data_dir = Path(tempfile.mkdtemp(prefix="finetune-", dir=work)) / "data"
    out = []
    with Server(
        data_dir, model=model, precision="auto", ready_timeout_s=cfg.ready_timeout_s
    ) as srv:
        raw = RawHttp(srv.url)
        try:
            for scene in scenes:
                name = f"teach_{scene.language}_{scene.seed}"
                _ok(raw.post_json("/v1/collections", json.dumps({"name": name}).encode()), 201)
                path = f"/v1/collections/{name}/items/batch"
                rng = np.random.default_rng(scene.seed)
                for start in range(0, len(scene.images), 64):
                    chunk = range(start, min(start + 64, len(scene.images)))
                    parts: list[tuple[str, str | None, bytes]] = [
                        ("file", f"p{i}.jpg", image_file_bytes(scene.images[i], rng)[0])
                        for i in chunk
                    ]
                    parts += [("id", None, f"p{i}".encode()) for i in chunk]
                    meta = [
                        {"group": i, "colour": scene.objects[i][0], "shape": scene.objects[i][1]}
                        for i in chunk
                    ]
                    parts.append(("metadata", None, json.dumps(meta).encode()))
                    _ok(raw.post(path, *_multipart(parts)), 200)
                    texts = [
                        {"id": f"c{i}", "text": scene.captions[i], "metadata": {"group": i}}
                        for i in chunk
                    ]
                    _ok(raw.post_json(path, json.dumps(texts).encode()), 200)
                before = {k: _asked(raw, name, scene, k) for k in ("new", "english")}
                started = time.perf_counter()
                job = _job(
                    raw,
                    raw.post_json(
                        "/v1/jobs",
                        json.dumps(
                            {"type": "finetune", "collection": name, "pair_key": "group"}
                        ).encode(),
                    ),
                )
                seconds = time.perf_counter() - started
                after = {k: _asked(raw, name, scene, k) for k in ("new", "english")}
                m = job["metrics"]
                row = {
                    "language": scene.language,
                    "seed": scene.seed,
                    "before": before,
                    "after": after,
                    "activated": m["activated"],
                    "seconds": seconds,
                    "anchors_before": m.get("anchors_before"),
                    "anchors_after": m.get("anchors_after"),
                    "pairs_before": m["before"],
                    "pairs_after": m["after"],
                    "epochs": m["epochs"],
                }
                out.append(row)
                log(
                    f"finetune job {scene.language} seed {scene.seed}: new "
                    f"{before['new']:.2f} -> {after['new']:.2f}, english "
                    f"{before['english']:.2f} -> {after['english']:.2f}, "
                    f"activated {m['activated']}, {seconds:.1f} s"
                )
        finally:
            raw.close()
    return out


def _asked(raw: RawHttp, name: str, scene: Scenario, which: str) -> float:
    asked = scene.asked_new if which == "new" else scene.asked_english
    found = []
    for text in asked:
        body = {"text": text, "k": 3, "modalities": ["image"]}
        status, data = raw.post_json(f"/v1/collections/{name}/search", json.dumps(body).encode())
        if status != 200:
            raise RuntimeError(f"search: {status} {data[:200]!r}")
        found.append([int(r["item"]["id"][1:]) for r in json.loads(data)["results"]])
    return precision_at_3(found, scene)


def _ok(answer: tuple[int, bytes], status: int) -> None:
    if answer[0] != status:
        raise RuntimeError(f"expected {status}, got {answer[0]}: {answer[1][:300]!r}")
