"""Who decides how many threads a numerical kernel uses: the kernel itself.

NumPy's and SciPy's BLAS (OpenBLAS here) start one thread per core for every
product, however small. Inside a loop of small products (an iterative solver
applying a convolution tap by tap, a stack of per-frequency SVDs) the threads
spend their time waiting for each other, and on a machine where another process
holds a core such a loop runs ten times slower than on one thread. The kernels of
convmatrix therefore run their BLAS and LAPACK calls on one thread
(:func:`single_threaded`, threadpoolctl's limit, for the duration of the call
only: the user's own settings are restored afterwards), and where a call is large
enough to pay for parallelism they split it into independent pieces on their own
threads (:func:`workers`), so a busy core simply takes fewer pieces.
No environment variable is ever set.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from functools import lru_cache, wraps

from .._optional import require

__all__ = ["single_threaded", "one_blas_thread", "workers"]


@lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the loaded BLAS libraries (NumPy's and SciPy's), found once."""
    threadpoolctl = require("threadpoolctl", extra="core", feature="convmatrix's numerical kernels")
    return threadpoolctl.ThreadpoolController()


_lock = threading.Lock()
_active = {"depth": 0, "limiter": None}  # nested and concurrent uses share one limit


@contextmanager
def one_blas_thread():
    """Run the body with every loaded BLAS/LAPACK on one thread; the previous settings come back after.

    The limit is process-wide (BLAS has no per-thread setting): the first of nested or
    concurrent uses sets it, the last one to leave restores the settings it found.
    Entering costs tens of microseconds (the libraries are looked up once).

    >>> import numpy as np
    >>> with one_blas_thread():
    ...     float(np.ones((2, 2)) @ np.ones(2) @ np.ones(2))
    4.0
    """
    with _lock:
        if _active["depth"] == 0:
            _active["limiter"] = _controller().limit(limits=1, user_api="blas")
        _active["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _active["depth"] -= 1
            if _active["depth"] == 0:
                _active["limiter"].restore_original_limits()
                _active["limiter"] = None


def single_threaded(fn):
    """Decorator: ``fn`` runs under :func:`one_blas_thread` (nested calls cost nothing extra)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper


def workers(pieces: int) -> int:
    """Threads for ``pieces`` independent pieces of work: one per core, at most 8, at most
    ``pieces``, and at most ``$CONVMATRIX_THREADS`` when set (e.g. 1 on a shared machine).

    >>> workers(1)
    1
    """
    cap = os.environ.get("CONVMATRIX_THREADS", "").strip()
    return max(1, min(os.cpu_count() or 1, 8, pieces, int(cap) if cap else 8))
