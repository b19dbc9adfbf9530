"""A matrix-free conv matrix: a SciPy ``LinearOperator`` that applies the convolution.

For layers whose matrix would need tens of GB, :func:`operator` gives the same
linear map without storing it: ``A @ x`` runs the convolution, ``A.H @ y`` its
adjoint, in memory proportional to the input plus the output. Iterative
methods (``scipy.sparse.linalg.svds``, ``lsqr``, ``cg``, power iteration) need
nothing more. NumPy and SciPy only.

This is the library's second, independent path to the layer (it never touches
the tap pattern): a convolution is computed tap by tap as a shifted, strided
view of the padded input times one ``(C_out/g, C_in/g)`` weight matrix per group,
and its adjoint scatters the same products back. Padding modes pad by gathering
``x`` at the positions ``np.pad`` would copy (so the adjoint sums them back), and
a transposed convolution is the adjoint's scatter run forwards.
"""

from __future__ import annotations

from itertools import product
from math import prod

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from .geometry import ConvGeometry, check_memory, product_bytes
from .matrix import as_weight_array, conv_geometry

__all__ = ["operator", "ConvOperator"]

# torch's padding modes as np.pad modes.
_NP_PAD = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _tap_slices(tap, size, stride, dilation):
    """The strided window read by kernel tap ``tap`` for an output of spatial ``size``."""
    return tuple(
        slice(t * d, t * d + (n - 1) * s + 1, s) for t, n, s, d in zip(tap, size, stride, dilation)
    )


def _correlate(src, mats, out_size, stride, dilation):
    """``dst[b, g, v, o] = sum_{c, t} mats[t][g, v, c] * src[b, g, c, o*stride + t*dilation]``.

    ``src``: (B, G, c_src, *padded); ``mats``: one (G, c_dst, c_src) array per tap.
    """
    b, g = src.shape[:2]
    taps = list(product(*(range(k) for k in mats.shape[:-3])))
    c_dst = mats.shape[-2]
    dst = np.zeros((b, g, c_dst, prod(out_size)), dtype=np.result_type(src, mats))
    for tap in taps:
        window = src[(Ellipsis, *_tap_slices(tap, out_size, stride, dilation))]
        dst += mats[tap] @ window.reshape(b, g, -1, prod(out_size))
    return dst.reshape(b, g, c_dst, *out_size)


def _scatter(src, mats, buf_size, stride, dilation):
    """The adjoint of :func:`_correlate` (with ``mats`` conjugate-transposed):
    ``dst[b, g, c, o*stride + t*dilation] += sum_v mats[t][g, c, v] * src[b, g, v, o]``.
    """
    b, g = src.shape[:2]
    out_size = src.shape[3:]
    taps = list(product(*(range(k) for k in mats.shape[:-3])))
    c_dst = mats.shape[-2]
    dst = np.zeros((b, g, c_dst, *buf_size), dtype=np.result_type(src, mats))
    flat = src.reshape(b, g, src.shape[2], -1)
    for tap in taps:
        dst[(Ellipsis, *_tap_slices(tap, out_size, stride, dilation))] += (
            (mats[tap] @ flat).reshape(b, g, c_dst, *out_size)
        )
    return dst


def _pad_sources(n, lo, hi, mode):
    """For every padded position, the input position it copies (np.pad applied to the indices)."""
    return np.pad(np.arange(n), (lo, hi), mode=_NP_PAD[mode])


class ConvOperator(LinearOperator):
    """The conv matrix of one layer as a ``LinearOperator``; see :func:`operator`."""

    def __init__(self, weight: np.ndarray, geom: ConvGeometry):
        self.geometry = geom
        g, k = geom.groups, geom.kernel_size
        taps_last = np.moveaxis(weight, range(2, 2 + geom.ndim), range(geom.ndim))  # (*k, a, b)
        if geom.transposed:
            # weight (C_in, C_out/g, *k): input channel c of group g feeds output channel v.
            w = taps_last.reshape(*k, g, geom.in_per_group, geom.out_per_group)
            self._mats = np.ascontiguousarray(np.swapaxes(w, -1, -2))  # (*k, g, out, in)
        else:
            self._mats = np.ascontiguousarray(
                taps_last.reshape(*k, g, geom.out_per_group, geom.in_per_group)
            )
        self._mats_adjoint = np.ascontiguousarray(np.swapaxes(self._mats, -1, -2).conj())
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
            y = _scatter(x, self._mats, self._full_size(), geom.stride, geom.dilation)
            y = y[(Ellipsis, *self._crop())]
        else:
            y = _correlate(self._pad(x), self._mats, geom.output_size, geom.stride, geom.dilation)
        return y.reshape(b, -1)

    def _apply_adjoint(self, y):
        """Batched adjoint map: y (B, C_out, *n_out) -> (B, C_in, *n)."""
        geom = self.geometry
        b, g = y.shape[0], geom.groups
        y = y.reshape(b, g, geom.out_per_group, *geom.output_size)
        if geom.transposed:
            full = np.zeros((b, g, geom.out_per_group, *self._full_size()), dtype=y.dtype)
            full[(Ellipsis, *self._crop())] = y
            x = _correlate(full, self._mats_adjoint, geom.input_size, geom.stride, geom.dilation)
        else:
            padded = tuple(n + lo + hi for n, (lo, hi) in zip(geom.input_size, geom.padding))
            x = self._unpad(_scatter(y, self._mats_adjoint, padded, geom.stride, geom.dilation))
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
