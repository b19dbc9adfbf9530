"""The fast build paths of pattern.fill (run blocks, folded template, threads, row
ranges) against torch's own convolution (tests/oracles.py), float64."""

import numpy as np
import pytest
import scipy.sparse as sp

from convmatrix import conv_matrix
from convmatrix.core.matrix import build_csr, conv_geometry
from convmatrix.core.pattern import tap_pattern

from oracles import dense_by_probing, torch_module

GEOMETRIES = [
    # (weight shape, input shape, conv kwargs)
    ((3, 2, 3, 3), (2, 7, 6), dict(padding=1)),
    ((4, 1, 5, 5), (1, 9, 9), dict(padding=4)),  # single channel, "full" padding
    ((4, 2, 3, 2), (4, 8, 9), dict(stride=(2, 1), dilation=(1, 2), padding=(2, 1), groups=2)),
    ((6, 1, 3, 3), (6, 7, 7), dict(padding=1, groups=6)),  # depthwise
    ((4, 3, 4, 4), (4, 5, 6), dict(stride=2, padding=1, transposed=True)),
    ((2, 3, 3, 2), (2, 4, 5), dict(stride=(3, 2), dilation=(2, 1), padding=(1, 0), output_padding=(1, 1),
                                   transposed=True)),
    ((2, 2, 3, 3, 3), (2, 5, 4, 6), dict(padding=1, stride=(1, 2, 1))),
    ((3, 2, 4), (2, 11), dict(padding=2, dilation=2)),
    ((3, 2, 3, 3), (2, 6, 5), dict(padding=2, padding_mode="reflect")),  # folded taps: template path
    ((3, 2, 3, 3), (2, 6, 5), dict(padding=0, padding_mode="circular")),  # no padding: run path
]


def _ids(case):
    return f"{case[0]}-{case[1]}-{sorted(case[2].items())}"


@pytest.mark.parametrize("case", GEOMETRIES, ids=[_ids(c) for c in GEOMETRIES])
def test_rows_and_threads_match_torch(case, rng):
    ws, input_shape, kw = case
    w = rng.standard_normal(ws)
    expected = dense_by_probing(w, input_shape, **kw)
    geom = conv_geometry(ws, input_shape, **kw)
    rows = geom.matrix_shape[0]
    assert tap_pattern(geom).nnz == np.count_nonzero(expected)
    cuts = sorted({0, rows, *rng.integers(0, rows + 1, 5).tolist()})
    for workers in (1, 3):
        whole = build_csr(w, geom, workers=workers)
        assert whole.has_canonical_format
        np.testing.assert_allclose(whole.toarray(), expected, rtol=0, atol=1e-12)
        parts = [build_csr(w, geom, a, b, workers=workers) for a, b in zip(cuts, cuts[1:])]
        stacked = sp.vstack(parts, format="csr")
        np.testing.assert_array_equal(stacked.indptr, whole.indptr)
        np.testing.assert_array_equal(stacked.indices, whole.indices)
        np.testing.assert_array_equal(stacked.data, whole.data)


@pytest.mark.parametrize("case", GEOMETRIES[:5], ids=[_ids(c) for c in GEOMETRIES[:5]])
def test_torch_format_values_and_gradient(case, rng):
    torch = pytest.importorskip("torch")
    ws, input_shape, kw = case
    w = torch.tensor(rng.standard_normal(ws), requires_grad=True)
    M = conv_matrix(w, input_shape, format="torch", **kw)
    expected = dense_by_probing(w.detach().numpy(), input_shape, **kw)
    np.testing.assert_allclose(M.detach().to_dense().numpy(), expected, rtol=0, atol=1e-12)
    # Every stored value is one weight entry, so the gradient of their sum counts each
    # entry's uses: what torch gives for the sum of the layer's output on an input of ones.
    M.values().sum().backward()
    m = torch_module(w.detach().numpy(), **kw)
    m(torch.ones((1, *input_shape), dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), m.weight.grad.numpy(), rtol=0, atol=1e-12)
