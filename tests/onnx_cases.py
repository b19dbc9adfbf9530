"""Single-operator ONNX models drawn from the operator specification's attributes (hypothesis
strategies), and the check every converted model must pass: one Flatten/Reshape, Gemm, Relu chain
whose outputs equal onnxruntime's on the original."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from convmatrix.network.export import write_onnx
from convmatrix.network.onnx_frontend import from_onnx
from convmatrix.network.passes import expand_max, lower, relu_only

ALLOWED = {"Flatten", "Reshape", "Gemm", "Relu"}


def model(nodes, in_dims, out_dims=None, inits=None, opset=17, name="x", out="y"):
    """A one-input, one-output model of ``nodes`` (initializers from a dict of arrays)."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(name, TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_dims)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 8 if opset <= 17 else 9)
    return m


def ort_run(path_or_model, x):
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def is_chain(m) -> bool:
    """Only allowed ops, each node reading the previous one's output (the first reads the input)."""
    cur = m.graph.input[0].name
    for node in m.graph.node:
        if node.op_type not in ALLOWED or node.input[0] != cur:
            return False
        cur = node.output[0]
    return cur == m.graph.output[0].name


def convert_and_compare(m, tmp_path, seed=0, batch=2, **options):
    """Convert ``m`` as ``convmatrix convert`` does; assert a Gemm/Relu chain equal to onnxruntime's."""
    src, dst = str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx")
    onnx.save(m, src)
    graph = from_onnx(src, **options)
    chain = lower(relu_only(expand_max(graph)))
    write_onnx(chain, dst)
    written = onnx.load(dst)
    assert is_chain(written), [n.op_type for n in written.graph.node]
    dims = graph.meta["input_dims"]
    shape = [batch if isinstance(d, str) else d for d in dims]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    want, got = ort_run(src, x), ort_run(dst, x)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)
    return graph


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- strategies: one per operator, each drawing a model over the operator's attributes ---------

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**16)


@st.composite
def unary(draw, op, **attrs):
    """``op`` on a drawn shape with a dynamic or size-1 batch axis, or none."""
    shape = draw(shapes)
    lead = draw(st.sampled_from(["N", 1, None]))
    dims = ([lead] if lead is not None else []) + list(shape)
    params = {k: draw(v) for k, v in attrs.items()}
    return model([helper.make_node(op, ["x"], ["y"], **params)], dims)


@st.composite
def clip_case(draw):
    lo, hi = draw(st.one_of(st.none(), st.floats(-2, 0.5))), draw(st.one_of(st.none(), st.floats(-0.5, 2)))
    inits, ins = {}, ["x", "", ""]
    if lo is not None:
        inits["lo"], ins[1] = np.float32(lo), "lo"
    if hi is not None:
        inits["hi"], ins[2] = np.float32(hi), "hi"
    while ins and not ins[-1]:
        ins.pop()
    return model([helper.make_node("Clip", ins, ["y"])], ["N", *draw(shapes)], inits=inits, opset=13)


@st.composite
def prelu_case(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = (3, *draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    slope = draw(st.sampled_from(["channel", "full", "scalar"]))
    s = {"channel": (3,) + (1,) * (len(shape) - 1), "full": shape, "scalar": (1,)}[slope]
    return model([helper.make_node("PRelu", ["x", "s"], ["y"])], ["N", *shape], inits={"s": f32(rng, *s)})


@st.composite
def nary_case(draw, op):
    """``op`` of the input, its Relu, and constants, with broadcasting."""
    rng = np.random.default_rng(draw(seeds))
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    n_const = draw(st.integers(0, 2))
    inits, ins = {}, ["x", "r"][:draw(st.integers(1, 2))]
    for k in range(n_const):
        cshape = shape[draw(st.integers(0, len(shape))):]
        inits[f"c{k}"] = f32(rng, *cshape)
        ins.append(f"c{k}")
    if len(ins) == 1:
        ins.append("x")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ins, ["y"])]
    return model(nodes, [1, *shape], inits=inits, opset=13)


@st.composite
def arith_case(draw, op):
    rng = np.random.default_rng(draw(seeds))
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    c = f32(rng, *shape[draw(st.integers(0, len(shape))):])
    if op == "Div":
        c = np.where(np.abs(c) < 0.3, 1.0, c).astype(np.float32)
    ins = ["x", "c"] if draw(st.booleans()) or op == "Div" else ["c", "x"]
    lead = draw(st.sampled_from([[1], [], [2]]))  # size-1 batch, none, a fixed axis of the sample
    return model([helper.make_node(op, ins, ["y"])], [*lead, *shape], inits={"c": c}, opset=13)


@st.composite
def reduce_case(draw, op):
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    rank = len(shape) + 1
    axes = draw(st.one_of(st.none(), st.lists(st.integers(1, rank - 1), min_size=1, max_size=rank - 1, unique=True)))
    keep = draw(st.integers(0, 1))
    opset = draw(st.sampled_from([13, 18]))
    inits, ins, attrs = {}, ["x"], {"keepdims": keep}
    if axes is not None:
        if opset >= 18 or op == "ReduceSum":
            inits["axes"], ins = np.array(axes, dtype=np.int64), ["x", "axes"]
        else:
            attrs["axes"] = axes
    elif op != "ReduceSum" or opset < 13:
        pass
    if axes is None:  # all axes, batch included: a fixed batch of one sample
        return model([helper.make_node(op, ins, ["y"], **attrs)], [1, *shape], inits=inits, opset=opset)
    return model([helper.make_node(op, ins, ["y"], **attrs)], ["N", *shape], inits=inits, opset=opset)


@st.composite
def gemm_case(draw):
    rng = np.random.default_rng(draw(seeds))
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ta, tb = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    alpha, beta = draw(st.sampled_from([1.0, 0.5, -2.0])), draw(st.sampled_from([1.0, 0.25]))
    B = f32(rng, *((n, k) if tb else (k, n)))
    cmode = draw(st.sampled_from(["none", "vector", "matrix", "input"]))
    inits, ins = {"B": B}, ["x", "B"]
    if cmode == "vector":
        inits["C"], ins = f32(rng, n), ["x", "B", "C"]
    elif cmode == "matrix":
        inits["C"], ins = f32(rng, m, n), ["x", "B", "C"]
    nodes = [helper.make_node("Gemm", ins, ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta)]
    if cmode == "input":  # C depends on the input: Gemm(x, B, Relu(x @ ones))
        inits["P"] = np.ones((k, n) if not ta else (m, n), dtype=np.float32)
        if ta or k != m:
            inits["P"] = f32(rng, *((k, n) if not ta else (k, n)))
        nodes = [helper.make_node("MatMul", ["xt" if ta else "x", "P"], ["c0"]),
                 helper.make_node("Relu", ["c0"], ["c"]),
                 helper.make_node("Gemm", ["x", "B", "c"], ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta)]
        if ta:
            nodes.insert(0, helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]))
    dims = [k, m] if ta else [m, k]
    return model(nodes, dims, inits=inits, opset=13)


@st.composite
def matmul_case(draw):
    rng = np.random.default_rng(draw(seeds))
    rank = draw(st.integers(2, 4))
    batch = tuple(draw(st.lists(st.integers(1, 2), min_size=rank - 2, max_size=rank - 2)))
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    left = draw(st.booleans())
    if left:  # W @ x
        W, dims = f32(rng, *batch, m, k), [1, k, n]
        ins = ["W", "x"]
    else:
        W, dims = f32(rng, *batch, k, n), [1, m, k]
        ins = ["x", "W"]
    return model([helper.make_node("MatMul", ins, ["y"])], dims, inits={"W": W}, opset=13)


@st.composite
def conv_case(draw, op):
    rng = np.random.default_rng(draw(seeds))
    nd = draw(st.integers(1, 2))
    g = draw(st.integers(1, 2))
    cin, cout = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    k = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    s = draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd))
    d = draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd))
    size = draw(st.lists(st.integers(4, 6), min_size=nd, max_size=nd))
    attrs = dict(kernel_shape=k, strides=s, dilations=d, group=g)
    mode = draw(st.sampled_from(["pads", "SAME_UPPER", "SAME_LOWER", "VALID"] + (["output_shape"] if op ==
                                                                                     "ConvTranspose" else [])))
    if mode == "pads":
        attrs["pads"] = draw(st.lists(st.integers(0, 1), min_size=2 * nd, max_size=2 * nd))
    elif mode == "output_shape":
        attrs["output_shape"] = [n * ss + draw(st.integers(0, 1)) for n, ss in zip(size, s)]
    else:
        attrs["auto_pad"] = mode
    if op == "ConvTranspose":
        attrs["dilations"] = [1] * nd if mode.startswith("SAME") else d
        W = f32(rng, cin, cout // g, *k)
        if mode == "pads" and draw(st.booleans()):
            attrs["output_padding"] = [min(ss, dd) - 1 for ss, dd in zip(s, attrs["dilations"])]
    else:
        W = f32(rng, cout, cin // g, *k)
        if mode.startswith("SAME"):
            attrs["dilations"] = [1] * nd
    lead = draw(st.sampled_from(["N", 1, 2]))
    inits, ins = {"W": W}, ["x", "W"]
    if draw(st.booleans()):
        inits["B"], ins = f32(rng, cout), ["x", "W", "B"]
    return model([helper.make_node(op, ins, ["y"], **attrs)], [lead, cin, *size], inits=inits, opset=13)


@st.composite
def pool_case(draw, op):
    nd = draw(st.integers(1, 2))
    k = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    s = draw(st.lists(st.integers(1, 2), min_size=nd, max_size=nd))
    attrs = dict(kernel_shape=k, strides=s)
    if draw(st.booleans()):
        attrs["pads"] = [min(p, kk - 1) for p, kk in zip(draw(st.lists(st.integers(0, 1), min_size=2 * nd,
                                                                         max_size=2 * nd)), k + k)]
    if draw(st.booleans()):
        attrs["ceil_mode"] = 1
    if op == "AveragePool":
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    lead = draw(st.sampled_from(["N", 1, 2]))
    size = draw(st.lists(st.integers(3, 6), min_size=nd, max_size=nd))
    return model([helper.make_node(op, ["x"], ["y"], **attrs)], [lead, 2, *size], opset=13)


@st.composite
def shape_op_case(draw, op):
    """Gathers with constant arguments."""
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=3)))
    dims, rank = [1, *shape], len(shape) + 1
    ax = draw(st.integers(1, rank - 1))
    inits, nodes = {}, None
    if op == "Transpose":
        perm = [0] + list(draw(st.permutations(range(1, rank))))
        nodes = [helper.make_node(op, ["x"], ["y"], perm=perm)]
    elif op == "Slice":
        n = shape[ax - 1]
        start, step = draw(st.integers(-n, n - 1)), draw(st.sampled_from([1, 2, -1]))
        end = draw(st.integers(-n - 1, n + 1).filter(
            lambda e: len(range(n)[slice(start, None if e < -n and step < 0 else e, step)]) > 0))
        inits = {"s": np.array([start]), "e": np.array([end]), "a": np.array([ax]), "st": np.array([step])}
        nodes = [helper.make_node(op, ["x", "s", "e", "a", "st"], ["y"])]
    elif op == "Gather":
        idx = rng.integers(-shape[ax - 1], shape[ax - 1], size=draw(st.integers(1, 3)))
        inits = {"i": idx.astype(np.int64)}
        nodes = [helper.make_node(op, ["x", "i"], ["y"], axis=ax)]
    elif op == "Split":
        n = shape[ax - 1]
        cut = draw(st.integers(0, n))
        inits = {"sp": np.array([cut, n - cut], dtype=np.int64)}
        nodes = [helper.make_node(op, ["x", "sp"], ["a", "b"], axis=ax),
                 helper.make_node("Concat", ["b", "a"], ["y"], axis=ax)]
    elif op == "Expand":
        inits = {"sh": np.array([1, *[d * draw(st.integers(1, 2)) if d == 1 else d for d in shape]])}
        nodes = [helper.make_node(op, ["x", "sh"], ["y"])]
    elif op == "Tile":
        inits = {"r": np.array([1] + draw(st.lists(st.integers(1, 2), min_size=rank - 1, max_size=rank - 1)))}
        nodes = [helper.make_node(op, ["x", "r"], ["y"])]
    elif op == "Pad":
        mode = draw(st.sampled_from(["constant", "reflect", "edge"]))
        pads = [0] + [draw(st.integers(0, max(0, d - 1) if mode == "reflect" else 2)) for d in shape] + [0] + \
            [draw(st.integers(0, max(0, d - 1) if mode == "reflect" else 2)) for d in shape]
        inits = {"p": np.array(pads, dtype=np.int64), "v": np.float32(draw(st.sampled_from([0.0, 1.5])))}
        nodes = [helper.make_node(op, ["x", "p", "v"] if mode == "constant" else ["x", "p"], ["y"], mode=mode)]
    elif op == "Where":
        inits = {"c": rng.random(shape) > 0.5, "k": f32(rng, *shape)}
        nodes = [helper.make_node("Relu", ["x"], ["r"]),
                 helper.make_node(op, ["c", "x", draw(st.sampled_from(["k", "r"]))], ["y"])]
    elif op == "Concat":
        inits = {"k": f32(rng, 1, *shape)}
        nodes = [helper.make_node(op, ["x", draw(st.sampled_from(["k", "x"]))], ["y"], axis=ax)]
    elif op == "Flatten":
        nodes = [helper.make_node(op, ["x"], ["y"], axis=draw(st.integers(1, rank)))]
    elif op == "Reshape":
        inits = {"s": np.array([1, -1, shape[-1]], dtype=np.int64)}
        nodes = [helper.make_node(op, ["x", "s"], ["y"])]
    elif op == "Unsqueeze":
        inits = {"a": np.array([draw(st.integers(1, rank))], dtype=np.int64)}
        nodes = [helper.make_node(op, ["x", "a"], ["y"])]
    elif op == "CumSum":
        inits = {"a": np.array(ax, dtype=np.int64)}
        nodes = [helper.make_node(op, ["x", "a"], ["y"], exclusive=draw(st.integers(0, 1)),
                                  reverse=draw(st.integers(0, 1)))]
    elif op == "GatherElements":
        idx = rng.integers(0, shape[ax - 1], size=(1, *shape))
        inits = {"i": idx.astype(np.int64)}
        nodes = [helper.make_node(op, ["x", "i"], ["y"], axis=ax)]
    elif op == "Trilu":
        if len(shape) < 2:
            shape = shape + (2,)
        inits = {"k": np.array(draw(st.integers(-1, 1)), dtype=np.int64)}
        nodes = [helper.make_node(op, ["x", "k"], ["y"], upper=draw(st.integers(0, 1)))]
        dims = [1, *shape]
    return model(nodes, dims, inits=inits, opset=14 if op == "Trilu" else 13)


@st.composite
def space_case(draw, op):
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, 2)) * (b * b if op == "DepthToSpace" else 1)
    hw = [b * draw(st.integers(1, 2)) for _ in range(2)]
    attrs = {"blocksize": b}
    if op == "DepthToSpace":
        attrs["mode"] = draw(st.sampled_from(["DCR", "CRD"]))
    return model([helper.make_node(op, ["x"], ["y"], **attrs)], ["N", c, *hw], opset=13)


@st.composite
def resize_case(draw):
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    ctm = draw(st.sampled_from(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))
    nd = draw(st.integers(1, 2))
    scales = [1.0, 1.0] + [draw(st.sampled_from([0.5, 1.5, 2.0, 3.0])) for _ in range(nd)]
    size = [draw(st.integers(2, 5)) for _ in range(nd)]
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(["floor", "round_prefer_floor", "ceil"]))
    inits = {"roi": np.array([], dtype=np.float32), "sc": np.array(scales, dtype=np.float32)}
    return model([helper.make_node("Resize", ["x", "roi", "sc"], ["y"], **attrs)], [1, 2, *size], inits=inits,
                 opset=13)


@st.composite
def einsum_case(draw):
    rng = np.random.default_rng(draw(seeds))
    eq, xs, ws = draw(st.sampled_from([("bij,jk->bik", (1, 2, 3), (3, 2)), ("bi,ki->bk", (1, 3), (2, 3)),
                                       ("bij->bji", (1, 2, 3), None), ("bij,ij->bi", (1, 2, 3), (2, 3)),
                                       ("bii->bi", (1, 3, 3), None)]))
    inits, ins = {}, ["x"]
    if ws is not None:
        inits["w"], ins = f32(rng, *ws), ["x", "w"]
    if ws is not None and draw(st.booleans()):  # the variable operand second
        a, rest = eq.split(",")
        second, out = rest.split("->")
        eq, ins = f"{second},{a}->{out}", ["w", "x"]
    return model([helper.make_node("Einsum", ins, ["y"], equation=eq)], list(xs), inits=inits, opset=13)


STRATEGIES = {
    "Relu": unary("Relu"), "Abs": unary("Abs"), "Neg": unary("Neg"), "Identity": unary("Identity"),
    "LeakyRelu": unary("LeakyRelu", alpha=st.sampled_from([0.01, 0.5, 2.0, -0.3])),
    "HardSigmoid": unary("HardSigmoid", alpha=st.sampled_from([0.2, 1.0, -0.5]), beta=st.sampled_from([0.5, 0.0])),
    "Shrink": st.sampled_from([0.0, 0.5, 1.0]).flatmap(lambda l: unary("Shrink", lambd=st.just(l), bias=st.just(l))),
    "Clip": clip_case(), "PRelu": prelu_case(),
    **{op: nary_case(op) for op in ("Max", "Min", "Sum", "Mean")},
    **{op: arith_case(op) for op in ("Add", "Sub", "Mul", "Div")},
    **{op: reduce_case(op) for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1")},
    "Gemm": gemm_case(), "MatMul": matmul_case(),
    **{op: conv_case(op) for op in ("Conv", "ConvTranspose")},
    **{op: pool_case(op) for op in ("MaxPool", "AveragePool")},
    **{op: shape_op_case(op) for op in ("Transpose", "Slice", "Gather", "Split", "Expand", "Tile", "Pad", "Where",
                                         "Concat", "Flatten", "Reshape", "Unsqueeze", "CumSum", "GatherElements",
                                         "Trilu")},
    **{op: space_case(op) for op in ("DepthToSpace", "SpaceToDepth")},
    "Resize": resize_case(), "Einsum": einsum_case(),
}


def _fixed_cases():
    """One model for each rule without a strategy above: ``{name: model}``."""
    rng = np.random.default_rng(7)
    mk = helper.make_node
    i64 = lambda *v: np.array(v, dtype=np.int64)
    return {
        "GatherND": model([mk("GatherND", ["x", "i"], ["y"], batch_dims=1)], [1, 3, 4],
                          inits={"i": i64(0, 2, 1).reshape(1, 3, 1)}, opset=13),
        "ReverseSequence": model([mk("ReverseSequence", ["x", "l"], ["y"], batch_axis=1, time_axis=0)], [3, 2, 2],
                                 inits={"l": i64(2, 3)}, opset=13),
        "Compress": model([mk("Compress", ["x", "c"], ["y"], axis=2)], [1, 2, 4],
                          inits={"c": np.array([True, False, True, True])}, opset=13),
        "CenterCropPad": model([mk("CenterCropPad", ["x", "s"], ["y"], axes=[1, 2])], [1, 5, 2],
                               inits={"s": i64(3, 4)}, opset=18),
        "ScatterND": model([mk("ScatterND", ["x", "i", "u"], ["y"])], [1, 4, 2],
                           inits={"i": i64(0, 1, 0, 3).reshape(2, 2), "u": f32(rng, 2, 2)}, opset=16),
        "ScatterElements": model([mk("ScatterElements", ["x", "i", "u"], ["y"], axis=1)], [1, 4],
                                 inits={"i": i64(1, 3).reshape(1, 2), "u": f32(rng, 1, 2)}, opset=16),
        "AffineGrid": model([mk("AffineGrid", ["x", "s"], ["y"], align_corners=0)], [1, 2, 3],
                            inits={"s": i64(1, 1, 3, 4)}, opset=20),
        "If": model([mk("If", ["c"], ["y"],
                        then_branch=helper.make_graph([mk("Relu", ["x"], ["t"])], "then", [],
                                                      [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)]),
                        else_branch=helper.make_graph([mk("Neg", ["x"], ["e"])], "else", [],
                                                      [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)]))],
                    ["N", 3], inits={"c": np.array(False)}, opset=13),
        "DFT": model([mk("DFT", ["x", "", "ax"], ["y"])], [1, 6, 1], inits={"ax": i64(1).reshape(())}, opset=20),
        "STFT": model([mk("STFT", ["x", "st", "w", "fl"], ["y"])], [1, 12, 1],
                      inits={"st": i64(3).reshape(()), "w": np.hanning(6).astype(np.float32),
                             "fl": i64(6).reshape(())}, opset=17),
        "DeformConv": model([mk("DeformConv", ["x", "w", "o"], ["y"], kernel_shape=[2, 2])], [1, 1, 3, 3],
                            inits={"w": f32(rng, 2, 1, 2, 2), "o": (0.3 * f32(rng, 1, 8, 2, 2)).astype(np.float32)},
                            opset=19),
        "RotaryEmbedding": model([mk("RotaryEmbedding", ["x", "c", "s", "p"], ["y"])], [1, 2, 3, 4],
                                 inits={"c": f32(rng, 3, 2), "s": f32(rng, 3, 2), "p": i64(0, 2, 1).reshape(1, 3)},
                                 opset=23),
        "NegativeLogLikelihoodLoss": model([mk("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["y"], reduction="mean")],
                                           [3, 4], [], inits={"t": i64(1, 0, 3), "w": np.abs(f32(rng, 4)) + 0.5},
                                           opset=13),
        "LpPool": model([mk("LpPool", ["x"], ["y"], kernel_shape=[2], p=1)], ["N", 2, 5], opset=18),
        "Scatter": model([mk("Scatter", ["x", "i", "u"], ["y"], axis=1)], [1, 4],
                         inits={"i": i64(2, 0).reshape(1, 2), "u": f32(rng, 1, 2)}, opset=10),
        "TensorScatter": model([mk("TensorScatter", ["x", "u", "w"], ["y"], axis=1)], [1, 4, 2],
                               inits={"u": f32(rng, 1, 1, 2), "w": i64(2)}, opset=24),
        "Upsample": model([mk("Upsample", ["x", "s"], ["y"], mode="linear")], [1, 2, 3, 3],
                          inits={"s": np.array([1, 1, 2, 1.5], dtype=np.float32)}, opset=9),
        "GridSample": model([mk("GridSample", ["x", "g"], ["y"], mode="bilinear", align_corners=0)], [1, 2, 3, 4],
                            inits={"g": rng.uniform(-1.1, 1.1, (1, 2, 3, 2)).astype(np.float32)}, opset=16),
        "Col2Im": model([mk("Col2Im", ["x", "s", "b"], ["y"])], [1, 4, 4],
                        inits={"s": i64(3, 3), "b": i64(2, 2)}, opset=18),
        "MaxUnpool": model([mk("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], [1, 1, 2, 2],
                           inits={"i": i64(0, 3, 9, 14).reshape(1, 1, 2, 2)}, opset=11),
        "RoiAlign": model([mk("RoiAlign", ["x", "r", "b"], ["y"], output_height=2, output_width=2, sampling_ratio=2,
                              mode="avg")], [1, 2, 5, 5],
                          inits={"r": np.array([[0.5, 0.5, 3.2, 4.1]], dtype=np.float32), "b": i64(0)}, opset=16),
        "ThresholdedRelu": model([mk("ThresholdedRelu", ["x"], ["y"], alpha=0.0)], ["N", 3], opset=13),
        "GlobalAveragePool": model([mk("GlobalAveragePool", ["x"], ["y"])], [2, 3, 2, 3], opset=13),
        "GlobalMaxPool": model([mk("GlobalMaxPool", ["x"], ["y"])], ["N", 3, 3, 2], opset=13),
        "BatchNormalization": model([mk("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], ["N", 2, 3],
                                    inits={"s": f32(rng, 2), "b": f32(rng, 2), "m": f32(rng, 2),
                                           "v": np.abs(f32(rng, 2)) + 0.5}, opset=15),
        "Squeeze": model([mk("Squeeze", ["x", "a"], ["y"])], ["N", 3, 1, 2], inits={"a": i64(2)}, opset=13),
        "Dropout": model([mk("Dropout", ["x"], ["y"])], ["N", 3], opset=13),
        "Cast": model([mk("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], ["N", 3], opset=13),
        "CastLike": model([mk("CastLike", ["x", "t"], ["y"])], ["N", 3], inits={"t": np.zeros(1, np.float32)},
                          opset=15),
        "Constant": model([mk("Constant", [], ["c"], value=numpy_helper.from_array(f32(rng, 3), "c")),
                           mk("Add", ["x", "c"], ["y"])], ["N", 3], opset=13),
        "Shape": model([mk("Shape", ["x"], ["s"]), mk("Reshape", ["x", "s"], ["y"])], [1, 3, 2], opset=13),
        "Size": model([mk("Size", ["x"], ["n"]), mk("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
                       mk("Mul", ["x", "f"], ["y"])], [1, 3, 2], opset=13),
        "ConstantOfShape": model([mk("Shape", ["x"], ["s"]), mk("ConstantOfShape", ["s"], ["c"],
                                 value=numpy_helper.from_array(np.array([2.5], dtype=np.float32))),
                                  mk("Sub", ["x", "c"], ["y"])], [1, 3, 2], opset=13),
        "EyeLike": model([mk("EyeLike", ["x"], ["e"]), mk("Add", ["x", "e"], ["y"])], [3, 3], opset=13),
        "Squeeze-fixed-batch": model([mk("Relu", ["x"], ["y"])], [2, 3], opset=13),
    }


FIXED = _fixed_cases()
