"""A matrix-free conv matrix: a SciPy ``LinearOperator`` that applies the convolution.

For layers whose matrix would need tens of GB, :func:`operator` gives the same
linear map without storing it: ``A @ x`` runs the convolution, ``A.H @ y`` its
adjoint, in memory proportional to the input plus the output. Iterative
methods (``scipy.sparse.linalg.svds``, ``lsqr``, ``cg``, power iteration) need
nothing more. NumPy and SciPy only.

This is the library's second, independent path to the layer (it never touches
the tap pattern): for a range of output rows at a time, the kernel windows of the
padded input (a strided view) are gathered into columns and multiplied by the
weight as one ``(C_out/g, C_in/g * K)`` matrix per group; the adjoint multiplies by
its transpose and adds each tap's share back onto its window. Padding modes pad by
gathering ``x`` at the positions ``np.pad`` would copy (so the adjoint sums them
back), and a transposed convolution is the adjoint's scatter run forwards.

Threads: every product runs on one BLAS thread (:mod:`convmatrix.core.threads`);
an application of more than about 1e8 multiply-adds is split into pieces (row
ranges, or channel ranges for the scatter) on threads of its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from math import prod

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import as_strided
from scipy.sparse.linalg import LinearOperator

from .geometry import ConvGeometry, check_memory, product_bytes
from .matrix import as_weight_array, conv_geometry
from .threads import one_blas_thread, workers

__all__ = ["operator", "ConvOperator"]

# torch's padding modes as np.pad modes.
_NP_PAD = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
#: Bytes of gathered windows (or of per-tap products) held at once per piece of work.
_CHUNK_BYTES = 2 * 2**20
#: Below this many multiply-adds per application, threads cost more than they gain.
_PARALLEL_WORK = 10**8


def _windows(src, kernel_size, out_size, stride, dilation):
    """Read-only view ``(B, G, c, *k, *out)`` of ``src`` ``(B, G, c, *padded)``:
    ``view[..., t, o] = src[..., o*stride + t*dilation]`` (no copy)."""
    spatial = src.strides[3:]
    shape = src.shape[:3] + tuple(kernel_size) + tuple(out_size)
    strides = src.strides[:3] + tuple(s * d for s, d in zip(spatial, dilation)) \
        + tuple(s * q for s, q in zip(spatial, stride))
    return as_strided(src, shape, strides, writeable=False)


def _row_chunks(rows: int, bytes_per_row: int) -> list[tuple[int, int]]:
    """Ranges of output rows (first spatial axis) of about ``_CHUNK_BYTES`` each."""
    step = max(1, _CHUNK_BYTES // max(bytes_per_row, 1))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _tap_window(tap, rows, out_size, stride, dilation) -> tuple[slice, ...]:
    """The positions ``o*stride + tap*dilation`` that ``tap`` reads (or writes) for output rows
    ``rows = (r0, r1)`` of the first axis and every position of the others."""
    first = (rows[0],) + (0,) * (len(tap) - 1)
    stop = (rows[1],) + tuple(out_size[1:])
    return tuple(slice(t * d + a * s, t * d + (z - 1) * s + 1, s)
                 for t, d, s, a, z in zip(tap, dilation, stride, first, stop))


def _run(pieces, fn, work: int) -> None:
    """``fn(piece)`` for every piece, on threads when the work pays for them
    (each piece's BLAS on one thread, so a busy core just takes fewer pieces)."""
    n = workers(len(pieces)) if work >= _PARALLEL_WORK else 1
    with one_blas_thread():
        if n == 1:
            for piece in pieces:
                fn(piece)
        else:
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(fn, pieces))


def _correlate(src, mats, kernel_size, out_size, stride, dilation):
    """``dst[b, g, v, o] = sum_{c, t} mats[g, v, c*K + t] * src[b, g, c, o*stride + t*dilation]``.

    ``src``: (B, G, c_src, *padded); ``mats``: (G, c_dst, c_src*K) with the K taps in C order.
    The windows of a range of output rows are gathered into columns and multiplied at once.
    """
    b, g, c = src.shape[:3]
    c_dst, n_out = mats.shape[1], prod(out_size)
    dst = np.zeros((b, g, c_dst, n_out), dtype=np.result_type(src, mats))
    if n_out == 0 or dst.size == 0:
        return dst.reshape(b, g, c_dst, *out_size)
    win = _windows(src, kernel_size, out_size, stride, dilation)
    per_row = n_out // out_size[0]
    first_out_axis = (slice(None),) * (3 + len(out_size))

    def piece(rows):
        r0, r1 = rows
        cols = win[first_out_axis + (slice(r0, r1),)].reshape(b, g, mats.shape[2], (r1 - r0) * per_row)
        dst[..., r0 * per_row : r1 * per_row] = mats @ cols

    chunks = _row_chunks(out_size[0], b * g * mats.shape[2] * per_row * src.itemsize)
    _run(chunks, piece, b * mats.size * n_out)
    return dst.reshape(b, g, c_dst, *out_size)


def _scatter(src, mats, kernel_size, buf_size, stride, dilation):
    """The adjoint of :func:`_correlate` for ``mats`` (G, c_dst*K, c_src), the K taps in C order:
    ``dst[b, g, c, o*stride + t*dilation] += sum_v mats[g, c*K + t, v] * src[b, g, v, o]``.

    Per range of output rows one product gives every tap's contribution, then one
    strided addition per tap; threads take disjoint destination channels.
    """
    b, g, v = src.shape[:3]
    out_size = src.shape[3:]
    K = prod(kernel_size)
    c_dst = mats.shape[1] // K
    dst = np.zeros((b, g, c_dst, *buf_size), dtype=np.result_type(src, mats))
    n_out = prod(out_size)
    if n_out == 0 or dst.size == 0:
        return dst
    flat = src.reshape(b, g, v, n_out)
    per_row = n_out // out_size[0]
    taps = list(np.ndindex(*kernel_size))
    n_blocks = workers(c_dst) if b * mats.size * n_out >= _PARALLEL_WORK else 1
    cuts = np.linspace(0, c_dst, n_blocks + 1).astype(int)
    blocks = [(int(a), int(z)) for a, z in zip(cuts, cuts[1:]) if z > a]

    def piece(channels):
        c0, c1 = channels
        part = mats[:, c0 * K : c1 * K]
        for r0, r1 in _row_chunks(out_size[0], b * g * (c1 - c0) * K * per_row * dst.itemsize):
            share = (part @ flat[..., r0 * per_row : r1 * per_row]).reshape(
                b, g, c1 - c0, K, r1 - r0, *out_size[1:])
            for j, tap in enumerate(taps):
                window = _tap_window(tap, (r0, r1), out_size, stride, dilation)
                dst[(slice(None), slice(None), slice(c0, c1), *window)] += share[:, :, :, j]

    _run(blocks, piece, b * mats.size * n_out)
    return dst


def _pad_sources(n, lo, hi, mode):
    """For every padded position, the input position it copies (np.pad applied to the indices)."""
    return np.pad(np.arange(n), (lo, hi), mode=_NP_PAD[mode])


class ConvOperator(LinearOperator):
    """The conv matrix of one layer as a ``LinearOperator``; see :func:`operator`."""

    def __init__(self, weight: np.ndarray, geom: ConvGeometry):
        self.geometry = geom
        # Per group, the weight as one (channels, channels*K) matrix with the K taps in C order:
        # forward (C_out, C_in/g, *k) gives the correlation's; transposed (C_in, C_out/g, *k) gives,
        # conjugated, the correlation of its adjoint. The scatter uses the conjugate transpose.
        per_group = weight.reshape(geom.groups, weight.shape[0] // geom.groups, -1)
        self._gather = np.ascontiguousarray(per_group.conj() if geom.transposed else per_group)
        self._spread = np.ascontiguousarray(np.swapaxes(self._gather, -1, -2).conj())
        super().__init__(dtype=weight.dtype, shape=geom.matrix_shape)

    # ----------------------------------------------------------------- padding
    def _pad(self, x):
        geom = self.geometry
        if geom.padding_mode == "zeros":
            return np.pad(x, [(0, 0)] * 3 + list(geom.padding))
        for ax, (n, (lo, hi)) in enumerate(zip(geom.input_size, geom.padding)):
            x = x.take(_pad_sources(n, lo, hi, geom.padding_mode), axis=3 + ax)
        return x

    def _unpad(self, xp):
        """The adjoint of :meth:`_pad`: crop, or sum every copy back onto its source."""
        geom = self.geometry
        if geom.padding_mode == "zeros":
            return xp[(Ellipsis, *(slice(lo, lo + n) for n, (lo, _) in zip(geom.input_size, geom.padding)))]
        for ax, (n, (lo, hi)) in enumerate(zip(geom.input_size, geom.padding)):
            src = _pad_sources(n, lo, hi, geom.padding_mode)
            fold = sp.csr_array((np.ones(len(src)), (src, np.arange(len(src)))), shape=(n, len(src)))
            moved = np.moveaxis(xp, 3 + ax, 0)
            summed = fold @ moved.reshape(len(src), -1)
            xp = np.moveaxis(summed.reshape(n, *moved.shape[1:]), 0, 3 + ax)
        return xp

    # ----------------------------------------------------- the two directions
    def _apply(self, x):
        """Batched forward map: x (B, C_in, *n) -> (B, C_out, *n_out)."""
        geom = self.geometry
        b, g = x.shape[0], geom.groups
        x = x.reshape(b, g, geom.in_per_group, *geom.input_size)
        if geom.transposed:
            y = _scatter(x, self._spread, geom.kernel_size, self._full_size(), geom.stride, geom.dilation)
            y = y[(Ellipsis, *self._crop())]
        else:
            y = _correlate(self._pad(x), self._gather, geom.kernel_size, geom.output_size, geom.stride,
                           geom.dilation)
        return y.reshape(b, -1)

    def _apply_adjoint(self, y):
        """Batched adjoint map: y (B, C_out, *n_out) -> (B, C_in, *n)."""
        geom = self.geometry
        b, g = y.shape[0], geom.groups
        y = y.reshape(b, g, geom.out_per_group, *geom.output_size)
        if geom.transposed:
            full = np.zeros((b, g, geom.out_per_group, *self._full_size()), dtype=y.dtype)
            full[(Ellipsis, *self._crop())] = y
            x = _correlate(full, self._gather, geom.kernel_size, geom.input_size, geom.stride, geom.dilation)
        else:
            padded = tuple(n + lo + hi for n, (lo, hi) in zip(geom.input_size, geom.padding))
            x = self._unpad(_scatter(y, self._spread, geom.kernel_size, padded, geom.stride, geom.dilation))
        return x.reshape(b, -1)

    def _full_size(self):
        """Transposed layers: every position the scatter writes, and enough to hold the crop."""
        geom = self.geometry
        return tuple(
            max((n - 1) * s + d * (k - 1) + 1, lo + m)
            for n, s, d, k, (lo, _), m in zip(
                geom.input_size, geom.stride, geom.dilation, geom.kernel_size, geom.padding, geom.output_size
            )
        )

    def _crop(self):
        # conv_transpose drops `padding` positions at the start; output_padding extends the end.
        geom = self.geometry
        return tuple(slice(lo, lo + m) for (lo, _), m in zip(geom.padding, geom.output_size))

    # -------------------------------------------------- LinearOperator hooks
    def _matmat(self, X):
        return self._apply(np.asarray(X).T).T

    def _rmatmat(self, Y):
        return self._apply_adjoint(np.asarray(Y).T).T

    def _matvec(self, x):
        return self._apply(np.asarray(x).reshape(1, -1))[0]

    def _rmatvec(self, y):
        return self._apply_adjoint(np.asarray(y).reshape(1, -1))[0]

    def __repr__(self):
        geom = self.geometry
        kind = "conv_transpose" if geom.transposed else "conv"
        return f"<{self.shape[0]}x{self.shape[1]} ConvOperator ({kind} {geom.input_shape} -> " \
               f"{geom.output_shape}) with dtype={self.dtype}>"


def operator(weight, input_shape, **conv_kwargs) -> ConvOperator:
    """The conv matrix as a matrix-free ``scipy.sparse.linalg.LinearOperator``.

    ``A = operator(weight, input_shape, **conv_kwargs)`` equals
    ``conv_matrix(weight, input_shape, **conv_kwargs)`` as a linear map, for
    every padding mode and for transposed layers: ``A @ x`` (and ``A @ X`` for a
    matrix ``X`` of columns) runs the convolution on flattened inputs, ``A.H @ y``
    (``A.rmatvec``) its adjoint, ``A.T @ y`` its transpose. Nothing the size of
    the matrix is built: memory stays proportional to the input plus the output,
    so it serves layers whose matrix would not fit in memory.

    Example
    -------
    >>> import numpy as np
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> A = operator(K, (1, 3, 3))
    >>> A.shape
    (8, 9)
    >>> A @ np.arange(1., 10.)
    array([ 37.,  47.,  67.,  77.,  85., 111., 163., 189.])
    >>> A.H @ np.eye(8)[0]
    array([1., 2., 0., 3., 4., 0., 0., 0., 0.])
    """
    w = as_weight_array(weight)
    geom = conv_geometry(w.shape, input_shape, **conv_kwargs)
    check_memory(product_bytes(geom, w.itemsize), None,
                 f"one product of the matrix-free operator ({geom.input_shape} -> {geom.output_shape})",
                 "use a smaller input, or a larger stride")
    return ConvOperator(w, geom)
