"""Fine-tune a collection's aligner heads on its own paired items.

A collection's users pair items of two modalities (a caption and its image, a recording and
its description); :func:`finetune` moves the heads so each pair lands closer together in the
shared space. By default a learning head keeps its current map and learns a small non-linear
residual on top of it, started at zero (``AlignerHead.residual``), with symmetric InfoNCE on
the pairs plus ``keep`` times the distance anchors move from where the current head puts
them (distillation): anchors are inputs the pairs say nothing about (the old vocabulary), so
what the model knew stays where it was. Without anchors, ``stay`` pulls the parameters back
toward their start instead.

An :class:`AnchorCheck` measures what the pull is for: retrieval on anchors the training never
sees, before and after. The training loop (:mod:`models.training.loop`) keeps the best
held-out state among those whose anchor retrieval stays within ``tolerance`` of the start
(early stopping on both criteria), so a fine-tune that cannot help without forgetting returns
the heads it was given. ``bench/finetune.py`` measured the choices (docs/teach-a-vocabulary.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.encoders.aligner import Aligner, AlignerHead, l2_normalize
from models.training.batches import ShuffledChunks
from models.training.budget import Budget
from models.training.contrastive import INIT_SCALE, MAX_LOGIT_SCALE, contrastive_loss
from models.training.early_stop import EarlyStop
from models.training.loop import Cancelled, EpochEnd, Outcome, StepLoss, train_epochs
from models.training.optimiser import Stepper, epoch_schedule
from models.training.validation import (
    MIN_PAIRS,
    Score,
    held_out_score,
    pair_recall,
    rounded_report,
    split_pairs,
)

__all__ = [
    "AnchorCheck",
    "Cancelled",
    "FinetuneConfig",
    "FinetuneReport",
    "Pairs",
    "Progress",
    "finetune",
    "learners",
]

TRAIN_CHOICES = ("auto", "a", "b", "both")
FORMS = ("residual", "affine")
CHECK_K = 5  # the anchor check's recall@k
HARD_MAX = 10_000  # training pairs up to which hard batches are made (their cost is n^2)
_DIRECTIONS = {"source_to_target": "a_to_b", "target_to_source": "b_to_a"}


@dataclass(frozen=True)
class FinetuneConfig:
    """How :func:`finetune` samples, splits, trains and stops."""

    holdout: float = 0.2
    seed: int = 0
    max_pairs: int = 50_000
    max_epochs: int = 200
    max_seconds: float = 900.0
    batch: int = 64  # a few hundred pairs: several steps an epoch (256 made one)
    lr: float = 3e-3
    patience: int = 30
    # Pull toward the current heads of a head without anchors. 0.1 let a French fine-tune of
    # mmr-mini drop English R@5 from 0.99 to 0.62; 0.3 keeps it (and teaches less).
    stay: float = 0.3
    keep: float = 10.0  # strength of keeping the anchors' vectors where they were
    # Which heads learn: "a", "b", "both", or "auto": the text head when exactly one side is
    # text (new words live in the text tower's features), else both.
    train: str = "auto"
    # What a learning head learns: "residual" (its map kept, a ReLU residual of ``hidden``
    # units learned on top, started at zero) or "affine" (its map itself, as one linear map).
    form: str = "residual"
    hidden: int = 256
    # How far the anchor check's recall@5 may fall below the start's for a state to be kept.
    tolerance: float = 0.02
    # Studied, off by default (bench/finetune.py): Gaussian noise of this size on a learning
    # side's unit inputs at every step, and a fixed temperature instead of a learnt one.
    augment: float = 0.0
    temperature: float | None = None
    # Hard negatives: each batch a random pair and the pairs nearest to it (by the first
    # side's raw features) instead of a random draw; for at most HARD_MAX training pairs.
    hard: bool = False


@dataclass(frozen=True)
class AnchorCheck:
    """Retrieval on anchors the training does not see: ``queries`` (raw features of
    ``query_modality``) against a ``gallery`` (raw features of ``gallery_modality``), both
    through the heads. ``relevant[i, j]`` says gallery row j answers query i; None: the
    answer to keep is the one the starting heads rank first (what the model found before)."""

    query_modality: str
    queries: np.ndarray
    gallery_modality: str
    gallery: np.ndarray
    relevant: np.ndarray | None = None

    @property
    def name(self) -> str:
        """The metric's name in a report, e.g. ``text_to_image@5``."""
        return f"{self.query_modality}_to_{self.gallery_modality}@{CHECK_K}"


@dataclass(frozen=True)
class Pairs:
    """Paired raw features: row i of ``raw_a`` belongs with row i of ``raw_b``."""

    modality_a: str
    modality_b: str
    raw_a: np.ndarray  # (n, da), one row per item (a recording's rows already averaged)
    raw_b: np.ndarray  # (n, db)
    # Per modality, raw features of inputs outside the pairs (stored items, the model's own
    # caption corpus): a learning head must keep placing them where the current head does.
    anchors: dict[str, np.ndarray] = field(default_factory=dict)
    check: AnchorCheck | None = None  # how well the anchors retrieve, before and after


@dataclass(frozen=True)
class Progress:
    """Sent after every epoch. ``eta_s`` is an upper bound: early stopping may end sooner."""

    epoch: int
    max_epochs: int
    loss: float
    fraction: float
    eta_s: float | None


@dataclass(frozen=True)
class FinetuneReport:
    """What a fine-tune did and how well held-out pairs retrieve each other, before and after."""

    pairs: int
    train: int
    heldout: int
    epochs: int
    seconds: float
    stopped: str  # "patience", "max_epochs" or "max_seconds"
    before: dict[str, float]
    after: dict[str, float]
    trained: list[str] = field(default_factory=list)
    temperature: float = 0.07
    # The anchor check's recall, before and after ({} without a check), and its tolerance.
    anchors_before: dict[str, float] = field(default_factory=dict)
    anchors_after: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.02

    def as_meta(self) -> dict[str, Any]:
        """JSON-able summary for the aligner artefact's metadata."""
        meta = rounded_report(asdict(self), ("before", "after", "anchors_before", "anchors_after"))
        meta["kept"] = self.kept
        return meta

    @property
    def kept(self) -> bool:
        """True when retrieval on the anchors stayed within the tolerance (or was not checked)."""
        return all(
            self.anchors_after[k] >= v - self.tolerance - 1e-9
            for k, v in self.anchors_before.items()
        )

    @property
    def improved(self) -> bool:
        """True when the mean held-out recall went up and the anchors kept their retrieval:
        what ``activate: if_better`` asks."""
        gained = float(np.mean(list(self.after.values()))) > float(
            np.mean(list(self.before.values()))
        )
        return gained and self.kept


def finetune(
    aligner: Aligner,
    pairs: Pairs,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Aligner, FinetuneReport]:
    """Train the chosen heads of ``aligner`` on ``pairs``; return a new aligner and a report.

    Untouched heads are kept as they are; trained ones become residual heads (``form``
    "residual") or linear ones ("affine"). The result is
    version 0 (the caller numbers it). The same inputs and config give the same bytes.
    Raises ValueError for unusable inputs and :class:`Cancelled` when ``should_stop()``.
    """
    budget = Budget.start(cfg.max_seconds)
    _check_config(cfg)
    xa, xb = _checked(aligner, pairs)
    keep = _subsample(len(xa), cfg.max_pairs, cfg.seed)
    xa, xb = xa[keep], xb[keep]
    train, held = split_pairs(len(xa), cfg.holdout, cfg.seed)
    learn = learners(cfg.train, pairs.modality_a, pairs.modality_b)
    heads = {m: aligner.heads[m] for m in (pairs.modality_a, pairs.modality_b)}
    check = _check(aligner, pairs.check)
    trainable = _Heads(heads, learn, (xa, xb), (train, held), cfg, _anchors(aligner, pairs), check)
    before = _recall(heads, pairs, xa[held], xb[held])
    best, outcome = _train(trainable, budget, progress, should_stop)
    # A head whose best state is its start never changed: it keeps its kind and bytes.
    changed = {m: h for m, h in best.heads().items() if h is not heads[m]}
    result = aligner
    for modality, head in changed.items():
        result = result.with_head(modality, head, aligner.encoders[modality])
    report = FinetuneReport(
        pairs=len(xa),
        train=len(train),
        heldout=len(held),
        epochs=outcome.epochs,
        seconds=budget.elapsed(),
        stopped=outcome.stopped,
        before=before,
        after=_recall({**heads, **changed}, pairs, xa[held], xb[held]),
        trained=[m for m in heads if m in changed],
        temperature=math.exp(-min(best.log_scale, MAX_LOGIT_SCALE)),
        anchors_before={} if check is None else {check.name: trainable.check_start},
        anchors_after={} if check is None else {check.name: best.anchors},
        tolerance=cfg.tolerance,
    )
    meta = {**aligner.meta, "kind": "finetune", "finetune": report.as_meta()}
    return Aligner(aligner.dim, result.heads, result.encoders, meta), report


def _check(aligner: Aligner, check: AnchorCheck | None) -> AnchorCheck | None:
    """The check with finite unit rows of the heads' widths, or None when it has no rows."""
    if check is None:
        return None
    sides = []
    for modality, raw in (
        (check.query_modality, check.queries),
        (check.gallery_modality, check.gallery),
    ):
        head = aligner.heads.get(modality)
        rows = np.asarray(raw, dtype=np.float32)
        if head is None or rows.ndim != 2 or rows.shape[1] != head.in_dim:
            raise ValueError(f"the anchor check's {modality} rows must be of the head's width")
        sides.append(rows)
    queries, gallery = sides
    relevant = check.relevant
    if relevant is not None:
        relevant = np.asarray(relevant, dtype=bool)
        if relevant.shape != (len(queries), len(gallery)):
            raise ValueError("the anchor check's relevance must be (queries, gallery)")
    finite_q = np.all(np.isfinite(queries), axis=1)
    finite_g = np.all(np.isfinite(gallery), axis=1)
    if relevant is not None:
        relevant = relevant[finite_q][:, finite_g]
    queries, gallery = queries[finite_q], gallery[finite_g]
    if not len(queries) or len(gallery) < CHECK_K:
        return None
    return AnchorCheck(check.query_modality, queries, check.gallery_modality, gallery, relevant)


def _anchors(aligner: Aligner, pairs: Pairs) -> dict[str, np.ndarray]:
    """Finite anchor rows of the right width, per modality with a head."""
    found = {}
    for modality, raw in pairs.anchors.items():
        rows = np.asarray(raw, dtype=np.float32)
        head = aligner.heads.get(modality)
        if head is None or rows.ndim != 2 or rows.shape[1] != head.in_dim:
            raise ValueError(f"{modality} anchors must be rows of the head's width")
        found[modality] = rows[np.all(np.isfinite(rows), axis=1)]
    return found


def _check_config(cfg: FinetuneConfig) -> None:
    if cfg.train not in TRAIN_CHOICES:
        raise ValueError(f"train must be one of {TRAIN_CHOICES}, not {cfg.train!r}")
    if cfg.batch < 2 or cfg.max_pairs < MIN_PAIRS or cfg.max_epochs < 1:
        raise ValueError("batch must be >= 2, max_pairs >= 10 and max_epochs >= 1")
    if cfg.lr <= 0 or cfg.stay < 0 or cfg.patience < 1 or cfg.max_seconds <= 0:
        raise ValueError("lr and max_seconds must be positive, stay >= 0, patience >= 1")
    if cfg.form not in FORMS or cfg.hidden < 1 or not 0.0 <= cfg.tolerance <= 1.0:
        raise ValueError(f"form must be one of {FORMS}, hidden >= 1 and tolerance in [0, 1]")
    if cfg.augment < 0 or (cfg.temperature is not None and not 0 < cfg.temperature <= 1):
        raise ValueError("augment must be >= 0 and a fixed temperature in (0, 1]")


def _checked(aligner: Aligner, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as unit float32 rows, or ValueError saying what is wrong."""
    if pairs.modality_a == pairs.modality_b:
        raise ValueError("pairs must join two different modalities")
    sides = []
    for modality, raw in ((pairs.modality_a, pairs.raw_a), (pairs.modality_b, pairs.raw_b)):
        head = aligner.heads.get(modality)
        if head is None:
            raise ValueError(f"the aligner has no {modality} head to fine-tune")
        x = np.asarray(raw, np.float32)
        if x.ndim != 2 or x.shape[1] != head.in_dim:
            raise ValueError(f"{modality} rows must be (n, {head.in_dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{modality} features must be finite (no NaN or inf)")
        sides.append(l2_normalize(x))
    if len(sides[0]) != len(sides[1]):
        raise ValueError(f"{len(sides[0])} rows against {len(sides[1])}: rows must pair up")
    if len(sides[0]) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs, got {len(sides[0])}")
    return sides[0], sides[1]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` row indices, a seeded choice kept in input order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def learners(train: str, a: str, b: str) -> tuple[bool, bool]:
    """Whether side a and side b learn."""
    if train == "auto":
        # New words reach the text tower as features it never learned to place; moving the
        # text head teaches them without moving stored media (see the experiment in the docs).
        if (a == "text") != (b == "text"):
            return a == "text", b == "text"
        return True, True
    return train in ("a", "both"), train in ("b", "both")


def _recall(
    heads: dict[str, AlignerHead], pairs: Pairs, xa: np.ndarray, xb: np.ndarray
) -> dict[str, float]:
    """Held-out recall through the heads themselves, named "a_to_b@k" and "b_to_a@k"."""
    a = heads[pairs.modality_a].project(xa)
    b = heads[pairs.modality_b].project(xb)
    return _renamed(pair_recall(a, b))


def _renamed(recall: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, value in recall.items():
        direction, k = key.split("@")
        out[f"{_DIRECTIONS[direction]}@{k}"] = value
    return out


Maps = dict[str, "tuple[np.ndarray, ...] | AlignerHead"]


@dataclass(frozen=True)
class _State:
    """A snapshot of the trainable maps, its held-out score and its anchor check's recall."""

    maps: Maps
    log_scale: float
    score: Score
    anchors: float = 1.0
    bases: dict[str, AlignerHead] = field(default_factory=dict)  # residual maps' starts

    def heads(self) -> dict[str, AlignerHead]:
        out = {}
        for m, v in self.maps.items():
            if isinstance(v, AlignerHead):
                out[m] = v
            elif len(v) == 2:
                out[m] = AlignerHead.linear(*v)
            else:
                out[m] = AlignerHead.residual(self.bases[m], *v)
        return out


class _Heads:
    """The heads being fine-tuned: one side or both learn, the other side's vectors are fixed.

    A learning head's parameters: its affine map (form "affine"), or a residual's
    ``down``, ``down_bias`` and ``up`` on top of its frozen current map (form "residual"; a
    head that already has a residual goes on from it)."""

    def __init__(
        self,
        heads: dict[str, AlignerHead],
        learn: tuple[bool, bool],
        xs: tuple[np.ndarray, np.ndarray],
        split: tuple[np.ndarray, np.ndarray],
        cfg: FinetuneConfig,
        anchors: dict[str, np.ndarray],
        check: AnchorCheck | None,
    ) -> None:
        self.heads, self.cfg = heads, cfg
        self.names = list(heads)
        self.x = [torch.from_numpy(np.ascontiguousarray(x)) for x in xs]
        self.train, self.held = (torch.from_numpy(s) for s in split)
        self.start: dict[str, tuple[torch.Tensor, ...]] = {}
        self.params: dict[str, tuple[torch.nn.Parameter, ...]] = {}
        self.frozen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # residuals' maps
        self.fixed: dict[str, torch.Tensor] = {}
        gen = torch.Generator().manual_seed(cfg.seed)
        for name, x, learns in zip(self.names, self.x, learn, strict=True):
            head = heads[name]
            if learns:
                start = self._start(name, head, gen)
                self.start[name] = start
                self.params[name] = tuple(torch.nn.Parameter(t.clone()) for t in start)
            else:
                self.fixed[name] = torch.from_numpy(head.project(x.numpy()))
        fixed_scale = None if cfg.temperature is None else math.log(1 / cfg.temperature)
        self.scale = torch.nn.Parameter(
            torch.tensor(INIT_SCALE if fixed_scale is None else fixed_scale),
            requires_grad=fixed_scale is None,
        )
        # Anchors: (raw rows, where the starting head puts them) per learning head.
        self.anchors = {
            name: (torch.from_numpy(l2_normalize(raw)), torch.from_numpy(heads[name].project(raw)))
            for name, raw in anchors.items()
            if name in self.params and len(raw)
        }
        self.check = check
        self.check_start = 1.0 if check is None else self._check_recall(None)
        if check is not None and check.relevant is None:
            # What the starting heads rank first is the answer to keep.
            scores = heads[check.query_modality].project(check.queries) @ (
                heads[check.gallery_modality].project(check.gallery).T
            )
            relevant = np.zeros(scores.shape, dtype=bool)
            relevant[np.arange(len(scores)), scores.argmax(axis=1)] = True
            self.check = replace(check, relevant=relevant)
            self.check_start = self._check_recall(None)

    def _start(
        self, name: str, head: AlignerHead, gen: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """A learning head's starting parameters (and, for a residual, its frozen map)."""

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, np.float32))

        if self.cfg.form == "affine":
            if head.kind == "residual":
                raise ValueError("a residual head can only go on learning as a residual")
            return tuple(tensor(t) for t in head.affine())
        if head.kind == "residual":
            w, b = head.base()
            t = head.tensors
            start = (tensor(t["down"]), tensor(t["down_bias"]), tensor(t["up"]))
        else:
            w, b = head.affine()
            hidden, width = self.cfg.hidden, head.in_dim
            down = torch.randn(hidden, width, generator=gen) / math.sqrt(width)
            start = (down, torch.zeros(hidden), torch.zeros(head.out_dim, hidden))
        self.frozen[name] = (tensor(w), tensor(b))
        return start

    def _map(self, name: str, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """A learning head's (unnormalised) output for unit rows ``x``."""
        if len(params) == 2:
            w, b = params
            return x @ w.T + b
        down, down_bias, up = params
        w, b = self.frozen[name]
        return x @ w.T + b + torch.relu(x @ down.T + down_bias) @ up.T

    def kept(self, gen: torch.Generator) -> torch.Tensor:
        """How far a batch of anchors moved from where the starting heads placed them."""
        total = torch.zeros(())
        for name, (raw, target) in self.anchors.items():
            rows = torch.randint(len(raw), (256,), generator=gen)
            moved = F.normalize(self._map(name, raw[rows], self.params[name]), dim=-1)
            total = total + (moved - target[rows]).square().sum(dim=1).mean()
        return total

    def side(self, i: int, rows: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Side i's (unnormalised) vectors for the given rows; with ``gen``, a learning
        side's inputs get the configured noise (``augment``)."""
        name = self.names[i]
        if name in self.fixed:
            return self.fixed[name][rows]
        x = self.x[i][rows]
        if gen is not None and self.cfg.augment > 0:
            x = F.normalize(x + self.cfg.augment * torch.randn(x.shape, generator=gen), dim=-1)
        return self._map(name, x, self.params[name])

    def pull(self) -> torch.Tensor:
        """Squared distance of the learning heads from where they started."""
        total = torch.zeros(())
        for name, params in self.params.items():
            if name in self.anchors:
                continue  # anchors say precisely what to keep; a blanket pull only slows it
            for p, p0 in zip(params, self.start[name], strict=True):
                total = total + (p - p0).square().sum()
        return total

    def _project(self, modality: str, raw: np.ndarray, maps: Maps | None) -> np.ndarray:
        """Unit vectors of raw rows through the current parameters (``maps=None``: the start)."""
        learnt = None if maps is None else maps.get(modality)
        if learnt is None or isinstance(learnt, AlignerHead):
            return self.heads[modality].project(raw)
        x = torch.from_numpy(l2_normalize(raw))
        params = tuple(torch.from_numpy(np.asarray(t)) for t in learnt)
        with torch.no_grad():
            return F.normalize(self._map(modality, x, params), dim=-1).numpy()

    def _check_recall(self, maps: Maps | None) -> float:
        """The anchor check's recall@k: the share of queries with a relevant row in their top k."""
        check = self.check
        if check is None or check.relevant is None:
            return 1.0
        q = self._project(check.query_modality, check.queries, maps)
        g = self._project(check.gallery_modality, check.gallery, maps)
        scores = q @ g.T
        top = np.argpartition(-scores, CHECK_K - 1, axis=1)[:, :CHECK_K]
        return float(np.take_along_axis(check.relevant, top, axis=1).any(axis=1).mean())

    def evaluate(self, maps: Maps | None) -> _State:
        """Held-out recall of the current parameters (or, with ``maps=None``, the start heads)."""
        with torch.no_grad():
            if maps is None:
                a, b = (
                    torch.from_numpy(self.heads[n].project(x[self.held].numpy()))
                    for n, x in zip(self.names, self.x, strict=True)
                )
                return _State(
                    dict(self.heads), self.scale.item(), held_out_score(a, b), self.check_start
                )
            a, b = (F.normalize(self.side(i, self.held), dim=-1) for i in (0, 1))
        anchors = self._check_recall(maps)
        score = held_out_score(a, b)
        if anchors < self.check_start - self.cfg.tolerance - 1e-9:
            # Forgets more than the tolerance: never the state a fine-tune hands back.
            score = Score(-math.inf, math.inf)
        bases = {n: self.heads[n] for n in self.params}
        return _State(maps, self.scale.item(), score, anchors, bases)

    def snapshot(self) -> _State:
        maps: Maps = {
            n: tuple(p.detach().numpy().copy() for p in params) for n, params in self.params.items()
        }
        maps |= {n: self.heads[n] for n in self.fixed}
        return self.evaluate(maps)

    def loss(self, chunk: torch.Tensor, gen: torch.Generator) -> StepLoss:
        """InfoNCE on the chunk's training rows, plus the pulls toward the start and anchors."""
        rows = self.train[chunk]
        fit = contrastive_loss(self.side(0, rows, gen), self.side(1, rows, gen), self.scale)
        cfg = self.cfg
        return StepLoss(
            minimise=fit + cfg.stay * self.pull() + cfg.keep * self.kept(gen), report=fit
        )


class _NearChunks:
    """Batches of near neighbours: every epoch, in a random order of seed rows, each batch is
    a seed and the rows not yet drawn that are nearest to it (in-batch negatives that are
    hard to tell apart), as row indices of the training pairs."""

    def __init__(self, x: torch.Tensor, batch: int, generator: torch.Generator) -> None:
        unit = F.normalize(x, dim=-1)
        self.similar = unit @ unit.T
        self.rows, self.batch, self.generator = len(x), batch, generator

    @property
    def per_epoch(self) -> int:
        return max(1, math.ceil(self.rows / self.batch))

    def epoch(self) -> list[torch.Tensor]:
        left = torch.ones(self.rows, dtype=torch.bool)
        out = []
        for seed in torch.randperm(self.rows, generator=self.generator).tolist():
            if not left[seed]:
                continue
            scores = self.similar[seed].masked_fill(~left, -math.inf)
            take = min(self.batch, int(left.sum()))
            chunk = scores.topk(take).indices
            left[chunk] = False
            out.append(chunk)
        return out


def _train(
    heads: _Heads,
    budget: Budget,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[_State, Outcome]:
    """Train the heads; return the best held-out state and how training ended."""
    cfg = heads.cfg
    params = [p for group in heads.params.values() for p in group]
    params += [heads.scale] if heads.scale.requires_grad else []
    # One generator shuffles the chunks and draws the anchors, in that order each epoch.
    gen = torch.Generator().manual_seed(cfg.seed)
    chunks: ShuffledChunks | _NearChunks = ShuffledChunks(len(heads.train), cfg.batch, gen)
    if cfg.hard and len(heads.train) <= HARD_MAX:
        chunks = _NearChunks(heads.x[0][heads.train], cfg.batch, gen)
    schedule = epoch_schedule(cfg.lr, epochs=cfg.max_epochs, per_epoch=chunks.per_epoch)
    early = EarlyStop(heads.evaluate(None), validate=heads.snapshot, patience=cfg.patience)
    outcome = train_epochs(
        batches=chunks,
        objective=lambda chunk: heads.loss(chunk, gen),
        stepper=Stepper.adamw(
            [{"params": params, "weight_decay": 0.0}], lr=cfg.lr, schedule=schedule
        ),
        max_epochs=cfg.max_epochs,
        budget=budget,
        early_stop=early,
        should_stop=should_stop,
        on_epoch=None if progress is None else lambda end: progress(_progress(end, cfg)),
    )
    return early.best, outcome


def _progress(end: EpochEnd, cfg: FinetuneConfig) -> Progress:
    """Progress after an epoch: the larger of the epoch and time fractions, and an ETA."""
    epoch, elapsed = end.epoch, end.elapsed
    fraction = min(1.0, max(epoch / cfg.max_epochs, elapsed / cfg.max_seconds))
    eta = min(elapsed / epoch * (cfg.max_epochs - epoch), max(0.0, cfg.max_seconds - elapsed))
    return Progress(epoch, cfg.max_epochs, end.loss, fraction, eta)
