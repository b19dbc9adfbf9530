"""``convmatrix convert`` through a subprocess, outputs checked with onnxruntime and an independent NNet reader."""

import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn


def cli(*args):
    return subprocess.run([sys.executable, "-m", "convmatrix", "convert", *map(str, args)],
                          capture_output=True, text=True, env=os.environ.copy())


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A small LeNet with max pooling and a dynamic batch, exported by torch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 4),
                          nn.ReLU(), nn.Linear(4, 3)).eval()
    path = tmp_path_factory.mktemp("cli") / "lenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 8, 8),), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return path


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def read_nnet(path):
    """A from-scratch reader of the NNet format: header, sizes, normalisation, then rows and biases."""
    rows = [ln.strip().rstrip(",") for ln in open(path) if not ln.startswith("//")]
    n_layers = int(rows[0].split(",")[0])
    sizes = [int(v) for v in rows[1].split(",")]
    pos, layers = 7, []
    for k in range(n_layers):
        W = np.array([[float(v) for v in rows[pos + r].split(",")] for r in range(sizes[k + 1])])
        pos += sizes[k + 1]
        b = np.array([float(rows[pos + r]) for r in range(sizes[k + 1])])
        pos += sizes[k + 1]
        layers.append((W, b))
    return layers


def test_convert_onnx_prints_table_and_check(lenet, tmp_path):
    out = tmp_path / "fc.onnx"
    r = cli(lenet, "-o", out, "--check", 5)
    assert r.returncode == 0, r.stderr
    assert "stored entries" in r.stdout and "dense bytes" in r.stdout
    assert "check on 5 random inputs" in r.stdout and "max abs difference" in r.stdout
    model = onnx.load(str(out))
    # conv -> relu -> 4-way max as 3 ReLU layers (relu folded into the tree), linear+relu, linear
    assert [n.op_type for n in model.graph.node] == ["Flatten"] + ["Gemm", "Relu"] * 4 + ["Gemm"]
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "logits"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ort_run(out, x), ort_run(lenet, x), rtol=1e-5, atol=1e-5)


def test_convert_nnet(lenet, tmp_path):
    out = tmp_path / "fc.nnet"
    r = cli(lenet, "-o", out, "--check", 3, "--quiet")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    h = x.reshape(4, -1).astype(np.float64)
    layers = read_nnet(out)
    for k, (W, b) in enumerate(layers):
        h = h @ W.T + b
        h = np.maximum(h, 0) if k < len(layers) - 1 else h
    np.testing.assert_allclose(h, ort_run(lenet, x), rtol=1e-5, atol=1e-5)


def test_bad_file_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 5)
    r = cli(bad, "-o", tmp_path / "x.onnx")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "not a readable ONNX model" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_refuses_absurd_output_with_estimate(lenet, tmp_path):
    r = cli(lenet, "-o", tmp_path / "x.onnx", "--max-bytes", "1kB")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "would take about" in r.stderr and "--max-bytes" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
