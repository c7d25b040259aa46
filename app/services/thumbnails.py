"""Small JPEGs of image items, and of videos at a moment, for the web page's result grid
(``GET .../thumbnail``).

A video's moment is snapped to the start of the segment it falls in (the item's stored
spans, which is where hits point), so a video has at most as many thumbnails as segments
however many moments are asked for; each is decoded within THUMBNAIL_DECODE_S and the
process's budget of decoded bytes.

Made from the stored original on first request (a JPEG decoded at a reduced DCT scale, so a
12-megapixel photo costs a fraction of a full decode) and kept in a small in-process cache
by content (sha256): a grid of results asks for the same few dozen again and again. The
browser caches them too (``ETag`` is the content's digest, ``app.routers.items``).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict

from PIL import Image

from app.services.errors import InvalidInput
from app.services.items import item_content
from app.services.media import request_budget, video_limits
from app.settings import Settings
from index.blobs import BlobStore
from index.collections import CollectionStore
from index.errors import NotFoundError
from index.items import ItemStore
from models.media.image import decode_image
from models.media.video import frame_at

SIDE = 256  # the longer side of a thumbnail, pixels
QUALITY = 80
CACHE_BYTES = 16 * 1024 * 1024  # about 1,000 thumbnails
# Seconds a video's frame may take to decode (a seek lands on the keyframe before it): a
# thumbnail is a GET that anyone with read access sends, not an upload's full decode.
THUMBNAIL_DECODE_S = 5.0


class ThumbnailCache:
    """Thumbnails by the digest of their original, least recently used dropped past a size."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            found = self._entries.get(sha256)
            if found is not None:
                self._entries.move_to_end(sha256)
            return found

    def put(self, sha256: str, jpeg: bytes) -> None:
        with self._lock:
            if sha256 in self._entries or len(jpeg) > self.max_bytes:
                return
            self._entries[sha256] = jpeg
            self._held += len(jpeg)
            while self._held > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._held -= len(dropped)


_cache = ThumbnailCache()


def thumbnail(
    *,
    settings: Settings,
    collections: CollectionStore,
    items: ItemStore,
    blobs: BlobStore,
    name: str,
    item_id: str,
    t: float | None = None,
) -> tuple[bytes, str]:
    """A JPEG of the item at most ``SIDE`` pixels on its longer side (a video's frame at the
    start of the segment ``t`` seconds fall in, by default its first), and the key it is
    cached and tagged by (the original's digest, and that start for a video); NotFoundError
    for an item without pictures, InvalidInput for a ``t`` past a video's end or given for an
    image, MediaTooLargeError for a frame that takes over THUMBNAIL_DECODE_S to decode."""
    row = collections.get(name)
    item = items.get(collection_id=row.id, external_id=item_id)
    if item.modality not in ("image", "video"):
        raise NotFoundError(
            f"item {item_id!r} is {item.modality}: only image and video items have a "
            "thumbnail (GET .../content gives the original)"
        )
    moment = 0.0 if item.modality == "image" else _snapped(item.spans, t)
    key = item.sha256 if item.modality == "image" else f"{item.sha256}@{moment:.3f}"
    if item.modality == "image" and t is not None:
        raise InvalidInput(f"item {item_id!r} is an image: t (seconds) is for video items")
    cached = _cache.get(key)
    if cached is not None:
        return cached, key
    data, _ = item_content(
        collections=collections, items=items, blobs=blobs, name=name, item_id=item_id
    )
    if item.modality == "video":
        image = frame_at(
            data,
            moment,
            limits=video_limits(settings),
            side=SIDE,
            seconds=min(THUMBNAIL_DECODE_S, settings.video_decode_seconds),
            budget=request_budget(settings),
        )
    else:
        image = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            min_side=SIDE,
            shrink_to=SIDE,
            budget=request_budget(settings),
        )
    image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=QUALITY, optimize=True)
    jpeg = out.getvalue()
    _cache.put(key, jpeg)
    return jpeg, key


def _snapped(spans: list[list[float]] | None, t: float | None) -> float:
    """The start of the video's segment that ``t`` falls in (the last that starts at or
    before it); a ``t`` past the video's end is refused (422)."""
    duration = max((end for _, end in spans), default=0.0) if spans else 0.0
    moment = 0.0 if t is None else t
    if not math.isfinite(moment) or moment < 0 or moment > duration:
        raise InvalidInput(
            f"t must be a time in the video, from 0 to its duration ({duration:.3f} s)"
        )
    starts = [start for start, _ in spans or ()]
    return max((s for s in starts if s <= moment), default=0.0)
