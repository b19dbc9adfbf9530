"""Lipschitz bounds of ONNX networks (through the IR graph) against torch autograd Jacobians."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import convmatrix
from convmatrix.analysis.lipschitz import graph_lipschitz


class Residual(nn.Module):
    def __init__(self, branch):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)


class MinusRelu(nn.Module):
    def forward(self, x):
        return x - torch.relu(x)


def export(model, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=13)
    return str(path)


def jacobian_norm(model, shape, x=None):
    """||d model / d x||_2 at x: the local Lipschitz constant, from autograd (the oracle)."""
    x = torch.randn(*shape, dtype=torch.float64) if x is None else x
    J = torch.autograd.functional.jacobian(lambda v: model.double()(v[None])[0].reshape(-1), x)
    return float(np.linalg.norm(J.reshape(J.shape[0], -1).numpy(), 2))


def test_linear_network_bound_is_its_exact_norm(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5)).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    report = convmatrix.lipschitz(export(model, (2, 8, 8), tmp_path / "m.onnx"))
    # Every layer is affine, so the bound is the norm of the whole (fused) map: exact.
    assert report.bound == pytest.approx(jacobian_norm(model, (2, 8, 8)), rel=1e-6)


def test_affine_residual_uses_norm_of_identity_plus_branch(tmp_path):
    torch.manual_seed(1)
    model = Residual(nn.Conv2d(2, 2, 3, padding=1, bias=False)).eval()
    report = convmatrix.lipschitz(export(model, (2, 6, 6), tmp_path / "r.onnx"))
    exact = jacobian_norm(model, (2, 6, 6))
    branch = jacobian_norm(model.branch, (2, 6, 6))
    assert report.bound == pytest.approx(exact, rel=1e-6)
    assert report.bound < 1 + branch  # tighter than the naive 1 + ||A||


def test_nonlinear_residual_is_not_merged(tmp_path):
    """ISSUE-NOTES: x - relu(x) = min(x, 0) has constant 1 although ||I - I|| = 0."""
    report = convmatrix.lipschitz(export(MinusRelu(), (4,), tmp_path / "m.onnx"))
    assert report.bound >= 1.0


def test_relu_and_max_pool_network_bound_really_bounds(tmp_path, rng):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3)).eval()
    path = export(model, (1, 9, 9), tmp_path / "m.onnx")
    report = convmatrix.lipschitz(path)
    assert any(row.op == "MaxPool" and row.factor == pytest.approx(2.0) for row in report.layers)  # 2x2 windows share
    worst = max(jacobian_norm(model, (1, 9, 9)) for _ in range(20))
    assert worst <= report.bound
    # Finite differences: no pair of inputs is stretched by more than the bound.
    for _ in range(20):
        x, y = (torch.as_tensor(rng.standard_normal((1, 1, 9, 9))) for _ in range(2))
        with torch.no_grad():
            ratio = float((model.double()(x) - model(y)).norm() / (x - y).norm())
        assert ratio <= report.bound


def test_graph_lipschitz_concat_and_prelu():
    import scipy.sparse as sp

    from convmatrix.network import Graph

    g = Graph((2,))
    a = g.affine([g.input], sp.csr_array(np.diag([2.0, 0.0])), name="a")
    p = g.act(a, "PReLU", params={"slopes": np.array([0.5, 3.0])}, name="prelu")
    b = g.affine([g.input], sp.csr_array(np.diag([0.0, 1.0])), name="b")
    g.output = g.concat([p, b], name="cat")
    report = graph_lipschitz(g)
    # sqrt((2 * 3)^2 + 1^2): the PReLU's largest slope 3 times ||a|| = 2, concatenated with ||b|| = 1.
    assert report.bound == pytest.approx(np.sqrt(37.0))


def test_cli_lipschitz(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = export(model, (3,), tmp_path / "m.onnx")
    out = subprocess.run([sys.executable, "-m", "convmatrix", "lipschitz", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Lipschitz bound (2-norm):" in out.stdout
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    out = subprocess.run([sys.executable, "-m", "convmatrix", "lipschitz", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
