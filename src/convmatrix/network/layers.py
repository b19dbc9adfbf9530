"""The affine maps and pooling windows of single layers, shared by the front ends.

Only NumPy/SciPy here. Convolutions come from :func:`convmatrix.conv_matrix`.
Pooling is a grouped convolution with a ones kernel (:func:`pool_geometry`; ceil
mode adds padding on the high side), a padding layer a 1x1 grouped convolution
with that padding (:func:`pad_record`): their windows are rows of that
convolution's matrix, so no conv index arithmetic is written twice, and their
:class:`~.ir.ConvRecord` tells the analyses what they are. Batch norm in eval mode
is :func:`batch_norm_affine`; folding a per-channel affine map into the
convolution before or after it is :func:`fold_channel_affine`. Index-moving layers (reshape, permute, pad,
concat, slicing) are *gathers*: a front end runs the layer itself on integer codes
``1..n`` and :func:`gather_matrix` reads the selection matrix off the result.
"""

from __future__ import annotations

from math import prod

import numpy as np
import scipy.sparse as sp

import dataclasses

from ..core.geometry import ConvGeometry
from ..core.matrix import as_bias, as_weight_array, build_csr, conv_geometry
from .ir import ConvRecord

__all__ = [
    "conv_affine", "linear_affine", "channel_affine", "gather_matrix", "codes",
    "pool_windows", "adaptive_windows", "avg_pool_affine", "max_pool_groups", "unit_rows", "probe_affine",
    "is_affine_on", "looks_affine", "reduce_groups", "group_sum_matrix",
    "conv_record", "pool_geometry", "pool_record", "pad_record", "batch_norm_affine", "fold_channel_affine",
]


def _f64(a) -> np.ndarray:
    return np.asarray(as_weight_array(a), dtype=np.float64)


def conv_affine(weight, bias, input_shape, **conv_kwargs):
    """``(M, b, output_shape)`` of a convolution: its record's matrix and the bias per output neuron."""
    rec = conv_record(weight, bias, input_shape, **conv_kwargs)
    return rec.matrix(), rec.neuron_bias(), tuple(rec.geometry.output_shape)


def linear_affine(W, bias, input_shape):
    """A linear layer on the last axis: ``kron(I, W)`` over the leading axes."""
    W = _f64(W)
    if W.ndim != 2 or not input_shape or input_shape[-1] != W.shape[1]:
        raise ValueError(f"a {W.shape[0]}x{W.shape[1] if W.ndim == 2 else '?'} weight cannot act on the last axis "
                         f"of an input of shape {tuple(input_shape)}")
    lead = prod(input_shape[:-1])
    M = sp.kron(sp.identity(lead, format="csr"), sp.csr_array(W), format="csr")
    b = np.zeros(M.shape[0]) if bias is None else np.tile(np.broadcast_to(_f64(bias).reshape(-1), (W.shape[0],)), lead)
    return sp.csr_array(M), b, (*input_shape[:-1], W.shape[0])


def channel_affine(scale, shift, shape):
    """``y[c, ...] = scale[c] * x[c, ...] + shift[c]`` (batch norm in eval mode), axis 0 the channels."""
    per = prod(shape[1:])
    s = np.repeat(np.broadcast_to(_f64(scale).reshape(-1), (shape[0],)), per)
    t = np.repeat(np.broadcast_to(_f64(shift).reshape(-1), (shape[0],)), per)
    return sp.csr_array(sp.diags_array(s, format="csr")), t


def codes(shape, offset: int = 0) -> np.ndarray:
    """``offset+1 .. offset+n`` in the given shape (float64): the probe of a gather."""
    n = prod(shape)
    return (np.arange(n, dtype=np.float64) + (offset + 1)).reshape(shape)


def gather_matrix(out_codes, n_in: int, what: str = "layer") -> sp.csr_array:
    """The selection matrix of a gather from the codes it produced.

    ``out_codes`` holds, for every output neuron, ``1 + the input neuron`` it copies
    or 0 where it holds a constant. Anything else means the layer is not a gather.
    """
    c = np.asarray(out_codes, dtype=np.float64).reshape(-1)
    idx = np.rint(c).astype(np.int64)
    if not np.array_equal(idx, c) or idx.min(initial=0) < 0 or idx.max(initial=0) > n_in:
        raise ValueError(f"{what} does not move values without changing them (not a gather)")
    rows = np.flatnonzero(idx)
    return sp.csr_array((np.ones(len(rows)), (rows, idx[rows] - 1)), shape=(len(c), n_in))


def pool_geometry(input_shape, kernel, stride, dilation, pads_lo, pads_hi, out_spatial) -> ConvGeometry:
    """A pooling layer over ``(C, *spatial)`` as a grouped convolution with a ones kernel.

    ``(lo, hi)`` pads per axis; where ``out_spatial`` asks for more windows than
    the pads give (``ceil_mode``), the high side grows until the last window fits.

    >>> g = pool_geometry((2, 5), (2,), (2,), (1,), (0,), (0,), (3,))   # ceil_mode: 3 windows of 2
    >>> g.padding, g.output_shape
    (((0, 1),), (2, 3))
    """
    C = input_shape[0]
    pairs = []
    for n, k, s, d, lo, hi, o in zip(input_shape[1:], kernel, stride, dilation, pads_lo, pads_hi, out_spatial):
        extra = max(0, (o - 1) * s + d * (k - 1) + 1 - (n + lo + hi))
        pairs.append((int(lo), int(hi) + extra))
    geom = conv_geometry((C, 1, *kernel), tuple(input_shape), stride=tuple(stride), dilation=tuple(dilation),
                         groups=C, padding=tuple(max(p) for p in pairs))
    return dataclasses.replace(geom, padding=tuple(pairs))


def pool_windows(input_shape, kernel, stride, dilation, pads_lo, pads_hi, out_spatial):
    """Windows of a (max or average) pooling layer over ``(C, *spatial)``.

    Returns ``(W, count_padded)``: ``W`` the 0/1 matrix (output neuron x input neuron)
    of which inputs each output sees (the ones kernel's matrix on
    :func:`pool_geometry`), ``count_padded`` how many window positions lie in the
    zero-padded input (the divisor with ``count_include_pad``; ceil mode's extra
    positions do not count).
    """
    geom = pool_geometry(input_shape, kernel, stride, dilation, pads_lo, pads_hi, out_spatial)
    W = build_csr(np.ones(geom.weight_shape), geom)
    cnt = np.ones(1)
    for n, k, s, d, lo, hi, o in zip(input_shape[1:], kernel, stride, dilation, pads_lo, pads_hi, out_spatial):
        q = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d  # window positions in the padded input
        cnt = np.kron(cnt, (q < n + lo + hi).sum(axis=1))
    return W, np.tile(cnt.astype(np.float64), input_shape[0])


def pool_record(kind: str, geom: ConvGeometry, divisor: float | None = None) -> ConvRecord:
    """The record of a pooling layer: ``kind`` ``"max_pool"`` (ones) or ``"avg_pool"`` (``1/divisor``)."""
    value = 1.0 if kind == "max_pool" else 1.0 / float(divisor or geom.kernel_numel)
    return ConvRecord(kind, geom, np.full(geom.weight_shape, value))


def pad_record(input_shape, lohi, mode: str = "zeros") -> ConvRecord:
    """A padding layer as a 1x1 grouped convolution with padding ``lohi`` (``(lo, hi)`` per axis)."""
    C, nd = input_shape[0], len(input_shape) - 1
    geom = conv_geometry((C, 1, *(1,) * nd), tuple(input_shape), groups=C, padding_mode=mode,
                         padding=tuple(max(lo, hi) for lo, hi in lohi))
    geom = dataclasses.replace(geom, padding=tuple((int(lo), int(hi)) for lo, hi in lohi))
    return ConvRecord("pad", geom, np.ones(geom.weight_shape))


def conv_record(weight, bias, input_shape, *, pads=None, **conv_kwargs) -> ConvRecord:
    """The record of a convolution; ``pads``, ``(lo, hi)`` per axis, replaces symmetric ``padding``."""
    w = _f64(weight)
    if pads is not None:
        conv_kwargs["padding"] = tuple(max(p) for p in pads)
    geom = conv_geometry(w.shape, tuple(input_shape), **conv_kwargs)
    if pads is not None:
        geom = dataclasses.replace(geom, padding=tuple((int(lo), int(hi)) for lo, hi in pads))
    return ConvRecord("conv", geom, w, None if bias is None else as_bias(bias, geom.out_channels, dtype=np.float64))


def batch_norm_affine(mean, var, weight, bias, eps):
    """Batch norm in eval mode as ``(scale, shift)`` per channel: ``y = scale * x + shift``.

    >>> batch_norm_affine(np.array([1.]), np.array([3.]), np.array([2.]), None, 1.0)
    (array([1.]), array([-1.]))
    """
    mean, var = _f64(mean).reshape(-1), _f64(var).reshape(-1)
    w = np.ones_like(mean) if weight is None else _f64(weight).reshape(-1)
    b = np.zeros_like(mean) if bias is None else _f64(bias).reshape(-1)
    scale = w / np.sqrt(var + eps)
    return scale, b - mean * scale


def fold_channel_affine(weight, bias, scale, shift=None, *, transposed: bool = False, before: bool = False,
                        groups: int = 1):
    """A per-channel ``scale * y + shift`` folded into a convolution's ``(weight, bias)``.

    After the layer (``before=False``) it scales output channels; before it
    (``before=True``) input channels (then ``shift`` is not folded and must be None).
    Output channel ``g*C_out/g + j`` of a transposed layer is ``weight[g*C_in/g:..., j]``.

    >>> w, b = fold_channel_affine(np.ones((2, 1, 1)), None, np.array([2., 3.]), np.array([1., 0.]))
    >>> w.ravel().tolist(), b.tolist()
    ([2.0, 3.0], [1.0, 0.0])
    """
    w, scale = _f64(weight), _f64(scale).reshape(-1)
    a, b_ = w.shape[0], w.shape[1]
    if transposed != before:  # scale the second axis, group by group: (groups, axis0/groups, axis1, k)
        s = scale.reshape(groups, 1, b_, 1) if len(scale) == groups * b_ else None
        if s is None:
            raise ValueError(f"{len(scale)} channel scales do not match a weight of shape {w.shape}")
        w = (w.reshape(groups, a // groups, b_, -1) * s).reshape(w.shape)
    else:
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    if before:
        return w, None if bias is None else _f64(bias)
    out = len(scale)
    b = np.zeros(out) if bias is None else _f64(bias).reshape(-1)
    return w, scale * b + (0.0 if shift is None else _f64(shift).reshape(-1))


def adaptive_windows(input_shape, out_spatial):
    """Windows of adaptive pooling: along each axis ``[floor(i*n/o), ceil((i+1)*n/o))``."""
    C, spatial = input_shape[0], input_shape[1:]
    W = sp.identity(1, format="csr")
    for n, o in zip(spatial, out_spatial):
        i = np.arange(o)
        start, stop = (i * n) // o, -((-(i + 1) * n) // o)
        lens = stop - start
        cols = np.concatenate([np.arange(a, b) for a, b in zip(start, stop)])
        ptr = np.concatenate([[0], np.cumsum(lens)])
        W = sp.kron(W, sp.csr_array((np.ones(len(cols)), cols, ptr), shape=(o, n)), format="csr")
    W = sp.csr_array(sp.kron(sp.identity(C), W, format="csr"))
    return W, np.diff(W.indptr).astype(np.float64)


def avg_pool_affine(W, divisor) -> sp.csr_array:
    """``diag(1/divisor) @ W``: the average over each window."""
    return sp.csr_array(sp.diags_array(1.0 / np.asarray(divisor, dtype=np.float64)) @ W)


def max_pool_groups(W) -> np.ndarray:
    """Rows of a window matrix as a rectangular ``(rows, k)`` index array (short rows repeat a member)."""
    W = sp.csr_array(W)
    W.sort_indices()
    lens = np.diff(W.indptr)
    if lens.min(initial=1) < 1:
        raise ValueError("a pooling window lies entirely in the padding")
    k = int(lens.max(initial=1))
    pos = np.minimum(np.arange(k)[None, :], lens[:, None] - 1)
    return W.indices[W.indptr[:-1, None] + pos].astype(np.int64)


def unit_rows(start: int, stop: int, n: int) -> np.ndarray:
    """Rows ``e_start .. e_{stop-1}`` of the ``n x n`` identity (float64): the probes of :func:`probe_affine`."""
    Z = np.zeros((stop - start, n))
    Z[np.arange(stop - start), np.arange(start, stop)] = 1.0
    return Z


def probe_affine(fn, n_in: int, *, max_entries: int = 2**22):
    """``(M, b)`` of an affine map given as a batched function, read off unit vectors.

    ``fn(Z)`` maps a ``(k, n_in)`` float64 batch to ``(k, n_out)``. Then ``b = fn(0)``
    and column ``j`` of ``M`` is ``fn(e_j) - b``: exact for an affine ``fn`` (the unit
    vectors' outputs are the coefficients themselves). Unit vectors are sent in chunks
    of at most ``max_entries`` input and output values; exact zeros are not stored.

    >>> import numpy as np
    >>> M, b = probe_affine(lambda Z: Z @ np.array([[1., 2.], [0., 3.]]).T + 1, 2)
    >>> M.toarray(), b
    (array([[1., 2.],
           [0., 3.]]), array([1., 1.]))
    """
    b = np.asarray(fn(np.zeros((1, n_in))), dtype=np.float64)[0]
    k = max(1, min(n_in, max_entries // max(1, b.size, n_in)))  # a chunk: k unit vectors in, k outputs out
    blocks = []
    for start in range(0, n_in, k):
        Y = np.asarray(fn(unit_rows(start, min(n_in, start + k), n_in)), dtype=np.float64) - b
        blocks.append(sp.csr_array(Y.T))
    M = sp.hstack(blocks, format="csr") if blocks else sp.csr_array((b.size, 0))
    M.eliminate_zeros()
    return sp.csr_array(M), b


def is_affine_on(fn, M, b, points, rtol: float = 1e-6) -> bool:
    """Whether ``fn(P) == P @ M.T + b`` (to ``rtol`` of the output's scale) on the rows of ``points``.

    The default ``rtol`` admits float32 rounding (operators the ONNX reference computes
    in float32) and nothing a non-affine function does on random inputs."""
    got = np.asarray(fn(points), dtype=np.float64)
    want = np.asarray((M @ points.T).T) + b
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=0, atol=rtol * scale, equal_nan=True))


def looks_affine(fn, R, rtol: float = 1e-6) -> bool:
    """Whether ``fn`` (batched, as for :func:`probe_affine`) passes the affinity test on the two
    rows ``u, v`` of ``R``: ``f(u) + f(v) - f(0) == f(u + v)``, ``2 f(u) - f(0) == f(2u)`` and
    ``2 f(0) - f(u) == f(-u)``.

    >>> import numpy as np
    >>> R = np.random.default_rng(0).standard_normal((2, 3))
    >>> looks_affine(lambda Z: 2 * Z + 1, R), looks_affine(lambda Z: np.maximum(Z, 0), R)
    (True, False)
    """
    u, v = R[0], R[1]
    f = np.asarray(fn(np.vstack([np.zeros_like(u), u, v, u + v, 2 * u, -u])), dtype=np.float64)
    want = np.vstack([f[1] + f[2] - f[0], 2 * f[1] - f[0], 2 * f[0] - f[1]])
    scale = max(1.0, float(np.abs(f[np.isfinite(f)]).max(initial=0.0)))
    return bool(np.allclose(f[3:], want, rtol=0, atol=rtol * scale, equal_nan=True))


def reduce_groups(shape, axes, keepdims: bool = True):
    """``(groups, out_shape)`` of a reduction over ``axes``: ``groups[i]`` the flat input indices
    that output neuron ``i`` reduces (C order), as for :class:`~convmatrix.network.ir.Max`.

    >>> g, out = reduce_groups((2, 3), [1], keepdims=False)
    >>> g.tolist(), out
    ([[0, 1, 2], [3, 4, 5]], (2,))
    """
    shape = tuple(int(d) for d in shape)
    axes = sorted({int(a) % len(shape) for a in axes}) if shape else []
    keep = [d for d in range(len(shape)) if d not in axes]
    idx = np.arange(prod(shape), dtype=np.int64).reshape(shape).transpose(keep + axes)
    k = prod(shape[d] for d in axes)
    out = tuple(1 if d in axes else shape[d] for d in range(len(shape))) if keepdims else \
        tuple(shape[d] for d in keep)
    return idx.reshape(-1, k), out


def group_sum_matrix(groups, n_in: int, scale: float = 1.0) -> sp.csr_array:
    """``y[i] = scale * sum_j x[groups[i, j]]``: the matrix of a sum (or mean) over index groups."""
    groups = np.asarray(groups, dtype=np.int64)
    rows = np.repeat(np.arange(groups.shape[0]), groups.shape[1])
    return sp.csr_array((np.full(groups.size, float(scale)), (rows, groups.ravel())), shape=(groups.shape[0], n_in))
