"""Every supported ONNX operator, drawn over its attributes (tests/onnx_cases.py), converts into one
Flatten/Reshape, Gemm, Relu chain that equals onnxruntime on the original; non-piecewise-linear
operators and models onnxruntime cannot run are refused in one line; corrupted files never give a
traceback."""

import os
import random
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from convmatrix.network.check import compare
from convmatrix.network.export import write_onnx
from convmatrix.network.onnx_frontend import RULES, from_onnx, operators_markdown
from convmatrix.network.passes import expand_max, lower, relu_only

from onnx_cases import FIXED, STRATEGIES, convert_and_compare, model, ort_run

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def ort_fails(m) -> bool:
    """Whether onnxruntime itself refuses to load or run ``m`` (an independent look)."""
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        dims = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
        sess.run(None, {sess.get_inputs()[0].name: np.zeros(dims, np.float32)})
    except Exception:
        return True
    return False


@pytest.mark.parametrize("op", sorted(STRATEGIES))
def test_operator_converts_exactly(op, tmp_path):
    @settings(max_examples=4)
    @given(STRATEGIES[op], st.integers(0, 99))
    def check(m, seed):
        try:
            convert_and_compare(m, tmp_path, seed=seed)
        except ValueError as exc:  # only a model onnxruntime cannot run may be refused, and before conversion
            assert "onnxruntime cannot run this model" in str(exc) and ort_fails(m), str(exc)

    check()


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_case_converts_exactly(name, tmp_path):
    convert_and_compare(FIXED[name], tmp_path)


def test_every_rule_is_tested():
    covered = set(STRATEGIES) | {name.split("-")[0] for name in FIXED}
    assert set(RULES) <= covered, sorted(set(RULES) - covered)


def test_readme_lists_the_rule_table():
    text = open(README).read()
    block = re.search(r"<!-- onnx-operators -->\n(.*?)\n<!-- /onnx-operators -->", text, re.S)
    assert block is not None and block.group(1) == operators_markdown()


# -- sample axes and shapes -------------------------------------------------------------------

def test_fixed_leading_axis_is_part_of_the_sample(tmp_path):
    g = convert_and_compare(model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], [2, 3]), tmp_path)
    assert not g.meta["batched"] and g.input_shape == (2, 3)


def test_add_constant_of_the_same_fixed_shape(tmp_path):
    c = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    convert_and_compare(model([helper.make_node("Add", ["x", "c"], ["y"])], [3, 4, 5], [3, 4, 5], {"c": c}),
                        tmp_path)


def test_sum_with_constant_operands(tmp_path):
    rng = np.random.default_rng(1)
    inits = {"a": rng.standard_normal(3).astype(np.float32), "b": rng.standard_normal((2, 3)).astype(np.float32)}
    convert_and_compare(model([helper.make_node("Sum", ["a", "x", "b", "x"], ["y"])], [2, 3], [2, 3], inits),
                        tmp_path)


def test_conv_and_pool_on_a_fixed_batch_of_two(tmp_path):
    w = np.random.default_rng(2).standard_normal((2, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    g = convert_and_compare(model(nodes, [2, 1, 4, 4], [2, 2, 2, 2], {"w": w}), tmp_path)
    assert g.input_shape == (2, 1, 4, 4)


def test_scalar_output_stays_scalar(tmp_path):
    m = model([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)], [1, 3], [], opset=13)
    convert_and_compare(m, tmp_path)
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert len(written.graph.output[0].type.tensor_type.shape.dim) == 0


def test_batch_axis_options(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], [2, 3])
    g = convert_and_compare(m, tmp_path, batch_axis=True)
    assert g.meta["batched"] and g.input_shape == (1, 3)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [1, 3], [1, 3])
    assert from_onnx(m, batch_axis=False).meta["batched"] is False
    with pytest.raises(ValueError, match=r"Flatten\(axis=0\) merges an operation over the batch axis"):
        from_onnx(model([helper.make_node("Flatten", ["x"], ["y"], axis=0)], [2, 3]), batch_axis=True)


def test_input_shape_fills_dynamic_sizes(tmp_path):
    w = np.random.default_rng(3).standard_normal((2, 3, 3, 3)).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], ["N", 3, "H", "W"], inits={"w": w})
    with pytest.raises(ValueError, match=r"dynamic; give them with input_shape \(convert --input-shape\)"):
        from_onnx(m)
    g = convert_and_compare(m, tmp_path, input_shape=(3, 5, 4))
    assert g.meta["input_dims"] == ["N", 3, 5, 4]
    with pytest.raises(ValueError, match=r"input_shape \(2, 5, 4\) does not fit input 'x'"):
        from_onnx(m, input_shape=(2, 5, 4))


# -- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op, attrs, match", [
    ("HardSwish", {}, r"HardSwish is not piecewise linear"),
    ("Sign", {}, r"Sign is not continuous"),
    ("InstanceNormalization", None, r"InstanceNormalization is not piecewise linear"),
    ("Shrink", {"lambd": 0.5, "bias": 0.0}, r"Shrink with bias 0.0 != lambd 0.5 jumps at \+-lambd: not continuous"),
    ("ThresholdedRelu", {"alpha": 1.0}, r"ThresholdedRelu with alpha 1.0 jumps at alpha: not continuous"),
    ("Erf", {}, r"Erf is not piecewise linear"),
])
def test_non_pwl_operator_is_refused_naming_node_and_op(op, attrs, match):
    inits, ins = {}, ["x"]
    if attrs is None:
        inits, ins, attrs = {"s": np.ones(2, np.float32), "b": np.zeros(2, np.float32)}, ["x", "s", "b"], {}
    nodes = [helper.make_node(op, ins, ["z"], name="the_node", **attrs), helper.make_node("Relu", ["z"], ["y"])]
    with pytest.raises(ValueError, match=rf"ONNX node #0 'the_node' \({op}\): {match}"):
        from_onnx(model(nodes, ["N", 2, 3], inits=inits, opset=14))


def test_product_of_two_values_is_not_affine():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Einsum", ["x", "r"], ["y"], equation="bi,bi->b")]
    with pytest.raises(ValueError, match=r"\(Einsum\): Einsum is not affine in its input here"):
        from_onnx(model(nodes, [1, 3], opset=13))


# -- dropping a final monotone operation ------------------------------------------------------

@pytest.mark.parametrize("op, attrs", [("Softmax", {"axis": 1}), ("LogSoftmax", {"axis": -1}), ("Sigmoid", {})])
def test_drop_final_keeps_the_argmax(op, attrs, tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node(op, ["z"], ["p"], **attrs),
             helper.make_node("Identity", ["p"], ["y"])]
    m = model(nodes, ["N", 4], ["N", 5], {"w": w}, opset=13)
    if op != "Sigmoid":
        with pytest.raises(ValueError, match=rf"--drop-final {op.lower()}"):
            from_onnx(m)
    onnx.save(m, str(tmp_path / "in.onnx"))
    g = from_onnx(str(tmp_path / "in.onnx"), drop_final=op.lower())
    assert op in g.meta["dropped_final"]
    write_onnx(lower(relu_only(expand_max(g))), str(tmp_path / "out.onnx"))
    x = rng.standard_normal((50, 4)).astype(np.float32)
    got, want = ort_run(str(tmp_path / "out.onnx"), x), ort_run(str(tmp_path / "in.onnx"), x)
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
    np.testing.assert_allclose(got, x @ w, rtol=1e-5, atol=1e-5)
    assert op in onnx.load(str(tmp_path / "out.onnx")).doc_string


def test_drop_final_refuses_unknown_names():
    m = model([helper.make_node("Relu", ["x"], ["y"])], ["N", 3])
    with pytest.raises(ValueError, match=r"drop_final: \['relu'\] cannot be dropped"):
        from_onnx(m, drop_final="relu")


# -- validation before conversion -------------------------------------------------------------

def _conv_model(kernel_shape=(3, 3), dtype=np.float32, opset=13, op="Conv"):
    w = np.ones((2, 1, 3, 3), dtype=dtype)
    node = helper.make_node(op, ["x", "w"], ["y"], kernel_shape=list(kernel_shape))
    return model([node], [1, 1, 5, 5], inits={"w": w}, opset=opset)


def _gemm_fp16():
    return model([helper.make_node("Gemm", ["x", "w"], ["y"])], [1, 3], inits={"w": np.ones((3, 2), np.float16)})


BAD = {
    "opset 1": lambda: model([helper.make_node("Relu", ["x"], ["y"])], [1, 3], opset=1),
    "opset 99": lambda: _conv_model(opset=99),
    "kernel_shape": lambda: _conv_model(kernel_shape=(2, 2)),
    "float16 Gemm weight": _gemm_fp16,
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_models_onnxruntime_cannot_read_are_refused_first(name, tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(BAD[name](), str(path))
    with pytest.raises(ValueError, match=r"(onnx.checker|onnxruntime cannot run this model)"):
        from_onnx(str(path))
    for check in {"kernel_shape": ("10", "0"), "opset 99": ("0",)}.get(name, ()):  # the CLI: a few suffice
        r = subprocess.run([sys.executable, "-m", "convmatrix", "convert", str(path), "-o", str(tmp_path / "o.onnx"),
                            "--check", check], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o.onnx").exists()


def test_nan_equals_nan_in_the_check():
    ref = np.array([[np.nan, 1.0, np.inf]])
    assert compare(ref, ref.copy()) == (0.0, 0.0)
    assert compare(ref, np.array([[0.0, 1.0, np.inf]]))[0] != 0.0


# -- the command line -------------------------------------------------------------------------

def test_cli_drop_final_and_fixed_axis(tmp_path):
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    onnx.save(model(nodes, [2, 3], [2, 4], {"w": rng.standard_normal((3, 4)).astype(np.float32)}, opset=13),
              str(tmp_path / "m.onnx"))
    cli = lambda *a: subprocess.run([sys.executable, "-m", "convmatrix", "convert", str(tmp_path / "m.onnx"), "-o",
                                     str(tmp_path / "o.onnx"), *a], capture_output=True, text=True)
    r = cli()
    assert r.returncode == 2 and "--drop-final softmax" in r.stderr and "Traceback" not in r.stderr
    r = cli("--drop-final", "softmax")
    assert r.returncode == 0, r.stderr
    assert "dropped the final node #1" in r.stdout and "(Softmax)" in r.stdout, r.stdout
    assert "input 'x' [2, 3], output 'y' [2, 4]" in r.stdout  # a fixed leading axis: one sample of 6 inputs


# -- corrupted files --------------------------------------------------------------------------

def _small_model():
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    return model(nodes, ["N", 1, 6], ["N", 2], {"w": rng.standard_normal((2, 1, 3)).astype(np.float32),
                                                "b": rng.standard_normal(2).astype(np.float32),
                                                "g": rng.standard_normal((2, 6)).astype(np.float32)}, opset=13)


def _drop_field(m, rnd):
    """A copy of ``m`` with one node input, attribute, initializer or dimension removed or changed."""
    m = onnx.load_from_string(m.SerializeToString())
    g = m.graph
    kind = rnd.randrange(5)
    if kind == 0:
        node = rnd.choice(g.node)
        if node.attribute:
            del node.attribute[rnd.randrange(len(node.attribute))]
    elif kind == 1:
        del g.initializer[rnd.randrange(len(g.initializer))]
    elif kind == 2:
        node = rnd.choice(g.node)
        node.input[rnd.randrange(len(node.input))] = rnd.choice(["", "nowhere", node.output[0]])
    elif kind == 3:
        t = rnd.choice(g.initializer)
        t.dims[rnd.randrange(len(t.dims))] += rnd.choice([-1, 1])
    else:
        del g.node[rnd.randrange(len(g.node))]
    return m.SerializeToString()


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1))
def test_corrupted_files_are_refused_cleanly_or_convert_exactly(tmp_path_factory, seed):
    rnd = random.Random(seed)
    data = bytearray(_small_model().SerializeToString())
    if rnd.random() < 0.5:
        for _ in range(rnd.randint(1, 4)):  # flipped bytes
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        if rnd.random() < 0.3:
            data = data[:rnd.randrange(len(data))]
        data = bytes(data)
    else:
        data = _drop_field(_small_model(), rnd)
    d = tmp_path_factory.mktemp("fuzz")
    path = d / "in.onnx"
    path.write_bytes(data)
    try:
        g = from_onnx(str(path))
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    write_onnx(lower(relu_only(expand_max(g))), str(d / "out.onnx"))
    x = np.random.default_rng(seed).standard_normal([2, *g.input_shape[1:]]).astype(np.float32)
    want, got = ort_run(str(path), x), ort_run(str(d / "out.onnx"), x)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1.0, float(np.abs(want).max())))


def _batch_model(node, extra_inits=()):
    """``x [N, 3, 4] -> node -> y`` with a dynamic batch axis."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", [x], [y], list(extra_inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("axis0, node_and_inits", [
    (True, ("Slice", [1, 0], [2**62, 2**62], [0, 1])),
    (False, ("Slice", [0, 1], [2**62, 3], [0, 1])),
    (True, ("Pad", [1, 0, 0, 0, 0, 0])),
    (False, ("Pad", [0, 1, 0, 0, 1, 0])),
])
def test_ops_along_a_dynamic_batch_axis_are_refused_not_mixed(tmp_path, axis0, node_and_inits):
    """A Slice or Pad that cuts or grows the batch axis mixes samples: refused; along other axes: exact."""
    import onnx
    from onnx import helper, numpy_helper

    from convmatrix.network.convert import convert

    op, *args = node_and_inits
    if op == "Slice":
        inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for v, n in zip(args, ("s", "e", "a"))]
        node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])
    else:
        inits = [numpy_helper.from_array(np.array(args[0], dtype=np.int64), "p")]
        node = helper.make_node("Pad", ["x", "p"], ["y"])
    onnx.save(_batch_model(node, inits), tmp_path / "m.onnx")
    if axis0:
        with pytest.raises(ValueError, match="axis 0"):
            convert(tmp_path / "m.onnx", tmp_path / "fc.onnx", check=0)
    else:
        report = convert(tmp_path / "m.onnx", tmp_path / "fc.onnx", check=4)
        assert report.max_abs == 0.0
