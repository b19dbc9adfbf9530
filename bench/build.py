"""Building the matrix: conv_matrix against the copy of its result and the anchors.

``conv_matrix`` is timed *cold*: the cached tap pattern is cleared before every
call, so each call does the whole job a first call does (validation, pattern,
values), the way the anchors are timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import convmatrix
from convmatrix.core import pattern
from anchors import ANCHORS, max_abs_diff
import harness
from cases import Case
from harness import copy_csr, csr_bytes, peak_bytes, threads, time_interleaved

# Seconds of timed anchor calls per (case, anchor): slow anchors get fewer repeats (at least one).
ANCHOR_BUDGET_S = {"full": 10.0, "quick": 1.0}


@dataclass
class BuildResult:
    case: Case
    nnz: int
    shape: tuple
    result_bytes: int
    seconds: dict  # "1 thread", "2 threads", "copy" -> {"median", "best", "runs"}
    peak_bytes: int
    anchors: list = field(default_factory=list)  # AnchorResult

    def ratio(self, key: str) -> float:
        return self.seconds[key][harness.STAT] / self.seconds["copy"][harness.STAT]

    @property
    def mnnz_per_s(self) -> float:
        return self.nnz / self.seconds["1 thread"][harness.STAT] / 1e6


@dataclass
class AnchorResult:
    name: str
    status: str  # "ok", or why not run
    seconds: dict | None = None  # anchor's and ours, timed interleaved
    ours_seconds: dict | None = None
    max_abs_diff: float | None = None
    same: bool | None = None

    @property
    def speedup(self) -> float:
        return self.seconds[harness.STAT] / self.ours_seconds[harness.STAT]


def weight_for(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the layer's weight for conv_matrix, the kernel the anchors take), float32.

    Signal cases are true convolutions: the anchors take the kernel, conv_matrix
    the flipped kernel (cross-correlation), so both build the same matrix.
    """
    w = rng.standard_normal(case.weight_shape).astype(np.float32)
    if case.signal:
        nd = w.ndim - 2
        kernel = np.ascontiguousarray(w[(0, 0)][(slice(None, None, -1),) * nd])
        return w, kernel
    return w, w


def build_fn(case: Case, w: np.ndarray, n_threads: int | None):
    def run():
        pattern.tap_pattern.cache_clear()
        with threads(n_threads):
            return convmatrix.conv_matrix(w, case.input_shape, **case.kwargs)

    return run


def bench_build(case: Case, repeats: int, rng, dense_cap: int, use_anchors: bool = True, log=print,
                budget_s: float = ANCHOR_BUDGET_S["full"]) -> BuildResult:
    w, kernel = weight_for(case, rng)
    M = build_fn(case, w, None)()
    log(f"  {case.name}: {M.nnz:,} stored entries, {csr_bytes(M) / 1e6:.0f} MB")
    secs = time_interleaved(
        {"1 thread": build_fn(case, w, 1), "2 threads": build_fn(case, w, 2), "copy": lambda: copy_csr(M)},
        repeats,
    )
    peak, _ = peak_bytes(build_fn(case, w, 1))
    res = BuildResult(case, M.nnz, M.shape, csr_bytes(M), secs, peak)
    if use_anchors:
        for anchor in ANCHORS:
            res.anchors.append(_bench_anchor(anchor, case, M, w, kernel, repeats, dense_cap, log, budget_s))
    return res


def _bench_anchor(anchor, case, M, w, kernel, repeats, dense_cap, log, budget_s) -> AnchorResult:
    missing = anchor.missing()
    if missing:
        return AnchorResult(anchor.name, missing)
    job = anchor.job(case, w, kernel, int(case.dense_gb * 1e9) if dense_cap is None else dense_cap)
    if isinstance(job, str):
        return AnchorResult(anchor.name, f"n/a: {job}")
    # The first call is the value check (and warms the anchor's imports); not timed.
    import time

    t0 = time.perf_counter()
    out = job.run()
    first = time.perf_counter() - t0
    diff = max_abs_diff(M, job.matrix(out))
    del out
    same = diff <= 1e-5 * float(np.abs(kernel).max())
    n = int(min(repeats, max(1, budget_s // max(first, 1e-9))))
    t = time_interleaved({"anchor": job.run, "ours": build_fn(case, w, 1)}, n, warmup=0)
    r = AnchorResult(anchor.name, "ok", t["anchor"], t["ours"], diff, same)
    log(f"    vs {anchor.name}: {r.seconds[harness.STAT]:.4g} s, convmatrix {r.ours_seconds[harness.STAT]:.4g} s "
        f"({r.speedup:.1f}x), max |diff| {diff:.2g}")
    return r
