"""The model registry: one id syntax (DESIGN.md, Models) mapped to loaders.

- ``open_clip:ARCH/PRETRAINED``  weights through open_clip's own loader and cache
- ``open_clip:ARCH@/path/ckpt``  a local checkpoint (``.pt``, ``.bin`` or ``.safetensors``)
- ``random:ARCH``                seeded random init of an open_clip architecture (plumbing only)
- ``mmr-mini``                   the project's own image/text/audio model, shipped in the package
- ``mmr-mini@/path/to/dir``      mmr-mini weights from ``mmr train-mini --out DIR``
- ``auto``                       the production default if it can be had, else a loud fallback

Audio models (``MMR_AUDIO_MODEL``) take their own ids:

- empty (default)                the model's own audio tower when it has one (mmr-mini), else none
- ``none``                       no audio, even for a model that has an audio tower
- ``clap:ORG/REPO``              a CLAP audio tower through transformers' loader and cache
                                 (``clap:laion/clap-htsat-unfused``), bridged by an aligner head
- ``clap:/path/to/dir``          a CLAP saved with ``save_pretrained`` (model and processor)
"""

from __future__ import annotations

import logging
import os
import pickle
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from models.encoders import hub
from models.encoders.architectures import register_project_configs
from models.encoders.audio import AudioEncoder
from models.encoders.mini.encoder import MiniEncoder
from models.encoders.mini.model import ARCH as MINI_ARCH
from models.encoders.mini.model import CARD_FILE, SHIPPED_DIR, load_mini
from models.encoders.openclip import Encoder, OpenClipEncoder
from models.errors import ModelLoadError, UnknownModelError
from models.runtime.batcher import BatchConfig
from models.runtime.notices import without_notice
from models.runtime.precision import FP32, PrecisionChoice, Probe, choose_precision

log = logging.getLogger(__name__)

PRODUCTION_DEFAULT = "open_clip:ViT-B-32/laion2b_s34b_b79k"
OFFLINE_FALLBACK = "mmr-mini"
# What open_clip, torch.load and safetensors raise for missing, corrupt or mismatched weights.
CHECKPOINT_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    KeyError,
    EOFError,
    pickle.UnpicklingError,
    SafetensorError,
)
RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model id."""

    kind: str  # "open_clip" | "random" | "mmr-mini" | "auto"
    arch: str = ""
    pretrained: str | None = None
    checkpoint: Path | None = None


@dataclass
class LoadedModel:
    """An encoder plus how it was chosen."""

    encoder: Encoder
    requested: str
    fallback: bool
    warning: str | None = None
    audio: AudioEncoder | None = None
    precision: PrecisionChoice = FP32


def parse_model_id(model_id: str) -> ModelSpec:
    """Parse a model id; raise UnknownModelError on anything outside the syntax."""
    kind, sep, rest = model_id.partition(":")
    if model_id == "auto":
        return ModelSpec(kind="auto")
    if model_id == MINI_ARCH:
        return ModelSpec(kind=MINI_ARCH, arch=MINI_ARCH, checkpoint=SHIPPED_DIR)
    name, at, path = model_id.partition("@")
    if name == MINI_ARCH and at and path:
        return ModelSpec(kind=MINI_ARCH, arch=MINI_ARCH, checkpoint=Path(path))
    if not sep or not rest:
        raise UnknownModelError(_syntax_help(model_id))
    if kind == "random":
        return ModelSpec(kind="random", arch=rest)
    if kind == "open_clip":
        if "@" in rest:
            arch, _, path = rest.partition("@")
            if arch and path:
                return ModelSpec(kind="open_clip", arch=arch, checkpoint=Path(path))
        elif "/" in rest:
            arch, _, tag = rest.partition("/")
            if arch and tag:
                return ModelSpec(kind="open_clip", arch=arch, pretrained=tag)
    raise UnknownModelError(_syntax_help(model_id))


def _syntax_help(model_id: str) -> str:
    return (
        f"unknown model id {model_id!r}: use open_clip:ARCH/PRETRAINED, "
        "open_clip:ARCH@/path/to/checkpoint, random:ARCH, mmr-mini, mmr-mini@/path/to/dir "
        "or auto"
    )


AUDIO_SYNTAX = ("", "none", "clap:ORG/REPO", "clap:/path/to/dir")
NO_AUDIO = "none"


def parse_audio_id(audio_id: str) -> tuple[str, str]:
    """``(kind, source)`` of an audio model id: builtin, none or clap."""
    if audio_id == "":
        return "builtin", ""
    if audio_id == NO_AUDIO:
        return NO_AUDIO, ""
    kind, sep, source = audio_id.partition(":")
    if kind == "clap" and sep and source:
        return "clap", source
    raise UnknownModelError(
        f"unknown audio model id {audio_id!r}: leave MMR_AUDIO_MODEL empty for the model's own "
        "audio tower, or use none, clap:ORG/REPO (e.g. clap:laion/clap-htsat-unfused) or "
        "clap:/path/to/a/save_pretrained/dir"
    )


def load_audio_model(
    audio_id: str,
    *,
    encoder: Encoder,
    device: str = "cpu",
    cache_dir: Path | None = None,
    batching: BatchConfig | None = None,
) -> AudioEncoder | None:
    """The audio tower an id names (strict like model ids); None means no audio."""
    kind, source = parse_audio_id(audio_id)
    if kind == NO_AUDIO:
        return None
    if kind == "builtin":
        builtin: AudioEncoder | None = getattr(encoder, "audio", None)
        return builtin
    from models.encoders.clap import load_clap

    return load_clap(
        audio_id, source, device=pick_device(device), cache_dir=cache_dir, batching=batching
    )


def pick_device(device: str) -> str:
    """Resolve ``auto`` to CUDA when present, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("MMR_DEVICE=cuda but no CUDA device is visible; use auto or cpu")
    return device


def list_architectures() -> list[str]:
    """Architectures usable in ``open_clip:`` and ``random:`` ids."""
    import open_clip

    register_project_configs()
    return list(open_clip.list_models())


def load_model(
    model_id: str,
    *,
    audio_model: str = "",
    device: str = "auto",
    cache_dir: Path | None = None,
    precision: str = "fp32",
    batching: BatchConfig | None = None,
    probe: Probe | None = None,
) -> LoadedModel:
    """Load a model (and its audio tower) by id; explicit ids are strict, ``auto`` falls
    back loudly.

    ``precision`` applies to the image/text model (and mmr-mini's own audio tower); a CLAP
    tower stays fp32. Its default here is fp32, so that evaluations and training scripts give
    the same numbers everywhere; the server passes MMR_PRECISION (default auto). ``probe``
    measures ``auto`` (default: this process's, :data:`models.runtime.precision.PROCESS_PROBE`).
    """
    parse_audio_id(audio_model)  # a typo fails before minutes of weight loading
    loaded = _load_main(model_id, device=device, cache_dir=cache_dir, batching=batching)
    loaded.precision = choose_precision(loaded.encoder, precision, cache_dir=cache_dir, probe=probe)
    loaded.audio = load_audio_model(
        audio_model, encoder=loaded.encoder, device=device, cache_dir=cache_dir, batching=batching
    )
    return loaded


def _load_main(
    model_id: str, *, device: str, cache_dir: Path | None, batching: BatchConfig | None
) -> LoadedModel:
    spec = parse_model_id(model_id)
    dev = pick_device(device)
    if spec.kind != "auto":
        encoder = _load_spec(model_id, spec, dev, cache_dir, batching)
        return LoadedModel(encoder, model_id, fallback=False)
    default = parse_model_id(PRODUCTION_DEFAULT)
    try:
        if not _weights_obtainable(default, cache_dir):
            raise ModelLoadError("its weights are not cached and the hub cannot be reached")
        enc = _load_spec(PRODUCTION_DEFAULT, default, dev, cache_dir, batching)
        return LoadedModel(enc, model_id, fallback=False)
    except ModelLoadError as exc:
        warning = (
            f"MMR_MODEL=auto: the production default {PRODUCTION_DEFAULT} could not be loaded "
            f"({exc}); serving the offline fallback {OFFLINE_FALLBACK}, a small demonstration "
            "model that only knows the project's synthetic shapes and sounds, not photos. "
            "Give the server network access or a cached checkpoint, or set MMR_MODEL."
        )
        # The warning is the caller's to say where it is seen (the server's start-up block
        # ends with it; the CLI prints it): said here too, it was printed twice.
        log.info("MMR_MODEL=auto: loading the offline fallback %s (%s)", OFFLINE_FALLBACK, exc)
        fallback = parse_model_id(OFFLINE_FALLBACK)
        enc = _load_spec(OFFLINE_FALLBACK, fallback, dev, cache_dir, batching)
        return LoadedModel(enc, model_id, fallback=True, warning=warning)


def _weights_obtainable(spec: ModelSpec, cache_dir: Path | None) -> bool:
    """Cheap check before a download: cached, or the hub answers within seconds
    (:func:`models.encoders.hub.reachable`)."""
    import huggingface_hub
    from open_clip.pretrained import get_pretrained_cfg

    hub_path = get_pretrained_cfg(spec.arch, spec.pretrained or "").get("hf_hub", "")
    if not hub_path:
        return hub.reachable()
    # open_clip's convention: "org/repo/" means its default file names, else "org/repo/file".
    repo_id, filename = os.path.split(hub_path)
    names = (
        [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    )
    for name in names:
        found = huggingface_hub.try_to_load_from_cache(
            repo_id, name, cache_dir=str(cache_dir) if cache_dir else None
        )
        if isinstance(found, str):
            return True
    return hub.reachable()


def _load_spec(
    model_id: str,
    spec: ModelSpec,
    device: str,
    cache_dir: Path | None,
    batching: BatchConfig | None = None,
) -> Encoder:
    if spec.kind == MINI_ARCH:
        return _load_mini(model_id, spec, device, batching)
    import open_clip

    register_project_configs()
    if spec.arch not in open_clip.list_models():
        raise ModelLoadError(
            f"{model_id}: unknown architecture {spec.arch!r}; see GET /v1/models for the list"
        )
    pretrained: str | None = spec.pretrained
    if spec.checkpoint is not None:
        if not spec.checkpoint.is_file():
            raise ModelLoadError(f"{model_id}: checkpoint file {spec.checkpoint} does not exist")
        pretrained = str(spec.checkpoint)
    # random: asks for random weights: open_clip's warning that it made them tells nothing.
    quiet = without_notice("initialized randomly") if spec.kind == "random" else nullcontext()
    if spec.kind == "random":
        # Seeded so that a restart gives the same space: stored vectors stay comparable.
        torch.manual_seed(RANDOM_SEED)
    try:
        with quiet:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch,
                pretrained=pretrained,
                device=device,
                cache_dir=str(cache_dir) if cache_dir else None,
                pretrained_text=False,
            )
    except CHECKPOINT_ERRORS as exc:
        raise ModelLoadError(f"{model_id}: could not load the weights: {exc}") from exc
    tokenizer = open_clip.get_tokenizer(spec.arch)
    return OpenClipEncoder(
        model_id=model_id,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=device,
        batching=batching,
    )


def _load_mini(
    model_id: str, spec: ModelSpec, device: str, batching: BatchConfig | None
) -> Encoder:
    weights_dir = spec.checkpoint or SHIPPED_DIR
    if not (weights_dir / CARD_FILE).is_file():
        raise ModelLoadError(
            f"{model_id}: {weights_dir} holds no {CARD_FILE}; point at a directory written by "
            "`mmr train-mini --out DIR`"
        )
    try:
        model = load_mini(weights_dir, device=device)
    except CHECKPOINT_ERRORS as exc:
        raise ModelLoadError(f"{model_id}: could not load the weights: {exc}") from exc
    return MiniEncoder(model_id=model_id, model=model, device=device, batching=batching)
