"""to_mlp against torch itself: every supported module kind, residuals, concatenations, pooling options."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import convmatrix

ALLOWED = (nn.Linear, nn.Flatten, nn.Unflatten)


def _bn(cls, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = cls(c)
    with torch.no_grad():
        b.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
        b.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        b.weight.copy_(torch.rand(c, generator=g) + 0.5)
        b.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return b


class Residual(nn.Module):
    """conv-bn-act-conv + identity, act after the sum (a ResNet basic block)."""

    def __init__(self, c, act):
        super().__init__()
        self.c1, self.bn, self.act, self.c2 = nn.Conv2d(c, c, 3, padding=1), _bn(nn.BatchNorm2d, c), act, nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.act(x + self.c2(self.act(self.bn(self.c1(x)))))


class TwoBranches(nn.Module):
    """Inception-like: parallel branches with different activations, concatenated, channels last."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x))], dim=1)
        return y.permute(0, 2, 3, 1).reshape(x.size(0), -1) * 2.0 - 1.0


class Functional(nn.Module):
    """Functional calls, shape arithmetic and reductions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)

    def forward(self, x):
        y = F.max_pool2d(F.leaky_relu(self.conv(x), 0.2), 2, ceil_mode=True)
        z = F.avg_pool2d(y, 2, padding=1, count_include_pad=False)
        g = y.mean(dim=(2, 3), keepdim=True)
        return (z - g).view(x.size(0), -1) / 3.0 + F.adaptive_avg_pool2d(y, 1).flatten(1).sum(1, keepdim=True)


CASES = {
    "lenet_maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                                            nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(4, 3)),
                      (1, 10, 10)),
    "bn_avgpool": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), _bn(nn.BatchNorm2d, 4), nn.ReLU(),
                                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 9, 5)), (2, 6, 6)),
    "residual_relu": (lambda: Residual(3, nn.ReLU()), (3, 5, 5)),
    "residual_sigmoid": (lambda: Residual(2, nn.Sigmoid()), (2, 4, 4)),
    "two_branches": (TwoBranches, (2, 4, 4)),
    "functional": (Functional, (1, 9, 9)),
    "depthwise_separable": (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, padding=1), _bn(nn.BatchNorm2d, 4),
                                                  nn.ReLU6(), nn.Conv2d(4, 6, 1), nn.Hardswish()), (4, 5, 5)),
    "conv1d_audio": (lambda: nn.Sequential(nn.Conv1d(1, 4, 9, stride=2, padding=4, padding_mode="reflect"),
                                           _bn(nn.BatchNorm1d, 4), nn.PReLU(4), nn.MaxPool1d(3, padding=1),
                                           nn.Conv1d(4, 4, 3, groups=2, dilation=2), nn.GELU(),
                                           nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)), (1, 32)),
    "decoder": (lambda: nn.Sequential(nn.Unflatten(1, (3, 2, 2)), nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1,
                                                                                      output_padding=1),
                                      nn.ELU(), nn.ConvTranspose2d(2, 1, 4, stride=2, dilation=2), nn.Tanh()), (12,)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 2, 2, padding=1, padding_mode="circular"), nn.SiLU(),
                                     nn.MaxPool3d(2, ceil_mode=True), nn.Flatten(), _bn(nn.BatchNorm1d, 16)), (2, 3, 3, 2)),
    "pads_and_adaptive": (lambda: nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.ConstantPad2d(1, 0.5),
                                                nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 2), nn.Softplus(),
                                                nn.AdaptiveMaxPool2d((2, 3)), nn.Dropout(), nn.Identity(),
                                                nn.AdaptiveAvgPool2d((1, 2))), (2, 4, 5)),
    "linear_on_last_axis": (lambda: nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.3), nn.Linear(3, 2)), (5, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_to_mlp_equals_model(case):
    make, shape = CASES[case]
    torch.manual_seed(0)
    model = make().double().eval()
    mlp = convmatrix.to_mlp(model, shape)
    for m in mlp:
        assert isinstance(m, ALLOWED + (convmatrix.MaskedActivation,)) or type(m).__module__.startswith("torch.nn.modules.activation")
    x = torch.randn(6, *shape, dtype=torch.float64)
    with torch.no_grad():
        want, got = model(x), mlp(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-9)


def test_relu_networks_need_no_masked_activation():
    torch.manual_seed(1)
    model = Residual(2, nn.ReLU()).eval()
    mlp = convmatrix.to_mlp(model, (2, 4, 4))
    assert {type(m).__name__ for m in mlp} == {"Flatten", "Linear", "ReLU", "Unflatten"}
    # the skip value x (not >= 0) costs 2 neurons per entry in the first ReLU layer: 32 + 2*32
    assert mlp[1].out_features == 32 + 2 * 32


def test_sigmoid_skip_uses_masked_activation():
    torch.manual_seed(2)
    mlp = convmatrix.to_mlp(Residual(2, nn.Sigmoid()).eval(), (2, 3, 3))
    masked = [m for m in mlp if isinstance(m, convmatrix.MaskedActivation)]
    assert len(masked) == 1 and masked[0].index.numel() == 18
    assert mlp[1].out_features == 18 + 18  # the carried skip value: one identity neuron each


def test_skip_of_relu_output_costs_one_neuron():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = F.relu(self.a(x))
            return F.relu(self.b(h)) + h  # h is already >= 0: carried by one neuron

    torch.manual_seed(3)
    model = Block().eval()
    mlp = convmatrix.to_mlp(model, (4,))
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [4, 8, 4]
    x = torch.randn(20, 4)
    torch.testing.assert_close(mlp(x), model(x))


def test_float32_model_gives_float32_mlp_agreeing_to_rounding():
    torch.manual_seed(4)
    model = CASES["lenet_maxpool"][0]().eval()
    mlp = convmatrix.to_mlp(model, (1, 10, 10))
    assert mlp[1].weight.dtype == torch.float32
    x = torch.randn(50, 1, 10, 10)
    torch.testing.assert_close(mlp(x), model(x), rtol=1e-5, atol=1e-5)
    assert mlp.conversion["max_abs"] < 1e-9


@settings(max_examples=25)
@given(k=st.integers(1, 4), s=st.integers(1, 3), d=st.integers(1, 2), n=st.integers(4, 9),
       ceil=st.booleans(), pad=st.integers(0, 2))
def test_max_pool_every_option(k, s, d, n, ceil, pad):
    pad = min(pad, k // 2)
    if d * (k - 1) + 1 > n + 2 * pad:
        return
    pool = nn.MaxPool2d((k, max(1, k - 1)), stride=(s, 1), padding=(pad, 0), dilation=(d, 1), ceil_mode=ceil)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), pool).double().eval()  # no ReLU next to the pool
    mlp = convmatrix.to_mlp(model, (1, n, n))
    x = torch.randn(4, 1, n, n, dtype=torch.float64)
    np.testing.assert_allclose(mlp(x).detach().numpy(), model(x).detach().numpy(), atol=1e-12)


@settings(max_examples=25)
@given(k=st.integers(1, 4), s=st.integers(1, 3), n=st.integers(4, 8), ceil=st.booleans(), pad=st.integers(0, 2),
       include=st.booleans(), divisor=st.sampled_from([None, 3]))
def test_avg_pool_every_option(k, s, n, ceil, pad, include, divisor):
    pad = min(pad, k // 2)
    pool = nn.AvgPool2d(k, stride=s, padding=pad, ceil_mode=ceil, count_include_pad=include, divisor_override=divisor)
    model = nn.Sequential(pool).double().eval()
    mlp = convmatrix.to_mlp(model, (2, n, n + 1)).double()  # a model without weights gives float32
    x = torch.randn(3, 2, n, n + 1, dtype=torch.float64)
    np.testing.assert_allclose(mlp(x).detach().numpy(), model(x).detach().numpy(), atol=1e-12)


@settings(max_examples=15)
@given(n=st.integers(3, 9), o=st.integers(1, 4), m=st.integers(3, 7), p=st.integers(1, 3))
def test_adaptive_pools(n, o, m, p):
    model = nn.Sequential(nn.AdaptiveMaxPool2d((o, p)), nn.AdaptiveAvgPool2d((max(1, o - 1), p))).double().eval()
    mlp = convmatrix.to_mlp(model, (1, n, m)).double()
    x = torch.randn(3, 1, n, m, dtype=torch.float64)
    np.testing.assert_allclose(mlp(x).detach().numpy(), model(x).detach().numpy(), atol=1e-12)


def test_masked_activation_module():
    m = convmatrix.MaskedActivation(nn.Tanh(), np.array([False, True, True]))
    x = torch.tensor([[2.0, 0.5, -1.0]])
    torch.testing.assert_close(m(x), torch.tensor([[2.0, float(np.tanh(0.5)), float(np.tanh(-1.0))]]))
    with pytest.raises(TypeError, match="activation must be a torch.nn.Module"):
        convmatrix.MaskedActivation(torch.tanh, [0])


# -- bad input --------------------------------------------------------------------------

def test_unsupported_module_names_itself():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 3, 3])).eval()
    with pytest.raises(ValueError, match=r"module '1' \(LayerNorm\): unsupported module"):
        convmatrix.to_mlp(model, (1, 5, 5))


def test_product_of_two_values_is_refused():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    with pytest.raises(ValueError, match=r"node 'mul'.*mul of two values that both depend on the input"):
        convmatrix.to_mlp(Square(), (3,))


def test_training_mode_batch_norm_is_refused():
    with pytest.raises(ValueError, match=r"module '0' \(BatchNorm1d\).*eval mode"):
        convmatrix.to_mlp(nn.Sequential(nn.BatchNorm1d(3)), (3,))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convmatrix.to_mlp("model.onnx", (3,))
    with pytest.raises(ValueError, match="input_shape must be positive ints"):
        convmatrix.to_mlp(nn.Linear(3, 2), (0, 3))
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints"):
        convmatrix.to_mlp(nn.Linear(3, 2), "3")


def test_batch_mixing_is_refused():
    class Mix(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(ValueError, match="does not keep the batch axis first"):
        convmatrix.to_mlp(Mix(), (3,))


def test_untraceable_model_is_refused_in_one_line():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match=r"torch.fx cannot trace Branchy"):
        convmatrix.to_mlp(Branchy(), (3,))


def test_failed_self_check_raises_conversion_error():
    from convmatrix.network.check import ConversionError, check_close

    ref = np.array([[1.0, -2.0]])
    check_close(ref, ref + 1e-12, "net", 1e-8)
    with pytest.raises(ConversionError, match=r"net: the converted network differs from the original by 0.1"):
        check_close(ref, ref + [[0.0, 0.1]], "net", 1e-8)


def test_conv_transpose_called_with_output_size():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 1, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=[8, 7])

    model = Up().double().eval()
    mlp = convmatrix.to_mlp(model, (2, 4, 4))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    np.testing.assert_allclose(mlp(x).detach().numpy(), model(x).detach().numpy(), atol=1e-12)


@settings(max_examples=20)
@given(nd=st.integers(1, 2), s=st.integers(1, 2), d=st.integers(1, 2), k=st.integers(1, 3), g=st.sampled_from([1, 2]),
       pad=st.integers(0, 1), mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
       transposed=st.booleans(), bias=st.booleans(), op=st.integers(0, 1))
def test_conv_modules_every_option(nd, s, d, k, g, pad, mode, transposed, bias, op):
    conv = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d)}[nd][transposed]
    if transposed:
        layer = conv(2, 4, k, stride=s, padding=pad, dilation=d, groups=g, bias=bias,
                     output_padding=op if op < max(s, d) else 0)
    else:
        layer = conv(2, 4, k, stride=s, padding=pad, dilation=d, groups=g, bias=bias, padding_mode=mode)
    shape = (2,) + (5,) * nd
    model = nn.Sequential(layer, nn.Tanh()).double().eval()
    mlp = convmatrix.to_mlp(model, shape)
    x = torch.randn(3, *shape, dtype=torch.float64)
    np.testing.assert_allclose(mlp(x).detach().numpy(), model(x).detach().numpy(), atol=1e-12)


def test_wrong_input_shape_is_a_value_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    with pytest.raises(ValueError, match=r"module '1' \(Linear\) fails on an input of shape \(N, \*\(2, 5\)\)"):
        convmatrix.to_mlp(model, (2, 5))


def test_empty_and_single_batches():
    torch.manual_seed(5)
    model = Residual(2, nn.Sigmoid()).eval()
    mlp = convmatrix.to_mlp(model, (2, 3, 3))
    for n in (0, 1):
        x = torch.randn(n, 2, 3, 3)
        assert mlp(x).shape == model(x).shape
        torch.testing.assert_close(mlp(x), model(x))
