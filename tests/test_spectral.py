"""Singular values, spectral norms and brackets against independent oracles.

Oracles: numpy.linalg.svd of the dense matrix probed column by column through
torch's own conv modules (tests/oracles.py), and a power iteration written here
with torch's convolution as the operator and its autograd adjoint.
"""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from oracles import dense_by_probing, torch_module
from threadpoolctl import threadpool_info, threadpool_limits

import convmatrix
from convmatrix.analysis import spectral
from convmatrix.analysis.spectral import (is_block_circulant, kernel_norm_vs_layer_norm, singular_values,
                                 spectral_norm, spectral_norm_bounds)


def exact_svd(W, input_shape, **kw):
    with threadpool_limits(1):  # LAPACK's threads only slow these small SVDs down on a busy machine
        return np.linalg.svd(dense_by_probing(W, input_shape, **kw), compute_uv=False)


# One case per layer kind: (weight shape, input shape, conv options); comment says why.
CASES = [
    ((3, 2, 4), (2, 9), dict(padding=2)),  # 1-D, zero padding, even kernel
    ((3, 2, 3), (2, 8), dict(padding=1, padding_mode="reflect", stride=2)),  # 1-D reflect, stride
    ((4, 3, 3, 2), (3, 6, 5), dict(padding=1, stride=(2, 1))),  # 2-D non-square, per-axis stride
    ((4, 2, 3, 3), (4, 7, 6), dict(padding=2, dilation=2, groups=2)),  # dilation + groups
    ((2, 2, 3, 3), (2, 5, 6), dict(padding=1, padding_mode="replicate")),  # folded taps
    ((2, 2, 3, 3), (2, 5, 6), dict(padding="same", padding_mode="reflect")),  # reflect folds
    ((3, 2, 3, 3), (2, 2, 5), dict(padding=2, padding_mode="circular")),  # circular on a short input
    ((3, 2, 3, 3), (2, 6, 5), dict(padding=1, padding_mode="circular")),  # block-circulant
    ((3, 2, 3, 3), (2, 6, 8), dict(padding=1, padding_mode="circular", stride=2)),  # strided circulant
    ((4, 2, 3, 2), (2, 9, 4), dict(padding=(2, 1), dilation=(2, 1), stride=(3, 2),
                                   padding_mode="circular")),  # strided circulant, per-axis
    ((4, 1, 2, 2), (2, 4, 6), dict(padding=(1, 0), padding_mode="circular", stride=2, groups=2)),
    ((2, 3, 1, 1), (3, 4, 6), dict(stride=2)),  # 1x1 strided: block-circulant without padding
    ((2, 2, 2, 2, 2), (2, 3, 4, 3), dict(padding=1)),  # 3-D
    ((2, 2, 3, 3, 3), (2, 4, 4, 2), dict(padding=1, padding_mode="circular")),  # 3-D circulant
    ((3, 2, 3), (3, 5), dict(transposed=True, stride=2, padding=1, output_padding=1)),  # transposed 1-D
    ((2, 3, 3, 2), (2, 4, 3), dict(transposed=True, stride=(2, 1), dilation=(1, 2), groups=1)),
    ((4, 1, 3, 3), (4, 3, 4), dict(transposed=True, groups=2, padding=1, stride=2)),  # transposed groups
]


@pytest.mark.parametrize("ws, ins, kw", CASES)
def test_singular_values_match_dense_svd(ws, ins, kw, rng):
    W = rng.standard_normal(ws)
    ref = exact_svd(W, ins, **kw)
    s = singular_values(W, ins, **kw)
    np.testing.assert_allclose(s, ref, rtol=1e-10, atol=1e-10 * ref[0])
    assert spectral_norm(W, ins, **kw) == pytest.approx(ref[0], rel=1e-9)
    b = spectral_norm_bounds(W, ins, **kw)
    assert b.lo <= ref[0] <= b.hi
    if "gram" in b.upper_bounds:  # Gram iteration converges on these small blocks
        assert b.upper_bounds["gram"] <= ref[0] * (1 + 1e-6)
    top = singular_values(W, ins, k=2, **kw)
    np.testing.assert_allclose(top, ref[:2], rtol=1e-9)


def test_fourier_route_is_taken_exactly_where_block_circulant():
    assert is_block_circulant((3, 2, 3, 3), (2, 6, 8), padding=1, padding_mode="circular", stride=2)
    assert not is_block_circulant((3, 2, 3, 3), (2, 7, 8), padding=1, padding_mode="circular", stride=2)
    assert not is_block_circulant((3, 2, 3, 3), (2, 6, 8), padding=2, padding_mode="circular")
    assert not is_block_circulant((3, 2, 3, 3), (2, 6, 8), padding=1)
    assert is_block_circulant((3, 2, 1, 1), (2, 6, 8))


def test_transposed_has_the_singular_values_of_the_forward_transpose(rng):
    W = rng.standard_normal((3, 2, 3, 3))
    fwd = dense_by_probing(W, (2, 7, 7), stride=2, padding=1)  # (3*4*4, 2*7*7)
    s = singular_values(W, (3, 4, 4), transposed=True, stride=2, padding=1)
    np.testing.assert_allclose(s, np.linalg.svd(fwd.T, compute_uv=False), rtol=1e-10, atol=1e-12)


def test_complex_and_float32_weights(rng):
    W = rng.standard_normal((2, 2, 3, 3)) + 1j * rng.standard_normal((2, 2, 3, 3))
    M = convmatrix.conv_matrix(W, (2, 4, 6), padding=1, padding_mode="circular").toarray()
    ref = np.linalg.svd(M, compute_uv=False)
    np.testing.assert_allclose(singular_values(W, (2, 4, 6), padding=1, padding_mode="circular"), ref,
                               rtol=1e-10, atol=1e-12)
    # Complex through Lanczos (min side 400 > the small-Gram threshold) and the bracket.
    Wc = rng.standard_normal((4, 4, 3, 3)) + 1j * rng.standard_normal((4, 4, 3, 3))
    Mc = convmatrix.conv_matrix(Wc, (4, 10, 10), padding=1, padding_mode="reflect").toarray()
    top = np.linalg.svd(Mc, compute_uv=False)[0]
    assert spectral_norm(Wc, (4, 10, 10), padding=1, padding_mode="reflect") == pytest.approx(top, rel=1e-9)
    lo, hi = spectral_norm_bounds(Wc, (4, 10, 10), padding=1, padding_mode="reflect")
    assert lo <= top <= hi
    W32 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    ref32 = exact_svd(W32.astype(np.float64), (2, 6), padding=1)
    np.testing.assert_allclose(singular_values(W32, (2, 6), padding=1), ref32, rtol=1e-9)


modes = st.sampled_from(["zeros", "reflect", "replicate", "circular"])


@settings(max_examples=60)
@given(st.data())
def test_random_layers_norm_and_bracket(data):
    nd = data.draw(st.integers(1, 3))
    k = data.draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    n = [data.draw(st.integers(2, 6 if nd < 3 else 3)) for _ in k]
    transposed = data.draw(st.booleans())
    mode = "zeros" if transposed else data.draw(modes)
    kw = dict(padding=data.draw(st.integers(0, 1)), stride=data.draw(st.integers(1, 2)),
              dilation=data.draw(st.integers(1, 2)), groups=data.draw(st.sampled_from([1, 2])),
              padding_mode=mode, transposed=transposed)
    cin = kw["groups"] * data.draw(st.integers(1, 2))
    cout = kw["groups"] * data.draw(st.integers(1, 2))
    ws = (cin, cout // kw["groups"], *k) if transposed else (cout, cin // kw["groups"], *k)
    ins = (cin, *n)
    try:
        convmatrix.ConvGeometry.from_args(ws, ins, **kw)
    except ValueError:
        assume(False)  # e.g. kernel wider than the padded input
    W = np.random.default_rng(data.draw(st.integers(0, 2**16))).standard_normal(ws)
    ref = exact_svd(W, ins, **kw)
    assert spectral_norm(W, ins, **kw) == pytest.approx(ref[0], rel=1e-9)
    b = spectral_norm_bounds(W, ins, **kw)
    assert b.lo <= ref[0] <= b.hi, (b, ref[0], b.upper_bounds)
    assert all(v >= ref[0] for v in b.upper_bounds.values()), b.upper_bounds


@settings(max_examples=40)
@given(st.data())
def test_coarse_symbol_bound_really_bounds(data):
    # The "symbol" bound is for huge layers; force it with a tiny work budget.
    k = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(k, 7))
    stride = data.draw(st.integers(1, 2))
    pad = data.draw(st.integers(0, k - 1))
    mode = data.draw(modes)
    if mode == "reflect":
        pad = min(pad, n - 1)
    W = np.random.default_rng(data.draw(st.integers(0, 999))).standard_normal((2, 2, k, k))
    kw = dict(padding=pad, stride=stride, padding_mode=mode)
    old = spectral._BOUND_BUDGET
    spectral._BOUND_BUDGET = 1.0
    try:
        b = spectral_norm_bounds(W, (2, n, n), **kw)
    finally:
        spectral._BOUND_BUDGET = old
    ref = exact_svd(W, (2, n, n), **kw)[0]
    assert b.lo <= ref <= b.hi
    assert all(v >= ref for v in b.upper_bounds.values()), b.upper_bounds


def test_matrix_free_operator_equals_the_dense_matrix(rng):
    for ws, ins, kw in CASES:
        W = rng.standard_normal(ws)
        D = dense_by_probing(W, ins, **kw)
        w, geom = spectral._prepare(W, ins, kw)
        op = spectral._conv_operator(w, geom)
        x, y = rng.standard_normal(D.shape[1]), rng.standard_normal(D.shape[0])
        np.testing.assert_allclose(op.matvec(x), D @ x, atol=1e-12)
        np.testing.assert_allclose(op.rmatvec(y), D.T @ y, atol=1e-12)


def torch_power_iteration(W, input_shape, steps=300, **kw):
    """||M|| from power iteration with torch: conv as the operator; conv_transpose as its
    adjoint for zero padding (autograd's vector-Jacobian product for the other modes)."""
    m = torch_module(W, **kw)
    zeros = kw.get("padding_mode", "zeros") == "zeros" and not kw.get("transposed")
    x = torch.as_tensor(np.random.default_rng(7).standard_normal((1, *input_shape)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead
    try:
        est = 0.0
        for _ in range(steps):
            x = x / x.norm()
            if zeros:
                with torch.no_grad():
                    y = m(x)
                    # conv_transpose of the same weight; output_padding restores the input size.
                    back = torch.nn.functional.conv_transpose2d(
                        y, m.weight, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
                    pad = [n - b for n, b in zip(x.shape[2:], back.shape[2:])]
                    if any(pad):
                        back = torch.nn.functional.conv_transpose2d(
                            y, m.weight, stride=m.stride, padding=m.padding, dilation=m.dilation,
                            groups=m.groups, output_padding=tuple(pad))
            else:
                x.requires_grad_(True)
                y = m(x)
                (back,) = torch.autograd.grad(y, x, grad_outputs=y.detach())  # M^T M x
            est = float(y.detach().norm())
            x = back.detach()
    finally:
        torch.set_num_threads(threads)
    return est


@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=1, padding_mode="reflect"),
                                dict(padding=1, stride=2, padding_mode="circular"),
                                dict(transposed=True, padding=1, stride=2, output_padding=1)])
def test_larger_layers_against_torch_power_iteration(kw, rng):
    # M is 2304 x 2304 (or larger), past the small-Gram path: ARPACK or the FFT.
    W = rng.standard_normal((8, 8, 3, 3)) / 8
    ins = (8, 17, 17)
    sn = spectral_norm(W, ins, **kw)
    pw = torch_power_iteration(W, ins, **kw)
    assert pw <= sn * (1 + 1e-9)
    assert sn - pw <= 2e-3 * sn
    lo, hi = spectral_norm_bounds(W, ins, **kw)
    assert lo <= sn <= hi


def test_arpack_path_is_exact(rng):
    # min side 400 > the small-Gram threshold: eigsh on the matrix-free Gram operator.
    W = rng.standard_normal((4, 4, 3, 3))
    ins = (4, 10, 10)
    ref = exact_svd(W, ins, padding=1, padding_mode="replicate")
    assert spectral_norm(W, ins, padding=1, padding_mode="replicate") == pytest.approx(ref[0], rel=1e-9)


def test_top_k_through_arpack(rng, monkeypatch):
    monkeypatch.setattr(spectral, "DENSE_MAX_BYTES", 10_000)
    W = rng.standard_normal((4, 4, 3, 3))
    ref = exact_svd(W, (4, 9, 9), padding=1)
    np.testing.assert_allclose(singular_values(W, (4, 9, 9), padding=1, k=3), ref[:3], rtol=1e-8)


def test_kernel_norm_is_not_the_layer_norm(rng):
    W = rng.standard_normal((4, 3, 3, 3))
    r = kernel_norm_vs_layer_norm(W, (3, 8, 8), padding=1)
    assert r.reshaped_kernel == pytest.approx(np.linalg.svd(W.reshape(4, -1), compute_uv=False)[0])
    assert r.layer == pytest.approx(exact_svd(W, (3, 8, 8), padding=1)[0], rel=1e-9)
    assert "torch.nn.utils.spectral_norm" in str(r)


def test_plot_spectrum_writes_a_png(tmp_path, rng):
    path = tmp_path / "s.png"
    fig = convmatrix.plot_spectrum(rng.standard_normal((2, 2, 3)), (2, 8), padding=1, path=path)
    assert path.stat().st_size > 1000 and fig.axes


def test_public_names():
    for name in ("singular_values", "spectral_norm", "spectral_norm_bounds", "plot_spectrum", "lipschitz"):
        assert callable(getattr(convmatrix, name))


# ----------------------------------------------------------------- bad input
def test_k_out_of_range():
    with pytest.raises(ValueError, match=r"k must be between 1 and min\(M.shape\) = 6"):
        singular_values(np.ones((1, 1, 3)), (1, 6), padding=1, k=7)
    with pytest.raises(ValueError, match=r"k must be between 1 and min\(M.shape\) = 6 .* got k=0"):
        singular_values(np.ones((1, 1, 3)), (1, 6), padding=1, k=0)


def test_k_wrong_type():
    with pytest.raises(TypeError, match="k must be an int, got 2.5"):
        singular_values(np.ones((1, 1, 3)), (1, 6), padding=1, k=2.5)


def test_too_large_for_dense_svd_suggests_k():
    with pytest.raises(ValueError, match=r"dense SVD of the 4,096 x 4,096 matrix would need about .*k="):
        singular_values(np.ones((16, 16, 3, 3)), (16, 16, 16), padding=1, max_bytes=10**6)


def test_all_values_by_arpack_refused():
    with pytest.raises(ValueError, match="ARPACK finds at most min"):
        singular_values(np.ones((16, 16, 3, 3)), (16, 16, 16), padding=1, k=4096, max_bytes=10**6)


def test_bad_iterations():
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        spectral_norm_bounds(np.ones((1, 1, 3)), (1, 6), iterations=0)


def test_bad_geometry_is_reported_by_name():
    with pytest.raises(ValueError, match="input_shape has 3 channel"):
        spectral_norm(np.ones((2, 2, 3)), (3, 6))
    with pytest.raises(TypeError, match="unknown convolution argument"):
        spectral_norm(np.ones((2, 2, 3)), (2, 6), padd=1)


def test_top_k_by_lanczos_with_a_forced_progress_bar(rng, capsys):
    # 1,296 x 1,296 with the dense route disabled: Lanczos; the bar goes to stderr only.
    W = rng.standard_normal((4, 4, 3, 3))
    ins = (4, 18, 18)
    old = spectral.DENSE_MAX_BYTES
    spectral.DENSE_MAX_BYTES = 10_000
    try:
        top = singular_values(W, ins, padding=1, k=4, progress=True)
    finally:
        spectral.DENSE_MAX_BYTES = old
    ref = exact_svd(W, ins, padding=1)
    np.testing.assert_allclose(top, ref[:4], rtol=1e-9)
    out = capsys.readouterr()
    assert out.out == "" and "top 4 singular values (Lanczos)" in out.err


def test_spectral_norm_progress_and_blas_threads_restored(capsys):
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    W = np.random.default_rng(3).standard_normal((8, 8, 3, 3)) / 8
    sn = spectral_norm(W, (8, 17, 17), padding=1, progress=True)
    assert sn == pytest.approx(torch_power_iteration(W, (8, 17, 17), padding=1), rel=2e-3)
    assert "spectral norm (Lanczos)" in capsys.readouterr().err
    spectral_norm_bounds(W, (8, 17, 17), padding=1, progress=False)
    assert "bracket" not in capsys.readouterr().err
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_cost_estimate_routes():
    W = np.ones((8, 8, 3, 3))
    assert spectral.cost_estimate(W, (8, 6, 6), padding=1).route == "dense SVD"
    assert str(spectral.cost_estimate(W, (8, 6, 6), padding=1, padding_mode="circular")) == "FFT"
    e = spectral.cost_estimate(W, (8, 300, 300), padding=1, k=3)
    assert e.route == "Lanczos" and e.products == 210 and e.seconds == e.products * e.seconds_per_product
    # Timed on a 16x16 grid and scaled: the 300x300 layer costs about (300/16)^2 times a 16x16 one.
    small = spectral.cost_estimate(W, (8, 48, 48), padding=1, k=3)
    assert 20 < e.seconds_per_product / small.seconds_per_product < 200
    assert "products with M^H M" in str(e)


def test_reshaped_kernel_norm_is_torchs(rng):
    W = rng.standard_normal((4, 3, 3, 3))
    conv = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(3, 4, 3).double())
    with torch.no_grad():
        conv.parametrizations.weight.original.copy_(torch.from_numpy(W))
        for _ in range(200):  # torch's power iteration, run to convergence
            conv.weight
        sigma = float((torch.from_numpy(W) / conv.weight).mean())  # torch's weight is W / sigma
    assert spectral.reshaped_kernel_norm(W) == pytest.approx(sigma, rel=1e-6)
    Wt = rng.standard_normal((3, 4, 2, 2))  # transposed layout (C_in, C_out, *k): torch uses dim=1
    assert spectral.reshaped_kernel_norm(Wt, transposed=True) == pytest.approx(
        np.linalg.svd(np.moveaxis(Wt, 1, 0).reshape(4, -1), compute_uv=False)[0])
