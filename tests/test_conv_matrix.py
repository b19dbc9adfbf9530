"""conv_matrix against torch's own convolutions, over the whole parameter space."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convmatrix
from oracles import dense_by_probing, torch_conv
from strategies import forward_convs, transposed_convs


def assert_canonical_csr(M):
    """Sorted column indices within every row, no duplicates: checked from the raw arrays."""
    assert isinstance(M, sp.csr_array)
    d = np.diff(M.indices.astype(np.int64))
    row_of = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    same_row = row_of[1:] == row_of[:-1]
    assert np.all(d[same_row] > 0), "column indices must increase strictly within each row"
    assert M.indptr[0] == 0 and M.indptr[-1] == len(M.indices) == len(M.data)
    assert M.indices.dtype == M.indptr.dtype


@settings(max_examples=150)
@given(forward_convs(), st.integers(0, 2**32 - 1))
def test_forward_matrix_equals_torch(case, seed):
    weight_shape, input_shape, kw = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    assert_canonical_csr(M)
    expected = dense_by_probing(w, input_shape, **kw)
    assert M.shape == expected.shape
    np.testing.assert_allclose(M.toarray(), expected, rtol=0, atol=1e-10)
    # Structural nnz equals the dense support (random weights: no cancellation).
    assert M.nnz == np.count_nonzero(expected)


@settings(max_examples=80)
@given(transposed_convs(), st.integers(0, 2**32 - 1))
def test_transposed_matrix_equals_torch(case, seed):
    weight_shape, input_shape, kw = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    assert_canonical_csr(M)
    x = rng.standard_normal(input_shape)
    y = torch_conv(w, x, **kw)
    assert M.shape == (y.size, x.size)
    np.testing.assert_allclose(M @ x.ravel(), y.ravel(), rtol=0, atol=1e-10)


def test_seed_worked_example_numbers():
    """The seed answer's 8x9 matrix (letters a..h = 1..8) and its outputs for x = 1..9."""
    a, b, c, d, e, f, g, h = range(1, 9)
    expected = np.array([
        [a, b, 0, c, d, 0, 0, 0, 0],
        [0, a, b, 0, c, d, 0, 0, 0],
        [0, 0, 0, a, b, 0, c, d, 0],
        [0, 0, 0, 0, a, b, 0, c, d],
        [e, f, 0, g, h, 0, 0, 0, 0],
        [0, e, f, 0, g, h, 0, 0, 0],
        [0, 0, 0, e, f, 0, g, h, 0],
        [0, 0, 0, 0, e, f, 0, g, h],
    ])
    K = np.arange(1.0, 9.0).reshape(2, 1, 2, 2)
    M = convmatrix.conv_matrix(K, (1, 3, 3))
    np.testing.assert_array_equal(M.toarray(), expected)
    y = M @ np.arange(1.0, 10.0)
    np.testing.assert_array_equal(y, [1*a + 2*b + 4*c + 5*d, 2*a + 3*b + 5*c + 6*d, 4*a + 5*b + 7*c + 8*d,
                                      5*a + 6*b + 8*c + 9*d, 1*e + 2*f + 4*g + 5*h, 2*e + 3*f + 5*g + 6*h,
                                      4*e + 5*f + 7*g + 8*h, 5*e + 6*f + 8*g + 9*h])


def test_seed_outputs_from_the_seed_text(shared_dir, rng):
    """Evaluate the seed's own expressions ('1a+2b+4c+5d', ...) with random letters."""
    import re

    text = open(f"{shared_dir}/seed-question.txt").read()
    line = next(ln for ln in text.splitlines() if ln.startswith("[1a+2b"))
    terms = line.strip("[]").split(", ")
    letters = dict(zip("abcdefgh", rng.standard_normal(8)))
    expected = [sum(int(m[0]) * letters[m[1]] for m in re.findall(r"(\d)([a-h])", t)) for t in terms]
    K = np.array([letters[ch] for ch in "abcdefgh"]).reshape(2, 1, 2, 2)
    np.testing.assert_allclose(convmatrix.conv_matrix(K, (1, 3, 3)) @ np.arange(1.0, 10.0), expected, rtol=1e-12)


def test_sharpen_rows_follow_up():
    """The follow-up: 3x1x3x3, every filter the sharpen kernel, on 1x5x5: rows 0, 1 and 9."""
    sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float)
    K = np.broadcast_to(sharpen, (3, 1, 3, 3)).copy()
    M = convmatrix.conv_matrix(K, (1, 5, 5)).toarray()
    ref = dense_by_probing(K, (1, 5, 5))
    assert M.shape == (27, 25)
    for row in (0, 1, 9):
        np.testing.assert_array_equal(M[row], ref[row])
    # Row 0 reads the 3x3 window at the top-left: x[0,1], x[1,0..2], x[2,1].
    assert M[0, [1, 5, 6, 7, 11]].tolist() == [-1, -1, 5, -1, -1]
    # Row 9 is output channel 1's first neuron: the same weights (all filters are equal).
    np.testing.assert_array_equal(M[9], M[0])


@pytest.mark.parametrize("mode, row0", [("reflect", ["b", "a+c"]), ("replicate", ["a+b", "c"])])
def test_border_taps_sum(mode, row0):
    """ISSUE-NOTES: Conv1d k=3, padding 1, n=10: reflect row 0 = [b, a+c, 0...], replicate [a+b, c, 0...]."""
    a, b, c = 1.0, 10.0, 100.0
    M = convmatrix.conv_matrix(np.array([[[a, b, c]]]), (1, 10), padding=1, padding_mode=mode).toarray()
    values = {"a": a, "b": b, "c": c}
    expected = [sum(values[t] for t in entry.split("+")) for entry in row0]
    np.testing.assert_array_equal(M[0, :2], expected)
    assert not M[0, 2:].any()
    # The last row mirrors the first.
    np.testing.assert_array_equal(M[-1, -2:], expected[::-1] if mode == "reflect" else [a, b + c])


def test_circular_on_input_shorter_than_kernel():
    w = np.arange(1.0, 6.0).reshape(1, 1, 5)
    M = convmatrix.conv_matrix(w, (1, 2), padding=2, padding_mode="circular")
    np.testing.assert_allclose(M.toarray(), dense_by_probing(w, (1, 2), padding=2, padding_mode="circular"))
    assert M.nnz == 4  # every entry folds two or three taps


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.complex64, np.complex64),
    (np.complex128, np.complex128), (np.float16, np.float32), (np.int64, np.float64),
])
def test_dtypes(dtype, expected, rng):
    w = (rng.standard_normal((2, 3, 3, 3)) * 4).astype(dtype)
    M = convmatrix.conv_matrix(w, (3, 5, 5), padding=1)
    assert M.dtype == expected
    ref = dense_by_probing(w.astype(np.complex128 if np.iscomplexobj(w) else np.float64), (3, 5, 5), padding=1)
    np.testing.assert_allclose(M.toarray(), ref, rtol=1e-6 if expected in (np.float32, np.complex64) else 1e-12)


@pytest.mark.parametrize("tdtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_weights(tdtype, rng):
    w = torch.as_tensor(rng.standard_normal((4, 2, 3)), dtype=tdtype).requires_grad_(True)
    M = convmatrix.conv_matrix(w, (2, 7), stride=2)
    assert M.dtype == (np.float64 if tdtype == torch.float64 else np.float32)
    ref = dense_by_probing(w.detach().double().numpy(), (2, 7), stride=2)
    np.testing.assert_allclose(M.toarray(), ref, rtol=1e-6)


def test_formats(rng):
    w = rng.standard_normal((3, 2, 2, 3))
    kw = dict(padding=(1, 0), padding_mode="reflect", stride=(1, 2))
    ref = dense_by_probing(w, (2, 4, 5), **kw)
    for fmt, cls in [("csr", sp.csr_array), ("csc", sp.csc_array), ("coo", sp.coo_array)]:
        M = convmatrix.conv_matrix(w, (2, 4, 5), format=fmt, **kw)
        assert isinstance(M, cls)
        np.testing.assert_allclose(M.toarray(), ref, atol=1e-12)
    D = convmatrix.conv_matrix(w, (2, 4, 5), format="dense", **kw)
    assert isinstance(D, np.ndarray)
    np.testing.assert_allclose(D, ref, atol=1e-12)
    T = convmatrix.conv_matrix(torch.from_numpy(w), (2, 4, 5), format="torch", **kw)
    assert T.layout == torch.sparse_csr
    np.testing.assert_allclose(T.to_dense().numpy(), ref, atol=1e-12)


def test_torch_format_is_differentiable(rng):
    """Gradients of a loss through the torch sparse matrix equal torch's conv gradients."""
    w0 = rng.standard_normal((3, 2, 3, 3))
    x = torch.as_tensor(rng.standard_normal((2, 5, 6)))
    kw = dict(padding=1, padding_mode="replicate", stride=(2, 1))
    w1 = torch.tensor(w0, requires_grad=True)
    M = convmatrix.conv_matrix(w1, (2, 5, 6), format="torch", **kw)
    (M @ x.reshape(-1, 1)).square().sum().backward()
    w2 = torch.tensor(w0, requires_grad=True)
    conv = torch.nn.functional.conv2d(torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate"), w2, stride=(2, 1))
    conv.square().sum().backward()
    np.testing.assert_allclose(w1.grad.numpy(), w2.grad.numpy(), rtol=1e-10)


def test_index_dtype_is_int32_when_it_fits(rng):
    M = convmatrix.conv_matrix(rng.standard_normal((2, 2, 3, 3)), (2, 8, 8))
    assert M.indices.dtype == np.int32 and M.indptr.dtype == np.int32


def test_large_layer_rows_spot_check(rng):
    """A real-size layer (64->64 3x3 on 56x56): a few random rows against torch's gradient-free probe."""
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    M = convmatrix.conv_matrix(w, (16, 56, 56), padding=1, stride=2)
    x = rng.standard_normal((16, 56, 56)).astype(np.float32)
    np.testing.assert_allclose(M @ x.ravel(), torch_conv(w, x, padding=1, stride=2).ravel(), rtol=1e-4, atol=1e-4)
    # Along each axis 28 outputs read 3 taps, except the first, whose first tap is padding.
    assert M.nnz == 16 * 16 * (28 * 3 - 1) ** 2


def test_threaded_build_equals_serial(rng):
    from convmatrix.core.geometry import ConvGeometry
    from convmatrix.core.matrix import build_csr

    w = rng.standard_normal((8, 4, 3, 3))
    for mode in ("zeros", "reflect"):
        g = ConvGeometry.from_args(w.shape, (4, 9, 7), padding=1, padding_mode=mode)
        A, B = build_csr(w, g, workers=1), build_csr(w, g, workers=3)
        assert (A != B).nnz == 0
        # Row ranges cut through output channels.
        C = build_csr(w, g, 17, 300, workers=2)
        assert (C != A[17:300]).nnz == 0
