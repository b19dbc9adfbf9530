"""Backward of SparseConvLinear / csr_linear: exact gradients, never a dense matrix-sized gradient."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convmatrix
from convmatrix.core.matrix import torch_csr_transpose
from convmatrix.network.modules import csr_linear
from oracles import torch_module
from strategies import forward_convs, transposed_convs

TOL = 1e-10
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

# Geometries whose matrix structure differs: folded padding (several taps in one entry), strides,
# dilation, groups, transposed layers with output padding.
CASES = {
    "conv2d_replicate_folded": (torch.nn.Conv2d(2, 3, 3, padding=2, padding_mode="replicate"), (2, 3, 4)),
    "conv1d_reflect_strided": (torch.nn.Conv1d(2, 4, 3, stride=2, padding=2, padding_mode="reflect"), (2, 7)),
    "conv2d_circular_groups": (
        torch.nn.Conv2d(4, 4, (2, 3), padding="same", padding_mode="circular", groups=2), (4, 3, 5)
    ),
    "conv3d_dilated_nobias": (torch.nn.Conv3d(1, 2, 2, dilation=(2, 1, 1), bias=False), (1, 4, 3, 3)),
    "convT2d_groups": (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (4, 3, 4)),
    "convT1d_dilated": (torch.nn.ConvTranspose1d(3, 2, 3, dilation=2, output_padding=1, stride=2), (3, 4)),
}


def all_gradients(model, x, g):
    """Gradients of sum(model(x) * g) w.r.t. the kernel, the bias and the input."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad()
    (model(x) * g).sum().backward()
    bias = None if model.bias is None else model.bias.grad
    return model.weight.grad, bias, x.grad


def check_against_conv(module, shape, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sparse = convmatrix.to_linear(module, shape, sparse=True, keep_shape=True)
    x = torch.randn(batch, *shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        g = torch.randn(module(x).shape, dtype=torch.float64, generator=gen)
    expected = all_gradients(module, x, g)  # torch's own conv backward: the oracle
    got = all_gradients(sparse[1], x.flatten(1), g.flatten(1))
    for name, e, a in zip(("kernel", "bias", "input"), expected, got):
        if e is None:
            assert a is None, name
        else:
            torch.testing.assert_close(a.reshape(e.shape), e, rtol=0, atol=TOL, msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_conv(name):
    torch.manual_seed(0)
    module, shape = CASES[name]
    check_against_conv(module.double(), shape)


@given(st.one_of(forward_convs(), transposed_convs()), st.integers(0, 2**32 - 1))
def test_gradients_match_conv_any_layer(layer, seed):
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    c_out = weight_shape[1] * kw["groups"] if kw.get("transposed") else weight_shape[0]
    module = torch_module(rng.standard_normal(weight_shape), bias=rng.standard_normal(c_out), **kw).train()
    check_against_conv(module, input_shape, batch=2, seed=seed)


def test_gradcheck_through_the_module():
    # torch's numerical gradient of the whole map (kernel, bias, input) against our backward.
    conv = torch.nn.Conv2d(2, 2, 2, padding=1, padding_mode="replicate").double()
    sparse = convmatrix.to_linear(conv, (2, 2, 3), sparse=True)
    params = (sparse.weight.detach().clone().requires_grad_(True), sparse.bias.detach().clone().requires_grad_(True))
    x = torch.randn(2, sparse.in_features, dtype=torch.float64, requires_grad=True)

    def run(w, b, x):
        return torch.func.functional_call(sparse, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(run, (*params, x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_csr_linear(dtype):
    # M = [[a, 0, b, 0], [0, 0, 0, 0], [0, c, d, e]]: an empty row and an empty column.
    crow, col = torch.tensor([0, 2, 2, 5]), torch.tensor([0, 2, 1, 2, 3])
    transpose = torch_csr_transpose(crow, col, 4)
    values = torch.randn(5, dtype=dtype, requires_grad=True)
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, v: csr_linear(x, v, crow, col, (3, 4), transpose), (x, values))


def test_transpose_structure_is_the_transposed_matrix():
    conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect").double()
    sparse = convmatrix.to_linear(conv, (2, 5, 4), sparse=True)
    crow_t, col_t, perm = torch_csr_transpose(sparse.crow_indices, sparse.col_indices, sparse.in_features)
    values = sparse.values().detach()
    Mt = torch.sparse_csr_tensor(crow_t, col_t, values[perm],
                                 size=(sparse.in_features, sparse.out_features), check_invariants=True)
    M, _ = convmatrix.from_module(conv, (2, 5, 4))
    np.testing.assert_array_equal(Mt.to_dense().numpy(), M.toarray().T)


def test_transpose_built_only_when_the_input_needs_a_gradient():
    sparse = convmatrix.to_linear(torch.nn.Conv1d(1, 1, 3), (1, 6), sparse=True)
    sparse(torch.randn(2, 6)).sum().backward()  # kernel gradient only
    assert sparse.crow_t is None and sparse.weight.grad is not None
    x = torch.randn(2, 6, requires_grad=True)
    sparse(x).sum().backward()
    assert sparse.crow_t is not None and x.grad is not None


def test_csr_linear_needs_transpose_for_input_gradient():
    crow, col = torch.tensor([0, 1]), torch.tensor([0])
    x = torch.ones(1, 1, requires_grad=True)
    with pytest.raises(ValueError, match="x requires grad, so transpose .* must be given"):
        csr_linear(x, torch.ones(1), crow, col, (1, 1))


# A 16 -> 16 3x3 layer on 32 x 32: M is 16384 x 16384, so torch's sparse matmul backward formed a
# 1 GiB float32 dense gradient of M. Measured in a fresh process: peak RSS growth during backward.
MEMORY_SCRIPT = textwrap.dedent("""
    import resource, torch, convmatrix
    torch.set_num_threads(1)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    sparse = convmatrix.to_linear(conv, (16, 32, 32), sparse=True)
    x = torch.randn(4, 16 * 32 * 32, requires_grad=True)
    y = sparse(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    y.square().sum().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert sparse.weight.grad.shape == conv.weight.shape and x.grad.shape == x.shape
    print((after - before) * 1024)  # ru_maxrss is in KiB on Linux
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units are Linux's")
def test_backward_memory_stays_sparse():
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True,
                         env=os.environ, timeout=60)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.split()[-1])
    # nnz = 16*16*9*1024 - border = about 2.3 M entries: O(nnz) scratch is tens of MB; dense would be 1 GiB.
    assert growth < 200 * 2**20, f"backward raised peak RSS by {growth / 2**20:.0f} MiB"
