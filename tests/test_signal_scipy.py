"""``convolution_matrix(..., format="dense")`` is SciPy's: the cases of SciPy's own
``TestConvolutionMatrix`` and ``test_batch`` (scipy/linalg/tests/test_special_matrices.py),
re-run against our function, plus the dtypes SciPy keeps (compared value for value and
dtype for dtype with ``scipy.linalg.convolution_matrix`` itself)."""

import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose, assert_array_almost_equal

from convmatrix import convolution_matrix


def dense(a, n, mode="full"):
    return convolution_matrix(a, n, mode, format="dense")


def vector(n, cpx):
    """SciPy's test vector: a real or complex ramp of length n."""
    x = np.linspace(-2.5, 2.2, n)
    return x + 1j * np.linspace(-1.5, 3.1, n) if cpx else x


def test_bad_n():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        dense([1, 2, 3], 0)


def test_empty_first_arg():
    with pytest.raises(ValueError, match=r"len\(a\)"):
        dense([], 4)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode.*must be one of"):
        dense((1, 1), 4, mode="invalid argument")


@pytest.mark.parametrize("cpx", [False, True])
@pytest.mark.parametrize("na", [1, 2, 9])
@pytest.mark.parametrize("nv", [1, 2, 9])
@pytest.mark.parametrize("mode", [None, "full", "valid", "same"])
def test_against_numpy_convolve(cpx, na, nv, mode):
    a, v = vector(na, cpx), vector(nv, cpx)
    y1 = np.convolve(v, a) if mode is None else np.convolve(v, a, mode)
    A = dense(a, nv) if mode is None else dense(a, nv, mode)
    assert_array_almost_equal(y1, A @ v)
    sparse = convolution_matrix(a, nv) if mode is None else convolution_matrix(a, nv, mode)
    assert_array_almost_equal(y1, sparse @ v)


def test_batch():
    """SciPy 1.17 reads an N-D ``a`` as a batch of 1-D kernels along the last axis."""
    A = np.random.default_rng(283592436523456).random((2, 3, 10))
    res = dense(A, 5, "same")
    ref = np.asarray([dense(a, 5, "same") for a in A.reshape(-1, 10)]).reshape(A.shape[:-1] + (10, 5))
    assert_allclose(res, ref)
    np.testing.assert_array_equal(res, scipy.linalg.convolution_matrix(A, 5, "same"))


@pytest.mark.parametrize("a", [
    np.array([2**60 + 1, -(2**62) + 3, 7], dtype=np.int64),   # beyond float64's 2**53: exact
    np.array([1.5, -2.25, 3.0], dtype=np.float16),
    np.array([True, False, True]),
    np.array([1, 200, 255], dtype=np.uint8),
    np.array([1 + 2j, 3 - 1j], dtype=np.complex64),
    np.array([0.1, 0.2], dtype=np.float32),
    [1, 2, 3],
    [[1, 2], [3, 4]],
], ids=["int64-big", "float16", "bool", "uint8", "complex64", "float32", "list", "batch-list"])
@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_dtype_and_values_are_scipys(a, n, mode):
    want = scipy.linalg.convolution_matrix(a, n, mode)
    got = dense(a, n, mode)
    assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_sparse_int64_is_exact():
    a = np.array([2**60 + 1, 3], dtype=np.int64)
    A = convolution_matrix(a, 3)
    assert A.dtype == np.int64
    np.testing.assert_array_equal(A.toarray(), scipy.linalg.convolution_matrix(a, 3))
