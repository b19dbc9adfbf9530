"""Signal-processing conventions against SciPy and MATLAB's documented example."""

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from convmatrix import convmtx, convmtx2, convolution_matrix, convolution_matrix_nd


@given(st.integers(1, 7), st.integers(1, 9), st.sampled_from(["full", "same", "valid"]), st.integers(0, 999))
def test_convolution_matrix_equals_scipy(m, n, mode, seed):
    a = np.random.default_rng(seed).standard_normal(m)
    expected = scipy.linalg.convolution_matrix(a, n, mode)
    A = convolution_matrix(a, n, mode)
    np.testing.assert_array_equal(A.toarray(), expected)
    dense = convolution_matrix(a, n, mode, format="dense")
    assert type(dense) is np.ndarray and dense.dtype == expected.dtype
    np.testing.assert_array_equal(dense, expected)


def test_convolution_matrix_integer_kernel_dense_is_scipys():
    expected = scipy.linalg.convolution_matrix(np.array([1, 2, 3]), 4)
    got = convolution_matrix(np.array([1, 2, 3]), 4, format="dense")
    np.testing.assert_array_equal(got, expected)


@given(st.tuples(st.integers(1, 4), st.integers(1, 4)), st.tuples(st.integers(1, 6), st.integers(1, 6)),
       st.sampled_from(["full", "same", "valid"]), st.integers(0, 999))
def test_convolution_matrix_nd_equals_scipy_signal(kshape, xshape, mode, seed):
    rng = np.random.default_rng(seed)
    a, x = rng.standard_normal(kshape), rng.standard_normal(xshape)
    a_larger = all(p >= q for p, q in zip(kshape, xshape))
    x_larger = all(q >= p for p, q in zip(kshape, xshape))
    if mode != "full" and not (a_larger or x_larger):
        return  # scipy.signal: 'valid' refuses such pairs and 'same' keeps the first input's size
    # 'same' keeps the larger size per axis (as numpy.convolve and scipy.linalg do): put the larger first.
    first, second = (a, x) if a_larger else (x, a)
    expected = scipy.signal.convolve(first, second, mode=mode, method="direct")
    A = convolution_matrix_nd(a, xshape, mode)
    np.testing.assert_allclose(A @ x.ravel(), expected.ravel(), atol=1e-12)


def test_convolution_matrix_3d(rng):
    a, x = rng.standard_normal((2, 3, 2)), rng.standard_normal((3, 4, 5))
    A = convolution_matrix_nd(a, x.shape)
    np.testing.assert_allclose(A @ x.ravel(), scipy.signal.convolve(a, x).ravel(), atol=1e-12)


@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 999))
def test_convmtx_column_vector(m, n, seed):
    rng = np.random.default_rng(seed)
    h, x = rng.standard_normal(m), rng.standard_normal(n)
    T = convmtx(h, n)
    assert T.shape == (m + n - 1, n)
    np.testing.assert_allclose(T @ x, np.convolve(h, x), atol=1e-12)
    np.testing.assert_array_equal(convmtx(h.reshape(-1, 1), n).toarray(), T.toarray())


def test_convmtx_row_vector(rng):
    h, x = rng.standard_normal((1, 3)), rng.standard_normal(5)
    T = convmtx(h, 5)
    assert T.shape == (5, 7)
    np.testing.assert_allclose(x @ T.toarray(), np.convolve(x, h.ravel()), atol=1e-12)


MAGIC5 = np.array([[17, 24, 1, 8, 15], [23, 5, 7, 14, 16], [4, 6, 13, 20, 22], [10, 12, 19, 21, 3],
                   [11, 18, 25, 2, 9]], dtype=float)


def test_convmtx2_matlab_documented_example():
    """MATLAB: H = ones(3)/9; X = magic(5); conv2 first row 1.8889 4.5556 4.6667 3.6667 2.6667 2.5556 1.6667."""
    H = np.ones((3, 3)) / 9
    T = convmtx2(H, 5, 5)
    assert T.shape == (49, 25)
    Y = (T @ MAGIC5.ravel(order="F")).reshape(7, 7, order="F")
    np.testing.assert_allclose(Y[0], [1.8889, 4.5556, 4.6667, 3.6667, 2.6667, 2.5556, 1.6667], atol=5e-5)
    np.testing.assert_allclose(Y, scipy.signal.convolve2d(MAGIC5, H), atol=1e-12)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 999))
def test_convmtx2_equals_convolve2d(p, q, m, n, seed):
    rng = np.random.default_rng(seed)
    H, X = rng.standard_normal((p, q)), rng.standard_normal((m, n))
    T = convmtx2(H, m, n)
    Y = (T @ X.ravel(order="F")).reshape(p + m - 1, q + n - 1, order="F")
    np.testing.assert_allclose(Y, scipy.signal.convolve2d(X, H), atol=1e-12)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: convolution_matrix([1, 2], 0), ValueError, r"n must be a positive integer"),
    (lambda: convolution_matrix([1, 2], 3, "middle"), ValueError, r"'mode' argument must be one of"),
    (lambda: convolution_matrix([1, 2], 2.5), TypeError, r"n must be a positive integer"),
    (lambda: convolution_matrix([], 3), ValueError, r"a must not be empty"),
    (lambda: convolution_matrix_nd(np.ones((2, 2)), 3), ValueError, r"n must have 2 entries"),
    (lambda: convolution_matrix(np.ones((2, 2)), 3), ValueError, r"only format=.dense."),
    (lambda: convolution_matrix([1, 2], 3, format="coo"), ValueError, r"format must be 'csr' or 'dense'"),
    (lambda: convmtx(np.ones((2, 2)), 3), ValueError, r"h must be a vector"),
    (lambda: convmtx2(np.ones(3), 3, 3), ValueError, r"H must be a 2-D array"),
    (lambda: convmtx2(np.ones((2, 2)), -1, 3), ValueError, r"m must be a positive integer"),
])
def test_signal_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
