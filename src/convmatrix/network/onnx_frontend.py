"""ONNX front end: a model file, read only through ``onnx``, as an IR :class:`Graph`.

Values keep the file's full tensor shapes, with a batch axis taken as 1: one sample,
flattened in C order. The input's leading axis is a batch axis when it is dynamic, or
of size 1 in an input of rank >= 2; a fixed leading size > 1 is part of the sample
(``batch_axis`` overrides this). With several samples along the batch axis,
operations that would mix them (a Transpose, Flatten, Reshape, Concat, reduction, ...
over axis 0) are refused.

Every operator whose function is piecewise linear, given constant attributes and
constant non-first inputs, has a rule (:data:`RULES`, rendered by
:func:`operators_markdown`): affine maps (Conv, Gemm, ...), gathers read off the
operator run on integer codes (Transpose, Slice, Pad, ...), the general affine rule
(the matrix read off unit vectors and checked on random inputs: Einsum, Resize in
linear mode, ...), element-wise piecewise-linear functions as ReLUs (Abs, Clip, ...)
and max trees (Max, ReduceMax, MaxPool, ...). Nodes whose inputs are all constants
(the Shape/Gather/Unsqueeze/Concat chains exporters emit for reshapes) are folded
with ``onnx.reference``. Anything else raises ValueError naming the node, its place
and why (not piecewise linear, not continuous, or not supported).
"""

from __future__ import annotations

import numbers
import os
from math import prod

import numpy as np
import scipy.sparse as sp

from .._optional import require
from ..core.geometry import conv_output_size, conv_transpose_output_size
from .ir import Affine, Graph, Max
from .layers import (adaptive_windows, avg_pool_affine, batch_norm_affine, channel_affine, codes,
                     conv_record, gather_matrix, group_sum_matrix, is_affine_on, linear_affine, looks_affine,
                     max_pool_groups, pool_geometry, pool_record, pool_windows, probe_affine, reduce_groups)
from .passes import clip, piecewise_linear

__all__ = ["from_onnx", "read_onnx", "onnx_pads", "validate_onnx", "without_dropped", "supported_operators",
           "operators_markdown", "RULES", "MIN_OPSET"]

MIN_OPSET = 7  # the oldest default-domain opset onnxruntime runs

# How every supported operator becomes IR nodes (the README's table is rendered from this).
GATHER = "gather: a 0/1 selection matrix read off the operator run on integer codes"
PROBE = "affine, matrix read off unit vectors (onnx.reference) and checked on random inputs"
RULES: dict[str, str] = {
    **{op: "affine: the convolution matrix (conv_matrix); asymmetric padding as a crop" for op in
       ("Conv", "ConvTranspose")},
    **{op: "affine: sparse matrix and bias" for op in ("Gemm", "MatMul", "Neg", "BatchNormalization", "AveragePool",
                                                        "GlobalAveragePool", "ReduceSum", "ReduceMean")},
    **{op: "affine: with constants, or a sum or difference of values" for op in ("Add", "Sub", "Sum", "Mean")},
    **{op: "affine: by constants" for op in ("Mul", "Div")},
    **{op: GATHER for op in ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Concat", "Slice",
                              "Gather", "GatherElements", "GatherND", "Split", "Expand", "Tile", "DepthToSpace",
                              "SpaceToDepth", "Where", "ReverseSequence", "Compress", "Trilu", "CenterCropPad",
                              "TensorScatter")},
    **{op: "gather (reduction none); affine (add, mul); max or min with the constant updates: "
           "c + relu(x - c) (max, min)" for op in ("ScatterND", "ScatterElements", "Scatter")},
    **{op: "gather (nearest mode); " + PROBE + " (linear, cubic)" for op in ("Resize", "Upsample", "GridSample")},
    **{op: PROBE for op in ("Einsum", "CumSum", "Col2Im", "MaxUnpool", "RoiAlign", "AffineGrid", "DFT", "STFT",
                             "DeformConv", "RotaryEmbedding", "NegativeLogLikelihoodLoss")},
    "LpPool": "p = 1: sum of absolute values over each window (ReLUs); p > 1 is not piecewise linear",
    "Relu": "ReLU",
    **{op: "element-wise piecewise linear, where continuous (Shrink with bias = lambd, ThresholdedRelu with "
           "alpha = 0): slope*x + c + sum of d*relu(x - t)" for op in
       ("LeakyRelu", "PRelu", "Clip", "Abs", "HardSigmoid", "Shrink", "ThresholdedRelu")},
    **{op: "max tree: max(a, b) = b + relu(a - b)" for op in ("Max", "Min", "MaxPool", "GlobalMaxPool",
                                                               "ReduceMax", "ReduceMin")},
    "ReduceL1": "sum of absolute values (ReLUs)",
    **{op: "the same value (casts: to a float type; Dropout: inference mode)" for op in
       ("Identity", "Dropout", "Cast", "CastLike")},
    **{op: "folded to a constant" for op in ("Constant", "Shape", "Size", "ConstantOfShape", "EyeLike")},
    "If": "the branch a constant condition takes, inlined",
}
GATHER_OPS = {op for op, rule in RULES.items() if rule == GATHER}
PROBE_OPS = {op for op, rule in RULES.items() if rule == PROBE}
# Not piecewise linear: kept as IR activations (for pt/npz), refused by the Gemm/Relu writers.
NON_PWL_ACTIVATIONS = ("Elu", "Sigmoid", "Softplus", "Tanh")
# Strictly increasing (or, for Softmax/LogSoftmax, argmax-preserving) final operations ``drop_final`` may drop.
MONOTONE = ("Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Softplus", "Softsign", "Exp", "Elu", "Selu", "Celu",
            "Erf", "Asinh", "Atan", "Sinh")
NOT_PWL = ("HardSwish", "Gelu", "Mish", "Swish", "Log", "Sqrt", "Pow", "Reciprocal", "Sin", "Cos", "Tan", "Asin",
           "Acos", "Acosh", "Atanh", "Cosh", "LpNormalization", "InstanceNormalization", "LayerNormalization",
           "GroupNormalization", "RMSNormalization", "LRN", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare",
           "ReduceProd", "ReduceLogSum", "MeanVarianceNormalization", "Attention", "LinearAttention",
           "SoftmaxCrossEntropyLoss", "Det", "GRU", "LSTM", "RNN")
NOT_CONTINUOUS = ("Sign", "Floor", "Ceil", "Round", "ArgMax", "ArgMin", "Greater", "Less", "Equal", "GreaterOrEqual",
                  "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Mod", "Hardmax", "TopK", "NonZero",
                  "Unique", "OneHot", "QuantizeLinear", "DynamicQuantizeLinear", "NonMaxSuppression", "Binarizer",
                  "TreeEnsemble", "TreeEnsembleClassifier", "TreeEnsembleRegressor")
PASSTHROUGH = ("Identity", "Dropout", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze")
SAMPLE_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
              "BatchNormalization")
_AXIS_ZERO = "an operation over the batch axis (axis 0) of a model with several samples along it"
# Operations whose constant operands become the converted network's weights and biases.
WEIGHING_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "BatchNormalization",
                          "InstanceNormalization", "PRelu", "Mul", "Div", "Add", "Sub", "Sum", "Mean", "Where"})
PROBE_LIMIT = 4096  # unit vectors probed one at a time at most (batched probes have no limit)


def supported_operators() -> list[tuple[str, str]]:
    """``(operator, how it is lowered)`` for every supported ONNX operator, sorted by name."""
    return sorted(RULES.items())


def operators_markdown() -> str:
    """The table of supported operators as Markdown, one row per rule (the README's list is this text)."""
    by_rule: dict[str, list[str]] = {}
    for op, rule in RULES.items():
        by_rule.setdefault(rule, []).append(op)
    lines = [f"Default domain, opset {MIN_OPSET} and newer (as far as the installed onnxruntime runs them: "
             "every model is validated with it first).", "", "| operators | lowered as |", "| --- | --- |"]
    lines += [f"| {', '.join(f'`{op}`' for op in sorted(ops))} | {rule} |" for rule, ops in by_rule.items()]
    lines += ["", "Read but not piecewise linear (kept as activations, so written only as `pt` or `npz`): "
              + ", ".join(f"`{op}`" for op in NON_PWL_ACTIVATIONS) + ". A final `Softmax`, `LogSoftmax` or other "
              "strictly increasing operation can be dropped (`--drop-final`), keeping the argmax."]
    return "\n".join(lines)


def read_onnx(source):
    """An ``onnx.ModelProto`` from a path or a model; bad files give a one-line ValueError."""
    onnx = require("onnx", extra="onnx", feature="reading ONNX models")

    if type(source).__name__ == "ModelProto":
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ...: all mean a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: not a readable ONNX model (truncated or malformed?): {first}") from None
    if not model.graph.node or not model.graph.output:
        raise ValueError(f"{path}: not a readable ONNX model (no graph nodes or outputs)")
    return model


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif type(v).__name__ == "TensorProto":
            v = onnx.numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _dims(value_info):
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]


def onnx_pads(a: dict, spatial, k, s, d):
    """``(lo, hi)`` pads (lists, one per spatial axis) of a Conv or pool node, from ``pads`` or ``auto_pad``."""
    nd = len(spatial)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = [], []
        for n, kk, ss, dd in zip(spatial, k, s, d):
            total = max(0, (-(-n // ss) - 1) * ss + dd * (kk - 1) + 1 - n)
            small = total // 2
            lo.append(small if auto == "SAME_UPPER" else total - small)
            hi.append(total - lo[-1])
        return lo, hi
    if auto == "VALID":
        return [0] * nd, [0] * nd
    p = list(a.get("pads", [0] * (2 * nd)))
    return p[:nd], p[nd:]


def _final_to_drop(graph, drop_final):
    """``(node position, op, drop it?)`` of the model's final monotone operation, or None.

    The final operation is found from the output back over value-preserving nodes
    (Identity, Reshape, Flatten, ...); it is dropped when its op is in ``drop_final``
    (names in any case, e.g. ``("softmax",)``).
    """
    if isinstance(drop_final, str):
        drop_final = [w for w in drop_final.split(",") if w.strip()]
    known = {op.lower(): op for op in MONOTONE}
    wanted = {str(w).strip().lower() for w in drop_final or ()}
    if wanted - set(known):
        raise ValueError(f"drop_final: {sorted(wanted - set(known))} cannot be dropped; allowed are strictly "
                         f"increasing final operations: {', '.join(sorted(known))}")
    producers = {out: (pos, node) for pos, node in enumerate(graph.node) for out in node.output if out}
    name, seen = graph.output[0].name, 0
    while name in producers and seen < len(graph.node):
        pos, node = producers[name]
        if node.op_type in MONOTONE:
            return pos, node.op_type, node.op_type.lower() in wanted
        if node.op_type not in PASSTHROUGH or not node.input:
            return None
        name, seen = node.input[0], seen + 1
    return None


def _sample_dims(dims, batch_axis, input_shape, name):
    """``(batched, full dims)`` of the input: which axis is a batch axis, dynamic sizes filled in.

    Without ``batch_axis`` (None) the leading axis is a batch axis when it is dynamic,
    or of size 1 in a rank >= 2 input; a fixed leading size > 1 is part of the sample.
    ``input_shape`` (the sample, without a batch axis) fills the dynamic sizes.
    """
    if batch_axis is None:
        batched = bool(dims) and (not isinstance(dims[0], int) or (dims[0] == 1 and len(dims) >= 2))
    else:
        batched = bool(batch_axis)
        if batched and not dims:
            raise ValueError(f"input {name!r} is a scalar: it has no axis to be a batch axis")
    rest = list(dims[1:] if batched else dims)
    if input_shape is not None:
        given = [int(d) for d in input_shape]
        if batched and len(given) == len(dims) and given[:1] == [1]:
            given = given[1:]  # the shape with the batch axis as 1, as graph.input_shape reads
        if len(given) != len(rest) or any(isinstance(d, int) and d != g for d, g in zip(rest, given)) \
                or min(given, default=1) < 1:
            raise ValueError(f"input_shape {tuple(given)} does not fit input {name!r} of shape {dims} "
                             f"({'batch axis left out: ' if batched else ''}{len(rest)} sizes, the fixed ones equal)")
        rest = given
    if not all(isinstance(d, int) for d in rest):
        raise ValueError(f"input {name!r} has shape {dims}: sizes other than the batch axis are dynamic; "
                         "give them with input_shape (convert --input-shape)")
    return batched, ([dims[0]] if batched else []) + rest


class _NodeFunction:
    """One ONNX node as a function of the flat values of its variable inputs, given the
    constants: ``one(Z)`` runs each row of ``Z`` as one sample, ``batch(Z)`` all rows at
    once along the size-1 leading axis (valid where the node treats that axis as a batch)."""

    def __init__(self, run, names, shapes, consts):
        self.run, self.names, self.shapes, self.consts = run, names, shapes, consts
        self.sizes = [prod(sh) for sh in shapes]
        self.n_in = sum(self.sizes)
        self.out_shapes = [o.shape for o in self.outputs(np.zeros((1, self.n_in)), False)]

    def outputs(self, Z, batched):
        feeds, start = dict(self.consts), 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            part = Z[:, start:start + size]
            feeds[name] = part.reshape((len(Z), *shape[1:])) if batched else part.reshape(shape)
            start += size
        return [np.asarray(o, dtype=np.float64) for o in self.run(feeds)]

    def one(self, Z):
        return np.stack([np.concatenate([o.reshape(-1) for o in self.outputs(z[None, :], False)]) for z in Z])

    def batch(self, Z):
        outs = self.outputs(Z, True)
        if any(o.shape != (len(Z), *sh[1:]) for o, sh in zip(outs, self.out_shapes)):
            raise ValueError("the node does not keep a batch along axis 0")
        return np.concatenate([o.reshape(len(Z), -1) for o in outs], axis=1)

    def batches(self, R) -> bool:
        """Whether :meth:`batch` equals :meth:`one` on the rows of ``R``."""
        if not all(sh[:1] == (1,) for sh in self.shapes + self.out_shapes):
            return False
        try:
            want, got = self.one(R), self.batch(R)
        except Exception:  # the operation refuses a batch along axis 0: one sample at a time
            return False
        return bool(np.allclose(got, want, rtol=0, atol=1e-9 * max(1.0, float(np.abs(want).max(initial=0))),
                                equal_nan=True))


class _OnnxLoader:
    def __init__(self, model, *, batch_axis=None, input_shape=None, drop_final=()):
        import onnx

        self.onnx = onnx
        self.model = model
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 9)
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ValueError(f"the model must have exactly one data input, it has {len(inputs)}: "
                             f"{[i.name for i in inputs]}")
        if len(g.output) != 1:
            raise ValueError(f"the model must have exactly one output, it has {len(g.output)}")
        self.inp, self.out = inputs[0], g.output[0]
        if not self.inp.type.tensor_type.HasField("shape"):
            raise ValueError(f"input {self.inp.name!r} has no declared shape")
        self.batched, dims = _sample_dims(_dims(self.inp), batch_axis, input_shape, self.inp.name)
        self.dynamic = self.batched and not isinstance(dims[0], int)
        self.mixing = self.dynamic or (self.batched and dims[0] != 1)  # several samples along axis 0
        shape = ((1,) + tuple(dims[1:])) if self.batched else tuple(dims)
        self.g = Graph(shape, self.inp.name)
        self.vals = {self.inp.name: 0}  # name -> node id (tensors) ; constants live in self.consts
        self.unavailable: dict[str, str] = {}  # outputs no rule gives (MaxPool's Indices): name -> what
        self.drop = _final_to_drop(g, drop_final)
        if self.drop is not None and not self.drop[2]:
            self.g.meta["final_monotone"] = self.drop[1]
        self.g.meta.update(source="onnx", input_name=self.inp.name, input_dims=dims,
                           output_name=self.out.name, output_dims=_dims(self.out), opset=self.opset,
                           batched=self.batched, dynamic_batch=self.dynamic,
                           float64=self.inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE)

    # -- helpers ---------------------------------------------------------------------------
    def shape(self, name):
        return self.g.nodes[self.vals[name]].shape

    def const(self, node, k, what):
        name = node.input[k] if k < len(node.input) else ""
        if not name:
            return None
        if name in self.vals:
            raise ValueError(f"{what} (input {k}, {name!r}) must be a constant, but it depends on the model input")
        if name not in self.consts:
            raise ValueError(self.undefined(name))
        return self.consts[name]

    def undefined(self, name) -> str:
        if name in self.unavailable:
            return f"input {name!r} is {self.unavailable[name]}, which cannot be converted"
        return f"input {name!r} is not defined before use"

    def reference(self, node, opset=None):
        """A function ``feeds -> outputs`` that runs ``node`` alone with ``onnx.reference``."""
        onnx, helper = self.onnx, self.onnx.helper
        ins = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
        outs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        graph = helper.make_graph([node], "fold", ins, outs)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset or self.opset)])
        from onnx.reference import ReferenceEvaluator

        ev = ReferenceEvaluator(m)
        return lambda feeds: ev.run(None, feeds)

    def run_reference(self, node, feeds):
        return self.reference(node)(feeds)

    # -- the walk --------------------------------------------------------------------------
    def check_finite(self, node, nan_only: bool = False) -> None:
        """Refuse a constant operand holding inf or NaN where it weighs or shifts the input: the
        network's matrices would hold it, and 0 * inf = NaN then reaches neurons the original keeps.
        With ``nan_only`` (bounds of Clip, Max, Min) only NaN is refused."""
        for n in node.input:
            if n and n not in self.vals and n in self.consts:
                c = np.asarray(self.consts[n])
                bad = np.isnan(c).any() if nan_only else not np.isfinite(c).all()
                if c.dtype.kind in "fc" and bad:
                    raise ValueError(f"the constant {n!r} holds inf or NaN: {node.op_type} with it is not "
                                     "an affine map of finite numbers (0 * inf is NaN)")

    def run(self) -> Graph:
        for pos, node in enumerate(self.model.graph.node):
            where = f"ONNX node #{pos} {node.name or node.output[0]!r} ({node.op_type})"
            first = len(self.g.nodes)
            try:
                if self.drop is not None and pos == self.drop[0] and self.drop[2]:
                    self.drop_node(node, where)
                    continue
                self.convert(node)
                for made in self.g.nodes[first:]:
                    made.origin = node.op_type
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            except Exception as exc:  # a reference op failing on odd input: one line, with the place
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ValueError(f"{where}: {type(exc).__name__}: {first}") from None
        name = self.out.name
        if name not in self.vals:
            raise ValueError(f"the output {name!r} does not depend on the input")
        self.g.output = self.vals[name]
        shape = self.g.output_shape
        if prod(shape) == 0:
            raise ValueError(f"the output {name!r} is empty (shape {shape})")
        self.g.meta["output_dims"] = self.output_dims(name, shape)
        # Does the output keep the batch axis in front? (Not after a Flatten(axis=rank) or a Transpose.)
        self.g.meta["output_batched"] = self.batched and shape[:1] == (1,)
        if self.mixing and not self.g.meta["output_batched"]:
            raise ValueError(f"the output {name!r} (shape {list(shape)} per sample) has lost the batch axis "
                             f"of input {self.inp.name!r}: the model mixes the samples of a batch; "
                             "convert --no-batch-axis reads the whole input as one sample")
        return self.g

    def output_dims(self, name, shape):
        """The output's dims: declared ints must agree; a batch axis keeps the input's size or name."""
        declared = self.g.meta["output_dims"]
        declared = declared if len(declared) == len(shape) else [None] * len(shape)
        dims = []
        for k, (d, n) in enumerate(zip(declared, shape)):
            batch = k == 0 and self.batched and n == 1
            if batch and self.dynamic:
                dims.append(d if isinstance(d, str) and d != "?" else self.g.meta["input_dims"][0])
            elif batch:
                dims.append(self.g.meta["input_dims"][0])
            else:
                dims.append(n)
            if isinstance(d, int) and d != dims[-1]:
                raise ValueError(f"output {name!r} is declared {declared} but computes shape {shape}")
        return dims

    def convert(self, node):
        op = node.op_type
        a = _attrs(node)
        tensor_inputs = [n for n in node.input if n in self.vals]
        if op == "Constant":
            self.consts[node.output[0]] = self.run_reference(node, {})[0]
            return
        if op == "If" and node.input[0] not in self.vals:
            self.inline_branch(node, a)
            return
        if op == "Shape" and tensor_inputs:
            full = np.array(self.shape(node.input[0]), dtype=np.int64)
            self.consts[node.output[0]] = full[a.get("start", 0):a.get("end", len(full))]
            return
        if not tensor_inputs:  # constant folding
            for n in node.input:
                if n and n not in self.consts:
                    raise ValueError(self.undefined(n))
            feeds = {n: self.consts[n] for n in node.input if n}
            for name, value in zip(node.output, self.run_reference(node, feeds)):
                self.consts[name] = np.asarray(value)
            return
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(self.refusal(op) if op in NOT_CONTINUOUS else f"unsupported operation {node.domain}.{op}")
        if op in ("Size", "EyeLike"):  # depend on the shape only
            zeros = np.zeros(self.shape(node.input[0]))
            self.consts[node.output[0]] = self.run_reference(node, {node.input[0]: zeros})[0]
            return
        if op in WEIGHING_OPS or op in ("Clip", "Max", "Min"):
            self.check_finite(node, nan_only=op not in WEIGHING_OPS)  # a bound of inf is fine
        handler = getattr(self, f"op_{op}", None)
        if handler is None and op in GATHER_OPS:
            handler = self.gather
        if handler is None and op in PROBE_OPS:
            handler = self.probe
        if handler is None:
            raise ValueError(self.refusal(op))
        if op in SAMPLE_OPS and self.shape(node.input[0])[:1] != (1,):
            out = self.per_sample(node, a, handler)
        else:
            out = handler(node, a)
        outs = out if isinstance(out, list) else [out]
        for name, v in zip(node.output, outs):
            if name and v is not None:
                self.vals[name] = v
        for extra in node.output[len(outs):]:
            if extra:
                self.vals.pop(extra, None)

    def inline_branch(self, node, a):
        """``If`` with a constant condition: the nodes of the branch it takes, in place."""
        branch = a["then_branch"] if bool(np.asarray(self.const(node, 0, "the condition")).reshape(-1)[0]) \
            else a["else_branch"]
        for inner in branch.node:
            self.convert(inner)
        for out, name in zip(branch.output, node.output):
            if out.name in self.vals:
                self.vals[name] = self.vals[out.name]
            elif out.name in self.consts:
                self.consts[name] = self.consts[out.name]
            else:
                raise ValueError(self.undefined(out.name))

    def refusal(self, op) -> str:
        """Why ``op`` cannot be converted (one line)."""
        if self.drop is not None and self.drop[1] == op and op in MONOTONE:
            return (f"{op} is not piecewise linear; as the model's final operation it can be dropped, keeping "
                    f"the argmax: convert --drop-final {op.lower()} (drop_final='{op.lower()}')")
        if op in MONOTONE or op in NOT_PWL:
            return f"{op} is not piecewise linear, so no ReLU network computes it exactly"
        if op in NOT_CONTINUOUS:
            return f"{op} is not continuous, so no ReLU network computes it"
        return f"unsupported operation {op}"

    def drop_node(self, node, where):
        """The final monotone ``node`` left out: its output is its input."""
        self.vals[node.output[0]] = self.vals[node.input[0]]
        self.g.meta["dropped_final"] = f"{where[len('ONNX '):]}"
        self.g.meta["dropped_position"] = self.drop[0]

    def per_sample(self, node, a, handler):
        """A per-sample operation (Conv, pooling) on a fixed leading axis of N > 1 samples.

        The handler builds its nodes for one sample in a graph of its own; they are
        copied here once per sample (block-diagonal matrices, shifted max groups).
        """
        x = node.input[0]
        shape = self.shape(x)
        N = shape[0]
        main, vals = self.g, self.vals
        self.g, self.vals = Graph((1, *shape[1:]), x), {x: 0}
        try:
            last = handler(node, a)
            sub = self.g
        finally:
            self.g, self.vals = main, vals
        ids = {0: vals[x]}
        for j, n in enumerate(sub.nodes[1:], 1):
            ins = [ids[i] for i in n.inputs]
            out_shape = (N, *n.shape[1:])
            if isinstance(n, Affine) and len(ins) == 1:
                M = sp.kron(sp.identity(N, format="csr"), n.M, format="csr")
                ids[j] = main.affine(ins, M, np.tile(n.b, N), shape=out_shape, name=n.name)
            elif isinstance(n, Max):
                groups = np.concatenate([n.groups + k * sub.nodes[n.inputs[0]].size for k in range(N)])
                ids[j] = main.max(ins[0], groups, shape=out_shape, name=n.name)
            else:
                raise ValueError(f"{node.op_type} on {N} samples is not supported")
        return ids[last]

    # -- value-moving ops: run the op itself on integer codes ------------------------------
    def gather(self, node, a, opset=None):
        self.check_batch(node, a)
        traced = list(dict.fromkeys(n for n in node.input if n in self.vals))  # Concat([x, x]): x once
        sizes = [prod(self.shape(n)) for n in traced]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        feeds_c, feeds_0 = {}, {}
        for n in node.input:
            if not n:
                continue
            if n in self.vals:
                k = traced.index(n)
                feeds_c[n] = codes(self.shape(n), int(offsets[k]))
                feeds_0[n] = np.zeros(self.shape(n))
            else:
                feeds_c[n] = feeds_0[n] = _as_data(self.const(node, list(node.input).index(n), "this input"))
        run = self.reference(node, opset)
        ids = []
        for k, (r0, rc) in enumerate(zip(run(feeds_0), run(feeds_c))):  # Split: one matrix per output
            ref0 = np.asarray(r0, dtype=np.float64)
            got = np.asarray(rc, dtype=np.float64) - ref0
            M = gather_matrix(got, int(offsets[-1]), f"{node.op_type}")
            if not self.is_gather(node, run, k, traced, feeds_0, M, ref0):
                raise ValueError(f"{node.op_type} does not move values without changing them here (not a gather)")
            ids.append(self.g.affine([self.vals[n] for n in traced], M, ref0.reshape(-1), shape=got.shape,
                                     name=f"{node.name or node.output[0]}" + (f" [{k}]" if k else "")))
        return ids

    def is_gather(self, node, run, k, traced, feeds, M, b) -> bool:
        """Whether output ``k`` of the gather read off the codes is right on a random input too
        (a Scatter with reduction='max' looks like a gather on codes, and is not one)."""
        r = np.random.default_rng(len(self.g.nodes)).standard_normal(M.shape[1])
        feeds, start = dict(feeds), 0
        for n in traced:
            size = prod(self.shape(n))
            feeds[n] = r[start:start + size].reshape(self.shape(n))
            start += size
        got = np.asarray(run(feeds)[k], dtype=np.float64).reshape(-1)
        return got.shape == b.reshape(-1).shape and bool(np.allclose(got, M @ r + b.reshape(-1), rtol=0, atol=1e-12,
                                                                      equal_nan=True))

    def probe(self, node, a, opset=None):
        """An operation affine in its variable inputs (constant attributes and other inputs).

        Its matrix is read off unit vectors with ``onnx.reference`` (a batch of them
        along a size-1 leading axis where the operation treats that axis as a batch,
        else one at a time), after a test of affinity, and checked on random inputs:
        an operation that is not affine here is refused, never approximated.
        """
        self.check_batch(node, a)
        traced = list(dict.fromkeys(n for n in node.input if n in self.vals))
        consts = {n: _as_data(self.consts[n]) for n in node.input if n and n not in self.vals}
        f = _NodeFunction(self.reference(node, opset), traced, [self.shape(n) for n in traced], consts)
        R = np.random.default_rng(len(self.g.nodes)).standard_normal((4, f.n_in))
        if not looks_affine(f.one, R[:2]):
            raise ValueError(f"{node.op_type} is not affine in its input here (with these attributes and constant "
                             "inputs), nor piecewise linear")
        fn = f.batch if f.batches(R[:2]) else f.one
        if fn is f.one and f.n_in > PROBE_LIMIT:
            raise ValueError(f"{node.op_type} on {f.n_in} input neurons would be probed one unit vector at a time "
                             f"(more than {PROBE_LIMIT}); not supported at this size")
        M, b = probe_affine(fn, f.n_in)
        if not is_affine_on(f.one, M, b, R[2:]):
            raise ValueError(f"{node.op_type} is not affine in its input here, nor piecewise linear")
        ids, row = [], 0
        for k, sh in enumerate(f.out_shapes):
            size = prod(sh)
            ids.append(self.g.affine([self.vals[n] for n in traced], sp.csr_array(M[row:row + size]),
                                     b[row:row + size], shape=sh,
                                     name=f"{node.name or node.output[0]}" + (f" [{k}]" if k else "")))
            row += size
        return ids

    def slices_axis_zero(self, node, a, rank: int) -> bool:
        """Whether a Slice cuts axis 0 (anything but start 0, no end, step 1 there)."""
        if len(node.input) > 1:  # opset 10+: starts, ends, axes, steps as inputs
            arg = lambda k: (np.ravel(self.const(node, k, "Slice's arguments")).astype(np.int64)  # noqa: E731
                             if len(node.input) > k and node.input[k] else None)
            starts, ends, axes, steps = arg(1), arg(2), arg(3), arg(4)
        else:
            starts, ends, axes, steps = (np.asarray(a[k]) if k in a else None for k in ("starts", "ends", "axes", "steps"))
        axes = np.arange(len(starts)) if axes is None else np.asarray(axes) % rank
        for k in np.flatnonzero(axes == 0):
            step = 1 if steps is None else int(steps[k])
            if int(starts[k]) != 0 or int(ends[k]) < 2**30 or step != 1:  # an end past any batch: to the end
                return True
        return False

    def check_batch(self, node, a):
        """With several samples along axis 0 (a dynamic or forced batch), refuse ops that move or mix it."""
        if not self.mixing:
            return
        op, rank = node.op_type, len(self.shape(next(n for n in node.input if n in self.vals)))
        if op == "Transpose" and list(a.get("perm", range(rank - 1, -1, -1)))[0] != 0:
            raise ValueError(f"Transpose with perm {a.get('perm')} moves {_AXIS_ZERO}")
        if op == "Flatten" and a.get("axis", 1) % rank == 0:
            raise ValueError(f"Flatten(axis=0) merges {_AXIS_ZERO}")
        if op in ("Concat", "Gather") and a.get("axis", 0) % rank == 0:
            raise ValueError(f"{op} over {_AXIS_ZERO}")
        if op == "Reshape":
            target = self.const(node, 1, "the target shape")
            if len(target) == 0 or target[0] not in (0, 1, -1):
                raise ValueError(f"Reshape to {list(target)} merges {_AXIS_ZERO}")
        if op == "Slice" and self.slices_axis_zero(node, a, rank):
            raise ValueError(f"Slice cutting the batch axis is {_AXIS_ZERO}")
        if op == "Pad":
            pads = a.get("pads") if len(node.input) < 2 or not node.input[1] else self.const(node, 1, "pads")
            pads = [int(v) for v in np.ravel(pads if pads is not None else [])]
            if len(pads) == 2 * rank and (pads[0] or pads[rank]):
                raise ValueError(f"Pad growing the batch axis is {_AXIS_ZERO}")
        if op == "GatherElements" and a.get("axis", 0) % rank == 0:
            raise ValueError(f"GatherElements over {_AXIS_ZERO}")
        if op == "GatherND" and a.get("batch_dims", 0) == 0:
            raise ValueError(f"GatherND with batch_dims=0 indexes {_AXIS_ZERO}")
        if op == "Tile" and int(np.ravel(self.const(node, 1, "repeats"))[0]) != 1:
            raise ValueError(f"Tile with repeats[0] != 1 is {_AXIS_ZERO}")
        if op == "Expand":
            target = [int(t) for t in np.ravel(self.const(node, 1, "the target shape"))]
            if len(target) > rank or (target and target[0] != 1):
                raise ValueError(f"Expand to {target} is {_AXIS_ZERO}")
        if op == "Split" and a.get("axis", 0) % rank == 0:
            raise ValueError(f"Split(axis=0) is {_AXIS_ZERO}")
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(node.input) > 1:
                axes = self.const(node, 1, "axes")
            if axes is not None and 0 in [int(x) % (rank + (op == "Unsqueeze")) for x in np.ravel(axes)]:
                raise ValueError(f"{op} of {_AXIS_ZERO}")

    def op_Identity(self, node, a):
        return self.vals[node.input[0]]

    def op_Cast(self, node, a):
        import onnx

        if a.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            raise ValueError(f"Cast of the data to {onnx.TensorProto.DataType.Name(a.get('to', 0))} is not supported")
        return self.vals[node.input[0]]

    def op_CastLike(self, node, a):
        """Cast to the type of the (constant) second input: the value itself when that type is a float."""
        if node.input[0] not in self.vals:  # a constant cast like a value: a float constant
            self.consts[node.output[0]] = np.asarray(self.consts[node.input[0]], dtype=np.float32)
            return None
        if node.input[1] in self.vals:  # a value of the network: a float tensor
            return self.vals[node.input[0]]
        target = np.asarray(self.const(node, 1, "the type template")).dtype
        if target.kind != "f":
            raise ValueError(f"CastLike of the data to {target} is not supported")
        return self.vals[node.input[0]]

    def op_Dropout(self, node, a):
        if len(node.input) > 2 and node.input[2]:
            mode = self.const(node, 2, "training_mode")
            if mode is not None and bool(np.asarray(mode)):
                raise ValueError("Dropout in training mode is random, not a function of the input")
        if len(node.output) > 1 and node.output[1]:
            self.consts[node.output[1]] = np.ones(self.shape(node.input[0]), dtype=bool)
        return self.vals[node.input[0]]

    # -- affine ops ------------------------------------------------------------------------
    def sample_shape(self, name, op):
        shape = self.shape(name)
        if len(shape) < 2 or shape[0] != 1:
            raise ValueError(f"{op} needs an input of shape (N, C, ...) with one sample, got {shape}")
        return shape[1:]

    def op_Conv(self, node, a):
        x = node.input[0]
        in_shape = self.sample_shape(x, "Conv")
        w = self.const(node, 1, "the weight")
        b = self.const(node, 2, "the bias")
        nd = w.ndim - 2
        k = list(a.get("kernel_shape", w.shape[2:]))
        s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        lo, hi = self.pads(a, in_shape[1:], k, s, d)
        kw = dict(stride=s, dilation=d, groups=int(a.get("group", 1)))
        rec = conv_record(w, b, in_shape, pads=list(zip(lo, hi)), **kw)  # (lo, hi) pads: asymmetric too
        return self.g.conv(self.vals[x], rec, shape=(1,) + rec.geometry.output_shape, name=node.name or node.output[0])

    def pads(self, a, spatial, k, s, d):
        return onnx_pads(a, spatial, k, s, d)

    def op_ConvTranspose(self, node, a):
        x = node.input[0]
        in_shape = self.sample_shape(x, "ConvTranspose")
        w = self.const(node, 1, "the weight")
        b = self.const(node, 2, "the bias")
        nd = w.ndim - 2
        k = list(a.get("kernel_shape", w.shape[2:]))
        s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        op_ = list(a.get("output_padding", [0] * nd))
        if "output_shape" in a or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            want = list(a["output_shape"])[-nd:] if "output_shape" in a else [n * ss for n, ss in zip(in_shape[1:], s)]
            total = [conv_transpose_output_size(n, kk, ss, dd, 0, o) - t
                     for n, ss, o, kk, dd, t in zip(in_shape[1:], s, op_, k, d, want)]
            if "output_shape" not in a:  # SAME_*: as onnxruntime, never a negative padding
                total = [max(0, t) for t in total]
            upper = a.get("auto_pad", "NOTSET") == "SAME_UPPER"
            lo = [t // 2 if upper else t - t // 2 for t in total]
            hi = [t - l for t, l in zip(total, lo)]
        else:
            p = list(a.get("pads", [0] * (2 * nd)))
            lo, hi = p[:nd], p[nd:]
        sym = lo == hi and min(lo, default=0) >= 0
        rec = conv_record(w, b, in_shape, stride=s, dilation=d, groups=int(a.get("group", 1)),
                          padding=tuple(lo) if sym else 0, transposed=True, output_padding=tuple(op_))
        out = rec.geometry.output_shape
        name = node.name or node.output[0]
        y = self.g.conv(self.vals[x], rec, shape=(1,) + out, name=name if sym else f"{name} (unpadded)")
        if sym:
            return y
        return self.crop(y, out, lo, hi, name)  # asymmetric pads (SAME_*, output_shape): crop the full output

    def crop(self, x, shape, lo, hi, name):
        """``x`` of shape ``(C, *spatial)`` (one sample) cut by ``lo``/``hi`` per spatial axis (negative: zeros)."""
        c = codes(shape)
        c = np.pad(c, [(0, 0)] + [(max(0, -l), max(0, -h)) for l, h in zip(lo, hi)])
        keep = [slice(max(0, l), c.shape[i + 1] - max(0, h)) for i, (l, h) in enumerate(zip(lo, hi))]
        c = c[(slice(None), *keep)]
        return self.g.affine([x], gather_matrix(c, prod(shape)), shape=(1,) + c.shape, name=name)

    def op_Gemm(self, node, a):
        if node.input[0] not in self.vals or a.get("transA", 0) or (len(node.input) > 2 and node.input[2] in self.vals):
            return self.probe(node, a)  # B or C variable, or A transposed
        B = self.const(node, 1, "B")
        B = B.T if a.get("transB", 0) else B
        C = self.const(node, 2, "C")
        M, _, shape = linear_affine(a.get("alpha", 1.0) * B.T, None, self.shape(node.input[0]))
        bias = np.zeros(shape) if C is None else a.get("beta", 1.0) * np.broadcast_to(C, shape)
        return self.g.affine([self.vals[node.input[0]]], M, bias.reshape(-1), shape=shape,
                             name=node.name or node.output[0])

    def op_MatMul(self, node, a):
        x, y = node.input[0], node.input[1]
        name = node.name or node.output[0]
        if x in self.vals and y in self.vals:
            raise ValueError("MatMul of two values that both depend on the input is not affine")
        if x in self.vals:  # x @ W: a linear map of the last axis
            W = self.const(node, 1, "the second factor")
            shape = self.shape(x)
            if W.ndim == 1:
                M, _, out = linear_affine(W[None, :], None, shape)
                return self.g.affine([self.vals[x]], M, shape=out[:-1], name=name)
            if W.ndim != 2:  # a batched product: block-diagonal
                return self.matmul_batched(node, x, W, left=False)
            M, _, out = linear_affine(W.T, None, shape)
            return self.g.affine([self.vals[x]], M, shape=out, name=name)
        W = self.const(node, 0, "the first factor")  # W @ x
        shape = self.shape(y)
        if W.ndim > 2:
            return self.matmul_batched(node, y, W, left=True)
        if W.ndim != 2 or shape[-1 if len(shape) == 1 else -2] != W.shape[1]:
            raise ValueError(f"MatMul of a {W.shape} constant with a value of shape {shape}")
        if len(shape) == 1:
            return self.g.affine([self.vals[y]], sp.csr_array(W.astype(np.float64)), shape=(W.shape[0],), name=name)
        lead, p = prod(shape[:-2]), shape[-1]
        M = sp.kron(sp.identity(lead), sp.kron(sp.csr_array(W.astype(np.float64)), sp.identity(p)), format="csr")
        return self.g.affine([self.vals[y]], M, shape=(*shape[:-2], W.shape[0], p), name=name)

    def matmul_batched(self, node, x, W, left):
        """``x @ W`` or ``W @ x`` with broadcasting batch axes (numpy.matmul's rules): its matrix
        read off unit vectors, computed by NumPy along an extra leading axis."""
        shape, W = self.shape(x), np.asarray(W, dtype=np.float64)
        n = prod(shape)
        out = np.matmul(W, np.zeros(shape)) if left else np.matmul(np.zeros(shape), W)

        extra = (1,) * max(0, W.ndim - len(shape))  # the probe's axis in front of every batch axis

        def fn(Z):
            X = Z.reshape((len(Z), *extra, *shape))
            return (np.matmul(W, X) if left else np.matmul(X, W)).reshape(len(Z), -1)

        M, b = probe_affine(fn, n)
        return self.g.affine([self.vals[x]], M, b, shape=out.shape, name=node.name or node.output[0])

    def broadcast(self, name, out_shape, label):
        shape = self.shape(name)
        if tuple(shape) == tuple(out_shape):
            return self.vals[name]
        c = np.broadcast_to(codes((1,) * (len(out_shape) - len(shape)) + tuple(shape)), out_shape)
        return self.g.affine([self.vals[name]], gather_matrix(c, prod(shape)), shape=out_shape,
                             name=f"{label} (broadcast)")

    def arith(self, node, op):
        name = node.name or node.output[0]
        ins = list(node.input)
        shapes = [self.shape(n) if n in self.vals else np.shape(self.consts[n]) for n in ins]
        out = tuple(np.broadcast_shapes(*shapes))
        traced = [n in self.vals for n in ins]
        n = prod(out)
        eye = sp.identity(n, format="csr")
        if all(traced):
            if op not in ("Add", "Sub", "Sum"):
                raise ValueError(f"{op} of two values that both depend on the input is not affine")
            ids = [self.broadcast(v, out, name) for v in ins]
            if op == "Sub":
                return self.g.affine(ids, sp.hstack([eye, -eye], format="csr"), shape=out, name=name)
            return self.g.add(ids, name=name)
        k = traced.index(True)
        x = self.broadcast(ins[k], out, name)
        c = np.broadcast_to(np.asarray(self.consts[ins[1 - k]], dtype=np.float64), out).reshape(-1)
        if op in ("Add", "Sum"):
            return self.g.affine([x], eye, c, shape=out, name=name)
        if op == "Sub":
            return self.g.affine([x], eye if k == 0 else -eye, -c if k == 0 else c, shape=out, name=name)
        if op == "Div" and k != 0:
            raise ValueError("division by a value that depends on the input is not affine")
        with np.errstate(divide="ignore"):
            scale = c if op == "Mul" else 1.0 / c
        if not np.isfinite(scale).all():
            raise ValueError(f"{op} by a constant holding {'0' if op == 'Div' else 'inf or nan'}: "
                             "x * inf is not an affine function of x (0 * inf is nan)")
        return self.g.affine([x], sp.diags_array(scale, format="csr"), shape=out, name=name)

    def op_Add(self, node, a):
        return self.arith(node, "Add")

    def op_Sub(self, node, a):
        return self.arith(node, "Sub")

    def op_Mul(self, node, a):
        return self.arith(node, "Mul")

    def op_Div(self, node, a):
        return self.arith(node, "Div")

    def operands(self, node):
        """The inputs broadcast to one shape: ``(shape, variable node ids, constant arrays)``."""
        ins = [n for n in node.input if n]
        shapes = [self.shape(n) if n in self.vals else np.shape(self.consts[n]) for n in ins]
        out = tuple(np.broadcast_shapes(*shapes))
        name = node.name or node.output[0]
        ids = [self.broadcast(n, out, name) for n in ins if n in self.vals]
        consts = [np.broadcast_to(np.asarray(self.consts[n], dtype=np.float64), out).reshape(-1)
                  for n in ins if n not in self.vals]
        return out, ids, consts

    def op_Sum(self, node, a, scale=1.0):
        out, ids, consts = self.operands(node)
        eye = sp.identity(prod(out), format="csr") * scale
        b = scale * sum(consts, np.zeros(prod(out)))
        return self.g.affine(ids, sp.hstack([eye] * len(ids), format="csr"), b, shape=out,
                             name=node.name or node.output[0])

    def op_Mean(self, node, a):
        return self.op_Sum(node, a, 1.0 / len([n for n in node.input if n]))

    def op_Max(self, node, a, sign=1.0):
        """``max`` of several tensors (constants first combined into one): a Max node over the stacked operands."""
        out, ids, consts = self.operands(node)
        n, name = prod(out), node.name or node.output[0]
        if consts:
            c = np.max(np.stack(consts) * sign, axis=0) * sign
            ids.append(self.g.affine([ids[0]], sp.csr_array((n, n)), c, shape=out, name=f"{name} (constant)"))
        if len(ids) == 1:
            return ids[0]
        stacked = self.g.affine(ids, sign * sp.identity(n * len(ids), format="csr"), name=f"{name} (operands)")
        groups = np.arange(n)[:, None] + n * np.arange(len(ids))[None, :]
        m = self.g.max(stacked, groups, shape=out, name=name)
        return m if sign > 0 else self.g.affine([m], -sp.identity(n, format="csr"), shape=out, name=f"{name} (-)")

    def op_Min(self, node, a):
        return self.op_Max(node, a, sign=-1.0)

    def reduce_axes(self, node, a):
        """``(groups, out_shape)`` of a Reduce* node (axes from the attribute or, opset 13/18+, the input)."""
        shape = self.shape(node.input[0])
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes")
        if axes is None or len(np.ravel(axes)) == 0:
            axes = [] if a.get("noop_with_empty_axes", 0) else list(range(len(shape)))
        axes = [int(x) for x in np.ravel(axes)]
        if self.mixing and 0 in [x % max(1, len(shape)) for x in axes]:
            raise ValueError(f"{node.op_type} over {_AXIS_ZERO}")
        return reduce_groups(shape, axes, bool(a.get("keepdims", 1)))

    def reduce_sum(self, node, a, x, mean=False):
        groups, out = self.reduce_axes(node, a)
        M = group_sum_matrix(groups, self.g.nodes[x].size, 1.0 / groups.shape[1] if mean else 1.0)
        return self.g.affine([x], M, shape=out, name=node.name or node.output[0])

    def op_ReduceSum(self, node, a):
        return self.reduce_sum(node, a, self.vals[node.input[0]])

    def op_ReduceMean(self, node, a):
        return self.reduce_sum(node, a, self.vals[node.input[0]], mean=True)

    def op_ReduceL1(self, node, a):
        return self.reduce_sum(node, a, self.op_Abs(node, a))

    def op_ReduceMax(self, node, a, sign=1.0):
        groups, out = self.reduce_axes(node, a)
        x, name = self.vals[node.input[0]], node.name or node.output[0]
        if groups.shape[1] == 0:
            raise ValueError(f"{node.op_type} over an empty axis")
        if sign > 0:
            return self.g.max(x, groups, shape=out, name=name)
        n = self.g.nodes[x].size
        neg = self.g.affine([x], -sp.identity(n, format="csr"), name=f"{name} (-x)")
        m = self.g.max(neg, groups, shape=out, name=f"{name} (max)")
        return self.g.affine([m], -sp.identity(prod(out), format="csr"), shape=out, name=name)

    def op_ReduceMin(self, node, a):
        return self.op_ReduceMax(node, a, sign=-1.0)

    def op_Neg(self, node, a):
        n = prod(self.shape(node.input[0]))
        return self.g.affine([self.vals[node.input[0]]], -sp.identity(n, format="csr"),
                             shape=self.shape(node.input[0]), name=node.name or node.output[0])

    def op_BatchNormalization(self, node, a):
        if a.get("training_mode", 0):
            raise ValueError("BatchNormalization in training mode is not affine")
        shape = self.shape(node.input[0])
        scale, bias, mean, var = (np.asarray(self.const(node, i, n), dtype=np.float64) for i, n in
                                  enumerate(("scale", "B", "mean", "var"), 1))
        s, t = batch_norm_affine(mean, var, scale, bias, a.get("epsilon", 1e-5))
        M, t = channel_affine(s, t, shape[1:] if len(shape) > 1 else shape)
        return self.g.affine([self.vals[node.input[0]]], M, t, shape=shape, name=node.name or node.output[0])

    # -- activations -----------------------------------------------------------------------
    def act(self, node, kind, params=None):
        return self.g.act(self.vals[node.input[0]], kind, params, name=node.name or node.output[0])

    def op_Relu(self, node, a):
        return self.act(node, "ReLU")

    def op_Sigmoid(self, node, a):
        return self.act(node, "Sigmoid")

    def op_Tanh(self, node, a):
        return self.act(node, "Tanh")

    def op_Softplus(self, node, a):
        return self.act(node, "Softplus")

    def op_LeakyRelu(self, node, a):
        return self.act(node, "LeakyReLU", {"negative_slope": float(a.get("alpha", 0.01))})

    def op_Elu(self, node, a):
        return self.act(node, "ELU", {"alpha": float(a.get("alpha", 1.0))})

    def op_PRelu(self, node, a):
        slope = np.asarray(self.const(node, 1, "the slope"), dtype=np.float64)
        slopes = np.broadcast_to(slope, self.shape(node.input[0])).reshape(-1).copy()
        return self.act(node, "PReLU", {"slopes": slopes})

    def op_Abs(self, node, a):
        """``|x| = -x + 2 relu(x)``."""
        return piecewise_linear(self.g, self.vals[node.input[0]], -1.0, 0.0, [[0.0]], [[2.0]],
                                name=node.name or node.output[0])

    def op_HardSigmoid(self, node, a):
        """``clip(alpha * x + beta, 0, 1)``."""
        x, name = self.vals[node.input[0]], node.name or node.output[0]
        n, alpha, beta = self.g.nodes[x].size, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        z = self.g.affine([x], alpha * sp.identity(n, format="csr"), np.full(n, beta), shape=self.g.nodes[x].shape,
                          name=f"{name} (alpha x + beta)")
        return clip(self.g, z, 0.0, 1.0, name=name)

    def op_Shrink(self, node, a):
        """Soft shrinkage ``relu(x - l) - relu(-x - l)`` (continuous only when ``bias == lambd``)."""
        lambd, bias = float(a.get("lambd", 0.5)), float(a.get("bias", 0.0))
        if bias != lambd:
            raise ValueError(f"Shrink with bias {bias} != lambd {lambd} jumps at +-lambd: not continuous, so no "
                             "ReLU network computes it")
        return piecewise_linear(self.g, self.vals[node.input[0]], 1.0, lambd, [[lambd, -lambd]], [[1.0, -1.0]],
                                name=node.name or node.output[0])

    def op_ThresholdedRelu(self, node, a):
        alpha = float(a.get("alpha", 1.0))
        if alpha != 0.0:
            raise ValueError(f"ThresholdedRelu with alpha {alpha} jumps at alpha: not continuous, so no ReLU "
                             "network computes it")
        return self.act(node, "ReLU")

    def op_Resize(self, node, a):
        """Nearest: a gather; linear and cubic interpolation: affine (the general rule)."""
        return self.gather(node, a) if a.get("mode", "nearest") == "nearest" else self.probe(node, a)

    def op_Upsample(self, node, a):
        """Upsample (opsets 7-9) is Resize with asymmetric coordinates; linear mode goes through Resize-13."""
        if a.get("mode", "nearest") == "nearest":
            return self.gather(node, a)
        scales = node.input[1] if len(node.input) > 1 else f"{node.output[0]}__scales"
        if len(node.input) < 2:
            self.consts[scales] = np.asarray(a["scales"], dtype=np.float32)
        resize = self.onnx.helper.make_node("Resize", [node.input[0], "", scales], list(node.output), name=node.name,
                                            mode="linear", coordinate_transformation_mode="asymmetric")
        return self.probe(resize, {}, opset=13)

    def op_ScatterND(self, node, a):
        reduction = a.get("reduction", "none")
        if reduction == "none":
            return self.gather(node, a)
        if reduction in ("add", "mul") or node.input[0] not in self.vals:
            return self.probe(node, a)
        if any(n in self.vals for n in node.input[1:]):
            raise ValueError(f"{node.op_type} with reduction={reduction!r} of updates that depend on the input is "
                             "not supported")
        return self.scatter_extreme(node, reduction)

    op_ScatterElements = op_ScatterND

    def op_Scatter(self, node, a):
        """Scatter (opsets 9-10) is ScatterElements under its first name."""
        same = self.onnx.helper.make_node("ScatterElements", list(node.input), list(node.output), name=node.name,
                                          axis=int(a.get("axis", 0)))
        return self.gather(same, a, opset=11)

    def scatter_extreme(self, node, reduction):
        """``y = max(x, c)`` (or min) where updates land, ``x`` elsewhere: ``c + relu(x - c)`` / ``x - relu(x - c)``."""
        x, shape = self.vals[node.input[0]], self.shape(node.input[0])
        fill = -np.inf if reduction == "max" else np.inf
        feeds = {n: _as_data(self.consts[n]) for n in node.input[1:] if n}
        feeds[node.input[0]] = np.full(shape, fill)
        c = np.asarray(self.run_reference(node, feeds)[0], dtype=np.float64).reshape(-1)
        hit = c != fill
        c = np.where(hit, c, 0.0)
        if reduction == "max":
            return piecewise_linear(self.g, x, np.where(hit, 0.0, 1.0), c, c[:, None], hit[:, None] * 1.0,
                                    name=node.name or node.output[0])
        return piecewise_linear(self.g, x, 1.0, 0.0, c[:, None], hit[:, None] * -1.0, name=node.name or node.output[0])

    def op_GridSample(self, node, a):
        """Affine in the image for a constant grid; the mode names of opset 16 read as opset 20's."""
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(a.get("mode", "bilinear"), a.get("mode", "bilinear"))
        if mode == "nearest":
            return self.gather(node, a)
        attrs = {k: v for k, v in a.items() if k != "mode"}
        same = self.onnx.helper.make_node("GridSample", list(node.input), list(node.output), name=node.name,
                                          mode=mode, **attrs)
        return self.probe(same, a, opset=max(self.opset, 20))

    def op_LpPool(self, node, a):
        """``p = 1``: the window sums of ``|x|`` (an average pool counting the padding, times the window size)."""
        if int(a.get("p", 2)) != 1:
            raise ValueError(f"LpPool with p = {a.get('p', 2)} is not piecewise linear, so no ReLU network computes "
                             "it exactly")
        name = f"{node.output[0]}__abs"
        self.vals[name] = self.op_Abs(node, a)
        avg = self.onnx.helper.make_node("AveragePool", [name], list(node.output), name=node.name)
        attrs = {**{k: v for k, v in a.items() if k != "p"}, "count_include_pad": 1}
        pool = lambda n, at: self.pool(n, at, "avg")
        y = pool(avg, attrs) if self.shape(name)[:1] == (1,) else self.per_sample(avg, attrs, pool)
        n, k = self.g.nodes[y].size, prod(a["kernel_shape"])
        return self.g.affine([y], k * sp.identity(n, format="csr"), shape=self.g.nodes[y].shape,
                             name=node.name or node.output[0])

    def op_Softmax(self, node, a):
        raise ValueError(self.refusal(node.op_type))

    op_LogSoftmax = op_Softmax

    def op_Clip(self, node, a):
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, 1, "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, 2, "max"))
        return self.act(node, "Hardtanh", {"min_val": float(lo), "max_val": float(hi)})

    # -- pooling ---------------------------------------------------------------------------
    def pool(self, node, a, kind):
        if len(node.output) > 1 and node.output[1]:  # integer positions: no value of the network
            self.unavailable[node.output[1]] = "the Indices output of MaxPool (integer positions)"
        shape = self.sample_shape(node.input[0], node.op_type)
        spatial = shape[1:]
        nd = len(spatial)
        k = list(a["kernel_shape"])
        s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        lo, hi = self.pads(a, spatial, k, s, d)
        out = []
        for n, kk, ss, dd, l, h in zip(spatial, k, s, d, lo, hi):
            o = conv_output_size(n + (ss - 1 if a.get("ceil_mode", 0) else 0), kk, ss, dd, l, h)  # ceil: round up
            if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
                o = -(-n // ss)
            if a.get("ceil_mode", 0) and (o - 1) * ss >= n + l:
                o -= 1  # the last window must start inside the input or the left padding
            out.append(o)
        W, cnt = pool_windows(shape, k, s, d, lo, hi, out)
        rec = pool_record(f"{kind}_pool", pool_geometry(shape, k, s, d, lo, hi, out))
        name = node.name or node.output[0]
        if kind == "max":
            return self.g.max(self.vals[node.input[0]], max_pool_groups(W), shape=(1, shape[0], *out), name=name,
                              conv=rec)
        div = cnt if a.get("count_include_pad", 0) else np.diff(W.indptr).astype(np.float64)
        return self.g.affine([self.vals[node.input[0]]], avg_pool_affine(W, div), shape=(1, shape[0], *out),
                             name=name, conv=rec)

    def op_MaxPool(self, node, a):  # storage_order only orders the Indices output
        return self.pool(node, a, "max")

    def op_AveragePool(self, node, a):
        return self.pool(node, a, "avg")

    def global_pool(self, node, kind):
        shape = self.sample_shape(node.input[0], node.op_type)
        W, cnt = adaptive_windows(shape, (1,) * (len(shape) - 1))
        out = (1, shape[0]) + (1,) * (len(shape) - 1)
        nd = len(shape) - 1
        rec = pool_record(f"{kind}_pool", pool_geometry(shape, shape[1:], shape[1:], (1,) * nd, (0,) * nd,
                                                        (0,) * nd, (1,) * nd))
        name = node.name or node.output[0]
        if kind == "max":
            return self.g.max(self.vals[node.input[0]], max_pool_groups(W), shape=out, name=name, conv=rec)
        return self.g.affine([self.vals[node.input[0]]], avg_pool_affine(W, cnt), shape=out, name=name, conv=rec)

    def op_GlobalAveragePool(self, node, a):
        return self.global_pool(node, "avg")

    def op_GlobalMaxPool(self, node, a):
        return self.global_pool(node, "max")


def _as_data(value):
    """A constant fed beside float64 probes: floating-point constants as float64 too."""
    value = np.asarray(value)
    return value.astype(np.float64) if value.dtype.kind == "f" else value


def _first_line(exc) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    return text if len(text) <= 300 else text[:297] + "..."


def validate_onnx(model, path=None, input_dims=None) -> None:
    """Refuse, with the reason in one ValueError line, a model that ``onnx.checker`` or
    onnxruntime cannot read or run (an unknown opset, a weight whose shape or type
    disagrees with its node, ...): checked once on an input of zeros of ``input_dims``
    (default: the declared shape, dynamic sizes 1)."""
    import onnx

    where = os.fspath(path) if path is not None else "the model"
    try:
        onnx.checker.check_model(os.fspath(path) if path is not None else model)
    except Exception as exc:  # a value without a declared shape is allowed (the spec makes it optional)
        if "Field 'shape' of 'type' is required" not in str(exc):
            raise ValueError(f"{where}: not a valid ONNX model (onnx.checker): {_first_line(exc)}") from None
    from .._optional import require

    ort = require("onnxruntime", extra="onnx", feature="validating ONNX models")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(os.fspath(path) if path is not None else model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            dims = input_dims if input_dims is not None and len(sess.get_inputs()) == 1 else i.shape
            dtype = onnx.helper.tensor_dtype_to_np_dtype(
                next(v.type.tensor_type.elem_type for v in model.graph.input if v.name == i.name))
            feeds[i.name] = np.zeros([d if isinstance(d, int) and d >= 0 else 1 for d in dims], dtype=dtype)
        sess.run(None, feeds)
    except Exception as exc:
        raise ValueError(f"{where}: onnxruntime cannot run this model: {_first_line(exc)}") from None


def without_dropped(source, meta):
    """The original model with the node ``drop_final`` left out replaced by Identity (a path
    when nothing was dropped, else the serialized model): what the converted network computes,
    for onnxruntime to check it against."""
    pos = meta.get("dropped_position")
    if pos is None:
        return source
    import onnx

    model = read_onnx(source)
    model = onnx.load_from_string(model.SerializeToString())  # a copy; external data already loaded
    node = model.graph.node[pos]
    identity = onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)
    model.graph.node.remove(node)
    model.graph.node.insert(pos, identity)
    return model.SerializeToString()


def from_onnx(source, *, batch_axis: bool | None = None, input_shape=None, drop_final=(),
              validate: bool = True) -> Graph:
    """The IR graph of an ONNX model (a path or an ``onnx.ModelProto``).

    Parameters
    ----------
    batch_axis : bool, optional
        Whether the input's leading axis is a batch axis. By default it is when it is
        dynamic, or of size 1 in an input of rank >= 2; a fixed leading size > 1 is
        then part of the one sample.
    input_shape : tuple of int, optional
        The sample's shape (without the batch axis), for inputs with dynamic sizes.
    drop_final : str or sequence of str
        Final strictly increasing operations to leave out (``"softmax"``,
        ``"logsoftmax"``, ``"sigmoid"``, ...): the result keeps the original's argmax.
        ``graph.meta["dropped_final"]`` then names the node dropped.
    validate : bool
        Check the model with ``onnx.checker`` and onnxruntime first (:func:`validate_onnx`).

    Example
    -------
    >>> import numpy as np, onnx
    >>> from onnx import helper, TensorProto, numpy_helper
    >>> W = numpy_helper.from_array(np.array([[1., 2.], [3., 4.]], dtype=np.float32), "W")
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [W])
    >>> ir = from_onnx(helper.make_model(g))
    >>> ir.evaluate(np.array([[1., 1.]]))
    array([[4., 6.]])
    """
    if input_shape is not None and (isinstance(input_shape, (str, bytes)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in input_shape)):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    model = read_onnx(source)
    try:
        loader = _OnnxLoader(model, batch_axis=batch_axis, input_shape=input_shape, drop_final=drop_final)
    except ValueError:
        raise
    except Exception as exc:  # a damaged initializer or type field: one line
        raise ValueError(f"not a readable ONNX model: {type(exc).__name__}: {_first_line(exc)}") from None
    if validate:
        path = source if isinstance(source, (str, bytes, os.PathLike)) else None
        validate_onnx(model, path, loader.g.meta["input_dims"])
    graph = loader.run()
    if not isinstance(source, (str, bytes, os.PathLike)):
        return graph
    graph.meta["path"] = os.fspath(source)
    return graph
