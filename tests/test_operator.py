"""The matrix-free operator against the explicit matrix, torch, and its own adjoint (dot test)."""

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator

import convmatrix
from strategies import forward_convs, transposed_convs
from oracles import torch_module

TOL = 1e-10
ANY_LAYER = st.one_of(forward_convs(), transposed_convs())
# torch's own note when its oracle module pads 'same' around an even kernel: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def complex_normal(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@given(ANY_LAYER, st.integers(0, 2**32 - 1))
def test_operator_equals_matrix_complex(layer, seed):
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = complex_normal(rng, weight_shape)
    A = convmatrix.operator(w, input_shape, **kw)
    M = convmatrix.conv_matrix(w, input_shape, **kw).toarray()
    assert isinstance(A, LinearOperator) and A.shape == M.shape and A.dtype == w.dtype
    X, Y = complex_normal(rng, (M.shape[1], 3)), complex_normal(rng, (M.shape[0], 3))
    np.testing.assert_allclose(A @ X, M @ X, rtol=0, atol=TOL)  # matmat
    np.testing.assert_allclose(A @ X[:, 0], M @ X[:, 0], rtol=0, atol=TOL)  # matvec
    np.testing.assert_allclose(A.H @ Y, M.conj().T @ Y, rtol=0, atol=TOL)  # adjoint
    np.testing.assert_allclose(A.rmatvec(Y[:, 0]), M.conj().T @ Y[:, 0], rtol=0, atol=TOL)
    np.testing.assert_allclose(A.T @ Y, M.T @ Y, rtol=0, atol=TOL)  # transpose


@given(ANY_LAYER, st.integers(0, 2**32 - 1))
def test_dot_test(layer, seed):
    # (A u)^H v == u^H (A^H v) for random complex u, v: the adjoint is the adjoint of the forward map.
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    A = convmatrix.operator(complex_normal(rng, weight_shape), input_shape, **kw)
    u, v = complex_normal(rng, A.shape[1]), complex_normal(rng, A.shape[0])
    lhs, rhs = np.vdot(A @ u, v), np.vdot(u, A.H @ v)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@given(ANY_LAYER, st.integers(0, 2**32 - 1))
def test_operator_equals_torch(layer, seed):
    # Independent of the matrix: the operator's product is torch's convolution of the input.
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(weight_shape)
    x = rng.standard_normal((2, *input_shape))
    with torch.no_grad():
        expected = torch_module(w, **kw)(torch.from_numpy(x)).reshape(2, -1).numpy()
    A = convmatrix.operator(w, input_shape, **kw)
    np.testing.assert_allclose((A @ x.reshape(2, -1).T).T, expected, rtol=0, atol=TOL)


def test_operator_float32_weight():
    w = np.random.default_rng(0).standard_normal((2, 1, 3)).astype(np.float32)
    A = convmatrix.operator(w, (1, 6), padding=1, padding_mode="reflect")
    assert A.dtype == np.float32
    x = np.arange(6.0, dtype=np.float32)
    expected = convmatrix.conv_matrix(w, (1, 6), padding=1, padding_mode="reflect") @ x
    # float32 rounding, relative to the largest entry (entries that cancel to ~0 differ in the last bits).
    np.testing.assert_allclose(A @ x, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_operator_serves_a_layer_too_large_to_build():
    # 8 -> 8 channels, 3x3, on 8x512x512: the CSR matrix needs 1.82 GB (150.6M entries); the operator only the
    # input and output (2 MB floats each) and a few temporaries of their size.
    w = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
    shape = (8, 512, 512)
    with pytest.raises(ValueError, match="would need 1.82 GB"):
        convmatrix.conv_matrix(w, shape, padding=1, max_bytes=10**8)
    x = np.random.default_rng(2).standard_normal(int(np.prod(shape)))
    tracemalloc.start()
    A = convmatrix.operator(w, shape, padding=1)
    y = A @ x
    x_back = A.H @ y
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * x.nbytes  # input and output are x.nbytes each
    with torch.no_grad():
        t = torch.from_numpy(x.reshape(1, *shape))
        expected = torch.nn.functional.conv2d(t, torch.from_numpy(w), padding=1)
        # conv2d's input gradient (conv_transpose2d) is the adjoint of the layer.
        expected_back = torch.nn.functional.conv_transpose2d(expected, torch.from_numpy(w), padding=1)
    np.testing.assert_allclose(y, expected.numpy().ravel(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(x_back, expected_back.numpy().ravel(), rtol=1e-12, atol=1e-8)


def test_operator_bad_argument():
    with pytest.raises(TypeError, match="unknown convolution argument"):
        convmatrix.operator(np.ones((1, 1, 3)), (1, 5), strides=2)


def test_operator_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape has 2 channel"):
        convmatrix.operator(np.ones((1, 1, 3)), (2, 5))


def test_operator_is_the_function_after_submodule_import():
    import convmatrix.core.operator  # noqa: F401  (a submodule of the same name must not shadow it)
    from convmatrix.core.operator import ConvOperator

    assert isinstance(convmatrix.operator(np.ones((1, 1, 3)), (1, 5)), ConvOperator)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_operator_pieces_on_threads_equal_the_matrix(threads, monkeypatch):
    # Every application split into pieces on threads (work threshold 0): same numbers as the matrix.
    from convmatrix.core import operator as op_module

    monkeypatch.setattr(op_module, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(op_module, "_CHUNK_BYTES", 256)  # many row ranges
    monkeypatch.setenv("CONVMATRIX_THREADS", threads)
    rng = np.random.default_rng(5)
    for ws, ins, kw in [((6, 4, 3, 2), (4, 7, 6), dict(padding=1, stride=(2, 1))),
                        ((6, 2, 3, 3), (6, 5, 5), dict(transposed=True, groups=3, stride=2, padding=1)),
                        ((4, 2, 3), (4, 9), dict(groups=2, padding=2, dilation=2, padding_mode="reflect"))]:
        w = complex_normal(rng, ws)
        A = convmatrix.operator(w, ins, **kw)
        M = convmatrix.conv_matrix(w, ins, **kw).toarray()
        X, Y = complex_normal(rng, (M.shape[1], 2)), complex_normal(rng, (M.shape[0], 2))
        np.testing.assert_allclose(A @ X, M @ X, rtol=0, atol=TOL)
        np.testing.assert_allclose(A.H @ Y, M.conj().T @ Y, rtol=0, atol=TOL)
