"""Give freed heap memory back to the operating system between simulated camera read-outs.

A simulated read-out allocates and frees tens of MB of mixed-size numpy blocks (EELS synthesis,
detector draws, PSF products). glibc keeps freed blocks in the process heap, and raises its mmap
threshold to the size of a freed block, so over hundreds of read-outs the resident set climbs to
the largest mix of blocks ever live at once and stays there (in-situ-lasgtp: +45 MB over 717
read-outs, docs/performance/dry-run.md). `malloc_trim(0)` returns the free pages. No library we
use exposes it, hence the ctypes call; it is a no-op where the C library has no `malloc_trim`
(macOS, Windows, musl).

Trimming at every read-out costs more than it saves: the next read-out faults the same pages in
again (in-situ-lasgtp: 4.2 million minor page faults, 17 s of system time, against 0.2 million and
1.5 s untrimmed, with the same peak RSS). So the simulated camera trims only when the free heap
holds more than `TRIM_ABOVE_BYTES` (glibc's `mallinfo2`, summed over every arena).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable


def _libc_function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., Any] | None:
    """The C library's function `name` with its signature, or None where there is none."""
    lib = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(lib) if lib else None
    except OSError:
        return None
    fn = getattr(libc, name, None)
    if fn is None:
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33): every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_MALLINFO2 = _libc_function("mallinfo2", [], _Mallinfo2)

#: free heap (bytes) above which the simulated camera returns it to the OS
TRIM_ABOVE_BYTES = 64 * 2**20


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free (free chunks and fastbins over every arena), or None where the C
    library cannot say."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.fordblks + info.fsmblks)


def release_free_heap(above_bytes: int = 0) -> bool:
    """Return free heap pages to the OS when the heap holds more than `above_bytes` free (always
    when the C library cannot say how much); True if the C library could do it and released any."""
    if _TRIM is None:
        return False
    if above_bytes > 0:
        free = free_heap_bytes()
        if free is not None and free <= above_bytes:
            return False
    return bool(_TRIM(0))
