"""Freed heap pages go back to the OS between simulated read-outs (glibc only)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from insitem.simulators.heap import _TRIM, free_heap_bytes, release_free_heap


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


@pytest.mark.skipif(platform.system() != "Linux" or _TRIM is None or free_heap_bytes() is None,
                    reason="needs glibc's malloc_trim and mallinfo2")
def test_the_heap_is_trimmed_only_above_the_threshold() -> None:
    """Trimming at every read-out made the next read-out fault the same pages in again (17 s of
    system time in in-situ-lasgtp): below the threshold nothing is trimmed."""
    blocks = [np.ones(8192) for _ in range(2000)]  # ~128 MB of 64 KiB heap blocks
    del blocks[::2]  # ~64 MB free between live blocks
    free = free_heap_bytes()
    assert free is not None and free > 48 * 2**20
    before = _rss_kb()
    assert not release_free_heap(above_bytes=free + 2**20)  # not over the threshold: kept
    assert _rss_kb() > before - 4_000
    assert release_free_heap(above_bytes=16 * 2**20)  # over it: returned
    assert _rss_kb() < before - 32_000
    del blocks
