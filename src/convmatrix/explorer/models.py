"""Model stacks for the explorer: the convolutional chain of a torch model or an ONNX file.

A model is read by :func:`convmatrix.network.load` (the one model reader, in eval
mode) into its IR graph; the explorer shows chains of layers, so the graph becomes
one, node by node:

- convolutions (forward and transposed), pooling and padding layers are layers, from
  their ``ConvRecord`` (geometry, weight, bias): pooling is a grouped convolution
  with a ones kernel (weight ``1/k^d`` for average pooling; for max pooling the
  window pattern, each output reads one input of its window, which one depends on
  the input values, shown with weight 1), a padding layer a 1x1 identity with that
  padding;
- element-wise nodes (activations, batch norm, dropout, identity, arithmetic with
  constants) are skipped: they do not change which inputs a neuron reads;
- the chain stops at the head, the first node that is not a feature map (Flatten,
  Linear, ...): the explorer shows the convolutional part and the summary lists
  what it left out;
- a branching graph (a residual addition, a concatenation, a value read twice) is
  refused, naming the node: ``to_mlp``, ``convert`` and the receptive fields take
  it, the explorer shows chains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .data import layer_spec

__all__ = ["ModelStack", "from_torch", "from_onnx", "from_graph", "SKIPPED_NOTE", "LEFT_OUT_NOTE"]

SKIPPED_NOTE = "element-wise: they do not change which inputs a neuron reads"
LEFT_OUT_NOTE = "the explorer shows the convolutional part, up to the first of these"
_MAX_NOTE = "max pooling as its window pattern: each output reads one input of its window " \
    "(which one depends on the input values); shown with weight 1"
_BORDER_NOTE = " (windows over the padding divide by the inputs they cover: the input sets are exact, " \
    "those border weights are not)"


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


def padding_spec(geom, where: str):
    """Pads as the explorer's spec states them: an int per axis, or ``"same"`` (torch's rule,
    stride 1: the odd pad at the end); anything else is refused, naming the node."""
    lo, hi = [p[0] for p in geom.padding], [p[1] for p in geom.padding]
    if lo == hi:
        return tuple(lo)
    if not geom.transposed and all(s == 1 for s in geom.stride) and all(
            a + b == d * (k - 1) and a == (a + b) // 2 for a, b, d, k in zip(lo, hi, geom.dilation, geom.kernel_size)):
        return "same"
    raise ValueError(f"{where}: asymmetric pads {lo} (begin) / {hi} (end): the explorer's layers pad both "
                     "sides alike (or as padding='same' with stride 1, the odd pad at the end)")


def _record_layer(stack: ModelStack, node, where: str) -> None:
    """A conv, pooling or padding node as an explorer layer, from its ConvRecord."""
    rec = node.conv
    geom = rec.geometry
    kw = dict(stride=geom.stride, dilation=geom.dilation, groups=geom.groups, padding=padding_spec(geom, where),
              padding_mode=geom.padding_mode)
    if geom.transposed:
        kw.update(transposed=True, output_padding=geom.output_padding)
    bias = rec.bias
    label = where
    if rec.kind == "max_pool":
        label = f"{where}: {_MAX_NOTE}"
    elif rec.kind == "avg_pool":
        label = f"{where}: average pooling, weight 1/{1 / float(rec.weight.flat[0]):.6g}"
        if abs(rec.matrix() - node.M).max() > 0:
            label += _BORDER_NOTE
    elif rec.kind == "pad":
        label = f"{where}: padding layer, a 1x1 identity with that padding"
    if bias is None and rec.kind != "conv":
        bias = np.zeros(geom.out_channels)
    stack.add(layer_spec(geom.weight_shape, **kw), rec.weight, bias, label)


def _elementwise(node, shape, in_shape) -> bool:
    """An activation, or an affine map of each neuron onto itself (batch norm, scaling, dropout)."""
    if node.op == "Act":
        return True
    if node.op != "Affine" or len(node.inputs) != 1 or tuple(shape) != tuple(in_shape):
        return False
    rows = np.repeat(np.arange(node.M.shape[0]), np.diff(node.M.indptr))
    return bool(np.array_equal(rows, node.M.indices))


def _chain_step(graph, j, current) -> None:
    """Refuse node ``j`` unless it continues the chain that ends at node ``current``."""
    ins = graph.nodes[j].inputs
    if len(set(ins)) > 1:
        names = ", ".join(graph.label(i) for i in dict.fromkeys(ins))
        raise ValueError(f"{graph.label(j)} joins {len(set(ins))} tensors ({names}): the explorer shows chains of "
                         "layers, not branching graphs (residual additions, concatenations); receptive_field, "
                         "to_mlp and convert take them")
    if ins[0] != current:
        raise ValueError(f"{graph.label(j)} reads {graph.label(ins[0])}, which another node already read: the "
                         "graph branches; the explorer shows chains of layers")


def from_graph(graph, source: str) -> ModelStack:
    """The convolutional chain of an IR graph (see the module docstring)."""
    shapes = graph.sample_shapes
    nd = len(shapes[0]) - 1
    if nd < 1:
        raise ValueError(f"{source}: the input has shape {shapes[0]}: the explorer needs (channels, *spatial)")
    stack = ModelStack(tuple(shapes[0]), source=source)
    current = 0
    for j in range(1, graph.output + 1):
        node, where = graph.nodes[j], graph.label(j)
        if len(shapes[j]) != nd + 1:  # the head: everything from here on is left out
            stack.left_out = [graph.label(k) for k in range(j, graph.output + 1)]
            break
        _chain_step(graph, j, current)
        if getattr(node, "conv", None) is not None:
            _record_layer(stack, node, where)
        elif _elementwise(node, shapes[j], shapes[current]):
            stack.skipped.append(where)
        else:
            raise ValueError(f"{where} is not a convolution, pooling, padding or element-wise layer: the explorer "
                             "shows those, up to a dense head (Flatten, Linear, ...)")
        current = j
    return stack


def from_torch(module, input_shape) -> ModelStack:
    """The convolutional chain of a torch layer, ``nn.Sequential`` or traceable module (input without batch).

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    >>> m = from_torch(net, (1, 6, 6))
    >>> [s["weight"] for s in m.layers], m.skipped, m.left_out
    (['2x1x3x3', '2x1x2x2'], ["'1' (ReLU)"], ["'3' (Flatten)", "'4' (Linear)"])
    """
    from ..network import load

    return from_graph(load(module, input_shape, eval_mode=True), f"torch {type(module).__name__}")


def from_onnx(source, input_shape=None) -> ModelStack:
    """The convolutional chain of an ONNX model (a path or an ``onnx.ModelProto``).

    The input shape is the model input's, batch axis dropped (``input_shape``, if
    given, must agree); weights and biases come from the initializers.
    """
    from ..network import load

    name = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "ONNX model"
    return from_graph(load(source, input_shape), name)
