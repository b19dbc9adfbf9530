"""Singular values, spectral norms and certified norm brackets of conv layers.

A conv layer is the linear map ``x -> M x``; its spectral norm ``||M||_2`` is the
most it stretches any input, its singular values say how well it is conditioned.
Three exact routes, picked from the geometry:

* **Fourier** (block-circulant ``M``): circular padding whose output keeps the
  input's spatial size (total padding ``dilation*(k-1)`` per dimension), or a
  1x1 kernel without padding. With stride ``s`` (input divisible by ``s``) the
  polyphase split of the input turns the layer into a stride-1 circular layer
  from ``C_in*s^d`` channels on the ``n/s`` grid, so after a DFT ``M`` is
  unitarily equivalent to a block-diagonal matrix with one
  ``C_out x C_in*s^d`` block per frequency of the output grid (per group):
  the singular values of ``M`` are the union of the blocks' (Sedghi, Gupta and
  Long 2019; Senderovich et al. 2022 for the strided case).
* **dense SVD** of ``conv_matrix(...)`` when it is small enough (refused, with
  the estimate, above ``max_bytes``).
* **ARPACK** (``scipy.sparse.linalg``) on the matrix-free :func:`convmatrix.core.operator` for the top
  ``k`` values and for spectral norms of any layer.

Bounds (:func:`spectral_norm_bounds`) never form the matrix: the lower end is
a Rayleigh quotient ``||M x|| / ||x||`` of power iterations on the exact
operator, the upper end the smallest of several proven bounds (see
:func:`spectral_norm_bounds`).

``torch.nn.utils.spectral_norm`` is not the layer's norm: it normalises the
reshaped kernel ``weight.reshape(C_out, -1)``, whose largest singular value can
be far below (or above) ``||M||_2``; :func:`kernel_norm_vs_layer_norm` prints
both numbers side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from math import ceil, prod

import numpy as np
import scipy.sparse.linalg as spla

from ..core.geometry import ConvGeometry, as_int, available_memory, check_memory, format_bytes
from ..core.matrix import as_weight_array, build_csr, conv_geometry, weight_slabs
from ..core.operator import ConvOperator
from ..core.pattern import axis_taps
from ..core.threads import single_threaded
from .._progress import progress_bar

__all__ = [
    "LANCZOS_TOL",
    "singular_values",
    "spectral_norm",
    "spectral_norm_bounds",
    "Bracket",
    "kernel_norm_vs_layer_norm",
    "plot_spectrum",
    "is_block_circulant",
    "cost_estimate",
    "CostEstimate",
    "reshaped_kernel_norm",
]

#: Default ceiling on the dense matrix of a dense SVD (bytes, float64/complex128).
DENSE_MAX_BYTES = 512 * 2**20
#: Bytes of per-frequency blocks held at once by the Fourier route.
_CHUNK_BYTES = 64 * 2**20
#: Relative slack that absorbs floating-point rounding in certified bounds.
_MARGIN = 1e-10
#: Below this smaller matrix side the spectral norm comes from the small dense Gram matrix.
_SMALL_GRAM = 300
#: Work budget (about flops) of the per-frequency SVDs or Gram iterations of an upper bound.
_BOUND_BUDGET = 1e10
#: ARPACK's tolerance on the Ritz residual of the Gram matrix's eigenvalues: the eigenvalue is then
#: within that relative distance of one of M^H M's, so sigma is within half of it (far inside 1e-6).
LANCZOS_TOL = 1e-8

#: Work ceiling (about flops) of singular_values' Fourier route: beyond it the layer is refused.
_FOURIER_BUDGET = 1e13


# --------------------------------------------------------------------------- set-up
def _prepare(weight, input_shape, conv_kwargs) -> tuple[np.ndarray, ConvGeometry]:
    """Validated geometry and the weight in float64 (complex128 when complex); NaN or inf is refused
    (singular values of such a matrix are undefined: LAPACK and ARPACK would fail or return NaN)."""
    w = as_weight_array(weight, finite=True)
    geom = conv_geometry(w.shape, input_shape, **conv_kwargs)
    w = w.astype(np.complex128 if np.iscomplexobj(w) else np.float64, copy=False)
    return w, geom


def _slabs(w: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Weight as ``(groups, out_per_group, in_per_group, *k)`` in the matrix's channel order."""
    return weight_slabs(w, geom).reshape(geom.groups, geom.out_per_group, geom.in_per_group, *geom.kernel_size)


# --------------------------------------------------------------------- Fourier route
@dataclass(frozen=True)
class _Axis:
    """One axis of a block-circulant layer after the polyphase split.

    Output ``o`` reads input ``s*((o + shift[t]) mod m) + phase[t]`` through tap ``t``.
    """

    phase: np.ndarray  # (k,) polyphase component each tap reads, in [0, s)
    shift: np.ndarray  # (k,) shift of each tap on the m-grid
    s: int
    m: int


def _circulant_axes(geom: ConvGeometry) -> list[_Axis] | None:
    """The polyphase description of a block-circulant layer, or None when it is not one.

    Block-circulant: forward, every axis either circular with total padding
    ``dilation*(k-1)`` or a 1x1 tap without padding, and input divisible by stride.
    The taps of output 0 (from :func:`axis_taps`) give every other row by shifting.
    """
    if geom.transposed:
        return None
    axes = []
    for a, (n, k, s, d, (lo, hi)) in enumerate(
        zip(geom.input_size, geom.kernel_size, geom.stride, geom.dilation, geom.padding)
    ):
        circular = geom.padding_mode == "circular" and lo + hi == d * (k - 1)
        pointwise = k == 1 and lo == hi == 0
        if n % s or not (circular or pointwise):
            return None
        o, i, t = axis_taps(geom, a)
        first = np.empty(k, dtype=np.int64)
        first[t[o == 0]] = i[o == 0]
        axes.append(_Axis(first % s, first // s, s, n // s))
    return axes


def is_block_circulant(weight_shape, input_shape, **conv_kwargs) -> bool:
    """Whether the layer's matrix is block-circulant (the exact Fourier route applies).

    >>> is_block_circulant((8, 8, 3, 3), (8, 16, 16), padding=1, padding_mode="circular")
    True
    >>> is_block_circulant((8, 8, 3, 3), (8, 16, 16), padding=1)
    False
    """
    return _circulant_axes(conv_geometry(weight_shape, input_shape, **conv_kwargs)) is not None


def _symbol_blocks(slabs: np.ndarray, axes: list[_Axis], progress: bool | None = None,
                   chunk_bytes: int = _CHUNK_BYTES):
    """Yield the per-frequency blocks, ``(count, out_per_group, in_per_group*prod(s))``.

    Block of frequency ``f`` (and group ``g``):
    ``A[u, (i, r)] = sum over taps t with phase(t) = r of W[g, u, i, t] * exp(-2 pi i f.shift(t)/m)``.
    Frequencies are taken in chunks along the first axis to bound memory; ``progress``
    shows a bar over the chunks (see :func:`convmatrix._progress.progress_bar`).
    """
    G, og, ig = slabs.shape[:3]
    nd = len(axes)
    R = prod(ax.s for ax in axes)
    rest = prod(ax.m for ax in axes[1:])
    per_freq = G * og * ig * R * 16
    step = max(1, min(axes[0].m, chunk_bytes // max(per_freq * rest, 1)))
    # Contracting kernel axis 3 each time appends (s_a, f_a): (G, O, I, s1, f1, ..., sd, fd).
    order = [1 + 2 * a + 3 for a in range(nd)] + [0, 1, 2] + [2 * a + 3 for a in range(nd)]
    starts = range(0, axes[0].m, step)
    with progress_bar(len(starts), "frequency blocks", show=progress, unit="chunk") as bar:
        for start in starts:
            yield _symbol_chunk(slabs, axes, start, step).transpose(order).reshape(-1, og, ig * R)
            bar.update()


def _symbol_chunk(slabs: np.ndarray, axes: list[_Axis], start: int, step: int) -> np.ndarray:
    """The blocks of first-axis frequencies ``[start, start+step)``, as ``(G, O, I, s1, f1, ..., sd, fd)``."""
    X = slabs
    for a, ax in enumerate(axes):
        f = np.arange(start, min(start + step, ax.m)) if a == 0 else np.arange(ax.m)
        # Integer phases modulo m keep the exponent exact for large grids.
        phase = np.exp(-2j * np.pi * (np.outer(ax.shift, f) % ax.m) / ax.m)
        E = np.zeros((len(ax.shift), ax.s, len(f)), dtype=np.complex128)
        E[np.arange(len(ax.shift)), ax.phase, :] = phase
        X = _tensordot(X, E)
    return X


def _tensordot(X: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``tensordot(X, E, ([3], [0]))`` with complex operands split into real products
    (many BLAS builds' complex kernels are far slower than four real ones)."""
    def dot(a, b):
        return np.tensordot(a, b, axes=([3], [0]))

    Er, Ei = np.ascontiguousarray(E.real), np.ascontiguousarray(E.imag)
    if not np.iscomplexobj(X):
        return dot(X, Er) + 1j * dot(X, Ei)
    Xr, Xi = np.ascontiguousarray(X.real), np.ascontiguousarray(X.imag)
    return (dot(Xr, Er) - dot(Xi, Ei)) + 1j * (dot(Xr, Ei) + dot(Xi, Er))


def _block_singular_values(blocks: np.ndarray) -> np.ndarray:
    """Singular values of a stack of blocks (LAPACK is faster on tall than on wide ones)."""
    if blocks.shape[-2] < blocks.shape[-1]:
        blocks = np.ascontiguousarray(np.conj(np.swapaxes(blocks, -1, -2)))
    return np.linalg.svd(blocks, compute_uv=False)


def _fourier_singular_values(slabs, axes, k=None, progress=None) -> np.ndarray:
    """All (or the top k) singular values of a block-circulant layer, descending."""
    parts = []
    for blocks in _symbol_blocks(slabs, axes, progress):
        sv = _block_singular_values(blocks).ravel()
        if k is not None and len(sv) > k:
            sv = np.partition(sv, len(sv) - k)[-k:]
        parts.append(sv)
        if k is not None:  # keep only a running top k
            merged = np.concatenate(parts)
            parts = [np.partition(merged, len(merged) - k)[-k:] if len(merged) > k else merged]
    return np.sort(np.concatenate(parts))[::-1]


def _fourier_norm(slabs, axes, progress=None) -> float:
    return max(float(_block_singular_values(b)[:, 0].max()) for b in _symbol_blocks(slabs, axes, progress))


def _matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Batched ``A @ B``; complex products as four real ones (far faster than many
    BLAS builds' batched complex kernels)."""
    if not (np.iscomplexobj(A) or np.iscomplexobj(B)):
        return A @ B
    ar, ai = np.ascontiguousarray(A.real), np.ascontiguousarray(A.imag)
    br, bi = np.ascontiguousarray(B.real), np.ascontiguousarray(B.imag)
    return (ar @ br - ai @ bi) + 1j * (ar @ bi + ai @ br)


def _gram_bound(blocks: np.ndarray, iterations: int = 12) -> np.ndarray:
    """Certified upper bounds on the spectral norm of each block (Gram iteration).

    ``sigma_1(A)^(2^t) = sigma_1(G_t) <= ||G_t||_F`` for ``G_{t+1} = G_t^H G_t``
    (Delattre, Barthelemy, Araujo and Allauzen 2023); each step is rescaled by
    its Frobenius norm and the scale tracked in logarithms, so nothing overflows.
    """
    G = blocks if blocks.shape[-2] >= blocks.shape[-1] else np.swapaxes(blocks, -1, -2)
    log_scale = np.zeros(len(G))
    for _ in range(iterations):
        f = np.linalg.norm(G, axis=(-2, -1))
        f = np.where(f > 0, f, 1.0)
        G = G / f[:, None, None]
        log_scale = 2 * (log_scale + np.log(f))
        G = _matmul(np.conj(np.swapaxes(G, -1, -2)), G)
    f = np.linalg.norm(G, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        return np.exp((log_scale + np.log(f)) / 2**iterations)


def _fourier_gram_bound(slabs, axes, progress=None) -> float:
    return max(float(_gram_bound(b).max()) for b in _symbol_blocks(slabs, axes, progress))


# ------------------------------------------------------------ matrix-free operator
def _conv_operator(w: np.ndarray, geom: ConvGeometry) -> spla.LinearOperator:
    """The layer as a matrix-free ``LinearOperator`` (:func:`convmatrix.core.operator`)."""
    return ConvOperator(w, geom)


def _gram_operator(op: spla.LinearOperator, bar) -> spla.LinearOperator:
    """``M^H M`` or ``M M^H``, whichever is smaller; every product ticks ``bar``."""
    rows, cols = op.shape

    def apply(x):
        bar.update()
        return op.rmatvec(op.matvec(x)) if cols <= rows else op.matvec(op.rmatvec(x))

    n = min(rows, cols)
    return spla.LinearOperator((n, n), matvec=apply, dtype=op.dtype)


def _lanczos_top(op: spla.LinearOperator, k: int, progress: bool | None) -> np.ndarray:
    """The top ``k`` singular values of ``op``, descending: ARPACK's Lanczos (``eigsh``) on the
    smaller Gram matrix, to :data:`LANCZOS_TOL`; ``progress`` counts the products with it."""
    n = min(op.shape)
    what = "spectral norm" if k == 1 else f"top {k} singular values"
    with progress_bar(None, f"{what} (Lanczos)", show=progress, unit="product") as bar:
        lam = spla.eigsh(_gram_operator(op, bar), k=k, which="LA", tol=LANCZOS_TOL,
                         v0=_start_vector(n, op.dtype), ncv=min(n, max(2 * k + 1, 20)), maxiter=100_000,
                         return_eigenvectors=False)
    return np.sqrt(np.maximum(np.sort(np.real(lam))[::-1], 0.0))


def _start_vector(n: int, dtype) -> np.ndarray:
    # Deterministic: the same layer gives the same numbers on every run.
    v = np.random.default_rng(0).standard_normal(n)
    return v.astype(dtype)


# ------------------------------------------------------------------- dense route
def _dense_bytes(geom: ConvGeometry, w: np.ndarray) -> int:
    rows, cols = geom.matrix_shape
    # The matrix plus LAPACK's copy and workspace (gesdd without vectors).
    return 2 * rows * cols * w.dtype.itemsize


def _check_dense(geom, w, max_bytes, what: str) -> None:
    limit = DENSE_MAX_BYTES if max_bytes is None else int(max_bytes)
    limit = min(limit, available_memory())
    need = _dense_bytes(geom, w)
    if need > limit:
        rows, cols = geom.matrix_shape
        raise ValueError(
            f"{what}: the dense SVD of the {rows:,} x {cols:,} matrix would need about "
            f"{format_bytes(need)}, more than the limit of {format_bytes(limit)} (the matrix is not "
            f"block-circulant, so the exact Fourier route does not apply); ask for the top values "
            f"with k=... (ARPACK, e.g. k=10), or pass max_bytes= to allow a larger dense SVD"
        )


def _check_fourier(geom, axes, k, max_bytes) -> None:
    """Refuse a Fourier route whose result (k=None) or work is out of reach, with the estimate."""
    n_sv = min(geom.matrix_shape)
    freqs = prod(ax.m for ax in axes)
    work = freqs * _work_per_freq(geom, axes)
    need = 3 * n_sv * 8  # the values, their concatenation and the sort
    limit = min(DENSE_MAX_BYTES if max_bytes is None else int(max_bytes), available_memory())
    if k is None and need > limit:
        raise ValueError(
            f"singular_values(k=None): all {n_sv:,} singular values of the block-circulant layer would "
            f"need about {format_bytes(need)}, more than the limit of {format_bytes(limit)}; ask for the "
            f"top values with k=... (e.g. k=10), or pass max_bytes= to allow more"
        )
    if work > _FOURIER_BUDGET:
        raise ValueError(
            f"singular_values: the {freqs:,} per-frequency SVDs of the block-circulant layer would take "
            f"about {work:.2g} flops (hours); use spectral_norm_bounds(...) for a certified bracket, or a "
            f"smaller input"
        )


def _check_vectors(geom, w, what: str) -> None:
    """Refuse a matrix-free (Lanczos) route whose basis vectors would not fit in memory."""
    check_memory(40 * sum(geom.matrix_shape) * w.itemsize, None,
                 f"{what}: the Lanczos vectors of the {geom.matrix_shape[0]:,} x {geom.matrix_shape[1]:,} matrix",
                 "use spectral_norm_bounds(..., iterations=...) for a certified bracket, or a smaller input")


def _dense_singular_values(w, geom) -> np.ndarray:
    return np.linalg.svd(build_csr(w, geom).toarray(), compute_uv=False)


# ------------------------------------------------------------------ cost estimate
@dataclass(frozen=True)
class CostEstimate:
    """What an exact computation will cost, known before it runs (see :func:`cost_estimate`)."""

    route: str  #: "FFT", "dense SVD" or "Lanczos"
    products: int  #: Lanczos: typical number of products with the Gram matrix (0 for the other routes)
    seconds_per_product: float  #: Lanczos: measured time of one product (0.0 for the other routes)
    fourier_seconds: float = 0.0  #: FFT: estimated time of the per-frequency SVDs (about 1 ns a flop)

    @property
    def seconds(self) -> float:
        """Estimated seconds of the Lanczos products or of the per-frequency SVDs (0.0 for a dense SVD)."""
        return self.products * self.seconds_per_product + self.fourier_seconds

    def __str__(self) -> str:
        if self.route == "FFT" and self.fourier_seconds >= 60:
            return f"FFT: about {_duration(self.fourier_seconds)} of per-frequency SVDs"
        if self.route != "Lanczos":
            return self.route
        return (f"Lanczos: about {self.products} products with M^H M (typically half to twice that) "
                f"of {self.seconds_per_product:.3g} s each, about {_duration(self.seconds)}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def _route(w: np.ndarray, geom: ConvGeometry, k: int | None, max_bytes=None) -> str:
    """Which exact route :func:`singular_values` takes for the top ``k`` (``None``: all of them)."""
    if _circulant_axes(geom) is not None:
        return "FFT"
    n_sv = min(geom.matrix_shape)
    limit = min(DENSE_MAX_BYTES if max_bytes is None else int(max_bytes), available_memory())
    if k is None or (_dense_bytes(geom, w) <= limit and (n_sv <= 2000 or k >= n_sv // 2)):
        return "dense SVD"
    return "Lanczos"


def _product_seconds(w: np.ndarray, geom: ConvGeometry) -> float:
    """Seconds of one product with ``M^H M``: timed on the same kernels over a grid of at most
    16 positions per axis (more where the padding needs them), scaled by the number of positions
    (the work is linear in them)."""
    small = replace(geom, input_size=tuple(min(n, max(16, lo + hi + 1))
                                           for n, (lo, hi) in zip(geom.input_size, geom.padding)))
    if min(small.output_size, default=1) < 1:
        small = geom
    op = ConvOperator(w, small)
    x = _start_vector(op.shape[1], op.dtype)
    best = float("inf")
    for _ in range(3):  # the first call warms caches; the best of the rest counts
        t = time.perf_counter()
        op.rmatvec(op.matvec(x))
        best = min(best, time.perf_counter() - t)
    return best * _positions(geom) / max(_positions(small), 1)


def _positions(geom: ConvGeometry) -> int:
    """Positions whose work one weight entry does once: output positions (input ones when transposed)."""
    return prod(geom.input_size if geom.transposed else geom.output_size)


@single_threaded
def cost_estimate(weight, input_shape, *, k: int = 1, **conv_kwargs) -> CostEstimate:
    """The route and, for Lanczos, the estimated time of ``singular_values(..., k=k)``
    (or of :func:`spectral_norm` with ``k=1``), in well under a second.

    The time of one product with ``M^H M`` is measured on the same kernels over a small
    grid and scaled to the layer's; the number of products is typical of Lanczos on conv
    layers (about ``120 + 30 k``; clustered top singular values need more).

    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    >>> cost_estimate(W, (8, 16, 16), padding=1, padding_mode="circular").route
    'FFT'
    >>> e = cost_estimate(W, (8, 64, 64), padding=1)
    >>> e.route, e.products, e.seconds > 0
    ('Lanczos', 150, True)
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    route = _route(w, geom, k)
    if route == "FFT":
        axes = _circulant_axes(geom)
        return CostEstimate(route, 0, 0.0, 1e-9 * prod(ax.m for ax in axes) * _work_per_freq(geom, axes))
    if route != "Lanczos":
        return CostEstimate(route, 0, 0.0)
    return CostEstimate(route, 120 + 30 * k, _product_seconds(w, geom))


# -------------------------------------------------------------------- public API
@single_threaded
def singular_values(weight, input_shape, *, k: int | None = None, max_bytes: int | None = None,
                    progress: bool | None = None, **conv_kwargs) -> np.ndarray:
    """Singular values of a conv layer's matrix, in descending order.

    Parameters
    ----------
    weight : ndarray or torch.Tensor
        ``(C_out, C_in/groups, *k)`` (transposed: ``(C_in, C_out/groups, *k)``).
    input_shape : tuple of int
        ``(C_in, *spatial)``.
    k : int, optional
        Only the top ``k`` (``1 <= k <= min(M.shape)``). Default: all of them.
    max_bytes : int, optional
        Ceiling for a dense SVD (default 512 MiB, or less when memory is short).
    progress : bool, optional
        A progress bar on stderr (Lanczos products, frequency blocks): ``True`` always,
        ``False`` never, default only when stderr is a terminal (needs tqdm).
    **conv_kwargs
        ``stride, padding, dilation, groups, padding_mode, transposed,
        output_padding`` as for :func:`convmatrix.conv_matrix`.

    Returns
    -------
    ndarray of float64, length ``min(M.shape)`` (or ``k``).

    Block-circulant layers (see :func:`is_block_circulant`) go through the FFT,
    exactly, at any size; other layers through a dense SVD when small, and with
    ``k`` through ARPACK on a matrix-free operator when large. A layer too large
    for a dense SVD without ``k`` is refused with the size estimate.

    Examples
    --------
    A 1x1 layer on one pixel is its channel matrix:

    >>> import numpy as np, convmatrix
    >>> W = np.array([[3., 0.], [0., 4.]]).reshape(2, 2, 1, 1)
    >>> singular_values(W, (2, 1, 1))
    array([4., 3.])

    Circular padding with output size = input size: exact through the FFT.

    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((4, 4, 3, 3))
    >>> s = singular_values(W, (4, 6, 6), padding=1, padding_mode="circular")
    >>> M = convmatrix.conv_matrix(W, (4, 6, 6), padding=1, padding_mode="circular")
    >>> bool(np.allclose(s, np.linalg.svd(M.toarray(), compute_uv=False)))
    True
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    if max_bytes is not None:
        max_bytes = as_int("max_bytes", max_bytes, minimum=0, maximum=None)
    n_sv = min(geom.matrix_shape)
    if k is not None:
        k = as_int("k", k, maximum=None)
        if not 1 <= k <= n_sv:
            raise ValueError(
                f"k must be between 1 and min(M.shape) = {n_sv} for the {geom.matrix_shape[0]:,} x "
                f"{geom.matrix_shape[1]:,} matrix, got k={k}"
            )
    axes = _circulant_axes(geom)
    if axes is not None:
        _check_fourier(geom, axes, k, max_bytes)
        return _fourier_singular_values(_slabs(w, geom), axes, k, progress)
    if k is None:
        _check_dense(geom, w, max_bytes, "singular_values(k=None)")
        return _dense_singular_values(w, geom)
    # Small enough: a dense SVD is exact and faster than ARPACK.
    if _route(w, geom, k, max_bytes) == "dense SVD":
        return _dense_singular_values(w, geom)[:k]
    if k >= n_sv:
        raise ValueError(
            f"k={k} asks for all {n_sv} singular values of a matrix too large for a dense SVD "
            f"({format_bytes(_dense_bytes(geom, w))}); ARPACK finds at most min(M.shape) - 1 = {n_sv - 1}"
        )
    _check_vectors(geom, w, "singular_values")
    return _lanczos_top(_conv_operator(w, geom), k, progress)


@single_threaded
def spectral_norm(weight, input_shape, *, progress: bool | None = None, **conv_kwargs) -> float:
    """The largest singular value ``||M||_2`` of a conv layer, exact to 1e-6 relative.

    Never forms the matrix densely: the FFT for block-circulant layers;
    otherwise the small dense Gram matrix ``M^H M`` (or ``M M^H``) when one side
    of ``M`` is short, else Lanczos (ARPACK ``eigsh``) on the
    Gram of a matrix-free operator. Transposed layers have the singular values
    of the forward matrix's transpose, hence the same norm. ``progress``: a bar
    on stderr, as for :func:`singular_values`.

    Every BLAS/LAPACK call runs on one thread (parallel only where the work is
    split into pieces of its own, see :mod:`convmatrix.core.threads`), so the
    result takes the same time whatever the thread settings of the environment.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.zeros((1, 1, 3)); W[0, 0, 1] = 2.0      # 2 * identity
    >>> spectral_norm(W, (1, 10), padding=1)
    2.0
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    axes = _circulant_axes(geom)
    if axes is not None:
        return _fourier_norm(_slabs(w, geom), axes, progress)
    rows, cols = geom.matrix_shape
    if min(rows, cols) <= _SMALL_GRAM:
        M = build_csr(w, geom)
        gram = (M @ M.conj().T) if rows <= cols else (M.conj().T @ M)
        lam = np.linalg.eigvalsh(gram.toarray())[-1]
        return float(np.sqrt(max(lam, 0.0)))
    _check_vectors(geom, w, "spectral_norm")
    return float(_lanczos_top(_conv_operator(w, geom), 1, progress)[0])


# ----------------------------------------------------------------------- bounds
class Bracket(tuple):
    """``(lo, hi)`` with ``lo <= ||M||_2 <= hi``; unpacks as a pair.

    ``width`` is ``hi - lo``, ``relative_width`` is ``(hi - lo) / lo``;
    ``lower_method`` and ``upper_method`` name where each end came from, and
    ``upper_bounds`` lists every upper bound that was computed.
    """

    def __new__(cls, lo: float, hi: float, lower_method: str, upper_bounds: dict):
        self = super().__new__(cls, (float(lo), float(hi)))
        self.lower_method = lower_method
        self.upper_bounds = dict(upper_bounds)
        self.upper_method = min(upper_bounds, key=upper_bounds.get)
        return self

    lo = property(lambda self: self[0])
    hi = property(lambda self: self[1])
    width = property(lambda self: self[1] - self[0])
    relative_width = property(lambda self: (self[1] - self[0]) / self[0] if self[0] > 0 else float("inf"))

    def __repr__(self) -> str:
        return f"Bracket(lo={self[0]!r}, hi={self[1]!r})"

    def __str__(self) -> str:
        return (f"[{self[0]:.6g}, {self[1]:.6g}] (width {self.width:.3g}, {100 * self.relative_width:.3g}%; "
                f"lower: {self.lower_method}, upper: {self.upper_method})")


def _krylov_lower_bound(op: spla.LinearOperator, steps: int, progress: bool | None = None) -> float:
    """A lower bound ``||M y|| / ||y||`` for the best ``y`` in the power-iteration Krylov space.

    ``steps`` products with ``M^H M`` span ``x, (M^H M) x, ...`` (orthonormalised
    twice); the top eigenvector ``c`` of the small ``(M Q)^H (M Q)`` gives ``y = Q c``,
    and the ratio is evaluated for that concrete vector, so rounding in the
    orthogonalisation cannot push it above the true norm. At least as good as plain
    power iteration with the same products.
    """
    n = op.shape[1]
    Q = np.zeros((steps, n), dtype=op.dtype)
    Y = np.zeros((steps, op.shape[0]), dtype=op.dtype)
    x = _start_vector(n, op.dtype)
    used = 0
    with progress_bar(steps, "bracket: power iteration", show=progress) as bar:
        for j in range(steps):
            for _ in range(2):  # twice is enough (Kahan's rule)
                x = x - Q[:j].T @ (Q[:j].conj() @ x)
            nx = np.linalg.norm(x)
            if nx == 0 or not np.isfinite(nx):
                break
            Q[j] = x / nx
            Y[j] = op.matvec(Q[j])
            used = j + 1
            x = op.rmatvec(Y[j])
            bar.update()
    if used == 0:
        return 0.0
    Q, Y = Q[:used], Y[:used]
    vals, vecs = np.linalg.eigh(Y.conj() @ Y.T)
    c = vecs[:, -1]
    y = c @ Q
    return float(np.linalg.norm(op.matvec(y)) / np.linalg.norm(y))


def _padding_operator_norm(geom: ConvGeometry) -> float:
    """``||Pad||_2`` of the padding step (zeros: 1; others fold padded positions back).

    The padding operator has one 1 per row (each padded position copies one input
    position), so ``Pad^T Pad`` is diagonal with the copy counts: the norm is the
    square root of the largest count, a product over axes. The counts come from the
    taps of a 1x1 convolution with the same padding.
    """
    if geom.padding_mode == "zeros":
        return 1.0
    one = replace(geom, kernel_size=(1,) * geom.ndim, stride=(1,) * geom.ndim, dilation=(1,) * geom.ndim,
                  transposed=False, output_padding=(0,) * geom.ndim)
    norm = 1.0
    for a in range(geom.ndim):
        _, i, _ = axis_taps(one, a)
        norm *= np.sqrt(np.bincount(i, minlength=geom.input_size[a]).max())
    return float(norm)


def _forward_view(geom: ConvGeometry) -> ConvGeometry:
    """A forward geometry whose matrix contains the layer's (a transposed layer is
    the transpose of a row subset of the forward conv from its output size)."""
    if not geom.transposed:
        return geom
    return replace(geom, in_channels=geom.out_channels, out_channels=geom.in_channels,
                   input_size=geom.output_size, transposed=False, output_padding=(0,) * geom.ndim)


def _embedding(geom: ConvGeometry) -> ConvGeometry:
    """The circular layer on the padded grid (rounded up to the stride) that contains ``geom``'s
    valid convolution: a zero-padded input embeds isometrically, and the valid rows of
    the circular layer never wrap, so ``||valid conv|| <= ||circular conv||``."""
    size = tuple(ceil((n + lo + hi) / s) * s for n, (lo, hi), s in zip(geom.input_size, geom.padding, geom.stride))
    pads = tuple((0, d * (k - 1)) for k, d in zip(geom.kernel_size, geom.dilation))
    return replace(geom, input_size=size, padding=pads, padding_mode="circular")


def _coarse_axes(axes: list[_Axis], per_freq: float) -> list[_Axis]:
    """The same taps on coarser grids whose per-frequency work fits the budget."""
    m = [ax.m for ax in axes]
    while prod(m) * per_freq > _BOUND_BUDGET and max(m) > 2:
        j = int(np.argmax(m))
        m[j] = max(2, m[j] // 2)
    return [replace(ax, m=mj) for ax, mj in zip(axes, m)]


def _symbol_sup_bound(slabs: np.ndarray, axes: list[_Axis]) -> float:
    """Upper bound on the supremum over all real frequencies of the symbol's norm.

    The polyphase symbol ``P(w) = sum_d A_d exp(-i w.d)`` bounds every circular
    layer with these taps, on any grid. For unit ``u, v`` attaining the supremum
    ``S`` at ``w*``, ``f = |u^H P v|^2`` is a sum of exponentials of frequencies
    ``|lambda_a| <= span_a`` bounded by ``S^2``, maximal at ``w*``; Bernstein's
    inequality bounds its second derivative along the way to the nearest grid point
    (at most ``pi/m_a`` away per axis) by ``(sum_a span_a pi/m_a)^2 S^2``, so
    ``S <= max_grid / sqrt(1 - 2 eps^2)`` with ``eps = sum_a (span_a/2) pi/m_a``.
    """
    eps = sum(np.pi * (int(ax.shift.max()) - int(ax.shift.min())) / 2 / ax.m for ax in axes)
    if 2 * eps**2 >= 1:
        return float("inf")
    return _fourier_norm(slabs, axes) / np.sqrt(1 - 2 * eps**2)


def _schur_bound(w: np.ndarray, geom: ConvGeometry) -> float:
    """``sqrt(||M||_1 ||M||_inf)`` with both norms bounded from per-tap sums.

    A row (column) of ``M`` holds each tap at most as often as the axis patterns
    say; folded entries are sums, and ``|a + b| <= |a| + |b|``.
    """
    G, og, ig = geom.groups, geom.out_per_group, geom.in_per_group
    absw = np.abs(_slabs(w, geom))  # (G, og, ig, *k)
    nd = geom.ndim
    row_hits, col_hits = [], []
    for a in range(nd):
        o, i, t = axis_taps(geom, a)
        k = geom.kernel_size[a]
        rh = np.zeros((k, geom.output_size[a]))
        np.add.at(rh, (t, o), 1)
        ch = np.zeros((k, geom.input_size[a]))
        np.add.at(ch, (t, i), 1)
        row_hits.append(rh)
        col_hits.append(ch)
    letters = "abcdef"[:nd]
    outs = "pqrstu"[:nd]
    spec = "X" + letters + "," + ",".join(letters[a] + outs[a] for a in range(nd)) + "->X" + outs
    row = np.einsum(spec, absw.sum(axis=2).reshape(G * og, *geom.kernel_size), *row_hits, optimize=True)
    col = np.einsum(spec, absw.sum(axis=1).reshape(G * ig, *geom.kernel_size), *col_hits, optimize=True)
    return float(np.sqrt(row.max() * col.max()))


@single_threaded
def spectral_norm_bounds(weight, input_shape, *, iterations: int = 10, progress: bool | None = None,
                         **conv_kwargs) -> Bracket:
    """A certified bracket ``lo <= ||M||_2 <= hi``, cheap on huge layers.

    Lower end: ``||M y|| / ||y||`` (valid for any ``y``) for the best ``y`` in the
    Krylov space of ``iterations`` power-iteration steps on the exact matrix-free
    operator; for a block-circulant layer the exact FFT value.

    Upper end: the smallest of these proven bounds (``Bracket.upper_bounds`` lists
    them):

    * ``"fourier"`` and ``"gram"``: block-circulant layers: the largest norm of the
      frequency blocks (LAPACK SVD), and Gram iteration on each block (Delattre et
      al. 2023) when its work fits the budget.
    * ``"embedding"``: any other layer is ``valid_conv @ Pad``; ``||Pad||`` is the
      square root of the largest number of copies of one input entry (1 for zero
      padding), and the valid convolution is a row subset of the circular layer on
      the padded grid (rounded up to the stride), whose norm the FFT gives.
      Transposed layers: the transpose of (a row subset of) a forward one.
    * ``"symbol"``: on huge grids, the same with the circular norm replaced by the
      supremum of the symbol over all real frequencies (which bounds the circular
      layer on every grid, as in Delattre et al. 2024 for zero padding), bounded from a
      coarse grid with Bernstein's inequality.
    * ``"schur"``: ``sqrt(||M||_1 ||M||_inf)``, from per-tap sums; always valid,
      also where reflect/replicate padding folds taps together.

    A relative slack of 1e-10 on both ends absorbs rounding. ``progress``: a bar on
    stderr, as for :func:`singular_values`.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((4, 4, 3, 3))
    >>> lo, hi = spectral_norm_bounds(W, (4, 12, 12), padding=1)
    >>> bool(lo <= spectral_norm(W, (4, 12, 12), padding=1) <= hi)
    True
    """
    iterations = as_int("iterations", iterations, minimum=1)
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    check_memory(iterations * sum(geom.matrix_shape) * w.itemsize, None,
                 f"the Krylov basis of iterations={iterations} steps", "use fewer iterations")
    upper: dict[str, float] = {"schur": _schur_bound(w, geom)}
    axes = _circulant_axes(geom)
    if axes is not None:
        slabs = _slabs(w, geom)
        lo, lower_method = _fourier_norm(slabs, axes, progress), "FFT (exact)"
        upper["fourier"] = lo
        if prod(ax.m for ax in axes) * _work_per_freq(geom, axes, gram=True) <= _BOUND_BUDGET:
            upper["gram"] = _fourier_gram_bound(slabs, axes, progress)
    else:
        fwd = _forward_view(geom)
        emb_axes = _circulant_axes(_embedding(fwd))
        fslabs = _slabs(w, fwd)
        pad_norm = _padding_operator_norm(geom)
        per_freq = _work_per_freq(fwd, emb_axes)
        if prod(ax.m for ax in emb_axes) * per_freq <= _BOUND_BUDGET:
            upper["embedding"] = pad_norm * _fourier_norm(fslabs, emb_axes, progress)
        else:
            upper["symbol"] = pad_norm * _symbol_sup_bound(fslabs, _coarse_axes(emb_axes, per_freq))
        lo = _krylov_lower_bound(_conv_operator(w, geom), iterations, progress)
        lower_method = f"Krylov space of {iterations} power-iteration steps"
    upper = {name: float(value) * (1 + _MARGIN) for name, value in upper.items()}
    hi = min(upper.values())
    return Bracket(lo * (1 - _MARGIN), max(hi, lo), lower_method, upper)


def _work_per_freq(geom: ConvGeometry, axes: list[_Axis], gram: bool = False) -> float:
    """Rough flops of one frequency's blocks: an SVD, or Gram iteration (12 complex steps), with
    the cost of one small LAPACK call even for 1x1 blocks (about 400 ns, as much as 400 flops)."""
    og, igR = geom.out_per_group, geom.in_per_group * prod(ax.s for ax in axes)
    return (100 if gram else 10) * geom.groups * og * igR * min(og, igR) + 400 * geom.groups


# ------------------------------------------------------------- torch's confusion
@dataclass(frozen=True)
class KernelVsLayerNorm:
    """The two numbers people confuse, side by side."""

    reshaped_kernel: float  #: what torch.nn.utils.spectral_norm divides by
    layer: float  #: the layer's operator norm ||M||_2

    def __str__(self) -> str:
        return (
            f"largest singular value of weight.reshape(C_out, -1) "
            f"(torch.nn.utils.spectral_norm): {self.reshaped_kernel:.6g}\n"
            f"spectral norm of the layer's matrix ||M||_2 (convmatrix.spectral_norm): {self.layer:.6g}\n"
            f"ratio layer / reshaped kernel: {self.layer / self.reshaped_kernel:.4g}"
        )


def kernel_norm_vs_layer_norm(weight, input_shape, **conv_kwargs) -> KernelVsLayerNorm:
    """What ``torch.nn.utils.spectral_norm`` normalises, next to the layer's true norm.

    torch's spectral normalisation divides the weight by the largest singular value
    of the reshaped kernel ``weight.reshape(C_out, -1)`` (``C_out x C_in*k``). That is
    not the operator norm of the convolution: the layer is the reshaped kernel applied
    to im2col copies of the input, so with ``K`` kernel taps, stride 1 and zero or
    circular padding its norm lies anywhere up to ``sqrt(K)`` times the kernel's (the
    example reaches it); stride can make it smaller, reflect/replicate folding larger.

    >>> import numpy as np
    >>> W = np.ones((1, 1, 3, 3))
    >>> r = kernel_norm_vs_layer_norm(W, (1, 8, 8), padding=1, padding_mode="circular")
    >>> round(r.reshaped_kernel, 6), round(r.layer, 6)
    (3.0, 9.0)
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    return KernelVsLayerNorm(reshaped_kernel_norm(w, transposed=geom.transposed),
                             spectral_norm(weight, input_shape, **conv_kwargs))


def reshaped_kernel_norm(weight, *, transposed: bool = False) -> float:
    """The number ``torch.nn.utils.spectral_norm`` divides by: the largest singular value of
    ``weight.reshape(C_out, -1)`` (``dim=1`` first for a transposed layer's weight, as torch does).

    >>> import numpy as np
    >>> reshaped_kernel_norm(np.ones((1, 1, 3, 3)))
    3.0
    """
    w = as_weight_array(weight)
    dim = 1 if transposed else 0
    return float(np.linalg.norm(np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1), 2))


# ------------------------------------------------------------------------ plot
def plot_spectrum(weight, input_shape, *, k: int | None = None, path=None, ax=None, **conv_kwargs):
    """Plot a layer's singular values (descending, log scale); returns the figure.

    matplotlib is imported here, with the non-interactive Agg backend when no axes
    are given. ``path`` saves the figure (PNG, PDF, SVG, ...).
    """
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plot_spectrum needs matplotlib: pip install 'convmatrix[plot]'") from None
    s = singular_values(weight, input_shape, k=k, **conv_kwargs)
    if ax is None:
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, np.finfo(float).tiny), lw=1)
    ax.set_xlabel("index")
    ax.set_ylabel("singular value")
    shape = "x".join(map(str, np.shape(weight)))
    ax.set_title(f"singular values of a {shape} layer on {'x'.join(map(str, input_shape))}"
                 + (f" (top {k})" if k else ""))
    ax.axhline(s[0], ls=":", lw=0.8, color="gray")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
