"""Content-addressed blobs: durable writes, removal only when unused and unpinned."""

from __future__ import annotations

import hashlib
from pathlib import Path

from index.blobs import BlobStore


def test_put_is_content_addressed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert blobs.get(digest) == b"hello"
    assert blobs.put(b"hello") == digest
    assert not list(tmp_path.rglob("*.tmp"))


def test_remove_only_what_is_unused(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    used, unused = blobs.put(b"used"), blobs.put(b"unused")
    removed = blobs.remove_unused([used, unused], lambda shas: shas & {used})
    assert removed == 1
    assert blobs.path(used).exists()
    assert not blobs.path(unused).exists()


def test_a_pinned_blob_survives_removal(tmp_path: Path) -> None:
    """An ingest between writing the bytes and committing its row keeps them on disk."""
    blobs = BlobStore(tmp_path)
    with blobs.pinned(b"in flight") as digest:
        assert blobs.remove_unused([digest], lambda shas: set()) == 0
        assert blobs.path(digest).exists()
    assert blobs.remove_unused([digest], lambda shas: set()) == 1
