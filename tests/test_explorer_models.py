"""Model stacks in the explorer: ONNX files (exported by torch, and a shared published model) and
torch ``nn.Sequential`` with pooling and element-wise layers.

Oracles, none of them the explorer's code:
- torch autograd: the Jacobian of the original model's convolutional part with its element-wise
  layers removed and max pooling replaced by torch's average pooling of the same windows (the
  stack is then linear and its gradient is non-zero exactly on a neuron's input set);
- one-hot probing of the original model itself (ReLU, max pooling and all) with positive weights
  and zero biases: an output is positive exactly when the probed input is in its input set;
- onnxruntime, probing the shared model's convolutional part (weights made positive) the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper
from test_network_onnx import export

import convmatrix
from convmatrix.explorer.models import from_torch

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)
HEAD = (nn.Flatten, nn.Linear)


def ids(prefix, shape, flat):
    """Neuron ids of flat indices, written by the test (C order, as CONTRACT.md states)."""
    return {":".join([prefix, *map(str, c)]) for c in zip(*np.unravel_index(np.asarray(flat, int), shape))}


def conv_part(model):
    """The model's layers before its head, element-wise ones removed, max pooling as torch's
    average pooling over the same windows (the linear stack the autograd oracle needs)."""
    out = []
    for m in model:
        if isinstance(m, HEAD):
            break
        if isinstance(m, ELEMENTWISE):
            continue
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            avg = nn.AvgPool1d if isinstance(m, nn.MaxPool1d) else nn.AvgPool2d
            m = avg(m.kernel_size, m.stride, m.padding)
            m.windows_of_max = True
        out.append(m)
    return out


def jacobian(modules, shape):
    x = torch.zeros(1, *shape, dtype=torch.float64)
    f = nn.Sequential(*modules).double()
    J = torch.autograd.functional.jacobian(lambda t: f(t).reshape(-1), x)
    return J.reshape(J.shape[0], -1).numpy()


def positive(model):
    """Positive weights, zero biases, batch norm as the identity times a positive scale."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.rand_like(p) + 0.5 if name.endswith("weight") else torch.zeros_like(p))
    return model.eval()


def probe(model, shape):
    """Which inputs each output of the model's body depends on: f(e_j) > f(0) for every one-hot
    e_j (positive weights, monotone activations, max pooling of what grows), in one batch."""
    f = nn.Sequential(*[m for m in model][:next(i for i, m in enumerate(model) if isinstance(m, HEAD))]) \
        if any(isinstance(m, HEAD) for m in model) else model
    n = int(np.prod(shape))
    with torch.no_grad():
        y = f(torch.eye(n, dtype=torch.float32).reshape(n, *shape)) - f(torch.zeros(1, *shape))
    return (y.reshape(n, -1).numpy() > 0).T  # (outputs, inputs)


def cnn2d():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4, eps=0.0), nn.ReLU(),  # eps 0: folds exactly
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2), nn.Dropout(0.5),
        nn.Conv2d(4, 3, 1), nn.Sigmoid(), nn.Flatten(), nn.Linear(12, 5))


def cnn1d():
    return nn.Sequential(
        nn.Conv1d(1, 2, 3, padding=1), nn.Tanh(),
        nn.ConvTranspose1d(2, 2, 3, stride=2, padding=1, output_padding=1),
        nn.AvgPool1d(2), nn.MaxPool1d(2, stride=1), nn.Conv1d(2, 1, 2))


MODELS = {"cnn2d": (cnn2d, (2, 16, 16)), "cnn1d": (cnn1d, (1, 10))}


def check_fields(stack, modules, shape, rng, n=4):
    """Deep neurons' input sets (in the input map) against the autograd Jacobian."""
    J = jacobian(modules, shape)
    out_prefix, out_shape = stack.maps[-1]
    picks = {0, J.shape[0] - 1, *rng.choice(J.shape[0], size=min(n, J.shape[0]), replace=False).tolist()}
    for r in sorted(picks):
        field = stack.neuron(next(iter(ids(out_prefix, out_shape, [r]))), fields=True)["field"]
        assert set(field[0]["ids"]) == ids("in", shape, np.flatnonzero(J[r])), r
    return J


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_and_sequential_stacks_match_autograd(tmp_path, rng, name):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    export(model, shape, tmp_path / "m.onnx", dynamic=name == "cnn2d")
    modules = conv_part(model)
    for ex in (convmatrix.explore(str(tmp_path / "m.onnx")), convmatrix.explore(model, shape)):
        stack = ex.stack
        assert len(stack.layers) == len(modules)
        # every layer is the torch layer's own Jacobian (max pooling: its window pattern)
        in_shape = shape
        for i, (lay, mod) in enumerate(zip(stack.layers, modules)):
            Jl = jacobian([mod], in_shape)
            got = np.zeros(Jl.shape)
            for r, c, _, v in stack.window(i, 0, Jl.shape[0], 0, Jl.shape[1], limit=None)["entries"]:
                got[r, c] = v
            if getattr(mod, "windows_of_max", False):  # max pooling: its window pattern, weight 1
                np.testing.assert_array_equal(got, (Jl != 0).astype(float))
            else:
                np.testing.assert_allclose(got, Jl, rtol=1e-5, atol=1e-7)
            in_shape = tuple(lay.geom.output_shape)
        J = check_fields(stack, modules, shape, rng)
    # the original model (ReLU, max pooling, ...) probed with positive weights: the same sets
    np.testing.assert_array_equal(probe(positive(make()), shape), J != 0)
    model_notes = convmatrix.explore(str(tmp_path / "m.onnx")).stack.summary()["model"]
    assert model_notes["source"] == "m.onnx"
    if name == "cnn2d":
        assert [s.split(" (")[1] for s in model_notes["left_out"]] == ["Flatten)", "Gemm)"]
        assert {s.split(" (")[1] for s in model_notes["skipped"]} == {"Relu)", "LeakyRelu)", "Sigmoid)"}
        # batch norm folded into the conv by the exporter, dropout dropped in eval mode


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_elementwise_arithmetic_and_same_padding(tmp_path, rng):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            y = torch.clamp(self.a(x) * 0.5 + 1.0, 0, 6) / 2.0 - 0.25
            return torch.relu(self.b(y))

    net = Net().eval()
    export(net, (1, 7, 7), tmp_path / "m.onnx", dynamic=False)
    stack = convmatrix.explore(str(tmp_path / "m.onnx")).stack
    ops = {s.split(" (")[1].rstrip(")") for s in stack.model["skipped"]}
    assert {"Mul", "Add", "Clip", "Div", "Sub", "Relu"} <= ops
    check_fields(stack, [net.a, net.b], (1, 7, 7), rng)
    # ONNX's asymmetric 'same' padding (stride 1, the odd pad at the end) is torch's padding='same'
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1])
    path = tmp_path / "same.onnx"
    onnx.save(_model([conv], [1, 1, 4, 4], [1, 1, 4, 4], [numpy_helper.from_array(w, "w")]), path)
    stack = convmatrix.explore(str(path)).stack
    assert stack.layers[0].spec["padding"] == "same"
    m = nn.Conv2d(1, 1, 2, padding="same", bias=False)
    check_fields(stack, [m], (1, 4, 4), rng)


def test_shared_model_fields_match_onnxruntime(shared_dir, rng, tmp_path):
    import onnxruntime as ort

    path = os.path.join(shared_dir, "models", "cifar_base_kw.onnx")
    if not os.path.exists(path):
        pytest.skip("cifar_base_kw.onnx absent")
    stack = convmatrix.explore(path).stack
    assert [p for p, _ in stack.maps] == ["in", "h1", "out"] and stack.maps[0][1] == (3, 32, 32)
    assert [s.split(" (")[1] for s in stack.model["left_out"]] == ["Flatten)", "Gemm)", "Relu)", "Gemm)"]
    # the oracle: the file's conv part (cut before Flatten), weights made positive, biases zero,
    # a free batch axis; onnxruntime runs it on every one-hot input at once
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    flatten = next(n for n in m.graph.node if n.op_type == "Flatten")
    cut = onnx.utils.Extractor(m).extract_model([m.graph.input[0].name], [flatten.input[0]])
    for t in cut.graph.initializer:
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.abs(a) + 0.1 if a.ndim > 1 else np.zeros_like(a), t.name))
    for vi in (cut.graph.input[0], cut.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    sess = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    n = 3 * 32 * 32
    y = sess.run(None, {cut.graph.input[0].name: np.eye(n, dtype=np.float32).reshape(n, 3, 32, 32)})[0]
    P = y.reshape(n, -1).T > 0
    out_shape = stack.maps[-1][1]
    assert P.shape[0] == int(np.prod(out_shape))
    for r in [0, P.shape[0] - 1, *rng.choice(P.shape[0], size=4, replace=False).tolist()]:
        field = stack.neuron(next(iter(ids("out", out_shape, [r]))), fields=True)["field"]
        assert set(field[0]["ids"]) == ids("in", (3, 32, 32), np.flatnonzero(P[r])), r


# ------------------------------------------------------------------------ refusals
def _model(nodes, in_dims, out_dims, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_dims)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return x + self.c(x)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


@pytest.mark.parametrize("make, match", [
    (Residual, r"'.*' \(Add\) joins 2 tensors .*the explorer shows chains of layers"),
    (Concat, r"'.*' \(Conv\) reads 'x' \(Input\), which another node already read.*chains of layers"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(dim=1), nn.Conv2d(2, 1, 1)),
     r"ONNX node #1 .*\(Softmax\): Softmax is not piecewise linear"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(25, 2)),
     r"bad.onnx: no convolution or pooling before .*\(Flatten\): nothing to explore"),
])
def test_onnx_refusals_name_the_node(tmp_path, make, match):
    export(make().eval(), (1, 5, 5), tmp_path / "bad.onnx", dynamic=False)
    with pytest.raises(ValueError, match=match):
        convmatrix.explore(str(tmp_path / "bad.onnx"))


@pytest.mark.parametrize("attrs, match", [
    (dict(pads=[0, 0, 1, 1], strides=[2, 2]), r"'c' \(Conv\): asymmetric pads \[0, 0\] \(begin\) / \[1, 1\]"),
    (dict(auto_pad="SAME_LOWER"), r"'c' \(Conv\): asymmetric pads \[1, 1\] \(begin\) / \[0, 0\]"),
])
def test_onnx_asymmetric_pads(tmp_path, attrs, match):
    w = numpy_helper.from_array(np.ones((1, 1, 2, 2), dtype=np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)
    onnx.save(_model([node], [1, 1, 6, 6], None, [w]), tmp_path / "pads.onnx")
    with pytest.raises(ValueError, match=match):
        convmatrix.explore(str(tmp_path / "pads.onnx"))


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Conv2d(1, 1, 2), nn.MaxPool2d(2, ceil_mode=True)),
     r"'1' \(MaxPool2d\): asymmetric pads \[0, 0\] \(begin\) / \[1, 1\] \(end\)"),  # ceil_mode's extra window
    (nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(1, 1, 2)), r"'0' \(ZeroPad2d\): asymmetric pads"),
    (nn.Sequential(nn.Conv2d(1, 1, 2), nn.Upsample(scale_factor=2)), r"'1' \(Upsample\) is not a convolution, pool"),
    (nn.Sequential(nn.ReLU(), nn.Flatten()), "holds no convolution"),
])
def test_sequential_refusals(model, match):
    with pytest.raises(ValueError, match=match):
        convmatrix.explore(model, (1, 6, 6))


def test_onnx_input_shape_must_agree(tmp_path):
    export(nn.Sequential(nn.Conv2d(1, 1, 2)), (1, 4, 4), tmp_path / "m.onnx", dynamic=False)
    with pytest.raises(ValueError, match=r"input_shape \(1, 5, 5\) does not fit input 'x' of shape \[1, 1, 4, 4\]"):
        convmatrix.explore(str(tmp_path / "m.onnx"), (1, 5, 5))
    with pytest.raises(ValueError, match="no such ONNX file"):
        convmatrix.explore(str(tmp_path / "missing.onnx"))


def test_sequential_pooling_and_head():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.AvgPool2d(2, divisor_override=1),
                        nn.Flatten(), nn.Linear(18, 2))
    m = from_torch(net, (1, 8, 8))
    assert [s["weight"] for s in m.layers] == ["2x1x3x3", "2x1x2x2"] and m.layers[1]["groups"] == "2"
    assert m.skipped == ["'0.1' (ReLU)"] and m.left_out == ["'2' (Flatten)", "'3' (Linear)"]
    np.testing.assert_array_equal(m.weights[1], np.ones((2, 1, 2, 2)))  # divisor_override=1: sums


# ------------------------------------------------------------------------------ CLI
def test_cli_onnx_page_and_refusal(tmp_path):
    torch.manual_seed(0)
    export(cnn2d().eval(), (2, 16, 16), tmp_path / "m.onnx")
    out = tmp_path / "m.html"
    r = subprocess.run([sys.executable, "-m", "convmatrix", "explore", str(tmp_path / "m.onnx"), "--no-browser",
                        "-o", str(out)], capture_output=True, text=True, env=os.environ, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "left out (after the convolutional part): " in r.stdout and "(Gemm)" in r.stdout
    assert "2x16x16 -> 4x8x8 -> 4x4x4 -> 4x4x4 -> 4x2x2 -> 3x2x2" in r.stdout
    page = out.read_text()
    assert '"out:2:1:1"' in page and "AveragePool" in page
    export(Residual().eval(), (1, 5, 5), tmp_path / "res.onnx", dynamic=False)
    r = subprocess.run([sys.executable, "-m", "convmatrix", "explore", str(tmp_path / "res.onnx"), "-o",
                        str(tmp_path / "x.html")], capture_output=True, text=True, env=os.environ, timeout=120)
    assert r.returncode == 2 and "chains of layers" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_served_model_summary_and_field(tmp_path):
    import warnings

    torch.manual_seed(0)
    net = cnn2d().eval()
    export(net, (2, 16, 16), tmp_path / "m.onnx")
    with warnings.catch_warnings():  # starlette's notice about its httpx client
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        client = TestClient(convmatrix.explore(str(tmp_path / "m.onnx")).app())
    with client as c:
        summary = c.get("/api/summary").json()
        assert summary["model"]["left_out"][0].endswith("(Flatten)")
        assert "window pattern" in summary["layers"][1]["spec"]["label"]
        field = c.get("/api/neuron", params={"neuron": "out:0:1:1", "field": "1"}).json()["field"]
    J = jacobian(conv_part(net), (2, 16, 16))
    r = int(np.ravel_multi_index((0, 1, 1), (3, 2, 2)))
    assert set(field[0]["ids"]) == ids("in", (2, 16, 16), np.flatnonzero(J[r]))
