"""from_module and to_linear against the torch modules themselves (float64)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convmatrix
from strategies import forward_convs, transposed_convs
from oracles import torch_module

TOL = 1e-10
ANY_LAYER = st.one_of(forward_convs(), transposed_convs())
# torch's own note when its oracle module pads 'same' around an even kernel: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def make_module(layer, seed, bias=True):
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(weight_shape)
    c_out = weight_shape[1] * kw["groups"] if kw.get("transposed") else weight_shape[0]
    b = rng.standard_normal(c_out) if bias else None
    return torch_module(w, bias=b, **kw), input_shape


@given(ANY_LAYER, st.integers(0, 2**32 - 1), st.booleans())
def test_from_module_equals_module(layer, seed, bias):
    module, input_shape = make_module(layer, seed, bias)
    M, b = convmatrix.from_module(module, input_shape)
    n = int(np.prod(input_shape))
    # Random inputs: a wrong entry anywhere in M changes M @ x almost surely.
    x = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((4, n)))
    with torch.no_grad():
        expected = module(x.reshape(-1, *input_shape)).reshape(len(x), -1).numpy()
    assert isinstance(b, np.ndarray) and b.shape == (M.shape[0],)
    if not bias:
        assert not b.any()
    np.testing.assert_allclose((M @ x.numpy().T).T + b, expected, rtol=0, atol=TOL)


# Named cases: every module class and the options that change the map's structure.
CASES = {
    "conv1d_circular_same": (torch.nn.Conv1d(2, 4, 4, padding="same", padding_mode="circular", groups=2), (2, 3)),
    "conv2d_reflect_strided": (
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=(2, 1), padding_mode="reflect"), (3, 6, 5)
    ),
    "conv2d_replicate_nobias": (torch.nn.Conv2d(2, 2, (2, 3), padding=1, padding_mode="replicate", bias=False), (2, 4, 4)),
    "conv3d_valid_dilated": (torch.nn.Conv3d(2, 3, 2, dilation=(1, 2, 1), padding="valid"), (2, 3, 4, 3)),
    "convT1d_op_below_dilation": (torch.nn.ConvTranspose1d(2, 3, 3, dilation=2, output_padding=1), (2, 4)),
    "convT2d_groups": (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (4, 3, 4)),
    "convT3d_nobias": (torch.nn.ConvTranspose3d(1, 2, 2, stride=(2, 1, 1), bias=False), (1, 2, 3, 2)),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    module, shape = CASES[request.param]
    return module.double(), shape


@pytest.mark.parametrize("sparse", [False, True])
def test_to_linear_flat(case, sparse):
    module, shape = case
    fc = convmatrix.to_linear(module, shape, sparse=sparse)
    x = torch.randn(5, *shape, dtype=torch.float64)
    assert fc.in_features == x[0].numel()
    with torch.no_grad():
        torch.testing.assert_close(fc(x.flatten(1)), module(x).flatten(1), rtol=0, atol=TOL)
    if not sparse:
        assert type(fc) is torch.nn.Linear


@pytest.mark.parametrize("sparse", [False, True])
def test_to_linear_keep_shape_is_drop_in(case, sparse):
    module, shape = case
    drop_in = convmatrix.to_linear(module, shape, sparse=sparse, keep_shape=True)
    assert isinstance(drop_in[0], torch.nn.Flatten) and isinstance(drop_in[2], torch.nn.Unflatten)
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(drop_in(x), module(x), rtol=0, atol=TOL)  # batched: same shape
        torch.testing.assert_close(drop_in(x[0]), module(x[0]), rtol=0, atol=TOL)  # unbatched too


def test_sparse_gradients_match_conv_gradients(case):
    # Gradients w.r.t. the kernel and bias through the sparse CSR weight equal torch's conv gradients.
    module, shape = case
    sparse = convmatrix.to_linear(module, shape, sparse=True)
    x = torch.randn(3, *shape, dtype=torch.float64)
    out = module(x)
    g = torch.randn_like(out)
    module.zero_grad()
    (out * g).sum().backward()
    (sparse(x.flatten(1)) * g.flatten(1)).sum().backward()
    torch.testing.assert_close(sparse.weight.grad, module.weight.grad, rtol=0, atol=TOL)
    if module.bias is not None:
        torch.testing.assert_close(sparse.bias.grad, module.bias.grad, rtol=0, atol=TOL)


def test_sparse_matrix_is_torch_csr_of_the_kernel(case):
    module, shape = case
    sparse = convmatrix.to_linear(module, shape, sparse=True)
    W = sparse.matrix()
    assert W.layout == torch.sparse_csr and W.values().requires_grad
    M, _ = convmatrix.from_module(module, shape)
    np.testing.assert_array_equal(W.to_dense().detach().numpy(), M.toarray())


def test_sparse_training_step_moves_the_kernel():
    # The sparse form is trainable: one SGD step changes its kernel as the conv's step would.
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect").double()
    sparse = convmatrix.to_linear(conv, (2, 5, 5), sparse=True)
    x, target = torch.randn(4, 2, 5, 5, dtype=torch.float64), torch.randn(4, 3, 5, 5, dtype=torch.float64)
    for model, inp in ((conv, x), (sparse, x.flatten(1))):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = ((model(inp).reshape(target.shape) - target) ** 2).mean()
        opt.zero_grad(), loss.backward(), opt.step()
    torch.testing.assert_close(sparse.weight.detach(), conv.weight.detach(), rtol=0, atol=TOL)


def _assert_sparse_matches_conv(sparse, module, shape, seed):
    """Output and kernel/bias gradients of ``sparse`` equal the torch module's (fresh grads)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=gen)
    out = module(x)
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    module.zero_grad(), sparse.zero_grad()
    (out * g).sum().backward()
    y = sparse(x.flatten(1))
    (y * g.flatten(1)).sum().backward()
    torch.testing.assert_close(y.detach(), out.detach().flatten(1), rtol=0, atol=TOL)
    torch.testing.assert_close(sparse.weight.grad, module.weight.grad, rtol=0, atol=TOL)
    if module.bias is not None:
        torch.testing.assert_close(sparse.bias.grad, module.bias.grad, rtol=0, atol=TOL)


def _change_in_place(sparse, module, seed):
    """The same in-place change of kernel and bias in both (no new Parameter objects)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("weight", "bias"):
            ours, theirs = getattr(sparse, name), getattr(module, name)
            if theirs is not None:
                ours.mul_(-3).add_(torch.randn(ours.shape, dtype=ours.dtype, generator=gen))
                theirs.copy_(ours)


def test_sparse_follows_in_place_kernel_changes(case):
    # The structure is cached at construction; the values must never be stale.
    module, shape = case
    sparse = convmatrix.to_linear(module, shape, sparse=True)
    weight = sparse.weight
    for step in range(3):
        _assert_sparse_matches_conv(sparse, module, shape, seed=step)
        _change_in_place(sparse, module, seed=10 + step)
    assert sparse.weight is weight


def test_sparse_folded_padding_follows_in_place_changes():
    # Replicate padding 2 around a 3x3 kernel on 3x4: several taps fold into one entry.
    torch.manual_seed(2)
    module = torch.nn.Conv2d(2, 3, 3, padding=2, padding_mode="replicate").double()
    shape = (2, 3, 4)
    sparse = convmatrix.to_linear(module, shape, sparse=True)
    assert sparse.segments is not None and len(sparse.segments) > sparse.col_indices.numel()
    for step in range(3):
        _assert_sparse_matches_conv(sparse, module, shape, seed=step)
        _change_in_place(sparse, module, seed=20 + step)


def test_sparse_forward_does_not_rebuild_the_structure(monkeypatch):
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    sparse = convmatrix.to_linear(conv, (2, 4, 5), sparse=True)

    def rebuilt(*args, **kwargs):
        raise AssertionError("the CSR structure was rebuilt in forward")

    monkeypatch.setattr(convmatrix.network.modules, "torch_csr_structure", rebuilt)
    monkeypatch.setattr(convmatrix.core.matrix, "tap_pattern", rebuilt)
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x.flatten(1)), conv(x).flatten(1), rtol=0, atol=TOL)
    # The cached structure is derived data: not saved with the parameters.
    assert set(sparse.state_dict()) == {"weight", "bias"}


def test_float32_module_gives_float32():
    conv = torch.nn.Conv2d(1, 2, 3)
    M, b = convmatrix.from_module(conv, (1, 5, 5))
    assert M.dtype == np.float32 and b.dtype == np.float32
    assert convmatrix.to_linear(conv, (1, 5, 5)).weight.dtype == torch.float32


# ------------------------------------------------------------------ bad input
def test_not_a_conv_module():
    with pytest.raises(TypeError, match="module must be a torch.nn.Conv1d.*got torch.nn.modules.linear.Linear"):
        convmatrix.from_module(torch.nn.Linear(3, 4), (3,))


def test_not_a_module():
    with pytest.raises(TypeError, match="module must be .*got numpy.ndarray"):
        convmatrix.to_linear(np.ones((1, 1, 3)), (1, 5))


def test_input_channels_do_not_fit():
    with pytest.raises(ValueError, match=r"input_shape=\(2, 5, 5\) for Conv2d.*input_shape has 2 channel"):
        convmatrix.from_module(torch.nn.Conv2d(3, 4, 3), (2, 5, 5))


def test_input_shape_with_batch_axis():
    with pytest.raises(ValueError, match=r"input_shape must be \(channels, \*spatial\) with 2 spatial"):
        convmatrix.to_linear(torch.nn.Conv2d(3, 4, 3), (1, 3, 5, 5))


def test_input_smaller_than_kernel():
    with pytest.raises(ValueError, match="kernel larger than the padded input"):
        convmatrix.to_linear(torch.nn.Conv1d(1, 1, 5), (1, 3), sparse=True)


def test_lazy_module_not_initialised():
    with pytest.raises(ValueError, match="uninitialized \\(lazy\\) parameters"):
        convmatrix.from_module(torch.nn.LazyConv2d(4, 3), (3, 5, 5))


def test_sparse_flag_must_be_bool():
    with pytest.raises(TypeError, match="sparse must be a bool, got 'yes'"):
        convmatrix.to_linear(torch.nn.Conv1d(1, 1, 3), (1, 5), sparse="yes")
