"""Freed heap pages go back to the OS between simulated read-outs (glibc only)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from insitem.simulators.heap import _TRIM, release_free_heap


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(platform.system() != "Linux" or _TRIM is None, reason="needs glibc's malloc_trim")
def test_freed_heap_blocks_are_returned_to_the_os() -> None:
    # 64 KiB blocks stay below glibc's mmap threshold, so they live in the heap; keep every other
    # one so the freed pages sit between live blocks, where only malloc_trim can return them
    blocks = [np.ones(8192) for _ in range(2000)]  # ~128 MB
    del blocks[::2]
    before = _rss_kb()
    assert release_free_heap()
    after = _rss_kb()
    assert before - after > 32_000, (before, after)  # most of the ~64 MB freed comes back
    del blocks
