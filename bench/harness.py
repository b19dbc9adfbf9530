"""Timing and memory measurement for the benchmarks.

Contenders are timed *interleaved*: every repeat runs each of them once, in
turn, so a noisy neighbour on a shared machine slows all of them alike instead
of one. We report the median (the figure quoted) and the best of the repeats.

Example:
    >>> from harness import time_interleaved
    >>> t = time_interleaved({"noop": lambda: None}, repeats=3)
    >>> sorted(t["noop"])
    ['best', 'median', 'runs']
"""

from __future__ import annotations

import gc
import os
import platform
import time
import tracemalloc
from contextlib import contextmanager
from datetime import datetime, timezone
from statistics import median
from typing import Callable

# The statistic every table quotes: "median" of the repeats (default) or "best"
# (the least disturbed run, for a machine shared with other jobs).
STAT = "median"


@contextmanager
def threads(n: int | None):
    """Run convmatrix builds with at most ``n`` threads (None: the library's default).

    ``conv_matrix`` threads only builds of 4M entries or more; ``n`` caps it.
    """
    old = os.environ.get("CONVMATRIX_THREADS")
    if n is None:
        os.environ.pop("CONVMATRIX_THREADS", None)
    else:
        os.environ["CONVMATRIX_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CONVMATRIX_THREADS", None)
        else:
            os.environ["CONVMATRIX_THREADS"] = old


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict:
    """Seconds per call of every function: ``{name: {"median", "best", "runs"}}``.

    Each call's result is dropped before the next call starts, so builds do not
    pile up in memory. ``warmup`` untimed rounds come first (imports, JIT, caches
    of other libraries).
    """
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            del out
            if r >= warmup:
                runs[name].append(dt)
    return {name: {"median": median(v), "best": min(v), "runs": v} for name, v in runs.items()}


def peak_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """Peak bytes allocated while ``fn`` runs (tracemalloc: sees NumPy's buffers and
    Python objects), and its result."""
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, out


def csr_bytes(M) -> int:
    """Bytes of a SciPy sparse matrix's CSR arrays."""
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


def copy_csr(M):
    """The limit: copying the finished CSR arrays (what any build must at least write)."""
    return M.data.copy(), M.indices.copy(), M.indptr.copy()


def machine_info() -> dict:
    """What the numbers were measured on."""
    import numpy
    import scipy

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "load average (1 min)": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import torch

        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = "missing"
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
