"""Using the matrix: ``M @ X`` against the convolution itself (torch, CPU).

Every product computes the layer's output for a batch of inputs; each gets its
inputs in the layout it prefers (not timed): torch's conv a ``(B, C, H, W)``
tensor, the sparse products the ``(n_in, B)`` matrix of flattened inputs. All
outputs are checked against the convolution's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import convmatrix
import harness
from cases import Case
from harness import time_interleaved

BUDGET_S = 10.0  # default seconds of timed calls per (case, batch) and contender, at least one call


@dataclass
class MatmulResult:
    case: Case
    batch: int
    seconds: dict  # contender -> {"median", "best", "runs"}
    max_rel_err: dict  # contender -> max |y - conv| / max |conv|
    skipped: dict  # contender -> why not run

    def ratio(self, name: str) -> float:
        return self.seconds[name][harness.STAT] / self.seconds["torch conv2d"][harness.STAT]


def _contenders(case: Case, w: np.ndarray, batch: int, rng, dense_cap: int):
    import torch
    import torch.nn.functional as F

    torch_w = torch.from_numpy(w)
    x = torch.from_numpy(rng.standard_normal((batch, *case.input_shape)).astype(np.float32))
    cols = np.ascontiguousarray(x.reshape(batch, -1).numpy().T)  # (n_in, B)
    cols_t = torch.from_numpy(cols)
    M = convmatrix.conv_matrix(w, case.input_shape, **case.kwargs)
    Mt = convmatrix.conv_matrix(w, case.input_shape, format="torch", **case.kwargs)
    fns, skipped = {}, {}

    def conv():
        with torch.no_grad():
            return F.conv2d(x, torch_w, **case.kwargs).reshape(batch, -1).T

    fns["torch conv2d"] = conv
    fns["SciPy CSR M @ X"] = lambda: M @ cols
    fns["torch sparse CSR M @ X"] = lambda: torch.sparse.mm(Mt, cols_t)
    try:
        to_linear = convmatrix.to_linear  # issue 3's modules; absent from older versions
    except AttributeError:
        to_linear = None
    if to_linear is None:
        skipped["to_linear(sparse=True)"] = "convmatrix.to_linear not available in this version"
    else:
        module = torch.nn.Conv2d(case.input_shape[0], w.shape[0], w.shape[2:], bias=False, **case.kwargs)
        with torch.no_grad():
            module.weight.copy_(torch_w)
        flat = x.reshape(batch, -1)
        sparse_fc = to_linear(module, case.input_shape, sparse=True)

        def lin():
            with torch.no_grad():
                return sparse_fc(flat).T

        fns["to_linear(sparse=True)"] = lin
        dense_bytes = M.shape[0] * M.shape[1] * 4
        if dense_bytes <= dense_cap:
            dense_fc = to_linear(module, case.input_shape)

            def dense():
                with torch.no_grad():
                    return dense_fc(flat).T

            fns["to_linear (dense nn.Linear)"] = dense
        else:
            skipped["to_linear (dense nn.Linear)"] = f"dense weight {dense_bytes / 1e9:.1f} GB over the cap"
    return fns, skipped


def bench_matmul(case: Case, batches, repeats: int, rng, dense_cap: int, log=print,
                 budget_s: float = BUDGET_S) -> list[MatmulResult]:
    w = rng.standard_normal(case.weight_shape).astype(np.float32)
    out = []
    for batch in batches:
        fns, skipped = _contenders(case, w, batch, rng, dense_cap)
        errs, firsts = {}, {}
        ref = None
        for name, fn in fns.items():  # first calls: the value check, and the time budget
            t0 = time.perf_counter()
            y = fn()
            firsts[name] = time.perf_counter() - t0
            y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
            if ref is None:
                ref = y
            errs[name] = float(np.abs(y - ref).max() / np.abs(ref).max())
        slowest = max(firsts.values())
        n = int(min(repeats, max(1, budget_s // max(slowest, 1e-9))))
        secs = time_interleaved(fns, n, warmup=0)
        res = MatmulResult(case, batch, secs, errs, skipped)
        log(f"  {case.name} batch {batch}: " + ", ".join(
            f"{k} {v[harness.STAT] * 1e3:.3g} ms" for k, v in secs.items()))
        out.append(res)
    return out
