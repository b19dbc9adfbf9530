"""Model stacks for the explorer: the convolutional chain of a torch ``nn.Sequential`` or an ONNX file.

The explorer shows chains of layers, each a convolution as the explorer's layer spec
can state it. A model becomes such a chain, in order:

- convolutions (forward and transposed) are layers, with the model's weights and biases;
- pooling is a grouped convolution with a ones kernel (as :mod:`convmatrix.explain.receptive`
  treats it): groups = channels, weight ``1/k^d`` for average pooling; for max pooling
  the layer is the window pattern (each output reads one input of its window, which
  one depends on the input values), shown with weight 1;
- element-wise nodes (activations, batch norm, dropout, identity, arithmetic with
  constants) are skipped: they do not change which inputs a neuron reads;
- the chain stops at the head (Flatten, Reshape, Gemm/MatMul or Linear, global or
  adaptive pooling): the explorer shows the convolutional part and the summary lists
  what it left out;
- a branching graph (a residual addition of two tensors, a concatenation, a tensor
  read twice) is refused: the explorer shows chains of layers.

No index arithmetic here: pooling geometries come from ``receptive`` (torch) or from the
node's attributes (ONNX), and every geometry is checked by ``conv_geometry`` and against
the shape the model itself computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from math import prod

import numpy as np

from ..core.matrix import conv_geometry
from .data import layer_spec

__all__ = ["ModelStack", "from_torch", "from_onnx", "SKIPPED_NOTE", "LEFT_OUT_NOTE"]

SKIPPED_NOTE = "element-wise: they do not change which inputs a neuron reads"
LEFT_OUT_NOTE = "the explorer shows the convolutional part, up to the first of these"
_MAX_NOTE = "max pooling as its window pattern: each output reads one input of its window " \
    "(which one depends on the input values); shown with weight 1"

# torch: where the convolutional part ends
_TORCH_HEAD = ("Flatten", "Unflatten", "Linear", "LazyLinear", "Bilinear", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
               "AdaptiveMaxPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")
# ONNX: element-wise nodes (one tensor in, same shape out) and the nodes that end the convolutional part
_ONNX_ELEMENTWISE = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                     "Softplus", "Clip", "BatchNormalization", "Dropout", "Identity", "Neg",
                     "Add", "Sub", "Mul", "Div"}
_ONNX_HEAD = {"Flatten", "Reshape", "Gemm", "MatMul", "GlobalAveragePool", "GlobalMaxPool"}
_ONNX_SUPPORTED = "Conv, ConvTranspose, MaxPool, AveragePool, element-wise nodes (" + \
    ", ".join(sorted(_ONNX_ELEMENTWISE)) + "; Add/Sub/Mul/Div by constants), then a head (" + \
    ", ".join(sorted(_ONNX_HEAD)) + ")"


@dataclass
class ModelStack:
    """A model's convolutional chain as explorer layer specs, with its weights and biases."""

    input_shape: tuple
    layers: list = field(default_factory=list)  # layer specs, each with a "label"
    weights: list = field(default_factory=list)
    biases: list = field(default_factory=list)
    source: str = ""
    skipped: list = field(default_factory=list)
    left_out: list = field(default_factory=list)

    def add(self, spec: dict, weight, bias, label: str) -> None:
        spec["label"] = label
        self.layers.append(spec)
        self.weights.append(weight)
        self.biases.append(bias)

    @property
    def spec(self) -> dict:
        """The explorer spec, with ``model``: where it came from, what was skipped and left out."""
        if not self.layers:
            raise ValueError(f"{self.source}: no convolution or pooling before "
                             f"{self.left_out[0] if self.left_out else 'the output'}: nothing to explore")
        model = {"source": self.source, "skipped": self.skipped, "left_out": self.left_out,
                 "skipped_note": SKIPPED_NOTE, "left_out_note": LEFT_OUT_NOTE}
        return {"input": "x".join(map(str, self.input_shape)), "layers": self.layers, "model": model}


def _padding(lo, hi, stride, dilation, kernel, where: str):
    """Pads as the explorer's spec states them: an int per axis, or ``"same"`` (torch's rule,
    stride 1: the odd pad at the end); anything else is refused, naming the node."""
    lo, hi = [int(v) for v in lo], [int(v) for v in hi]
    if lo == hi:
        return tuple(lo)
    if all(s == 1 for s in stride) and all(a + b == d * (k - 1) and a == (a + b) // 2
                                           for a, b, d, k in zip(lo, hi, dilation, kernel)):
        return "same"
    raise ValueError(f"{where}: asymmetric pads {lo} (begin) / {hi} (end): the explorer's layers pad both "
                     "sides alike (or as padding='same' with stride 1, the odd pad at the end)")


def _pool(model: ModelStack, shape, kind: str, kernel, stride, lo, hi, dilation, where: str, note: str = ""):
    """A pooling layer as a grouped convolution with a ones kernel (weight 1/k^d for average)."""
    c, nd = shape[0], len(kernel)
    dilation = dilation or (1,) * nd
    kw = dict(stride=tuple(stride), padding=_padding(lo, hi, stride, dilation, kernel, where),
              dilation=tuple(dilation), groups=c)
    wshape = (c, 1, *kernel)
    geom = _geometry(wshape, shape, kw, where)
    value = 1.0 if kind == "max" else 1.0 / prod(kernel)
    label = f"{where}: " + (_MAX_NOTE if kind == "max" else f"average pooling, weight 1/{prod(kernel)}") + note
    model.add(layer_spec(wshape, **kw), np.full(wshape, value, dtype=np.float32), np.zeros(c), label)
    return geom


def _geometry(wshape, shape, kw, where):
    try:
        return conv_geometry(tuple(wshape), tuple(shape), **kw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_shape(where: str, computed, declared) -> None:
    """The explorer's layer must give the shape the model computes (ceil_mode, output_shape, ...)."""
    if declared is not None and tuple(declared) != tuple(computed):
        raise ValueError(f"{where}: the model computes an output of shape {'x'.join(map(str, declared))}, the "
                         f"explorer's layer {'x'.join(map(str, computed))} (ceil_mode or an explicit output "
                         "shape the explorer's layers cannot state)")


# ------------------------------------------------------------------------- torch
def _leaves(module, prefix=""):
    """(dotted name, module) of the layers of an ``nn.Sequential`` (nested ones flattened), in order."""
    if type(module).__name__ != "Sequential":
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def from_torch(module, input_shape) -> ModelStack:
    """The convolutional chain of a torch layer or ``nn.Sequential`` (input shape without batch).

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    >>> m = from_torch(net, (1, 6, 6))
    >>> [s["weight"] for s in m.layers], m.skipped, m.left_out
    (['2x1x3x3', '2x1x2x2'], ["'1' (ReLU)"], ["'3' (Flatten)", "'4' (Linear)"])
    """
    import torch

    from ..explain.receptive import _ELEMENTWISE_MODULES, _LAYER_MODULES, _layer, _Step

    shape = tuple(int(s) for s in input_shape)
    model = ModelStack(shape, source=f"torch {type(module).__name__}")
    leaves = list(_leaves(module))
    for i, (name, m) in enumerate(leaves):
        cls = type(m).__name__
        where = f"{name!r} ({cls})" if name else cls
        if cls in _TORCH_HEAD:
            model.left_out = [f"{n!r} ({type(x).__name__})" if n else type(x).__name__ for n, x in leaves[i:]]
            break
        if cls in _ELEMENTWISE_MODULES:
            model.skipped.append(where)
            continue
        if cls not in _LAYER_MODULES:
            raise ValueError(f"explore takes convolutions, pooling, padding layers and element-wise modules up to "
                             f"a Flatten/Linear head; layer {i} {where} is not one of them")
        try:
            geom, select, _ = _layer(_Step(name, "layer", [], (), m, where), shape)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if select is not None:
            raise ValueError(f"{where}: asymmetric padding {tuple(m.padding)}: the explorer's layers pad both "
                             "sides alike")
        params = list(m.parameters())
        with torch.no_grad():  # the shape the layer itself computes (ceil_mode and the like)
            out = m(torch.zeros((1, *shape), dtype=params[0].dtype if params else torch.float32))
        out = out[0] if isinstance(out, tuple) else out  # MaxPool with return_indices
        _check_shape(where, geom.output_shape, tuple(out.shape[1:]))
        kw = dict(stride=geom.stride, dilation=geom.dilation, groups=geom.groups,
                  padding=_padding(*zip(*geom.padding), geom.stride, geom.dilation, geom.kernel_size, where),
                  padding_mode=geom.padding_mode)
        if geom.transposed:
            kw.update(transposed=True, output_padding=geom.output_padding)
        if cls.startswith("Conv"):
            weight = m.weight.detach().cpu().numpy()
            bias = None if m.bias is None else m.bias.detach().cpu().numpy()
            label = where
        else:  # pooling or a padding layer: the ones kernel of receptive's geometry
            weight, bias = np.ones(geom.weight_shape, dtype=np.float32), np.zeros(geom.out_channels)
            label = f"{where}: padding layer, a 1x1 identity with that padding"
            if "MaxPool" in cls:
                label = f"{where}: {_MAX_NOTE}"
            elif "AvgPool" in cls:
                div = getattr(m, "divisor_override", None) or prod(geom.kernel_size)
                weight = weight / div
                label = f"{where}: average pooling, weight 1/{div}"
                if not m.count_include_pad and any(lo for lo, _ in geom.padding):
                    label += _BORDER_NOTE
            elif getattr(m, "value", 0):
                raise ValueError(f"{where}: pads with the constant {m.value}, which is no input neuron; "
                                 "the explorer shows zero, reflect, replicate and circular padding")
        model.add(layer_spec(geom.weight_shape, **kw), weight, bias, label)
        shape = geom.output_shape
    return model


_BORDER_NOTE = " (windows over the padding divide by the inputs they cover: the input sets are exact, " \
    "those border weights are not)"


# -------------------------------------------------------------------------- ONNX
def from_onnx(source, input_shape=None) -> ModelStack:
    """The convolutional chain of an ONNX model (a path or an ``onnx.ModelProto``).

    The input shape is the model input's, batch axis dropped; weights and biases come
    from the initializers.
    """
    from ..network.onnx_frontend import _attrs, _dims, onnx_pads, read_onnx

    model = read_onnx(source)
    g = model.graph
    consts = {t.name for t in g.initializer}
    values = {t.name: t for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ValueError(f"the model must have exactly one data input, it has {len(inputs)}: "
                         f"{[i.name for i in inputs]}")
    shape = _onnx_input_shape(inputs[0], input_shape, _dims)
    declared = _declared_shapes(model)
    name = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "ONNX model"
    out = ModelStack(shape, source=name)
    data, current, stopped = {inputs[0].name}, inputs[0].name, False
    for pos, node in enumerate(g.node):
        op = node.op_type
        where = f"ONNX node #{pos} {node.name or node.output[0]!r} ({op})"
        short = f"{node.name or node.output[0]!r} ({op})"
        a = _attrs(node)
        reads = [n for n in node.input if n in data]
        if not reads:  # constants and their folding chains: no input neuron
            consts.update(node.output)
            if op == "Constant" and "value" in a:
                values[node.output[0]] = a["value"]
            continue
        if stopped or op == "Shape":  # past the head, or only the shape of a value
            data.update(n for n in node.output if n)
            if stopped:
                out.left_out.append(short)
            continue
        if len(set(reads)) > 1:
            raise ValueError(f"{where} joins {len(set(reads))} tensors {sorted(set(reads))}: the explorer shows "
                             "chains of layers, not branching graphs (residual additions, concatenations)")
        if reads[0] != current:
            raise ValueError(f"{where} reads {reads[0]!r}, which another node already read: the graph branches; "
                             "the explorer shows chains of layers")
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{where}: unsupported operation {node.domain}.{op}; the explorer takes {_ONNX_SUPPORTED}")
        if op in _ONNX_HEAD:
            stopped = True
            out.left_out.append(short)
            data.update(n for n in node.output if n)
            continue
        if op in _ONNX_ELEMENTWISE:
            _check_elementwise(node, where, shape, consts, values)
            out.skipped.append(short)
        elif op == "Pad" and _no_padding(node, a, values):
            out.skipped.append(short)
        elif op in ("Conv", "ConvTranspose"):
            geom = _onnx_conv(out, node, a, shape, values, where, onnx_pads)
            _check_shape(where, geom.output_shape, declared.get(node.output[0]))
            shape = geom.output_shape
        elif op in ("MaxPool", "AveragePool"):
            if a.get("ceil_mode", 0) and node.output[0] not in declared:
                raise ValueError(f"{where}: ceil_mode=1 and the model does not state the output shape")
            geom = _onnx_pool(out, op, a, shape, where, onnx_pads)
            _check_shape(where, geom.output_shape, declared.get(node.output[0]))
            shape = geom.output_shape
        else:
            raise ValueError(f"{where} is not supported by the explorer; it takes {_ONNX_SUPPORTED}")
        current = node.output[0]
        data.add(current)
    return out


def _onnx_input_shape(inp, input_shape, dims_of) -> tuple:
    """The model input's shape without its batch axis (``input_shape``, if given, must agree)."""
    dims = dims_of(inp)
    if len(dims) < 3 or not all(isinstance(d, int) for d in dims[1:]):
        raise ValueError(f"input {inp.name!r} has shape {dims}: the explorer needs (batch, channels, "
                         "*spatial) with fixed channels and spatial sizes")
    shape = tuple(dims[1:])
    if input_shape is not None and tuple(int(s) for s in input_shape) != shape:
        raise ValueError(f"input_shape {tuple(input_shape)} differs from the model's input {shape} "
                         "(batch axis dropped); leave it out")
    return shape


def _declared_shapes(model) -> dict:
    """Shapes (batch axis dropped) that ONNX shape inference states for the model's values."""
    import onnx

    from ..network.onnx_frontend import _dims

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot read: no check, the geometry still validates
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        d = _dims(vi)
        if len(d) >= 2 and all(isinstance(v, int) for v in d[1:]):
            shapes[vi.name] = tuple(d[1:])
    return shapes


def _array(values, name):
    from onnx import numpy_helper

    v = values.get(name)
    return None if v is None else (v if isinstance(v, np.ndarray) else numpy_helper.to_array(v))


def _onnx_conv(out: ModelStack, node, a, shape, values, where, onnx_pads):
    """A Conv or ConvTranspose node as a layer spec, with its weight and bias from the initializers."""
    w = _array(values, node.input[1]) if len(node.input) > 1 else None
    if w is None:
        raise ValueError(f"{where}: the weight {node.input[1]!r} must be an initializer or a Constant")
    b = _array(values, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    nd = w.ndim - 2
    k = list(a.get("kernel_shape", w.shape[2:]))
    if tuple(k) != tuple(w.shape[2:]):
        raise ValueError(f"{where}: kernel_shape {k} differs from the weight's {list(w.shape[2:])}")
    s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    kw = dict(stride=tuple(s), dilation=tuple(d), groups=int(a.get("group", 1)))
    if node.op_type == "ConvTranspose":
        if "output_shape" in a or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise ValueError(f"{where}: output_shape / auto_pad SAME is not supported by the explorer; "
                             "give pads (and output_padding)")
        p = list(a.get("pads", [0] * (2 * nd)))
        if p[:nd] != p[nd:]:
            raise ValueError(f"{where}: asymmetric pads {p[:nd]} (begin) / {p[nd:]} (end): a transposed "
                             "layer of the explorer pads both sides alike")
        kw.update(padding=tuple(p[:nd]), transposed=True,
                  output_padding=tuple(a.get("output_padding", [0] * nd)))
    else:
        lo, hi = onnx_pads(a, shape[1:], k, s, d)
        kw["padding"] = _padding(lo, hi, s, d, k, where)
    geom = _geometry(w.shape, shape, kw, where)
    out.add(layer_spec(w.shape, **kw), w, b, where)
    return geom


def _onnx_pool(out: ModelStack, op, a, shape, where, onnx_pads):
    """A MaxPool or AveragePool node as a pooling layer (a grouped convolution with a ones kernel)."""
    nd = len(shape) - 1
    k = list(a["kernel_shape"])
    s, d = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    lo, hi = onnx_pads(a, shape[1:], k, s, d)
    kind = "max" if op == "MaxPool" else "avg"
    note = _BORDER_NOTE if kind == "avg" and not a.get("count_include_pad", 0) and any(lo + hi) else ""
    return _pool(out, shape, kind, k, s, lo, hi, d, where, note)


def _check_elementwise(node, where, shape, consts, values):
    """Arithmetic must be with constants that do not enlarge the value (broadcasting into it is fine)."""
    others = [n for n in node.input[1:] if n] if node.op_type not in ("Add", "Sub", "Mul", "Div") else \
        [n for n in node.input if n and n in consts]
    for n in others:
        if n not in consts:
            raise ValueError(f"{where}: input {n!r} must be a constant")
        v = _array(values, n)
        if v is not None and node.op_type in ("Add", "Sub", "Mul", "Div") and \
                tuple(np.broadcast_shapes((1, *shape), v.shape)) != (1, *shape):
            raise ValueError(f"{where}: the constant of shape {v.shape} broadcasts the value {(1, *shape)} to a "
                             "larger shape")


def _no_padding(node, a, values) -> bool:
    pads = a.get("pads")
    if pads is None and len(node.input) > 1 and node.input[1]:
        pads = _array(values, node.input[1])
    return pads is not None and not np.any(np.asarray(pads))
