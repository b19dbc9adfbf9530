"""Neuron queries against rows and columns of M and against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convmatrix
from convmatrix.explain.neurons import feeds, neuron, parse_index
from strategies import forward_convs, transposed_convs
from oracles import torch_module


def layers():
    """Forward and transposed 1-D and 2-D layers torch accepts, with their geometry."""
    def with_geometry(layer):
        shape, input_shape, kw = layer
        return shape, input_shape, kw, convmatrix.ConvGeometry.from_args(shape, input_shape, **kw)

    return st.one_of(forward_convs(max_nd=2), transposed_convs(max_nd=2)).map(with_geometry)


def grad_support(weight, input_shape, out_index, **kw):
    """Where d y[out_index] / d x is non-zero: torch autograd through the torch module."""
    x = torch.zeros((1, *input_shape), dtype=torch.float64, requires_grad=True)
    y = torch_module(weight, **kw)(x)
    (g,) = torch.autograd.grad(y.reshape(-1)[out_index], x)
    return np.flatnonzero(g.numpy().ravel()), g.numpy().ravel()


@settings(max_examples=30)
@given(layers(), st.data())
def test_neuron_is_row_of_M_and_gradient(layer, data):
    shape, input_shape, kw, geom = layer
    w = np.random.default_rng(data.draw(st.integers(0, 2**31))).uniform(0.5, 1.5, size=shape)
    index = data.draw(st.integers(0, geom.matrix_shape[0] - 1))
    n = neuron(w, input_shape, index, **kw)
    row = convmatrix.conv_matrix(w, input_shape, **kw)[[index]].toarray()[0]
    # Values to rounding: folded taps may be summed in another order.
    np.testing.assert_allclose(n.row, row, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(n.inputs, np.flatnonzero(row))
    np.testing.assert_allclose(n.weights, row[n.inputs], rtol=1e-13, atol=0)
    support, grad = grad_support(w, input_shape, index, **kw)
    np.testing.assert_array_equal(n.inputs, support)  # positive weights: no cancellation
    np.testing.assert_allclose(n.weights, grad[support], rtol=1e-12)
    assert n.coords == tuple(np.unravel_index(index, geom.output_shape))
    assert n.input_coords == [tuple(np.unravel_index(i, input_shape)) for i in n.inputs]
    assert n == n and neuron(w, input_shape, n.coords, **kw).index == index
    if not geom.transposed:  # every input read lies in the box, wrapped back in for non-zero modes
        for c in n.input_coords:
            for ax, (lo, hi) in enumerate(n.box):
                assert lo <= c[ax + 1] < hi or kw["padding_mode"] != "zeros"


@settings(max_examples=25)
@given(layers(), st.data())
def test_feeds_is_column_of_M_and_jvp(layer, data):
    shape, input_shape, kw, geom = layer
    w = np.random.default_rng(data.draw(st.integers(0, 2**31))).uniform(0.5, 1.5, size=shape)
    j = data.draw(st.integers(0, geom.matrix_shape[1] - 1))
    f = feeds(w, input_shape, j, **kw)
    col = convmatrix.conv_matrix(w, input_shape, **kw)[:, [j]].toarray()[:, 0]
    np.testing.assert_array_equal(f.outputs, np.flatnonzero(col))
    np.testing.assert_allclose(f.weights, col[f.outputs], rtol=1e-13, atol=0)  # folded sums: to rounding
    e = torch.zeros((1, *input_shape), dtype=torch.float64)
    e.reshape(-1)[j] = 1.0
    with torch.no_grad():
        y = torch_module(w, **kw)(e).numpy().ravel()
    np.testing.assert_array_equal(f.outputs, np.flatnonzero(y))
    np.testing.assert_allclose(f.weights, y[f.outputs], rtol=1e-12)


def test_seed_neuron_and_symbols():
    n = convmatrix.neuron((2, 1, 2, 2), (1, 3, 3), (1, 1, 1))
    assert n.index == 7 and n.inputs.tolist() == [4, 5, 7, 8]
    assert n.formula == "y[1,1,1] = e*x[0,1,1] + f*x[0,1,2] + g*x[0,2,1] + h*x[0,2,2]"
    assert n.weights is None and n.row is None and n.box == ((1, 3), (1, 3))
    assert "Output neuron 7" in n.words and "4 of the 9 input neurons" in str(n)
    n = neuron((1, 1, 3), (1, 5), 0, padding=1, padding_mode="reflect")
    assert n.taps == [("b",), ("a", "c")] and n.formula == "y[0,0] = b*x[0,0] + (a+c)*x[0,1]"
    assert n.box == ((-1, 2),)
    f = convmatrix.feeds((2, 1, 2, 2), (1, 3, 3), 0)
    assert f.outputs.tolist() == [0, 4] and f.taps == [("a",), ("e",)]


def test_sharpen_rows_0_1_9():
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
    w = np.tile(k, (3, 1, 1, 1))
    M = torch.autograd.functional.jacobian(
        lambda x: torch_module(w)(x.reshape(1, 1, 5, 5)).reshape(-1), torch.zeros(25, dtype=torch.float64))
    for r in (0, 1, 9):
        n = neuron(w, (1, 5, 5), r, bias=np.array([1.0, 2.0, 3.0]))
        np.testing.assert_array_equal(n.row, M[r].numpy())
        assert n.bias == [1.0, 2.0, 3.0][r // 9]
    assert neuron(w, (1, 5, 5), 9, bias=np.array([1.0, 2.0, 3.0])).values.endswith(
        "- 1*x[0,1,2] + 0*x[0,2,0] - 1*x[0,2,1] + 0*x[0,2,2] + 2")
    assert neuron(w, (1, 5, 5), 9).coords == (1, 0, 0)
    assert neuron(w, (1, 5, 5), 1).inputs.tolist() == [1, 2, 3, 6, 7, 8, 11, 12, 13]


def test_parse_index_convention():
    assert parse_index("i", (0, 1, 2), (1, 3, 3)) == (5, (0, 1, 2))  # (channel, row, column)
    assert parse_index("i", 23, (2, 3, 4)) == (23, (1, 2, 3))


def test_errors():
    with pytest.raises(ValueError, match=r"index_or_coords must be a flat index in \[0, 8\)"):
        neuron((2, 1, 2, 2), (1, 3, 3), 8)
    with pytest.raises(ValueError, match="index_or_coords must be a flat index or 3 ints"):
        neuron((2, 1, 2, 2), (1, 3, 3), (0, 1))
    with pytest.raises(ValueError, match=r"index_or_coords \(2, 0, 0\) is outside the shape \(2, 2, 2\)"):
        neuron((2, 1, 2, 2), (1, 3, 3), (2, 0, 0))
    with pytest.raises(TypeError, match="index_or_coords must be an int or a tuple"):
        neuron((2, 1, 2, 2), (1, 3, 3), "3")
    with pytest.raises(ValueError, match=r"bias must be a scalar or have shape \(2,\)"):
        neuron(np.ones((2, 1, 2, 2)), (1, 3, 3), 0, bias=[1.0])
    with pytest.raises(ValueError, match=r"index_or_coords must be a flat index in \[0, 9\)"):
        feeds((2, 1, 2, 2), (1, 3, 3), 9)


@pytest.mark.parametrize("wshape, ishape, kw", [
    ((4, 1, 3, 3), (2, 6, 5), dict(stride=2, padding=1, dilation=2, groups=2)),
    ((2, 3, 2, 3), (2, 4, 4), dict(stride=(2, 1), padding=1, transposed=True, groups=1)),
    ((2, 1, 3), (1, 7), dict(padding=2, padding_mode="reflect")),
])
def test_tap_pattern_column_equals_torch(wshape, ishape, kw):
    """One column of M: the outputs a one-hot input changes, by torch's own conv (positive weights)."""
    import torch
    import torch.nn as nn

    from convmatrix.core.geometry import ConvGeometry
    from convmatrix.core.pattern import tap_pattern

    nd = len(ishape) - 1
    transposed = kw.pop("transposed", False)
    conv = (nn.ConvTranspose2d if transposed else [nn.Conv1d, nn.Conv2d][nd - 1])
    cin = wshape[0] if transposed else wshape[1] * kw.get("groups", 1)
    cout = wshape[1] * kw.get("groups", 1) if transposed else wshape[0]
    m = conv(cin, cout, wshape[2:], bias=False, **kw).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.0)
    geom = ConvGeometry.from_args(tuple(m.weight.shape), ishape, transposed=transposed, **kw)
    n = int(np.prod(ishape))
    with torch.no_grad():
        y = m(torch.eye(n, dtype=torch.float64).reshape(n, *ishape)).reshape(n, -1).numpy()
    pattern = tap_pattern(geom)
    for col in range(n):
        np.testing.assert_array_equal(pattern.column(col), np.flatnonzero(y[col]))
    with pytest.raises(ValueError, match=r"col must be an input neuron in \[0, "):
        pattern.column(n)
