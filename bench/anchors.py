"""The tools people use today to get a convolution's matrix: the benchmark's anchors.

Each anchor is optional: when its package is missing it is reported as such,
never fatal. Each states which cases it can build, builds the same matrix as
``conv_matrix`` there (same numbers, its own layout), and converts its result
for the value check (not timed).

Conventions, checked numerically on every run:
- sparse-convolution ``Toeplitz_convolution2d(..., method="precomputed")`` builds
  the "full" true 2-D convolution matrix (kernel flipped), C-order pixels.
- ptwt ``construct_conv2d_matrix`` is the same true convolution but with
  column-major (Fortran) pixel order: our matrix of the transposed image and kernel.
- PyLops ``Convolve2D(dims, h, offset=k//2).todense()``: "same" true convolution, dense.
- SciPy ``linalg.convolution_matrix(a, n, "full")``: 1-D "full" true convolution, dense.
- ``torch.func.jacrev`` of ``conv2d``/``conv_transpose2d``: any layer, dense.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from cases import Case


@dataclass
class Job:
    """One anchor's build of one case: ``run()`` is timed, ``matrix(result)`` is not."""

    run: Callable[[], object]
    matrix: Callable[[object], object]  # -> scipy sparse or ndarray in OUR row/column order


class Anchor:
    name = ""
    package = ""  # what to install (PyPI name)

    def missing(self) -> str | None:
        """None when importable, else why not."""
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # ImportError, or a broken install
            return f"not installed ({type(exc).__name__}: {exc}); pip install {self.package}"
        return None

    def job(self, case: Case, weight: np.ndarray, kernel: np.ndarray, dense_cap: int) -> Job | str:
        """A Job, or the reason this anchor cannot do this case.

        ``weight`` is the layer's weight (cross-correlation, torch layout); ``kernel``
        the true-convolution kernel of single-channel signal cases (else the weight).
        """
        raise NotImplementedError


def _dense_too_big(case_rows: int, case_cols: int, itemsize: int, cap: int) -> str | None:
    need = case_rows * case_cols * itemsize
    if need > cap:
        return f"dense result {need / 1e9:.1f} GB (over the {cap / 1e9:.1f} GB cap)"
    return None


class SparseConvolution(Anchor):
    name = "sparse-convolution"
    package = "sparse-convolution"
    module = "sparse_convolution"

    def job(self, case, weight, kernel, dense_cap):
        if case.signal != "full" or kernel.ndim != 2:
            return "only single-channel 2-D full convolutions"
        from sparse_convolution import Toeplitz_convolution2d

        shape = tuple(case.input_shape[1:])

        def run():
            return Toeplitz_convolution2d(shape, kernel, mode="full", method="precomputed", backend="numpy")

        return Job(run, lambda conv: sp.csr_array(conv._dt))


class Ptwt(Anchor):
    name = "ptwt"
    package = "ptwt"
    module = "ptwt.sparse_math"

    def job(self, case, weight, kernel, dense_cap):
        if case.signal not in ("full", "same") or kernel.ndim != 2:
            return "only single-channel 2-D convolutions"
        import torch
        from ptwt.sparse_math import construct_conv2d_matrix

        h, w = case.input_shape[1:]
        k = torch.from_numpy(np.ascontiguousarray(kernel))

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return construct_conv2d_matrix(k, h, w, mode=case.signal)

        def matrix(t):
            t = t.coalesce()
            # Column-major pixels (rows and columns): reorder to C order.
            (r, c), v = t.indices().numpy(), t.values().numpy()
            ho, wo = (h + kernel.shape[0] - 1, w + kernel.shape[1] - 1) if case.signal == "full" else (h, w)
            r = (r % ho) * wo + r // ho
            c = (c % h) * w + c // h
            return sp.csr_array((v, (r, c)), shape=tuple(t.shape))

        return Job(run, matrix)


class PyLops(Anchor):
    name = "PyLops"
    package = "pylops"
    module = "pylops"

    def job(self, case, weight, kernel, dense_cap):
        if case.signal != "same" or kernel.ndim != 2 or any(k % 2 == 0 for k in kernel.shape):
            return "only single-channel 2-D 'same' convolutions (odd kernel)"
        n = int(np.prod(case.input_shape))
        too_big = _dense_too_big(n, n, kernel.itemsize, dense_cap)
        if too_big:
            return too_big
        import pylops

        dims = tuple(case.input_shape[1:])
        offset = tuple(k // 2 for k in kernel.shape)

        def run():
            op = pylops.signalprocessing.Convolve2D(dims, h=kernel, offset=offset, dtype=kernel.dtype)
            return op.todense()

        return Job(run, lambda d: d)


class ScipyConvolutionMatrix(Anchor):
    name = "SciPy convolution_matrix"
    package = "scipy"
    module = "scipy.linalg"

    def job(self, case, weight, kernel, dense_cap):
        if case.signal != "full" or kernel.ndim != 1:
            return "only 1-D full convolutions"
        n = case.input_shape[1]
        too_big = _dense_too_big(n + len(kernel) - 1, n, kernel.itemsize, dense_cap)
        if too_big:
            return too_big
        import scipy.linalg

        return Job(lambda: scipy.linalg.convolution_matrix(kernel, n, "full"), lambda d: d)


class Jacrev(Anchor):
    name = "torch.func.jacrev"
    package = "torch"
    module = "torch.func"

    def job(self, case, weight, kernel, dense_cap):
        import torch
        import torch.nn.functional as F

        nd = len(case.input_shape) - 1
        kw = dict(case.kwargs)
        transposed = kw.pop("transposed", False)
        if nd != 2 and not transposed:
            fn = {1: F.conv1d, 3: F.conv3d}[nd]
        elif transposed:
            fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        else:
            fn = F.conv2d
        w = torch.from_numpy(np.ascontiguousarray(weight))
        x = torch.zeros(case.input_shape, dtype=w.dtype)
        with torch.no_grad():
            n_out = fn(x[None], w, **kw).numel()
        too_big = _dense_too_big(n_out, x.numel(), w.element_size(), dense_cap)
        if too_big:
            return too_big

        def layer(v):
            return fn(v[None], w, **kw).reshape(-1)

        def run():
            return torch.func.jacrev(layer)(x).reshape(n_out, -1)

        return Job(run, lambda t: t.numpy())


ANCHORS: list[Anchor] = [SparseConvolution(), Ptwt(), PyLops(), ScipyConvolutionMatrix(), Jacrev()]


def max_abs_diff(ours: sp.csr_array, theirs, block_rows: int = 2048) -> float:
    """Largest |ours - theirs| over the whole matrix (sparse or dense ``theirs``).

    Dense results are compared in row blocks, so no second dense copy is made.
    """
    if theirs.shape != ours.shape:
        return float("inf")
    if sp.issparse(theirs):
        d = abs(sp.csr_array(theirs, dtype=np.float64) - ours.astype(np.float64))
        return float(d.max()) if d.nnz else 0.0
    worst = 0.0
    for a in range(0, ours.shape[0], block_rows):
        b = min(a + block_rows, ours.shape[0])
        blk = np.abs(np.asarray(theirs[a:b], dtype=np.float64) - ours[a:b].toarray())
        worst = max(worst, float(blk.max(initial=0.0)))
    return worst
