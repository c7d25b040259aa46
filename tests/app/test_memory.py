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
