"""ONNX in and out, checked with onnxruntime: real published models, models exported by torch,
hand-written graphs (exporter idioms, dynamic batch), and bad files."""

import glob
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from convmatrix.network import load, lower, relu_only
from convmatrix.network.export import write_onnx, write_npz, read_npz, write_pt, read_pt

ALLOWED_OPS = {"Flatten", "Reshape", "Gemm", "MatMul", "Add", "Relu"}


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def inputs_for(path, n=3, seed=0):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = sess.get_inputs()[0].shape
    shape = [d if isinstance(d, int) else n for d in dims]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def convert_and_check(src, dst, rtol=2e-5):
    """Lower src to a Gemm/Relu chain, write it, compare both files under onnxruntime."""
    chain = lower(relu_only(load(src)))
    write_onnx(chain, dst)
    model = onnx.load(str(dst))
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    orig = onnx.load(str(src))
    data = [i for i in orig.graph.input if i.name not in {t.name for t in orig.graph.initializer}][0]
    assert model.graph.input[0].name == data.name and model.graph.output[0].name == orig.graph.output[0].name
    dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
    assert dims(model.graph.input[0]) == [d if d else "N" for d in dims(data)]
    x = inputs_for(src)
    want, got = ort_run(src, x), ort_run(dst, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))
    return chain


# -- the real published models ----------------------------------------------------------

SMALL_SHARED = ["cifar_base_kw.onnx", "cifar_deep_kw.onnx", "cifar_wide_kw.onnx", "Convnet_avgpool.onnx",
                "test_small.onnx"]


@pytest.mark.parametrize("name", SMALL_SHARED)
def test_shared_model_to_gemm_relu_chain(shared_dir, tmp_path, name):
    src = os.path.join(shared_dir, "models", name)
    if not os.path.exists(src):
        pytest.skip(f"{name} absent")
    convert_and_check(src, tmp_path / "fc.onnx")


def test_shared_maxpool_model_exact_as_sparse_chain(shared_dir, tmp_path):
    """Convnet_maxpool's dense chain is 1.66 GB: check the sparse chain (npz) against onnxruntime."""
    src = os.path.join(shared_dir, "models", "Convnet_maxpool.onnx")
    if not os.path.exists(src):
        pytest.skip("Convnet_maxpool.onnx absent")
    chain = lower(relu_only(load(src)))
    assert chain.kinds == ["ReLU"] and len(chain.layers) == 6  # 5 ReLU layers (conv+relu+16-way max), Gemm
    write_npz(chain, tmp_path / "fc.npz")
    back = read_npz(tmp_path / "fc.npz")
    x = inputs_for(src)
    want = ort_run(src, x)
    got = back.evaluate(x.reshape(len(x), -1).astype(np.float64)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_test_small_keeps_rank1_input(shared_dir, tmp_path):
    src = os.path.join(shared_dir, "models", "test_small.onnx")
    if not os.path.exists(src):
        pytest.skip("test_small.onnx absent")
    convert_and_check(src, tmp_path / "fc.onnx")
    model = onnx.load(str(tmp_path / "fc.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1]


# -- models torch builds and exports -------------------------------------------------------

class ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):  # (N, H, W, C)
        return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).flatten(1))


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        return torch.relu(x + self.bn(self.c2(torch.relu(self.c1(x)))))


class Reshaper(nn.Module):
    """x.view(x.size(0), -1): exporters emit Shape/Gather/Unsqueeze/Concat -> Reshape."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 2, stride=2), nn.Linear(2 * 3 * 3, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


def _bn(m):
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5), mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


EXPORTED = {
    "lenet_maxpool": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3),
                                            nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(4 * 2 * 2, 5), nn.ReLU(), nn.Linear(5, 3)), (1, 12, 12)),
    "bn_avgpool": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                         nn.AvgPool2d(3, 2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                         nn.Linear(3, 2)), (2, 7, 7)),
    "residual": (ResBlock, (2, 5, 5)),
    "depthwise_separable": (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, groups=3, padding=1), nn.BatchNorm2d(3),
                                                  nn.ReLU(), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
                                                  nn.Conv2d(4, 4, 3, stride=2, groups=4), nn.ReLU()), (3, 7, 7)),
    "channels_last": (ChannelsLast, (5, 5, 3)),
    "conv1d_audio": (lambda: nn.Sequential(nn.Conv1d(1, 3, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool1d(2),
                                           nn.Conv1d(3, 3, 3, dilation=2, padding=2), nn.PReLU(), nn.Flatten(),
                                           nn.Linear(3 * 8, 2)), (1, 32)),
    "decoder": (lambda: nn.Sequential(nn.Linear(4, 2 * 2 * 2), nn.ReLU(), nn.Unflatten(1, (2, 2, 2)),
                                      nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                                      nn.ConvTranspose2d(2, 1, 2, stride=2)), (4,)),
    "reshape_chain": (Reshaper, (1, 6, 6)),
}


def export(model, shape, path, dynamic=True, opset=13):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, *shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=opset,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None)


@pytest.mark.parametrize("case", sorted(EXPORTED))
def test_exported_model_converts_exactly(tmp_path, case):
    make, shape = EXPORTED[case]
    torch.manual_seed(0)
    model = _bn(make())
    export(model, shape, tmp_path / "cnn.onnx", dynamic=case != "decoder", opset=9 if case == "lenet_maxpool" else 13)
    chain = convert_and_check(tmp_path / "cnn.onnx", tmp_path / "fc.onnx")
    x = torch.randn(4, *shape)
    with torch.no_grad():  # and against torch itself
        want = model(x).numpy()
    got = ort_run(tmp_path / "fc.onnx", x.numpy()) if case != "decoder" else \
        np.stack([ort_run(tmp_path / "fc.onnx", x[i:i + 1].numpy())[0] for i in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert chain.kinds == ["ReLU"]


def test_written_pt_and_npz_match(tmp_path):
    torch.manual_seed(1)
    model = _bn(EXPORTED["residual"][0]())
    export(model, (2, 5, 5), tmp_path / "cnn.onnx")
    chain = lower(load(tmp_path / "cnn.onnx"))
    write_pt(chain, tmp_path / "fc.pt")
    raw = torch.load(tmp_path / "fc.pt", weights_only=True)  # no pickled code needed
    assert raw["format"] == "convmatrix-mlp/1"
    mlp = read_pt(tmp_path / "fc.pt")
    x = torch.randn(3, 1, 2, 5, 5)
    with torch.no_grad():
        want = model(x[:, 0]).numpy()
        got = mlp(x[:, 0]).numpy()  # (N, C, H, W) in, (N, C, H, W) out: the batch axis is torch's
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    write_npz(chain, tmp_path / "fc.npz")
    z = np.load(tmp_path / "fc.npz")
    import scipy.sparse as sp
    h = x.reshape(3, -1).double().numpy()
    for i in range(int(z["layers"])):  # an independent reader of the npz layout
        M = sp.csr_array((z[f"M{i}_data"], z[f"M{i}_indices"], z[f"M{i}_indptr"]), shape=tuple(z[f"M{i}_shape"]))
        h = (M @ h.T).T + z[f"b{i}"]
        if str(z[f"act{i}"]) == "ReLU":
            h = np.maximum(h, 0)
    np.testing.assert_allclose(h.reshape(want.shape), want, rtol=1e-5, atol=1e-5)


# -- hand-written graphs: exporter idioms -----------------------------------------------

def _model(nodes, inp, out, inits, opset=13):
    g = helper.make_graph(nodes, "g", [inp], [out], [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _save_check(model, tmp_path, x):
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    want = ort_run(src, x)
    g = load(src)
    np.testing.assert_allclose(g.evaluate(x.reshape(len(x), -1).astype(np.float64)).reshape(want.shape), want,
                               rtol=1e-5, atol=1e-5)
    return convert_and_check(src, tmp_path / "fc.onnx")


def test_normalise_transpose_matmul_add_dynamic_batch(tmp_path, rng):
    """Sub/Div input normalisation, channels-last Transpose, asymmetric Conv pads, Reshape through
    Shape/Gather/Unsqueeze/Concat, MatMul+Add, Squeeze/Unsqueeze, Pad (opset 13 inputs)."""
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"]),
        helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("Transpose", ["b"], ["c"], perm=[0, 3, 1, 2]),
        helper.make_node("Pad", ["c", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w", "cb"], ["d"], pads=[1, 0, 0, 1], strides=[2, 1]),
        helper.make_node("Relu", ["d"], ["e"]),
        helper.make_node("Shape", ["e"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["e", "target"], ["f"]),
        helper.make_node("Unsqueeze", ["f", "ax1"], ["f1"]),
        helper.make_node("Squeeze", ["f1", "ax1"], ["f2"]),
        helper.make_node("MatMul", ["f2", "W"], ["g"]),
        helper.make_node("Add", ["g", "B"], ["h"]),
        helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.2),
    ]
    inits = {"mean": f32(3), "std": np.abs(f32(3)) + 0.5, "w": f32(2, 3, 2, 2), "cb": f32(2),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "zero": np.array(0, dtype=np.int64),
             "ax0": np.array([0], dtype=np.int64), "ax1": np.array([1], dtype=np.int64),
             "minus1": np.array([-1], dtype=np.int64), "W": f32(2 * 4 * 7, 3), "B": f32(3)}
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5, 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    chain = _save_check(_model(nodes, inp, out, inits), tmp_path, f32(4, 6, 5, 3))
    assert chain.input_shape == (1, 6, 5, 3)


def test_opset9_pad_sum_concat_pools(tmp_path, rng):
    """Pad with attributes (opset 9), two-branch Concat, AveragePool with count_include_pad and
    ceil_mode, MaxPool with auto_pad SAME_UPPER, GlobalAveragePool, Gemm with transB=0 and alpha."""
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    nodes = [
        helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 2, 0, 0, 0, 1], mode="constant", value=0.5),
        helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Concat", ["a", "m"], ["c"], axis=1),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "W", "B"], ["y"], alpha=0.5, beta=2.0),
    ]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 5])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    _save_check(_model(nodes, inp, out, {"W": f32(4, 3), "B": f32(3)}, opset=9), tmp_path, f32(1, 2, 6, 5))


def test_average_pool_ceil_mode_like_onnxruntime(tmp_path, rng):
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2], strides=[2], dilations=[2], ceil_mode=1),
             helper.make_node("Concat", ["a", "m"], ["y"], axis=2)]
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    _save_check(_model(nodes, inp, out, {}, opset=13), tmp_path, f32(1, 2, 8))


# -- bad input ------------------------------------------------------------------------------

def test_unsupported_op_names_itself_and_place(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Softmax", ["r"], ["y"], name="probabilities")]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), {})
    with pytest.raises(ValueError, match=r"ONNX node #1 'probabilities' \(Softmax\): Softmax is not piecewise linear.*--drop-final softmax"):
        load(model)


def test_batch_mixing_transpose_is_refused_with_dynamic_batch():
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "N"]), {})
    with pytest.raises(ValueError, match=r"\(Transpose\): Transpose with perm \[1, 0\] moves an operation over the batch axis"):
        load(model)


def test_product_of_inputs_is_refused():
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"])]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), {})
    with pytest.raises(ValueError, match=r"\(Mul\): Mul of two values that both depend on the input is not affine"):
        load(model)


def test_truncated_and_garbage_files(tmp_path, shared_dir):
    src = sorted(glob.glob(os.path.join(shared_dir, "models", "cifar_base_kw.onnx")))
    data = open(src[0], "rb").read() if src else b""
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"truncated.onnx: not a readable ONNX model"):
        load(bad)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(ValueError, match=r"junk.onnx: not a readable ONNX model"):
        load(junk)
    with pytest.raises(ValueError, match=r"missing.onnx: no such ONNX file"):
        load(tmp_path / "missing.onnx")


def test_non_relu_activation_cannot_be_written_as_gemm_relu(tmp_path):
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"])]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]), {})
    with pytest.raises(ValueError, match=r"layer 1 has a Sigmoid activation.*--format pt or npz"):
        write_onnx(lower(load(model)), tmp_path / "fc.onnx")


def test_chain_ending_in_relu_ends_with_relu_node(tmp_path, rng):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["y"])]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
                   {"W": rng.standard_normal((2, 3)).astype(np.float32)})
    _save_check(model, tmp_path, rng.standard_normal((5, 3)).astype(np.float32))
    assert [n.op_type for n in onnx.load(str(tmp_path / "fc.onnx")).graph.node] == ["Gemm", "Relu"]


def test_nearest_resize_and_cast(tmp_path, rng):
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Relu", ["r"], ["y"])]
    model = _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3]),
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6]),
                   {"scales": np.array([1, 1, 2, 2], dtype=np.float32)})
    _save_check(model, tmp_path, rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    linear = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
                    helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4]),
                    {"scales": np.array([1, 1, 2, 2], dtype=np.float32)})
    _save_check(linear, tmp_path, rng.standard_normal((1, 1, 2, 2)).astype(np.float32))  # interpolation: affine


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_pool_output_sizes_and_values_like_onnxruntime(op):
    """ceil_mode, pads, count_include_pad / dilations: onnxruntime's kernels are the reference."""
    import itertools

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's shape inference disagrees with its own kernel here
    rng = np.random.default_rng(3)
    for k, s, p, n, ceil, extra in itertools.product([2, 3], [1, 2, 3], [0, 1], [5, 6], [0, 1], [0, 1]):
        attrs = dict(kernel_shape=[k], strides=[s], pads=[p, p], ceil_mode=ceil)
        attrs.update(count_include_pad=extra) if op == "AveragePool" else attrs.update(dilations=[1 + extra])
        model = _model([helper.make_node(op, ["x"], ["y"], **attrs)],
                       helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n]),
                       helper.make_tensor_value_info("y", TensorProto.FLOAT, None), {}, opset=19)
        x = rng.standard_normal((1, 1, n)).astype(np.float32)
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        want = sess.run(None, {"x": x})[0].ravel()
        got = load(model).evaluate(x.reshape(1, -1).astype(np.float64)).ravel()
        assert got.shape == want.shape, attrs
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=str(attrs))
