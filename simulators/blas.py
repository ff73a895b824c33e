"""One BLAS thread for the simulators' small matrix products.

The simulators' products are a few million flops each, run thousands of times a dry run, on a
machine whose other cores the run's writer and the OS need: a multi-threaded BLAS spends more
waking its threads than it gains. threadpoolctl finds the loaded BLAS libraries; finding them
costs ~5 ms, so the controller is made once and its `limit` reused.
"""

from __future__ import annotations

import functools

from contextlib import AbstractContextManager
from typing import Any

from threadpoolctl import ThreadpoolController


@functools.lru_cache(maxsize=1)
def blas_controller() -> ThreadpoolController:
    """The process's thread pools (BLAS), found once, at first use (after numpy and scipy have
    loaded their BLAS)."""
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """Context manager: BLAS limited to one thread inside it."""
    return blas_controller().limit(limits=1, user_api="blas")
