"""Identities every conv matrix obeys, over hypothesis geometries, with no torch at all.

The oracle here is ``tests/reference.py``, a NumPy convolution written from PyTorch's definitions
(and itself checked against torch below, when torch is installed); the other tests are identities
between matrices the library builds in different ways: a delta kernel selects, a separable
kernel gives a Kronecker product, dilation is zero insertion, the transposed layer's matrix is
the forward matrix transposed, and the matrix-free operator passes the dot test.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reference
from strategies import MODES, forward_convs, transposed_convs

import convmatrix


def _weight(seed: int, shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _no_transposed(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k != "transposed"}


@given(forward_convs(), st.integers(0, 2**16))
def test_forward_matrix_equals_numpy_reference(case, seed):
    weight_shape, input_shape, kwargs = case
    w, x = _weight(seed, weight_shape), _weight(seed + 1, input_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kwargs)
    np.testing.assert_allclose(M @ x.ravel(), reference.conv(w, x, **kwargs).ravel(), rtol=1e-10, atol=1e-10)


@given(transposed_convs(), st.integers(0, 2**16))
def test_transposed_matrix_equals_numpy_reference(case, seed):
    weight_shape, input_shape, kwargs = case
    w, x = _weight(seed, weight_shape), _weight(seed + 1, input_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kwargs)
    expected = reference.conv_transpose(w, x, **_no_transposed(kwargs))
    np.testing.assert_allclose(M @ x.ravel(), expected.ravel(), rtol=1e-10, atol=1e-10)


@given(forward_convs(max_nd=2), st.data())
def test_delta_kernel_gives_a_selection_matrix(case, data):
    (_, cin_g, *kernel), input_shape, kwargs = case
    kwargs = {**kwargs, "groups": 1}
    tap = tuple(data.draw(st.integers(0, k - 1)) for k in kernel)
    w = np.zeros((1, input_shape[0], *kernel))
    channel = data.draw(st.integers(0, input_shape[0] - 1))
    w[(0, channel, *tap)] = 1.0
    M = convmatrix.conv_matrix(w, input_shape, **kwargs)
    M.eliminate_zeros()
    # A selection: every entry is 1 and every row reads at most one input neuron (exactly one
    # unless zero padding leaves it outside the input)...
    assert np.all(M.data == 1.0)
    rows = np.diff(M.indptr)
    assert rows.max(initial=0) <= 1
    if kwargs["padding_mode"] != "zeros":
        assert np.all(rows == 1)
    # ... of the input channel the delta sits in.
    x = _weight(1, input_shape)
    np.testing.assert_array_equal(M @ x.ravel(), reference.conv(w, x, **kwargs).ravel())


@settings(max_examples=40)
@given(st.tuples(st.integers(1, 4), st.integers(1, 4)), st.tuples(st.integers(1, 7), st.integers(1, 7)),
       st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(st.integers(1, 2), st.integers(1, 2)),
       st.tuples(st.integers(0, 2), st.integers(0, 2)), st.sampled_from(MODES), st.integers(0, 2**16))
def test_separable_kernel_gives_a_kronecker_product(kernel, size, stride, dilation, pad, mode, seed):
    for n, k, d, p in zip(size, kernel, dilation, pad):
        assume(n + 2 * p >= d * (k - 1) + 1)
        assume(mode != "reflect" or p < n)
        assume(mode != "circular" or p <= n)
    u, v = _weight(seed, kernel[0]), _weight(seed + 1, kernel[1])
    M = convmatrix.conv_matrix(np.outer(u, v)[None, None], (1, *size), stride=stride, dilation=dilation,
                               padding=pad, padding_mode=mode)
    Mu, Mv = (convmatrix.conv_matrix(w[None, None], (1, n), stride=s, dilation=d, padding=p, padding_mode=mode)
              for w, n, s, d, p in zip((u, v), size, stride, dilation, pad))
    np.testing.assert_allclose(M.toarray(), sp.kron(Mu, Mv).toarray(), rtol=1e-12, atol=1e-12)


def _zero_inserted(w: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    kernel = w.shape[2:]
    out = np.zeros((*w.shape[:2], *(d * (k - 1) + 1 for k, d in zip(kernel, dilation))), dtype=w.dtype)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dilation))] = w
    return out


@given(forward_convs(max_nd=3), st.integers(0, 2**16))
def test_dilated_kernel_equals_the_zero_inserted_kernel(case, seed):
    weight_shape, input_shape, kwargs = case
    nd = len(weight_shape) - 2
    dilation = kwargs["dilation"]
    w = _weight(seed, weight_shape)
    dense_kwargs = {**kwargs, "dilation": 1}
    a = convmatrix.conv_matrix(w, input_shape, **kwargs).toarray()
    b = convmatrix.conv_matrix(_zero_inserted(w, dilation), input_shape, **dense_kwargs).toarray()
    assert nd == len(dilation)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@given(transposed_convs(), st.integers(0, 2**16))
def test_transposed_matrix_is_the_forward_matrix_transposed(case, seed):
    weight_shape, input_shape, kwargs = case
    stride, op = kwargs["stride"], kwargs["output_padding"]
    assume(all(o < s for o, s in zip(op, stride)))  # else the forward map has more outputs than the input
    w = _weight(seed, weight_shape)
    T = convmatrix.conv_matrix(w, input_shape, **kwargs)
    out_shape = reference.conv_transpose(w, np.zeros(input_shape), **_no_transposed(kwargs)).shape
    forward = {k: v for k, v in _no_transposed(kwargs).items() if k != "output_padding"}
    F = convmatrix.conv_matrix(w, out_shape, **forward)
    assert F.shape == T.shape[::-1]
    assert (abs(F.T - T) > 1e-12).nnz == 0


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@given(case=st.one_of(forward_convs(), transposed_convs()), seed=st.integers(0, 2**16))
@settings(max_examples=30)
def test_operator_passes_the_dot_test(dtype, case, seed):
    weight_shape, input_shape, kwargs = case
    rng = np.random.default_rng(seed)

    def draw(shape):
        z = rng.standard_normal(shape)
        return z + 1j * rng.standard_normal(shape) if dtype is np.complex128 else z

    w = draw(weight_shape)
    A = convmatrix.operator(w, input_shape, **kwargs)
    x, y = draw(A.shape[1]), draw(A.shape[0])
    lhs, rhs = np.vdot(y, A @ x), np.vdot(A.H @ y, x)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@given(forward_convs(max_nd=2), st.integers(0, 2**16))
@settings(max_examples=30)
def test_numpy_reference_equals_torch(case, seed):
    """The reference is itself an independent re-derivation: it must agree with torch."""
    torch_oracle = pytest.importorskip("oracles")
    weight_shape, input_shape, kwargs = case
    w, x = _weight(seed, weight_shape), _weight(seed + 1, input_shape)
    np.testing.assert_allclose(reference.conv(w, x, **kwargs), torch_oracle.torch_conv(w, x, **kwargs),
                               rtol=1e-10, atol=1e-10)
