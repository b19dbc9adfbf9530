"""Benchmarks of convmatrix.analysis.spectral: prints one table per question.

    python bench/spectral.py          # default run, about a minute or two
    python bench/spectral.py --full   # adds dense SVDs of 16 channels on 16x16 and 24x24, and a 224x224 bracket

:func:`bench_threads` is the case ``bench/run.py`` (``make bench``) runs beside the
build: the exact spectral norm and top 5 singular values of a zero-padded layer
against 300 power-iteration steps with torch, timed interleaved, with the
environment's thread settings and with every BLAS on one thread (what
``OMP_NUM_THREADS=1`` does), on the machine as found and while another process
keeps one core busy.

1. Singular values: the FFT route against numpy's dense SVD on small circular layers.
2. All 65,536 singular values of a 64->64 3x3 layer on 32x32 (circular padding).
3. spectral_norm against 300 steps of power iteration with torch's convolution as the
   operator and conv_transpose (zero padding) or autograd (circular) as its adjoint,
   64->64 3x3 at 32x32.
4. How tight the certified bracket is, on our own 64->64 5x5 kernel on 12x12 (the
   Gram-iteration papers' figures come from their kernel; compare relative gaps).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from convmatrix import conv_matrix  # noqa: E402
from convmatrix.analysis import spectral as S  # noqa: E402


def timed(f, *a, **kw):
    t = time.perf_counter()
    out = f(*a, **kw)
    return out, time.perf_counter() - t


def table(title, head, rows):
    print(f"\n## {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def gap(value, exact):
    g = (value - exact) / exact
    return f"{g:+.3%}" if abs(g) >= 1e-5 else f"{g:+.1e}"


def kernel(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[1:]))


def fft_vs_dense(full):
    rows = []
    sizes = [(4, 12), (8, 12), (8, 16)] + ([(16, 16), (16, 24)] if full else [])
    for c, n in sizes:
        W = kernel((c, c, 3, 3))
        kw = dict(padding=1, padding_mode="circular")
        s_fft, t_fft = timed(S.singular_values, W, (c, n, n), **kw)
        M = conv_matrix(W, (c, n, n), **kw).toarray()
        s_dense, t_dense = timed(np.linalg.svd, M, compute_uv=False)
        rows.append((f"{c}->{c} 3x3 on {n}x{n}", f"{M.shape[0]:,} x {M.shape[1]:,}", f"{t_fft:.4f}",
                     f"{t_dense:.2f}", f"{t_dense / t_fft:.0f}x", f"{np.abs(s_fft - s_dense).max():.1e}"))
    table("1. All singular values: FFT vs dense SVD (circular padding)",
          ["layer", "matrix", "FFT s", "dense SVD s", "speed-up", "max |diff|"], rows)


def all_values_64():
    W = kernel((64, 64, 3, 3))
    s, t = timed(S.singular_values, W, (64, 32, 32), padding=1, padding_mode="circular")
    s2, t2 = timed(S.singular_values, W, (64, 32, 32), padding=1, padding_mode="circular", stride=2)
    table("2. Every singular value of a 64->64 3x3 layer on 32x32 (circular)",
          ["layer", "values", "seconds", "largest", "smallest"],
          [("stride 1", f"{len(s):,}", f"{t:.2f}", f"{s[0]:.6f}", f"{s[-1]:.3e}"),
           ("stride 2 (polyphase)", f"{len(s2):,}", f"{t2:.2f}", f"{s2[0]:.6f}", f"{s2[-1]:.3e}")])


def torch_power_iteration(W, input_shape, steps, padding_mode):
    import torch
    import torch.nn.functional as F

    w = torch.as_tensor(W)
    x = torch.as_tensor(np.random.default_rng(1).standard_normal((1, *input_shape)))
    est = 0.0
    for _ in range(steps):
        x = x / x.norm()
        if padding_mode == "zeros":
            with torch.no_grad():
                y = F.conv2d(x, w, padding=1)
                back = F.conv_transpose2d(y, w, padding=1)
        else:
            x.requires_grad_(True)
            y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w)
            (back,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
        est = float(y.detach().norm())
        x = back.detach()
    return est


@contextmanager
def busy_core():
    """Another process keeping one core busy (a pure-Python loop) for the duration."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        yield
    finally:
        p.kill()
        p.wait()


def _torch_one_thread(fn):
    def run():
        import torch

        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)

    return run


def _blas_one_thread(fn):
    """``fn`` with every BLAS and OpenMP pool on one thread: what OMP_NUM_THREADS=1 gives."""
    from threadpoolctl import threadpool_limits

    def run():
        with threadpool_limits(1):
            return fn()

    return run


@dataclass
class ThreadsResult:
    layer: str
    conditions: dict  # condition -> {contender: {"median", "best", "runs"}}
    values: dict  # contender -> its number (norm, or largest of the top 5)
    power_steps: int
    quick: bool = False  # the small variant: fixed costs weigh more, the targets are stated for the full one

    ANCHORS = ("torch power iteration (torch's threads)", "torch power iteration (1 thread)")

    def anchor(self, condition: str, stat: str) -> tuple[str, float]:
        """The faster of the two anchors under ``condition``: (name, seconds)."""
        times = {a: self.conditions[condition][a][stat] for a in self.ANCHORS}
        name = min(times, key=times.get)
        return name, times[name]

    def ratio(self, condition: str, contender: str, stat: str) -> float:
        return self.conditions[condition][contender][stat] / self.anchor(condition, stat)[1]


def bench_threads(quick: bool, repeats: int, log=print) -> ThreadsResult:
    """The spectral case of ``make bench`` (see the module docstring). Quick: 32 channels on 16x16."""
    from harness import time_interleaved

    c, n = (32, 16) if quick else (64, 32)
    W = kernel((c, c, 3, 3))
    ins, steps = (c, n, n), 300
    values = {}

    def keep(name, fn):
        def run():
            values[name] = fn()
            return values[name]
        return run

    norm = lambda: S.spectral_norm(W, ins, padding=1)  # noqa: E731
    power = lambda: torch_power_iteration(W, ins, steps, "zeros")  # noqa: E731
    fns = {
        "spectral_norm": keep("spectral_norm", norm),
        "spectral_norm, all BLAS on 1 thread": _blas_one_thread(norm),
        "singular_values(k=5)": keep("singular_values(k=5)", lambda: S.singular_values(W, ins, padding=1, k=5)[0]),
        ThreadsResult.ANCHORS[0]: keep("power", power),
        ThreadsResult.ANCHORS[1]: _torch_one_thread(power),
    }
    layer = f"{c}->{c} 3x3 on {n}x{n}, zero padding 1"
    conditions = {}
    log(f"spectral: {layer}, as found")
    conditions["as found"] = time_interleaved(fns, repeats, warmup=0)
    log("spectral: while another process keeps one core busy")
    with busy_core():
        conditions["one core busy"] = time_interleaved(fns, repeats, warmup=0)
    return ThreadsResult(layer, conditions, values, steps, quick)


def norm_vs_power():
    rows = []
    W = kernel((64, 64, 3, 3))
    for mode in ("zeros", "circular"):
        sn, t = timed(S.spectral_norm, W, (64, 32, 32), padding=1, padding_mode=mode)
        pw, tp = timed(torch_power_iteration, W, (64, 32, 32), 300, mode)
        route = "FFT" if mode == "circular" else "Lanczos (ARPACK)"
        rows.append((mode, route, f"{sn:.9f}", f"{t:.2f}", f"{pw:.9f}", f"{tp:.2f}", f"{(sn - pw) / sn:.1e}"))
    table("3. spectral_norm vs 300 power-iteration steps (torch conv / adjoint), 64->64 3x3 at 32x32",
          ["padding", "route", "spectral_norm", "s", "power iteration", "s", "(exact - power)/exact"], rows)


def bracket_gaps(full):
    W = kernel((64, 64, 5, 5))
    ins = (64, 12, 12)
    rows = []
    for mode in ("circular", "zeros", "reflect"):
        exact, te = timed(S.spectral_norm, W, ins, padding=2, padding_mode=mode)
        b, tb = timed(S.spectral_norm_bounds, W, ins, padding=2, padding_mode=mode)
        for name, value in sorted(b.upper_bounds.items(), key=lambda kv: kv[1]):
            rows.append((mode, f"{exact:.6f}", f"upper: {name}", f"{value:.6f}", gap(value, exact),
                         f"{tb:.2f}"))
        rows.append((mode, f"{exact:.6f}", f"lower: {b.lower_method}", f"{b.lo:.6f}",
                     gap(b.lo, exact), ""))
        if b.lower_method.startswith("Krylov"):
            b30, t30 = timed(S.spectral_norm_bounds, W, ins, padding=2, padding_mode=mode, iterations=30)
            rows.append((mode, f"{exact:.6f}", f"lower: {b30.lower_method}", f"{b30.lo:.6f}",
                         gap(b30.lo, exact), f"{t30:.2f}"))
    rows.append(("paper, circular", "83.09", "upper: Gram iteration", "83.12", gap(83.12, 83.09), ""))
    rows.append(("paper, zeros", "77.56 (power it.)", "upper: Toeplitz bound", "86.43",
                 gap(86.43, 77.56), ""))
    table("4. Certified bracket on our 64->64 5x5 kernel on 12x12, padding 2 (relative gaps)",
          ["padding", "exact", "bound", "value", "gap", "bracket s"], rows)
    if full:
        W3 = kernel((64, 64, 3, 3))
        b, t = timed(S.spectral_norm_bounds, W3, (64, 224, 224), padding=1)
        table("4b. Bracket of a 64->64 3x3 layer at 224x224 (zero padding), no matrix formed",
              ["lo", "hi", "relative width", "upper", "seconds"],
              [(f"{b.lo:.6f}", f"{b.hi:.6f}", f"{b.relative_width:.2%}", b.upper_method, f"{t:.1f}")])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="add the slow cases (minutes)")
    args = ap.parse_args()
    t = time.perf_counter()
    fft_vs_dense(args.full)
    all_values_64()
    norm_vs_power()
    bracket_gaps(args.full)
    print(f"\n(total {time.perf_counter() - t:.0f} s, {os.cpu_count()} CPUs visible)")


if __name__ == "__main__":
    main()
