"""Signal-processing conventions: true convolution (kernel flipped), SciPy and MATLAB layouts.

Deep learning's "convolution" is a cross-correlation. Signal processing flips
the kernel: ``y[n] = sum_m a[m] x[n - m]``. These functions give the matrices
of that convention, built on :func:`convmatrix.conv_matrix` with the flipped
kernel and ``k - 1`` zero padding (the "full" output).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from .geometry import as_int
from .matrix import as_weight_array, conv_matrix

__all__ = ["convolution_matrix", "convmtx", "convmtx2"]

MODES = ("full", "same", "valid")


def _positive_ints(name, n, nd):
    values = (n,) if isinstance(n, numbers.Integral) else tuple(n) if hasattr(n, "__len__") else None
    if values is None or isinstance(n, bool):
        raise TypeError(f"{name} must be a positive integer or one per dimension, got {n!r}")
    if len(values) != nd:
        raise ValueError(f"{name} must have {nd} entr{'y' if nd == 1 else 'ies'} for a {nd}-D kernel, got {n!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be a positive integer or one per dimension, got {n!r}")
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return tuple(as_int(name, v, minimum=1) for v in values)


def _trim(full_len: int, m: int, n: int, mode: str) -> range:
    """Which rows of the full result each mode keeps (``numpy.convolve``'s centring)."""
    if mode == "full":
        return range(full_len)
    trim = min(m, n) - 1
    if mode == "same":
        lo = trim // 2
        return range(lo, lo + max(m, n))
    return range(trim, full_len - trim)


def convolution_matrix(a, n, mode: str = "full", *, format: str = "csr"):
    """Matrix of true convolution with ``a``: ``A @ x.ravel() == convolve(a, x, mode).ravel()``.

    For a 1-D ``a`` this has the values of ``scipy.linalg.convolution_matrix(a, n, mode)``
    (``A[i, j] = a[i - j]`` in full mode); for an N-D ``a`` and ``n`` one size per
    dimension it is the matrix of ``scipy.signal.convolve(a, x, mode)`` on C-order
    flattened arrays, each axis trimmed like ``numpy.convolve``.

    Parameters
    ----------
    a : array_like
        The kernel, 1-D to 3-D.
    n : int or tuple of int
        Size of the input (one per dimension of ``a``).
    mode : {"full", "same", "valid"}
    format : {"csr", "dense"}
        ``"dense"`` returns exactly SciPy's ndarray (1-D).

    Examples
    --------
    >>> from convmatrix import convolution_matrix
    >>> convolution_matrix([1, 2, 3], 4, format="dense").astype(int)
    array([[1, 0, 0, 0],
           [2, 1, 0, 0],
           [3, 2, 1, 0],
           [0, 3, 2, 1],
           [0, 0, 3, 2],
           [0, 0, 0, 3]])
    """
    original_dtype = np.asarray(a).dtype
    a = as_weight_array(a, "a")
    if a.ndim not in (1, 2, 3):
        raise ValueError(f"a must have 1, 2 or 3 dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("a must not be empty")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"'mode' argument must be one of {MODES}, got {mode!r}")
    if format not in ("csr", "dense"):
        raise ValueError(f"format must be 'csr' or 'dense', got {format!r}")
    sizes = _positive_ints("n", n, a.ndim)
    kernel = np.flip(a).reshape(1, 1, *a.shape)
    full = conv_matrix(kernel, (1, *sizes), padding=tuple(k - 1 for k in a.shape))
    keep = [np.asarray(_trim(m + s - 1, m, s, mode)) for m, s in zip(a.shape, sizes)]
    full_shape = tuple(m + s - 1 for m, s in zip(a.shape, sizes))
    rows = np.ravel_multi_index(np.ix_(*keep), full_shape).ravel()
    A = full if mode == "full" else sp.csr_array(full[rows])
    if format == "dense":  # exactly SciPy's ndarray: integer kernels give integer matrices
        return A.toarray().astype(original_dtype if original_dtype.kind in "iu" else A.dtype)
    return A


def convmtx(h, n: int):
    """MATLAB's ``convmtx(h, n)``.

    For a column vector ``h`` of length m (a 1-D array counts as one) the
    ``(m+n-1) x n`` matrix with ``T @ x == conv(h, x)``; for a row vector
    (shape ``(1, m)``) the ``n x (m+n-1)`` matrix with ``x @ T == conv(x, h)``.
    Returned as a CSR array.

    >>> convmtx([1, 2], 3).toarray().astype(int)
    array([[1, 0, 0],
           [2, 1, 0],
           [0, 2, 1],
           [0, 0, 2]])
    """
    h = as_weight_array(h, "h")
    row_vector = h.ndim == 2 and h.shape[0] == 1 and h.shape[1] > 1
    if h.ndim == 2 and (h.shape[1] == 1 or row_vector):
        vec = h.ravel()
    elif h.ndim == 1:
        vec = h
    else:
        raise ValueError(f"h must be a vector (1-D, column or row), got shape {h.shape}")
    T = convolution_matrix(vec, n)
    return sp.csr_array(T.T) if row_vector else T


def convmtx2(H, m: int, n: int):
    """MATLAB's ``convmtx2(H, m, n)``: ``reshape(T @ X(:), size(H)+[m n]-1) == conv2(X, H)``.

    ``X(:)`` is MATLAB's column-major vectorisation (``X.ravel(order="F")``) and so
    is the reshape. Column-major vectorisation of a 2-D array is the row-major one
    of its transpose, and ``conv2(X, H).T == conv2(X.T, H.T)``, so this is the
    row-major full convolution matrix of ``H.T`` on an ``n x m`` input.

    >>> import numpy as np
    >>> from scipy.signal import convolve2d
    >>> H, X = np.ones((3, 3)) / 9, np.arange(20.).reshape(4, 5)
    >>> T = convmtx2(H, 4, 5)
    >>> np.allclose((T @ X.ravel(order="F")).reshape(6, 7, order="F"), convolve2d(X, H))
    True
    """
    H = as_weight_array(H, "H")
    if H.ndim != 2:
        raise ValueError(f"H must be a 2-D array, got shape {H.shape}")
    m, n = _positive_ints("m", m, 1)[0], _positive_ints("n", n, 1)[0]
    return convolution_matrix(H.T, (n, m))
