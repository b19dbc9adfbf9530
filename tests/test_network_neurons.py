"""Neurons of hidden layers of whole models (torch and ONNX) against autograd, forward hooks and onnxruntime.

Oracles: torch autograd (where d layer_output[i] / d x is non-zero: the input set, with positive
weights and inputs so no ReLU is inactive and nothing cancels; through max pooling the gradient
takes one input per window, a subset), torch forward hooks (the layer's output, before and after
its activation) and onnxruntime (the same tensors, made graph outputs).
"""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import convmatrix


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x):
        return self.act2(self.conv2(self.act1(self.conv1(x))) + x)


# name -> (model, input shape, layers to ask (the module whose output is the neuron), has max pooling)
MODELS = {
    "sequential": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, stride=2),
                                         nn.Sigmoid(), nn.Flatten(), nn.Linear(8, 4), nn.ReLU()),
                   (1, 6, 6), ["0", "2", "5"], False),
    "residual": (Residual, (2, 5, 5), ["conv1", "conv2"], False),
    "maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 2),
                                      nn.LeakyReLU(0.1)), (1, 8, 8), ["0", "2", "3"], True),
    "depthwise": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4,
                                        padding=1), nn.Tanh()), (2, 6, 6), ["0", "2"], False),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3, dilation=2), nn.ReLU(), nn.AvgPool1d(2),
                                     nn.Conv1d(2, 1, 2, stride=2)), (1, 12), ["0", "3"], False),
}


def positive(model):
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.05, 0.2)  # small: a saturated sigmoid's gradient would round to 0
    return model


def grad_support(model, layer, shape, i):
    x = (torch.rand((1, *shape), dtype=torch.float64) + 0.5).requires_grad_(True)
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.update(out=out))
    model(x)
    handle.remove()
    (g,) = torch.autograd.grad(seen["out"].reshape(-1)[i], x)
    return np.flatnonzero(g.numpy().ravel())


def hooked(model, layers, x):
    """Every named module's output for the batch x (torch forward hooks)."""
    seen, handles = {}, []
    for name in layers:
        handles.append(model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(name, out.detach().reshape(len(x), -1).numpy())))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def following(model, name):
    """The module after ``name`` in a Sequential (or conv1 -> act1 in Residual)."""
    names = [n for n, _ in model.named_children()]
    return names[names.index(name) + 1] if name in names and names.index(name) + 1 < len(names) else None


def export(model, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.float().eval(), (torch.randn(1, *shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=13,
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model.double()
    return str(path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_sets_equal_autograd_support(name, rng):
    make, shape, layers, has_max = MODELS[name]
    model = positive(make())
    for layer in layers:
        with torch.no_grad():
            n_out = hooked(model, [layer], torch.zeros((1, *shape), dtype=torch.float64))[layer].shape[1]
        for i in sorted({0, n_out - 1, int(rng.integers(n_out))}):
            n = convmatrix.neuron(model, shape, i, layer=layer)
            support = grad_support(model, layer, shape, i)
            if has_max:  # the gradient takes one input per window: a subset of the exact set
                assert set(support) <= set(n.inputs.tolist()) and len(support) > 0
            else:
                np.testing.assert_array_equal(n.inputs, support)
            assert n.row.shape[0] == 1 and n.layer == layer


@pytest.mark.parametrize("name", sorted(MODELS))
def test_values_equal_hooks_and_onnxruntime(name, tmp_path, rng):
    import onnxruntime as ort

    make, shape, layers, _ = MODELS[name]
    torch.manual_seed(0)
    model = make().double().eval()
    x = torch.as_tensor(rng.standard_normal((3, *shape)))
    path = export(model, shape, tmp_path / "m.onnx")  # (rounds the weights to float32, as the file holds them)
    proto = onnx.load(path)
    acts = {layer: following(model, layer) or {"conv1": "act1", "conv2": None}.get(layer) for layer in layers}
    seen = hooked(model, layers + [a for a in acts.values() if a], x)
    for layer in layers:
        i = int(rng.integers(seen[layer].shape[1]))
        n = convmatrix.neuron(model, shape, i, layer=layer)
        np.testing.assert_allclose(n.pre_activation(x), seen[layer][:, i], rtol=1e-10, atol=1e-12)
        if acts[layer] and n.activation not in (None, "Max"):
            np.testing.assert_allclose(n.output(x), seen[acts[layer]][:, i], rtol=1e-10, atol=1e-12)
        # the same neuron of the ONNX file: the node that computes this layer's output
        mod = model.get_submodule(layer)
        op = {"Conv2d": "Conv", "Conv1d": "Conv", "Linear": "Gemm", "MaxPool2d": "MaxPool"}[type(mod).__name__]
        k = [n for n, m in model.named_modules() if type(m) is type(mod)].index(layer)
        onnx_node = [nd for nd in proto.graph.node if nd.op_type == op][k]
        m = convmatrix.neuron(path, None, i, layer=onnx_node.name)
        np.testing.assert_array_equal(m.inputs, n.inputs)
        assert m.activation == n.activation
        outs = [onnx_node.output[0]]
        after = [nd for nd in proto.graph.node if onnx_node.output[0] in nd.input]
        if m.activation not in (None, "Max") and len(after) == 1:
            outs.append(after[0].output[0])
        extra = onnx.load(path)
        extra.graph.output.extend([onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outs])
        sess = ort.InferenceSession(extra.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(outs, {"x": x.float().numpy()})
        np.testing.assert_allclose(m.pre_activation(x.float()), got[0].reshape(len(x), -1)[:, i], rtol=1e-4,
                                   atol=1e-5)
        if len(outs) > 1:
            np.testing.assert_allclose(m.output(x.float()), got[1].reshape(len(x), -1)[:, i], rtol=1e-4, atol=1e-5)


def test_activation_layer_names_the_neuron_after_it():
    model = MODELS["sequential"][0]().double().eval()
    a, b = convmatrix.neuron(model, (1, 6, 6), 7, layer="1"), convmatrix.neuron(model, (1, 6, 6), 7, layer="0")
    assert a.activation == b.activation == "ReLU" and a.row.nnz == b.row.nnz
    assert (a.row != b.row).nnz == 0 and a.number == 2 and b.number == 1
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    np.testing.assert_array_equal(a.output(x), np.maximum(b.pre_activation(x), 0))
    text = str(a)
    assert "activation: ReLU" in text and "depends on" in text and "row of the matrix of '0' (Conv2d)" in text


def test_bad_layer_and_index():
    model = MODELS["maxpool"][0]().eval()
    with pytest.raises(ValueError, match=r"layer 'nope' is not a layer of the model; valid layers .*1 '0' \(Conv2d\)"):
        convmatrix.neuron(model, (1, 8, 8), 0, layer="nope")
    with pytest.raises(ValueError, match=r"layer 9 is not a layer of the model; valid layers"):
        convmatrix.neuron(model, (1, 8, 8), 0, layer=9)
    with pytest.raises(ValueError, match=r"index_or_coords must be a flat index in \[0, 72\)"):
        convmatrix.neuron(model, (1, 8, 8), 72, layer="0")
    with pytest.raises(ValueError, match="bias, activation and conv options come from the model"):
        convmatrix.neuron(model, (1, 8, 8), 0, layer="0", activation="relu")


def test_single_layer_activation():
    w = np.arange(1.0, 9.0).reshape(2, 1, 2, 2) - 4.0
    n = convmatrix.neuron(w, (1, 3, 3), 1, bias=np.array([0.5, -1.0]), activation="relu")
    x = np.random.default_rng(0).standard_normal((5, 1, 3, 3))
    y = torch.nn.functional.conv2d(torch.as_tensor(x), torch.as_tensor(w), torch.tensor([0.5, -1.0], dtype=torch.float64))
    np.testing.assert_allclose(n.pre_activation(x), y.reshape(5, -1)[:, 1].numpy(), rtol=1e-12)
    np.testing.assert_allclose(n.output(x), torch.relu(y).reshape(5, -1)[:, 1].numpy(), rtol=1e-12)
    assert n.output_formula == "a[0,0,1] = ReLU(y[0,0,1])" and "a[0,0,1] = ReLU(y[0,0,1])" in str(n)
    with pytest.raises(ValueError, match=r"activation must be one of \[.*'relu'.*\], got 'swish2'"):
        convmatrix.neuron(w, (1, 3, 3), 1, activation="swish2")
    with pytest.raises(ValueError, match="pre_activation needs the weight's numbers"):
        convmatrix.neuron((2, 1, 2, 2), (1, 3, 3), 1).pre_activation(x)


def test_cli_model_neuron(tmp_path, capsys):
    from convmatrix.cli import main

    def cli(*args):  # in-process: the CLI's own main, its stdout, stderr and exit status
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's errors
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    model = MODELS["maxpool"][0]().double().eval()
    path = export(model, (1, 8, 8), tmp_path / "m.onnx")
    conv = next(nd.name for nd in onnx.load(path).graph.node if nd.op_type == "Conv")
    r = cli("neuron", path, "0,1,1", "--layer", conv)
    assert r.returncode == 0, r.stderr
    want = convmatrix.neuron(model, (1, 8, 8), (0, 1, 1), layer="0").inputs.tolist()
    assert "activation: ReLU" in r.stdout and f"depends on {len(want)} of 64 network inputs: " \
        + ", ".join(map(str, want)) in r.stdout
    r = cli("neuron", path, "0", "--layer", "99")
    assert r.returncode == 2 and "layer '99' is not a layer of the model; valid layers" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("neuron", path, "0")
    assert r.returncode == 2 and "needs --layer L" in r.stderr
    r = cli("neuron", "2x1x2x2", "1x3x3", "1", "--activation", "relu")
    assert r.returncode == 0 and "a[0,0,1] = ReLU(y[0,0,1])" in r.stdout
    r = cli("neuron", "2x1x2x2", "1x3x3", "1", "--activation", "nope")
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
