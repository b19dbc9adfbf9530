"""Transposed convolutions: conv_matrix(..., transposed=True) against torch's conv_transpose."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convmatrix
from strategies import transposed_convs
from oracles import CONV_T_FN, dense_by_probing

TOL = 1e-10


def conv_transpose_dense(weight, input_shape, stride, padding, dilation, groups, output_padding, **_):
    """The matrix by F.conv_transpose{1,2,3}d of every unit vector (one column each)."""
    n = int(np.prod(input_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)
    fn = CONV_T_FN[len(input_shape) - 1]
    out = fn(eye, torch.from_numpy(weight), stride=stride, padding=padding, output_padding=output_padding,
             groups=groups, dilation=dilation)
    return out.reshape(n, -1).numpy().T


@given(transposed_convs(), st.integers(0, 2**32 - 1))
def test_transposed_matrix_equals_conv_transpose(layer, seed):
    weight_shape, input_shape, kw = layer
    w = np.random.default_rng(seed).standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    expected = conv_transpose_dense(w, input_shape, **kw)
    assert M.shape == expected.shape
    assert M.has_canonical_format
    np.testing.assert_allclose(M.toarray(), expected, rtol=0, atol=TOL)


@given(transposed_convs(max_nd=2), st.integers(0, 2**32 - 1))
def test_transposed_matrix_equals_module(layer, seed):
    # The module (ConvTranspose2d) is a second oracle, reached through its own argument handling.
    weight_shape, input_shape, kw = layer
    w = np.random.default_rng(seed).standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    np.testing.assert_allclose(M.toarray(), dense_by_probing(w, input_shape, **kw), rtol=0, atol=TOL)


@given(transposed_convs(), st.integers(0, 2**32 - 1))
def test_transposed_is_adjoint_of_forward(layer, seed):
    # conv_transpose is the adjoint of the forward conv with the same weight, whose input is the
    # transposed layer's output. Where output_padding >= stride that forward conv has extra output
    # positions at the end of an axis (read from the padded tail): the transposed input omits them.
    weight_shape, input_shape, kw = layer
    w = np.random.default_rng(seed).standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    out_shape = (weight_shape[1] * kw["groups"],) + tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + o + 1
        for n, s, p, d, k, o in zip(input_shape[1:], kw["stride"], kw["padding"], kw["dilation"],
                                    weight_shape[2:], kw["output_padding"])
    )
    fwd = dict(stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"], groups=kw["groups"])
    F = convmatrix.conv_matrix(w, out_shape, **fwd).toarray()
    F = F.reshape(convmatrix.ConvGeometry.from_args(w.shape, out_shape, **fwd).output_shape + (-1,))
    F = F[tuple(slice(0, n) for n in input_shape)].reshape(-1, F.shape[-1])
    assert F.shape == M.shape[::-1]
    np.testing.assert_allclose(M.toarray(), F.T, rtol=0, atol=TOL)


def test_output_padding_below_dilation_only():
    # torch's rule: output_padding smaller than EITHER stride or dilation (stride 1, dilation 2, op 1).
    w = np.arange(1.0, 7.0).reshape(1, 2, 3)
    kw = dict(stride=1, padding=0, dilation=2, groups=1, output_padding=1)
    M = convmatrix.conv_matrix(w, (1, 4), transposed=True, **kw)
    assert M.shape == (2 * 9, 4)
    np.testing.assert_allclose(M.toarray(), conv_transpose_dense(w, (1, 4), **kw), rtol=0, atol=TOL)


def test_transposed_float32_and_complex():
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=1, groups=1, output_padding=(1, 0))
    expected = conv_transpose_dense(w, (2, 3, 4), **kw)
    M32 = convmatrix.conv_matrix(w.astype(np.float32), (2, 3, 4), transposed=True, **kw)
    assert M32.dtype == np.float32
    np.testing.assert_allclose(M32.toarray(), expected, rtol=1e-6, atol=1e-6)
    Mc = convmatrix.conv_matrix(w + 2j * w, (2, 3, 4), transposed=True, **kw)
    np.testing.assert_allclose(Mc.toarray(), (1 + 2j) * expected, rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # Beside tests/test_errors.py's cases ('same', reflect, output_padding 1 at stride 1):
        (dict(padding="valid"), "not supported for transposed"),
        (dict(padding=1, padding_mode="circular"), "only padding_mode='zeros'"),
        (dict(padding=1, padding_mode="replicate"), "only padding_mode='zeros'"),
        (dict(stride=2, dilation=2, output_padding=2), "output_padding must be smaller than either"),
    ],
)
def test_transposed_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        convmatrix.conv_matrix(np.ones((1, 1, 3, 3)), (1, 4, 4), transposed=True, **kwargs)


def test_torch_agrees_on_bad_output_padding():
    # The rule above is torch's own: the same arguments fail in torch too.
    with pytest.raises(RuntimeError):
        CONV_T_FN[1](torch.ones(1, 1, 4), torch.ones(1, 1, 3), stride=2, dilation=1, output_padding=2)
