"""Signal-processing conventions: true convolution (kernel flipped), SciPy and MATLAB layouts.

Deep learning's "convolution" is a cross-correlation. Signal processing flips
the kernel: ``y[n] = sum_m a[m] x[n - m]``. These functions give the matrices
of that convention: :func:`convolution_matrix` exactly as SciPy's (entries
copied from the kernel, dtype kept), and :func:`convolution_matrix_nd` for N-D
kernels, built on :func:`convmatrix.conv_matrix` with the flipped kernel and
``k - 1`` zero padding (the "full" output).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from .geometry import as_int
from .matrix import as_weight_array, conv_matrix

__all__ = ["convolution_matrix", "convolution_matrix_nd", "convmtx", "convmtx2"]

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


def _scipy_array(a) -> np.ndarray:
    """``a`` as SciPy reads it (``numpy.asarray``, dtype kept); torch tensors through :func:`as_weight_array`."""
    if type(a).__module__.startswith("torch"):
        return as_weight_array(a, "a")
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a must be an array of numbers: {exc}") from None
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"a must hold numbers (bool, int, float or complex), got dtype {arr.dtype}")
    return arr


def _toeplitz_taps(m: int, n: int, mode: str):
    """``(rows, cols, taps)`` of the entries of the 1-D convolution matrix: ``A[rows, cols] = a[taps]``.

    Full mode has ``A[i, j] = a[i - j]`` for ``0 <= i - j < m``; the other modes keep
    the rows of :func:`_trim`.
    """
    keep = np.asarray(_trim(m + n - 1, m, n, mode))
    k = keep[:, None] - np.arange(n)[None, :]
    rows, cols = np.nonzero((k >= 0) & (k < m))
    return rows, cols, k[rows, cols], len(keep)


def _check_kernel_mode_format(a: np.ndarray, mode, format) -> None:
    """The checks both convolution matrices share: a non-empty kernel, SciPy's modes, our formats."""
    if a.size == 0:
        raise ValueError(f"len(a) must be at least 1 (a must not be empty), got shape {a.shape}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"'mode' argument must be one of {MODES}, got {mode!r}")
    if format not in ("csr", "dense"):
        raise ValueError(f"format must be 'csr' or 'dense', got {format!r}")


def convolution_matrix(a, n, mode: str = "full", *, format: str = "csr"):
    """Matrix of 1-D true convolution with ``a``: ``A @ x == numpy.convolve(a, x, mode)``.

    Exactly ``scipy.linalg.convolution_matrix(a, n, mode)`` (``A[i, j] = a[i - j]`` in
    full mode): the entries are copies of ``a``'s (no arithmetic), so every dtype SciPy
    takes keeps its values and dtype (int64 beyond 2**53, float16, bool). An ``a`` of
    more than one dimension is, as in SciPy, a batch of 1-D kernels along its last
    axis, giving an array of shape ``a.shape[:-1] + A.shape`` (``format="dense"`` only).
    For the matrix of an N-D convolution use :func:`convolution_matrix_nd`.

    Parameters
    ----------
    a : array_like
        The kernel (1-D), or a batch of kernels.
    n : int
        Length of the input.
    mode : {"full", "same", "valid"}
    format : {"csr", "dense"}
        ``"dense"`` returns exactly SciPy's ndarray; ``"csr"`` a ``scipy.sparse.csr_array``
        with the same values (float16 as float32: SciPy sparse has no float16).

    Examples
    --------
    >>> from convmatrix import convolution_matrix
    >>> convolution_matrix([1, 2, 3], 4, format="dense")
    array([[1, 0, 0, 0],
           [2, 1, 0, 0],
           [3, 2, 1, 0],
           [0, 3, 2, 1],
           [0, 0, 3, 2],
           [0, 0, 0, 3]])
    >>> import numpy as np
    >>> A = convolution_matrix([1., 2., 3.], 4, "same")
    >>> np.array_equal(A @ np.arange(4.), np.convolve([1., 2., 3.], np.arange(4.), "same"))
    True
    """
    n = _positive_ints("n", n, 1)[0]
    a = _scipy_array(a)
    _check_kernel_mode_format(a, mode, format)
    if a.ndim == 0:
        raise ValueError("a must be a 1-D array (or a batch of them), got a scalar")
    if a.ndim > 1 and format != "dense":
        raise ValueError(f"a of shape {a.shape} is a batch of {a.ndim - 1}-D kernels, which only "
                         "format='dense' returns; for the matrix of an N-D convolution use convolution_matrix_nd")
    m = a.shape[-1]
    rows, cols, taps, n_rows = _toeplitz_taps(m, n, mode)
    if format == "dense":
        out = np.zeros(a.shape[:-1] + (n_rows, n), dtype=a.dtype)
        out[..., rows, cols] = a[..., taps]
        return out
    data = a[taps]
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    return sp.csr_array((data, (rows, cols)), shape=(n_rows, n))


def convolution_matrix_nd(a, n, mode: str = "full", *, format: str = "csr"):
    """Matrix of N-D true convolution: ``A @ x.ravel() == scipy.signal.convolve(a, x, mode).ravel()``.

    ``a`` is one kernel of 1 to 3 dimensions and ``n`` one input size per dimension;
    arrays are flattened in C order and each axis is trimmed like ``numpy.convolve``.
    For a 1-D ``a`` this equals :func:`convolution_matrix` (in floating point).

    >>> import numpy as np
    >>> from scipy.signal import convolve
    >>> a, x = np.arange(1., 7.).reshape(2, 3), np.ones((3, 4))
    >>> A = convolution_matrix_nd(a, (3, 4), "same")
    >>> np.allclose(A @ x.ravel(), convolve(x, a, "same").ravel())
    True
    """
    a = as_weight_array(a, "a")
    if a.ndim not in (1, 2, 3):
        raise ValueError(f"a must have 1, 2 or 3 dimensions, got shape {a.shape}")
    _check_kernel_mode_format(a, mode, format)
    sizes = _positive_ints("n", n, a.ndim)
    kernel = np.flip(a).reshape(1, 1, *a.shape)
    full = conv_matrix(kernel, (1, *sizes), padding=tuple(k - 1 for k in a.shape))
    keep = [np.asarray(_trim(m + s - 1, m, s, mode)) for m, s in zip(a.shape, sizes)]
    full_shape = tuple(m + s - 1 for m, s in zip(a.shape, sizes))
    rows = np.ravel_multi_index(np.ix_(*keep), full_shape).ravel()
    A = full if mode == "full" else sp.csr_array(full[rows])
    return A.toarray() if format == "dense" else A


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
    return convolution_matrix_nd(H.T, (n, m))
