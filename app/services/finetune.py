"""Job handlers: fine-tune a collection's aligner heads on pairs of its items; reindex.

Fine-tuning works on the raw encoder features stored with every item: nothing is
re-encoded, and the encoders need not even be the fast ones. The new heads are recorded as
a new aligner version whatever happens; activating them is a swap (app/services/aligners).
A handler takes the worker's services, as a route takes its dependencies, and hands each
step only the stores and objects it uses.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from app.schemas.collections import IndexSettings
from app.services import aligners as aligner_svc
from app.services.collections import index_spec, stored_index
from app.services.embedding import Embedder
from app.services.jobs import JobContext
from app.state import Services
from index.aligners import AlignerStore
from index.builds import spec_of
from index.columns import from_features
from index.errors import JobEndedError
from index.items import ItemStore, StoredVectors
from index.jobs import JobStore
from index.spec import AUTO
from index.tables import CollectionRow
from models.training.anchors import Scenes, anchor_captions, is_mini, mini_scenes
from models.training.finetune import (
    AnchorCheck,
    Cancelled,
    FinetuneConfig,
    Pairs,
    Progress,
    finetune,
    learners,
)

PER_GROUP = 64  # pairs one metadata value may contribute: one huge group must not dominate
ANCHORS = 4096  # stored items per modality the fine-tune keeps in place
# Texts of what the model knew that a job brings when the collection holds fewer text
# anchors than this (its learning text head keeps them in place), and how many more it
# holds out to check retrieval on; mmr-mini's check is on generated scenes instead.
BROUGHT_TEXTS = 2048
BROUGHT_IMAGES = 1024  # mmr-mini's generated pictures, for a learning image head
CHECK_QUERIES = 512
CHECK_GALLERY = 2048


def run_finetune(services: Services, ctx: JobContext) -> dict[str, Any]:
    """Train new heads on the job's pairs, record them, activate them by the job's policy."""
    params = ctx.job.params
    stores = services.stores
    row = stores.collections.get_by_id(ctx.job.collection_id)
    base = aligner_svc.active_aligner(row, store=stores.aligners)
    pairs, found = collect_pairs(row, params, items=stores.items, aligners=stores.aligners)
    cfg = FinetuneConfig(
        holdout=params["holdout"],
        seed=params["seed"],
        max_pairs=params["max_pairs"],
        max_epochs=params["max_epochs"],
        max_seconds=params["max_seconds"],
        patience=params["patience"],
        tolerance=params.get("anchor_tolerance", FinetuneConfig.tolerance),
    )
    with services.models.use(row.model, row.audio_model) as embedder:
        pairs, brought = with_model_anchors(pairs, embedder, row, cfg)
    found |= brought

    def progress(p: Progress) -> None:
        ctx.report(
            fraction=round(p.fraction, 4),
            epoch=p.epoch,
            max_epochs=p.max_epochs,
            loss=round(p.loss, 5),
            eta_s=None if p.eta_s is None else round(p.eta_s, 1),
        )

    tuned, report = finetune(base, pairs, cfg, progress=progress, should_stop=ctx.should_stop)
    _stop_if_cancelled(stores.jobs, ctx)
    tuned = tuned.with_meta(job=ctx.job.id, base_version=base.version, pairs=found)
    version = aligner_svc.record(aligners=stores.aligners, row=row, aligner=tuned)
    policy = params["activate"]
    activate = policy == "always" or (policy == "if_better" and report.improved)
    if activate:
        _stop_if_cancelled(stores.jobs, ctx)
        try:
            aligner_svc.activate(
                collections=stores.collections,
                aligners=stores.aligners,
                indexes=services.indexes,
                name=row.name,
                version=version,
                job_id=ctx.job.id,  # a cancel landing meanwhile is seen in its transaction
                worker=ctx.job.worker,
            )
        except JobEndedError as exc:
            raise Cancelled from exc
    return {
        "aligner_version": version,
        "base_version": base.version,
        "activated": activate,
        "modalities": [pairs.modality_a, pairs.modality_b],
        **found,
        **report.as_meta(),
    }


def _stop_if_cancelled(jobs: JobStore, ctx: JobContext) -> None:
    """Raise Cancelled once the job is no longer this worker's. Asked of SQL, not of the
    heartbeat: a cancel that lands after the last epoch (seconds before the next beat)
    must still keep the new version from being recorded or activated."""
    worker = ctx.job.worker or ""
    if ctx.should_stop() or not jobs.still_running(ctx.job.id, worker=worker):
        raise Cancelled


def run_reindex(services: Services, ctx: JobContext) -> dict[str, Any]:
    """Rebuild the collection's index from SQL (compacting it, retraining an IVF), with new
    index settings when the job gives them, and swap it in."""
    stores = services.stores
    row = stores.collections.get_by_id(ctx.job.collection_id)
    wanted = ctx.job.params.get("index")
    settings = None if wanted is None else IndexSettings(**wanted)
    spec = stored = None
    if (settings is None and row.index_type == AUTO) or (settings and settings.type == AUTO):
        # Chosen again from the size SQL holds now (writes during the build join it).
        vectors = stores.items.vector_count(row.id, row.dim)
        stored = stored_index(IndexSettings(type=AUTO), dim=row.dim, vectors=vectors)
    elif settings is not None:
        spec = index_spec(settings, dim=row.dim)
    started = time.monotonic()
    fresh = aligner_svc.rebuild(
        collections=stores.collections,
        indexes=services.indexes,
        name=row.name,
        spec=spec,
        stored=stored,
    )
    effective = spec_of(fresh)
    return {
        "index_epoch": fresh.index_epoch,
        "items": stores.items.count(row.id),
        "index_type": fresh.index_type,
        "index": {"type": effective.type, **effective.params()},
        "seconds": round(time.monotonic() - started, 3),
    }


def collect_pairs(
    row: CollectionRow, params: dict[str, Any], *, items: ItemStore, aligners: AlignerStore
) -> tuple[Pairs, dict[str, Any]]:
    """The job's item pairs as raw features, oriented to the most common modality pair."""
    if params.get("pair_key") is not None:
        candidates = _pairs_by_key(items.tagged(collection_id=row.id, key=params["pair_key"]))
        missing = 0
    else:
        wanted = [tuple(p) for p in params["pairs"]]
        ids = items.pks_of(collection_id=row.id, external_ids=[i for p in wanted for i in p])
        candidates = [(ids[a], ids[b]) for a, b in wanted if a in ids and b in ids and a != b]
        missing = len(wanted) - len(candidates)
    stored = _stored(items, row, {pk for pair in candidates for pk in pair})
    # A video's rows are of two kinds (frames, sound) with no head of their own: not trained on.
    usable = [
        (a, b) for a, b in candidates if "video" not in (stored[a].modality, stored[b].modality)
    ]
    kinds = Counter(tuple(sorted((stored[a].modality, stored[b].modality))) for a, b in usable)
    if not kinds:
        raise ValueError(
            "no pairs: give items that share a value under pair_key, or existing item ids"
        )
    (ma, mb), _ = kinds.most_common(1)[0]
    oriented = [
        (a, b) if stored[a].modality == ma else (b, a)
        for a, b in usable
        if {stored[a].modality, stored[b].modality} == {ma, mb}
    ]
    found: dict[str, Any] = {
        "pairs_found": len(candidates),
        "pairs_used": len(oriented),
        "pairs_of_other_modalities": len(candidates) - len(oriented),
        "pairs_missing_items": missing,
    }
    raw_a = np.stack([_raw(stored[a], row.dim) for a, _ in oriented])
    raw_b = np.stack([_raw(stored[b], row.dim) for _, b in oriented])
    paired = {pk for pair in oriented for pk in pair}
    anchors = {m: _anchors(items, aligners, row, m, paired) for m in {ma, mb}}
    found["anchors"] = {m: len(a) for m, a in anchors.items()}
    return Pairs(ma, mb, raw_a, raw_b, anchors), found


def with_model_anchors(
    pairs: Pairs,
    embedder: Embedder,
    row: CollectionRow,
    cfg: FinetuneConfig,
) -> tuple[Pairs, dict[str, Any]]:
    """The pairs with the anchors the model brings (``models.training.anchors``) and the
    anchor check, and what was added (for the job's metrics).

    A learning text head with fewer than ``BROUGHT_TEXTS`` stored text anchors gets the
    model's own captions up to that many, encoded by its frozen text tower; a learning image
    head of mmr-mini, generated pictures up to ``BROUGHT_IMAGES``. The check asks whether a
    learning text head still retrieves what it did: for mmr-mini (against images), generated
    captions against their renders (exact labels); otherwise ``CHECK_QUERIES`` more of the
    model's captions against the collection's items of the other modality (mmr-mini's text
    against sounds included), the answer to
    keep being the starting heads' first. Check captions are never among the anchors. Pairs
    with no text side (image and audio) are not checked."""
    learn = learners(cfg.train, pairs.modality_a, pairs.modality_b)
    learning = [
        m for m, yes in zip((pairs.modality_a, pairs.modality_b), learn, strict=True) if yes
    ]
    query = learning[0]
    other = pairs.modality_b if query == pairs.modality_a else pairs.modality_a
    # mmr-mini's text head against images is checked on generated, labelled scenes, made once.
    labelled = query == "text" and other == "image" and is_mini(row.model)
    scenes = mini_scenes(CHECK_QUERIES, seed=cfg.seed) if labelled else None
    anchors = dict(pairs.anchors)
    brought: dict[str, Any] = {}
    checked: np.ndarray | None = None  # text anchors held out for the check
    if "text" in learning:
        stored = anchors.get("text")
        have = 0 if stored is None else len(stored)
        want = max(0, BROUGHT_TEXTS - have)
        held = 0 if labelled else CHECK_QUERIES
        # The labelled check's captions are never trained on either.
        checking = set() if scenes is None else set(scenes.captions)
        texts = anchor_captions(row.model, want + held + len(checking), seed=cfg.seed)
        texts = [t for t in texts if t not in checking][: want + held]
        if texts:
            raw = embedder.encoder.encode_texts(texts)
            # The check's queries first (a fifth of a corpus too short for both), never
            # trained on.
            cut = held if len(raw) >= want + held else min(held, len(raw) // 5)
            checked, raw = raw[:cut], raw[cut:]
            if len(raw):
                anchors["text"] = raw if not have else np.concatenate([stored, raw])
            brought.setdefault("anchors_brought", {})["text"] = len(raw)
    if "image" in learning and is_mini(row.model):
        # A learning image head of mmr-mini keeps generated pictures of its world in place.
        stored = anchors.get("image")
        have = 0 if stored is None else len(stored)
        if have < BROUGHT_IMAGES:
            pictures = mini_scenes(BROUGHT_IMAGES - have, seed=cfg.seed + 1).images
            raw = embedder.encoder.encode_images(pictures)
            anchors["image"] = raw if not have else np.concatenate([stored, raw])
            brought.setdefault("anchors_brought", {})["image"] = len(raw)
    check = _check(pairs, embedder, query, other, anchors, checked, scenes)
    if check is not None:
        brought["anchor_check"] = {
            "queries": len(check.queries),
            "gallery": len(check.gallery),
            "labelled": check.relevant is not None,
        }
    return replace(pairs, anchors=anchors, check=check), brought


def _check(
    pairs: Pairs,
    embedder: Embedder,
    query: str,
    other: str,
    anchors: dict[str, np.ndarray],
    checked: np.ndarray | None,
    scenes: Scenes | None,
) -> AnchorCheck | None:
    if scenes is not None:
        return AnchorCheck(
            "text",
            embedder.encoder.encode_texts(scenes.captions),
            "image",
            embedder.encoder.encode_images(scenes.images),
            scenes.relevant,
        )
    queries = checked
    if queries is None or not len(queries):
        return None
    gallery = pairs.raw_b if other == pairs.modality_b else pairs.raw_a
    stored = anchors.get(other)
    if stored is not None and len(stored):
        gallery = np.concatenate([stored[:CHECK_GALLERY], gallery])
    return AnchorCheck(query, queries, other, gallery[:CHECK_GALLERY])


def _anchors(
    items: ItemStore, aligners: AlignerStore, row: CollectionRow, modality: str, paired: set[int]
) -> np.ndarray:
    """Raw features of up to ANCHORS stored items of a modality outside the pairs: the
    fine-tune keeps them where they are, so what the collection holds stays findable."""
    rows: list[np.ndarray] = []
    for chunk in items.iter_stored(collection_id=row.id, modality=modality):
        rows.extend(_raw(s, row.dim) for s in chunk if s.pk not in paired)
        if len(rows) >= ANCHORS:
            break
    width = aligner_svc.active_aligner(row, store=aligners).heads[modality].in_dim
    return np.stack(rows[:ANCHORS]) if rows else np.zeros((0, width), np.float32)


def _pairs_by_key(tagged: Iterable[tuple[int, str]]) -> list[tuple[int, int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for pk, value in tagged:
        groups[value].append(pk)
    pairs: list[tuple[int, int]] = []
    for members in groups.values():
        pairs.extend(itertools.islice(itertools.combinations(sorted(members), 2), PER_GROUP))
    return pairs


def _stored(items: ItemStore, row: CollectionRow, pks: set[int]) -> dict[int, StoredVectors]:
    found: dict[int, StoredVectors] = {}
    for chunk in items.iter_stored(collection_id=row.id, pks=sorted(pks)):
        found.update({s.pk: s for s in chunk})
    return found


def _raw(stored: StoredVectors, dim: int) -> np.ndarray:
    """One raw feature per item: a recording's segments are averaged."""
    rows = len(stored.vector) // (4 * dim) or None
    return from_features(stored.feature, rows).mean(axis=0)
