"""Network Lipschitz bounds against torch autograd Jacobians (exact for affine networks)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from convmatrix.analysis.lipschitz import activation_lipschitz, fold_batch_norm, lipschitz, max_pool_bound


def jacobian_norm(f, shape, seed=0):
    """||J f(x)||_2 at one random point (torch autograd, dense SVD)."""
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal(int(np.prod(shape))))
    J = torch.autograd.functional.jacobian(lambda z: f(z.reshape(1, *shape)).reshape(-1), x)
    return np.linalg.svd(J.numpy(), compute_uv=False)[0]


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.2, 3, generator=gen)
                m.weight.uniform_(-2, 2, generator=gen)
                m.bias.uniform_(-1, 1, generator=gen)
    return model.eval()


@pytest.fixture
def gen():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


def test_conv_bn_is_exact_with_folding(gen):
    net = randomise_bn(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
                                     nn.BatchNorm2d(3)).double(), gen)
    r = lipschitz(net, (2, 6, 5))
    assert r.bound == pytest.approx(jacobian_norm(net, (2, 6, 5)), rel=1e-8)
    assert "BN folded" in str(r)


def test_bn_before_conv_folds_forward(gen):
    net = randomise_bn(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, groups=2, stride=2)).double(), gen)
    assert lipschitz(net, (4, 7, 7)).bound == pytest.approx(jacobian_norm(net, (4, 7, 7)), rel=1e-8)


def test_bn_on_both_sides_of_a_conv(gen):
    net = randomise_bn(nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)).double(), gen)
    assert lipschitz(net, (2, 5, 5)).bound == pytest.approx(jacobian_norm(net, (2, 5, 5)), rel=1e-8)


def test_transposed_conv_with_bn(gen):
    net = randomise_bn(nn.Sequential(nn.ConvTranspose2d(2, 4, 3, stride=2, groups=2), nn.BatchNorm2d(4)).double(), gen)
    assert lipschitz(net, (2, 3, 4)).bound == pytest.approx(jacobian_norm(net, (2, 3, 4)), rel=1e-8)


class AffineResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x):
        return x + self.pool(self.bn(self.conv(x)))


def test_affine_residual_uses_the_norm_of_i_plus_a(gen):
    block = randomise_bn(AffineResidual().double(), gen)
    r = lipschitz(block, (2, 5, 4))
    exact = jacobian_norm(block, (2, 5, 4))
    assert r.bound == pytest.approx(exact, rel=1e-8)
    # And strictly tighter than 1 + (the branch's product bound), the nonlinear-branch rule.
    assert r.bound < 1 + r.layers[-2].bound - 1e-6


class MinZero(nn.Module):
    def forward(self, x):
        return x - torch.relu(x)


def test_nonlinear_residual_is_one_plus_lip():
    # x - relu(x) = min(x, 0): constant 1, while ||I - I|| = 0 would be wrong.
    r = lipschitz(MinZero(), (3,))
    assert r.bound == 2.0


def test_activation_pool_and_linear_chain(gen):
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Conv2d(3, 2, 2),
        nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 4), nn.Tanh()).double().eval()
    r = lipschitz(net, (1, 8, 8))
    factors = {row.op: row.factor for row in r.layers}
    assert factors["Sigmoid"] == 0.25 and factors["MaxPool2d"] == pytest.approx(np.sqrt(4))
    # Global average pooling of a 2x2 map: the averaging row (1/4, ...) has norm 1/2.
    assert factors["AdaptiveAvgPool2d"] == pytest.approx(1 / 2)
    assert factors["Linear"] == pytest.approx(np.linalg.svd(net[7].weight.detach().numpy(), compute_uv=False)[0])
    # A bound: never below the local stretch at random points.
    for seed in range(3):
        assert jacobian_norm(net, (1, 8, 8), seed) <= r.bound * (1 + 1e-9)
    assert r.bound == pytest.approx(np.prod([row.factor for row in r.layers]))


def test_table_prints_every_layer(gen):
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.LeakyReLU(0.3), nn.Conv1d(2, 1, 3)).double()
    text = str(lipschitz(net, (1, 9)))
    assert text.splitlines()[0].split()[:3] == ["layer", "op", "output"]
    assert "LeakyReLU" in text and "Lipschitz bound" in text


def test_helpers():
    assert activation_lipschitz("LeakyReLU", negative_slope=-2.0) == 2.0
    assert max_pool_bound((2, 2), (1, 1)) == pytest.approx(2.0)
    w, b = fold_batch_norm(np.ones((1, 2, 3)), None, np.array([1.0, 2.0]), np.array([0.5, 0.5]), axis=1)
    assert w[0, 1].tolist() == [2.0, 2.0, 2.0] and b.tolist() == [0.5, 0.5]


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Conv1d(1, 1, 3), nn.LayerNorm(6))
    with pytest.raises(ValueError, match=r"module '1' \(LayerNorm\): unsupported module"):
        lipschitz(net, (1, 8))


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation 'Foo' has no known Lipschitz constant"):
        activation_lipschitz("Foo")


def test_model_that_fails_on_the_input_shape():
    with pytest.raises(ValueError, match=r"module '0' \(Conv1d\) fails on an input of shape \(N, \*\(2, 8\)\)"):
        lipschitz(nn.Sequential(nn.Conv1d(1, 1, 3)), (2, 8))


def test_model_type():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        lipschitz(lambda x: x, (3,))
