"""ONNX front end: a model file, read only through ``onnx``, as an IR :class:`Graph`.

Values keep the file's full tensor shapes, with a batch axis (dynamic or fixed) taken
as 1: one sample, flattened in C order. The batch axis is the first axis of a
rank >= 2 input; a rank-1 input (``test_small.onnx``) has none. With a dynamic batch,
operations that would mix samples (a Transpose, Flatten, Reshape, Concat, ... over
axis 0) are refused.

Supported (opset 9 and newer): Conv, ConvTranspose, Gemm, MatMul, Add/Sub/Mul/Div
(by constants; Add/Sub also of two values), Neg, Sum, Relu, LeakyRelu, PRelu, Clip,
Sigmoid, Tanh, Elu, Softplus, MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool, BatchNormalization, Pad, Flatten, Reshape, Transpose, Squeeze,
Unsqueeze, Slice, Gather, Concat, Expand, Tile, DepthToSpace, SpaceToDepth,
Resize/Upsample (nearest), Cast to float, Identity, Dropout, Constant; nodes whose inputs are all constants (the
Shape/Gather/Unsqueeze/Concat chains exporters emit for reshapes) are folded with
``onnx.reference``. Anything else raises ValueError naming the node and its place.
"""

from __future__ import annotations

import os
from math import prod

import numpy as np
import scipy.sparse as sp

from ..core.geometry import conv_output_size, conv_transpose_output_size
from .ir import Graph
from .layers import (adaptive_windows, avg_pool_affine, batch_norm_affine, channel_affine, codes, conv_record,
                     gather_matrix, linear_affine, max_pool_groups, pool_geometry, pool_record, pool_windows)

__all__ = ["from_onnx", "read_onnx", "onnx_pads"]

GATHER_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Concat", "Slice", "Gather",
              "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Resize", "Upsample"}  # Resize: nearest only
_AXIS_ZERO = "an operation over the batch axis (axis 0) of a model with a dynamic batch"


def read_onnx(source):
    """An ``onnx.ModelProto`` from a path or a model; bad files give a one-line ValueError."""
    import onnx

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


class _OnnxLoader:
    def __init__(self, model):
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
        dims = _dims(self.inp)
        if not dims:
            raise ValueError(f"input {self.inp.name!r} has no declared shape")
        self.batched = len(dims) >= 2
        self.dynamic = self.batched and not isinstance(dims[0], int)
        rest = dims[1:] if self.batched else dims
        if not all(isinstance(d, int) for d in rest):
            raise ValueError(f"input {self.inp.name!r} has shape {dims}: only the batch axis may be dynamic")
        shape = ((1,) + tuple(rest)) if self.batched else tuple(dims)
        self.g = Graph(shape, self.inp.name)
        self.vals = {self.inp.name: 0}  # name -> node id (tensors) ; constants live in self.consts
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
            raise ValueError(f"input {name!r} is not defined before use")
        return self.consts[name]

    def run_reference(self, node, feeds):
        onnx, helper = self.onnx, self.onnx.helper
        ins = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.input if n]
        outs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        graph = helper.make_graph([node], "fold", ins, outs)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(m).run(None, feeds)

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Graph:
        for pos, node in enumerate(self.model.graph.node):
            where = f"ONNX node #{pos} {node.name or node.output[0]!r} ({node.op_type})"
            first = len(self.g.nodes)
            try:
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
        declared = self.g.meta["output_dims"]
        declared = declared if len(declared) == len(shape) else [None] * len(shape)
        dims = []  # declared ints must agree; a dynamic batch axis keeps its name; the rest as computed
        for k, (d, n) in enumerate(zip(declared, shape)):
            if isinstance(d, int) and d != n:
                raise ValueError(f"output {name!r} is declared {declared} but computes shape {shape}")
            if k == 0 and self.dynamic and n == 1:
                dims.append(d if isinstance(d, str) and d != "?" else self.g.meta["input_dims"][0])
            else:
                dims.append(n)
        self.g.meta["output_dims"] = dims
        return self.g

    def convert(self, node):
        op = node.op_type
        a = _attrs(node)
        tensor_inputs = [n for n in node.input if n in self.vals]
        if op == "Constant":
            self.consts[node.output[0]] = self.run_reference(node, {})[0]
            return
        if op == "Shape" and tensor_inputs:
            full = np.array(self.shape(node.input[0]), dtype=np.int64)
            self.consts[node.output[0]] = full[a.get("start", 0):a.get("end", len(full))]
            return
        if not tensor_inputs:  # constant folding
            for n in node.input:
                if n and n not in self.consts:
                    raise ValueError(f"input {n!r} is not defined before use")
            feeds = {n: self.consts[n] for n in node.input if n}
            for name, value in zip(node.output, self.run_reference(node, feeds)):
                self.consts[name] = np.asarray(value)
            return
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"unsupported operation {node.domain}.{op}")
        handler = getattr(self, f"op_{op}", None)
        if handler is None and op in GATHER_OPS:
            handler = self.gather
        if handler is None:
            raise ValueError(f"unsupported operation {op}")
        out = handler(node, a)
        if out is not None:
            self.vals[node.output[0]] = out
        for extra in node.output[1:]:
            if extra:
                self.vals.pop(extra, None)

    # -- value-moving ops: run the op itself on integer codes ------------------------------
    def gather(self, node, a):
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
                feeds_c[n] = feeds_0[n] = self.const(node, list(node.input).index(n), "this input")
        ref0 = np.asarray(self.run_reference(node, feeds_0)[0], dtype=np.float64)
        got = np.asarray(self.run_reference(node, feeds_c)[0], dtype=np.float64) - ref0
        M = gather_matrix(got, int(offsets[-1]), f"{node.op_type}")
        return self.g.affine([self.vals[n] for n in traced], M, ref0.reshape(-1), shape=got.shape,
                             name=node.name or node.output[0])

    def check_batch(self, node, a):
        """With a dynamic batch, refuse ops that move or mix the batch axis."""
        if not self.dynamic:
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
            upper = a.get("auto_pad", "NOTSET") != "SAME_LOWER"
            lo = [t // 2 if upper else t - t // 2 for t in total]
            hi = [t - l for t, l in zip(total, lo)]
        else:
            p = list(a.get("pads", [0] * (2 * nd)))
            lo, hi = p[:nd], p[nd:]
        if lo != hi:
            raise ValueError(f"ConvTranspose with asymmetric pads {lo} / {hi} is not supported")
        rec = conv_record(w, b, in_shape, stride=s, dilation=d, groups=int(a.get("group", 1)), padding=tuple(lo),
                          transposed=True, output_padding=tuple(op_))
        return self.g.conv(self.vals[x], rec, shape=(1,) + rec.geometry.output_shape, name=node.name or node.output[0])

    def op_Gemm(self, node, a):
        if node.input[0] not in self.vals or a.get("transA", 0):
            raise ValueError("Gemm is supported with the data as A (transA=0) and constant B")
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
                return self.g.affine([self.vals[x]], M, shape=out[:-1] or (1,), name=name)
            if W.ndim != 2:
                raise ValueError(f"MatMul with a constant of rank {W.ndim} is not supported")
            M, _, out = linear_affine(W.T, None, shape)
            return self.g.affine([self.vals[x]], M, shape=out, name=name)
        W = self.const(node, 0, "the first factor")  # W @ x
        shape = self.shape(y)
        if W.ndim != 2 or shape[-1 if len(shape) == 1 else -2] != W.shape[1]:
            raise ValueError(f"MatMul of a {W.shape} constant with a value of shape {shape}")
        if len(shape) == 1:
            return self.g.affine([self.vals[y]], sp.csr_array(W.astype(np.float64)), shape=(W.shape[0],), name=name)
        lead, p = prod(shape[:-2]), shape[-1]
        M = sp.kron(sp.identity(lead), sp.kron(sp.csr_array(W.astype(np.float64)), sp.identity(p)), format="csr")
        return self.g.affine([self.vals[y]], M, shape=(*shape[:-2], W.shape[0], p), name=name)

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
        if op == "Mul":
            return self.g.affine([x], sp.diags_array(c, format="csr"), shape=out, name=name)
        if k != 0:
            raise ValueError("division by a value that depends on the input is not affine")
        return self.g.affine([x], sp.diags_array(1.0 / c, format="csr"), shape=out, name=name)

    def op_Add(self, node, a):
        return self.arith(node, "Add")

    def op_Sub(self, node, a):
        return self.arith(node, "Sub")

    def op_Mul(self, node, a):
        return self.arith(node, "Mul")

    def op_Div(self, node, a):
        return self.arith(node, "Div")

    def op_Sum(self, node, a):
        if len(node.input) == 1:
            return self.vals[node.input[0]]
        if len(node.input) != 2:
            return self.g.add([self.vals[n] for n in node.input], name=node.name or node.output[0])
        return self.arith(node, "Sum")

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

    def op_Clip(self, node, a):
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, 1, "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, 2, "max"))
        return self.act(node, "Hardtanh", {"min_val": float(lo), "max_val": float(hi)})

    # -- pooling ---------------------------------------------------------------------------
    def pool(self, node, a, kind):
        if len(node.output) > 1 and node.output[1]:
            raise ValueError("MaxPool with an Indices output is not supported")
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

    def op_MaxPool(self, node, a):
        if a.get("storage_order", 0):
            raise ValueError("MaxPool with storage_order=1 is not supported")
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


def from_onnx(source) -> Graph:
    """The IR graph of an ONNX model (a path or an ``onnx.ModelProto``).

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
    model = read_onnx(source)
    graph = _OnnxLoader(model).run()
    if not isinstance(source, (str, bytes, os.PathLike)):
        return graph
    graph.meta["path"] = os.fspath(source)
    return graph
