"""What ``mmr ingest`` sends: the files under the given paths, each with its item id and the
metadata found for it (the file's own, a manifest's row, a sidecar ``<file>.json``)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
AUDIO = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})
VIDEO = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})
TEXT = frozenset({".txt"})
SIDECAR = ".json"  # photo.jpg.json holds photo.jpg's metadata


class IngestError(Exception):
    """Something the user must fix before anything is sent (a manifest that cannot be
    read, a path that is not there); the message says what."""


@dataclass(frozen=True)
class Found:
    """A file to send: where it is, its item id, its kind (``file`` or ``text``)."""

    path: Path
    item_id: str
    kind: str
    size: int


@dataclass
class Loaded:
    """A file read for sending: its bytes (a text file's: its text in UTF-8, what the server
    stores and hashes), their sha256 and its metadata."""

    found: Found
    data: bytes
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    feature: list[float] | None = None  # computed elsewhere (--engine ray), in ``space``
    space: dict[str, Any] | None = None


def item_id(relative: Path) -> str:
    """A file's id: its path relative to the folder it was found under, ``/`` written as
    ``%2F`` and ``%`` as ``%25`` (an id holds no ``/``; the mapping goes back one to one)."""
    return relative.as_posix().replace("%", "%25").replace("/", "%2F")


def walk(paths: list[Path]) -> Iterator[Found]:
    """Every image, audio, video and ``.txt`` file under the paths (folders recursively, in name
    order; hidden files and folders, and sidecars, left out)."""
    for root in paths:
        if not root.exists():
            raise IngestError(f"{root} does not exist")
        if root.is_file():
            found = _found(root, Path(root.name))
            if found is not None:
                yield found
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            found = _found(path, relative)
            if found is not None:
                yield found


def _found(path: Path, relative: Path) -> Found | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE or suffix in AUDIO or suffix in VIDEO:
        kind = "file"
    elif suffix in TEXT:
        kind = "text"
    else:
        return None
    return Found(path, item_id(relative), kind, path.stat().st_size)


def load(found: Found, manifest: Mapping[Path, dict[str, Any]]) -> Loaded:
    """Read a file and gather its metadata: the file's own (images: EXIF capture time,
    camera, GPS; audio: duration), then the manifest's row, then its sidecar (later ones
    win). OSError and ValueError (UnicodeDecodeError: a text file not in UTF-8; a sidecar
    that is not a JSON object) say why this one file cannot be sent."""
    raw = found.path.read_bytes()
    if found.kind == "text":
        data = raw.decode("utf-8-sig").encode("utf-8")
        metadata: dict[str, Any] = {}
    else:
        data = raw
        metadata = own_metadata(found.path, raw)
    metadata.update(manifest.get(found.path.resolve(), {}))
    sidecar = found.path.with_name(found.path.name + SIDECAR)
    if sidecar.is_file():
        extra = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(extra, dict):
            raise ValueError(f"{sidecar.name} holds no JSON object")
        metadata.update(extra)
    return Loaded(found, data, hashlib.sha256(data).hexdigest(), metadata)


def own_metadata(path: Path, data: bytes) -> dict[str, Any]:
    """What a file says about itself, as flat scalars a filter can match: images'
    ``taken_at`` (EXIF DateTimeOriginal, ISO 8601), ``taken_date``, ``taken_year``,
    ``camera``, ``gps_lat`` and ``gps_lon``; audio's ``duration_s``. Nothing when the file
    does not say (or cannot be read here: the server decides what it accepts)."""
    if path.suffix.lower() in VIDEO:
        return {}  # the server measures a video's duration on what decodes
    try:
        if path.suffix.lower() in AUDIO:
            return _audio_metadata(path)
        return _exif_metadata(path)
    except Exception:
        return {}


def _exif_metadata(path: Path) -> dict[str, Any]:
    from PIL import ExifTags, Image

    out: dict[str, Any] = {}
    with Image.open(path) as image:
        exif = image.getexif()
    if not exif:
        return out
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    taken = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    if isinstance(taken, str) and len(taken) >= 19 and taken[4] == ":" and taken[7] == ":":
        day = taken[:10].replace(":", "-")
        out.update(taken_at=f"{day}T{taken[11:19]}", taken_date=day, taken_year=int(day[:4]))
    camera = " ".join(
        str(exif.get(tag, "")).strip("\x00 ") for tag in (ExifTags.Base.Make, ExifTags.Base.Model)
    ).strip()
    if camera:
        out["camera"] = camera
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    lat, lon = _degrees(gps.get(2), gps.get(1)), _degrees(gps.get(4), gps.get(3))
    if lat is not None and lon is not None:
        out.update(gps_lat=round(lat, 6), gps_lon=round(lon, 6))
    return out


def _degrees(dms: Any, ref: Any) -> float | None:
    if not dms or len(dms) != 3:
        return None
    value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    return -value if ref in ("S", "W") else value


def _audio_metadata(path: Path) -> dict[str, Any]:
    import soundfile

    info = soundfile.info(str(path))
    return {"duration_s": round(float(info.duration), 3)}


def read_manifest(path: Path, base: Path) -> dict[Path, dict[str, Any]]:
    """Metadata by file from a CSV (a ``path`` column, every other column a metadata key)
    or JSON Lines manifest (objects with ``path``); relative paths are taken from ``base``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise IngestError(f"cannot read the manifest {path}: {exc.strerror}") from exc
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(f"{path}:{n}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise IngestError(f"{path}:{n}: a line must be a JSON object with 'path'")
            rows.append(row)
    else:
        rows = list(csv.DictReader(text.splitlines()))
    out: dict[Path, dict[str, Any]] = {}
    for n, row in enumerate(rows, 1):
        where = row.pop("path", None)
        if not isinstance(where, str) or not where:
            raise IngestError(f"{path}: entry {n} has no 'path'")
        out[(base / where).resolve()] = {k: v for k, v in row.items() if v not in ("", None)}
    return out
