"""Give freed heap memory back to the operating system between simulated camera read-outs.

A simulated read-out allocates and frees tens of MB of mixed-size numpy blocks (EELS synthesis,
detector draws, PSF products). glibc keeps freed blocks in the process heap, and raises its mmap
threshold to the size of a freed block, so over hundreds of read-outs the resident set climbs to
the largest mix of blocks ever live at once and stays there (in-situ-lasgtp: +45 MB over 717
read-outs, docs/performance/dry-run.md). `malloc_trim(0)` returns the free pages. No library we
use exposes it, hence the ctypes call; it is a no-op where the C library has no `malloc_trim`
(macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    fn = getattr(libc, "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _load_trim()


def release_free_heap() -> bool:
    """Return free heap pages to the OS; True if the C library could do it and released any."""
    return bool(_TRIM(0)) if _TRIM is not None else False
