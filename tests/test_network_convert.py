"""The conversion pipeline (network.convert), its streaming writers and the smaller exact forms
(network.simplify), checked with onnxruntime on the original and with a dense NumPy forward."""

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.sparse as sp
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from convmatrix.network import export, load, lower, relu_only
from convmatrix.network import convert as pipeline
from convmatrix.network.check import ConversionError
from convmatrix.network.passes import Chain, Layer
from convmatrix.network.simplify import dense_size, simplify

ALLOWED_OPS = {"Flatten", "Reshape", "Gemm", "MatMul", "Add", "Relu"}


def export_onnx(model, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"])
    return path


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def dense_forward(layers, x):
    """An independent forward pass: dense float64 weights, ReLU where the layer says so."""
    z = np.asarray(x, np.float64)
    for M, b, relu in layers:
        z = z @ M.T + b
        z = np.maximum(z, 0) if relu else z
    return z


def as_dense(chain):
    return [(layer.M.toarray(), layer.b.copy(), layer.kind == "ReLU") for layer in chain.layers]


# -- smaller exact forms -------------------------------------------------------------------

@st.composite
def relu_chains(draw):
    """Small random ReLU chains with the structures simplify looks for: pass-through pairs
    ``v, -v`` read with opposite columns, rows that are never negative or never positive,
    empty rows (constants), unread neurons and layers without activation."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_layers = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 4))]
    layers = []
    for k in range(n_layers):
        n_in, n_out = widths[-1], draw(st.integers(1, 6))
        M = rng.integers(-2, 3, (n_out, n_in)).astype(float) * (rng.random((n_out, n_in)) < 0.6)
        b = rng.integers(-2, 3, n_out).astype(float)
        last = k == n_layers - 1
        for _ in range(0 if last else draw(st.integers(0, 4))):  # carried values: rows v, -v
            v = rng.integers(-2, 3, n_in).astype(float)
            c = float(rng.integers(-2, 3))
            M, b = np.vstack([M, v, -v]), np.r_[b, c, -c]
        for _ in range(0 if last else draw(st.integers(0, 3))):  # rows never negative on ReLU outputs
            M, b = np.vstack([M, np.abs(rng.integers(0, 3, n_in))]), np.r_[b, 1.0]
        if not last and draw(st.booleans()):  # a constant neuron
            M, b = np.vstack([M, np.zeros(n_in)]), np.r_[b, 2.0]
        kind = None if last or draw(st.integers(0, 4)) == 0 else "ReLU"
        layers.append([M, b, kind])
        widths.append(M.shape[0])
    for k in range(n_layers - 1):  # pair columns: the next layer reads relu(v) - relu(-v)
        M, b, kind = layers[k]
        nxt = layers[k + 1][0]
        for r in range(M.shape[0] - 1):
            if np.array_equal(M[r + 1], -M[r]) and b[r + 1] == -b[r] and M[r].any() and draw(st.integers(0, 3)):
                nxt[:, r + 1] = -nxt[:, r]
        if draw(st.booleans()):
            nxt[:, 0] = 0  # an unread neuron
    chain_layers = [Layer(sp.csr_array(M), b, kind) for M, b, kind in layers]
    return Chain(chain_layers, (widths[0],), (widths[-1],), {})


@given(relu_chains(), st.integers(0, 1000))
def test_simplify_matches_dense_forward(chain, seed):
    x = np.random.default_rng(seed).standard_normal((16, chain.layers[0].M.shape[1])) * 3
    want = dense_forward(as_dense(chain), x)
    small = simplify(chain)
    assert dense_size(small.layers) <= dense_size(chain.layers)
    assert small.layers[0].M.shape[1] == chain.layers[0].M.shape[1]
    assert small.layers[-1].M.shape[0] == chain.layers[-1].M.shape[0]
    np.testing.assert_allclose(dense_forward(as_dense(small), x), want, rtol=1e-12, atol=1e-9)


def test_simplify_drops_dead_and_carries_sources():
    E = np.eye(3)
    never_pos = np.array([[-1.0, 0, -2]])
    first = Layer(sp.csr_array(np.vstack([E, -E])), np.zeros(6), "ReLU")  # relu(x), relu(-x)
    # relu(x) again, then x - relu... : rows 3-5 are relu(x_j) - relu(-x_j) pairs of 2 values each
    mid = Layer(sp.csr_array(np.vstack([np.hstack([E, -E]), -np.hstack([E, -E]), np.hstack([never_pos, never_pos]),
                                        np.zeros((1, 6))])), np.r_[np.zeros(6), -1.0, 3.0], "ReLU")
    last = Layer(sp.csr_array(np.hstack([np.eye(3), -np.eye(3), np.ones((3, 1)), np.ones((3, 1))])), np.zeros(3))
    chain = Chain([first, mid, last], (3,), (3,), {})
    small = simplify(chain)
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(small.evaluate(x), x + 3)
    assert [layer.M.shape for layer in small.layers] == [(3, 3)]  # all of it is the affine map x + 3


@pytest.mark.parametrize("pool", [2, 3, 4])
def test_maxpool_chain_smaller_and_exact_under_onnxruntime(tmp_path, pool):
    """A max pool after conv+ReLU: the carried window values are read from the input instead."""
    torch.manual_seed(pool)
    model = nn.Sequential(nn.Conv2d(1, 4, 2), nn.ReLU(), nn.MaxPool2d(pool), nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.randn(1, 1, 13, 13))
    src = export_onnx(model, (1, 13, 13), tmp_path / "cnn.onnx")
    report = pipeline.convert(src, tmp_path / "fc.onnx", check=20)
    assert report.dense_bytes < report.dense_bytes_before
    assert report.dense_bytes == export.dense_bytes(report.chain)
    assert "simplified from" in str(report) and report.checked == 20
    out = onnx.load(str(tmp_path / "fc.onnx"))
    assert {n.op_type for n in out.graph.node} <= ALLOWED_OPS
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 1, 13, 13)).astype(np.float32)
        np.testing.assert_allclose(ort_run(tmp_path / "fc.onnx", x), ort_run(src, x), rtol=1e-5, atol=1e-5)


SHARED = ["cifar_base_kw.onnx", "cifar_deep_kw.onnx", "cifar_wide_kw.onnx", "Convnet_avgpool.onnx",
          "Convnet_maxpool.onnx", "test_small.onnx"]


@pytest.mark.parametrize("name", SHARED)
def test_shared_models_simplified_exactly(shared_dir, name):
    """Never more dense bytes; the sparse simplified chain agrees with onnxruntime on the original."""
    src = os.path.join(shared_dir, "models", name)
    if not os.path.exists(src):
        pytest.skip(f"{name} absent")
    chain = lower(relu_only(load(src)))
    small = simplify(chain)
    assert export.dense_bytes(small) <= export.dense_bytes(chain)
    if name == "Convnet_maxpool.onnx":
        assert export.dense_bytes(small) < 0.6 * export.dense_bytes(chain)
    assert small.kinds in ([], ["ReLU"]) and all(layer.index is None for layer in small.layers)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    dims = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    want = ort_run(src, x)
    got = small.evaluate(x.reshape(1, -1).astype(np.float64)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


# -- the pipeline and its streaming writers ---------------------------------------------------

@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 4),
                          nn.ReLU(), nn.Linear(4, 3))
    return export_onnx(model, (1, 8, 8), tmp_path_factory.mktemp("convert") / "lenet.onnx")


@pytest.mark.parametrize("external", [False, True])
def test_onnx_streamed_in_small_blocks(lenet, tmp_path, monkeypatch, external):
    """Row blocks of 64 bytes: the weights read back (onnx and onnxruntime) are the chain's."""
    monkeypatch.setattr(export, "BLOCK_BYTES", 64)
    chain = simplify(lower(relu_only(load(lenet))))
    places = export.write_onnx(chain, tmp_path / "fc.onnx", external=external)
    onnx.checker.check_model(str(tmp_path / "fc.onnx"))
    model = onnx.load(str(tmp_path / "fc.onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for i, layer in enumerate(chain.layers, 1):
        np.testing.assert_array_equal(weights[f"W{i}"], layer.M.toarray().astype(np.float32))
    assert os.path.exists(tmp_path / "fc.onnx.data") == external
    assert [p[0] for p in places] == [("fc.onnx.data" if external else "fc.onnx")] * len(chain.layers)
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    want = dense_forward(as_dense(chain), x.reshape(1, -1))
    np.testing.assert_allclose(ort_run(tmp_path / "fc.onnx", x), want, rtol=1e-5, atol=1e-5)
    view = export.onnx_view(chain, places)  # the check's model: the same weights, where they lie
    onnx.save(view, str(tmp_path / "view.onnx"))
    np.testing.assert_array_equal(ort_run(tmp_path / "view.onnx", x), ort_run(tmp_path / "fc.onnx", x))


def test_nnet_streamed_in_small_blocks(lenet, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "BLOCK_BYTES", 40)
    report = pipeline.convert(lenet, tmp_path / "fc.nnet", check=4)
    layers = export.read_nnet(tmp_path / "fc.nnet")
    for (W, b), layer in zip(layers, report.chain.layers):
        np.testing.assert_array_equal(W, layer.M.toarray())
        np.testing.assert_array_equal(b, layer.b)


def test_failed_check_writes_nothing(lenet, tmp_path, monkeypatch):
    """A wrong chain (a perturbed bias) is caught by the check on the written file: no file left."""
    def wrong(*args, right=pipeline.lower_graph):
        chain = right(*args)
        chain.layers[-1].b = chain.layers[-1].b + 1.0
        return chain

    monkeypatch.setattr(pipeline, "lower_graph", wrong)
    with pytest.raises(ConversionError, match="check failed"):
        pipeline.convert(lenet, tmp_path / "fc.onnx", check=3)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, match", [({"check": -1}, "check must be >= 0"),
                                           ({"format": "tflite"}, "format must be one of"),
                                           ({"max_bytes": 10}, "would take about")])
def test_bad_arguments(lenet, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipeline.convert(lenet, tmp_path / "fc.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_wrong_types(lenet, tmp_path):
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        pipeline.convert(lenet, tmp_path / "fc.onnx", max_bytes="2GB")
    with pytest.raises(TypeError, match="check must be an int"):
        pipeline.convert(lenet, tmp_path / "fc.onnx", check=2.5)


def test_no_simplify_writes_the_lowered_chain(lenet, tmp_path):
    report = pipeline.convert(lenet, tmp_path / "fc.onnx", simplify=False, check=2)
    assert report.dense_bytes == report.dense_bytes_before == export.dense_bytes(lower(relu_only(load(lenet))))
    assert "simplified" not in str(report)


@pytest.mark.parametrize("pool, stride", [(4, 4), (3, 2), (4, 2)])
def test_every_pool_split_exact_under_onnxruntime(tmp_path, pool, stride):
    """max over k ReLU outputs = max over k/inner of relu(max over inner), for every split offered."""
    from convmatrix.network.simplify import pool_splits, split_pools

    torch.manual_seed(pool + stride)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.MaxPool2d(pool, stride), nn.Flatten())
    src = export_onnx(model, (2, 11, 11), tmp_path / "pool.onnx")
    graph = load(src)
    splits = pool_splits(graph)
    assert splits == [d for d in range(2, pool * pool) if (pool * pool) % d == 0]
    x = np.random.default_rng(0).standard_normal((1, 2, 11, 11)).astype(np.float32)
    want = ort_run(src, x).reshape(1, -1)
    for inner in splits:
        chain = simplify(lower(relu_only(split_pools(graph, inner))))
        assert chain.kinds == ["ReLU"]
        np.testing.assert_allclose(chain.evaluate(x.reshape(1, -1).astype(np.float64)), want, rtol=1e-6, atol=1e-6)


def test_convert_with_external_data(lenet, tmp_path, monkeypatch):
    """Over the single-file limit the weights go beside the file; the check reads them there."""
    monkeypatch.setattr(export, "SINGLE_FILE_BYTES", 0)
    report = pipeline.convert(lenet, tmp_path / "fc.onnx", check=3)
    assert sorted(os.listdir(tmp_path)) == ["fc.onnx", "fc.onnx.data"] and report.checked == 3
    x = np.random.default_rng(3).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ort_run(tmp_path / "fc.onnx", x), ort_run(lenet, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["lenet_maxpool", "residual", "depthwise_separable", "conv1d_audio", "decoder"])
def test_exported_models_convert_no_larger_and_exact(tmp_path, case):
    """The pipeline on exported CNNs (max pools, residual carries, LeakyReLU/PReLU pairs): never
    more dense bytes than as lowered, and the written file computes what torch computes."""
    from test_network_onnx import EXPORTED, export

    make, shape = EXPORTED[case]
    torch.manual_seed(0)
    model = make().eval()
    export(model, shape, tmp_path / "cnn.onnx", dynamic=False)
    report = pipeline.convert(tmp_path / "cnn.onnx", tmp_path / "fc.onnx", check=4)
    assert report.dense_bytes <= report.dense_bytes_before
    assert {n.op_type for n in onnx.load(str(tmp_path / "fc.onnx")).graph.node} <= ALLOWED_OPS
    x = torch.randn(1, *shape)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(ort_run(tmp_path / "fc.onnx", x.numpy()), want, rtol=1e-4, atol=1e-5)
