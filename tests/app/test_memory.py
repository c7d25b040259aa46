"""The process's own memory (app.memory): freed pages given back, Triton kept
out (and nothing here compiles with torch.compile, which would need it)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import memory

ROOT = Path(__file__).resolve().parents[2]
glibc = pytest.mark.skipif(memory._libc() is None, reason="glibc's allocator only")


def test_the_server_process_never_imports_triton() -> None:
    code = "import sys, app.main; print(sys.modules.get('triton') is None)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_nothing_compiles_with_torch_compile() -> None:
    """Triton is kept out because nothing needs it: ``torch.compile`` would."""
    sources = [p for d in ("app", "models", "index") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 50
    assert not [p for p in sources if "torch.compile(" in p.read_text()]


@glibc
def test_the_trimmer_gives_back_what_a_burst_freed() -> None:
    """100 MB freed in holes between blocks still in use: RssAnon stays up until the
    trimmer sees it grown past its threshold and trims."""
    libc = memory._libc()
    assert libc is not None
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    trimmer = memory.Trimmer(growth_mb=32)
    trimmer.now()
    assert trimmer.check() is False  # nothing grew
    chunk = 100 * 1024  # under the mmap threshold: from the heap
    blocks = []
    for _ in range(2000):
        blocks.append(libc.malloc(chunk))
        ctypes.memset(blocks[-1], 1, chunk)
    freed, kept = blocks[::2], blocks[1::2]  # each kept block pins a hole below the top
    for p in freed:
        libc.free(p)
    try:
        before = memory.anonymous_mb()
        assert before is not None and trimmer.level is not None
        assert before - trimmer.level > 150, "the freed holes should still be resident"
        assert trimmer.check() is True
        after = memory.anonymous_mb()
        assert after is not None and before - after > 50, json.dumps([before, after])
    finally:
        for p in kept:
            libc.free(p)


# In a fresh process: free a 16 MiB block (glibc's default raises its mmap threshold to
# that), then allocate 8 MiB (a build's page of rows). glibc marks a mapped block by bit 2
# of the size word before it; a block from an arena lies among the index's long-lived ones.
MAPPED_AFTER_A_BIG_FREE = """
import ctypes, sys
{setup}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(16 << 20)
ctypes.memset(big, 1, 16 << 20)
libc.free(big)
block = libc.malloc(8 << 20)
print(bool(ctypes.c_size_t.from_address(block - 8).value & 2))
"""


def _mapped_after_a_big_free(setup: str, env: dict[str, str] | None = None) -> bool:
    code = MAPPED_AFTER_A_BIG_FREE.format(setup=setup)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip() == "True"


@glibc
def test_an_operator_can_pin_the_threshold_and_the_server_does_not() -> None:
    """Reindexes in one server grew its memory by 40-170 MB each while glibc's threshold
    moved up (bench.build_memory --reindexes). Pinned by the operator
    (``MALLOC_MMAP_THRESHOLD_``, docs/performance.md "Memory"), a block above it is mapped,
    and given back whole when freed, even after a larger one was freed. The server pins
    nothing (pinned, the encoders lost a fifth of their image throughput): the same block
    comes from an arena."""
    assert _mapped_after_a_big_free("import app") is False
    env = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20), "PATH": "/usr/bin:/bin"}
    assert _mapped_after_a_big_free("import app", env=env) is True
