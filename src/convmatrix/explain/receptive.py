"""Receptive fields through stacks of layers: the classic arithmetic and the exact input set.

Two answers to "which input neurons can change this deep neuron?":

- :func:`receptive_field` - the classic arithmetic (size, jump, start) of the
  receptive-field literature and of google-research's published tables: one
  box per output neuron, ``[o*stride - padding, o*stride - padding + size)`` per
  spatial axis.
- :func:`receptive_set` - the exact set: the non-zeros of ``e_o^T M_L ... M_1``,
  the product of the sparsity patterns of the layers' matrices (pooling is a
  grouped convolution with a ones kernel, padding layers a 1x1 kernel with
  that padding), pulled back layer by layer through the tap patterns without
  forming the matrices. It differs from the box at borders (zero padding drops,
  reflect/replicate/circular fold), with strides that skip inputs and with
  dilation gaps.

A model is a torch module: one layer, an ``nn.Sequential``, a list of layers, or
any module ``torch.fx`` can trace, where additions and concatenations along the
channel axis take the union over their paths. Built from convolutions, pooling
(max, average, adaptive with an integer ratio), padding layers, batch norm,
dropout, identity and element-wise activations. Positions follow the
convention of :mod:`convmatrix.explain.neurons`: ``(channel, *position)`` in array-axis
order.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from math import prod

import numpy as np

from .neurons import compose_field, layer_field, parse_index, spatial_pattern

__all__ = ["receptive_field", "receptive_set", "ReceptiveField", "ReceptiveSet"]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a model's output neurons in its input, one int per spatial axis.

    ``size``: the field's extent; ``stride``: the jump between neighbouring output
    neurons' fields; ``padding``: how far the first output neuron's field starts
    before the input's first entry. ``table``: ``(node, size, stride, padding)``
    after every node of the model, in order.
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    table: list = field(default_factory=list, repr=False, compare=False)

    def box(self, position) -> tuple[tuple[int, int], ...]:
        """The field of the output neuron at spatial ``position``: ``(start, stop)`` per axis."""
        return tuple((o * j - p, o * j - p + s) for o, s, j, p in zip(position, self.size, self.stride, self.padding))


@dataclass(frozen=True)
class ReceptiveSet:
    """The exact input neurons that one output neuron of a model depends on.

    ``flat`` (sorted flat indices into the input) and ``coords`` (channel, *position);
    ``box`` the arithmetic receptive-field box of the neuron (None where no
    box arithmetic exists, e.g. through a transposed layer); ``maps``: for every
    node of the model, the boolean mask (its output's shape, no batch axis) of
    the neurons on a path to the output neuron.
    """

    index: int
    coords: tuple[int, ...]
    flat: np.ndarray
    input_coords: list[tuple[int, ...]]
    box: tuple[tuple[int, int], ...] | None
    maps: dict = field(repr=False)  # "input", then one entry per node: "'target' (Class)" or the node's name

    def spatial_mask(self) -> np.ndarray:
        """The input positions read in any channel (a boolean array of the spatial shape)."""
        return next(iter(self.maps.values())).any(axis=0)


# --------------------------------------------------------------------------- graph
@dataclass
class _Step:
    """One node of the traced model, reduced to what receptive fields need."""

    name: str
    kind: str  # "input", "layer", "same" (element-wise), "union" (add), "cat", "constant" (dropped)
    sources: list  # names of the nodes it reads (tensors only)
    shape: tuple  # output shape without the batch axis
    module: object = None  # for "layer": the torch module
    label: str = ""  # for messages and maps: "'name' (Class)"


_ELEMENTWISE_MODULES = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid",
    "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "Hardshrink", "Softshrink", "Softplus", "Softsign",
    "Tanhshrink", "Threshold", "LogSigmoid", "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "AlphaDropout", "FeatureAlphaDropout", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
)
_LAYER_MODULES = (
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
    "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d",
)
_ELEMENTWISE_NAMES = {
    "relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "mish", "sigmoid", "tanh", "elu", "selu", "celu",
    "hardtanh", "hardsigmoid", "hardswish", "softplus", "softsign", "dropout", "abs", "neg", "exp",
    "contiguous", "clone", "detach",
}
_BINARY = {operator.add, operator.sub, operator.mul, operator.iadd, operator.isub, operator.imul,
           operator.truediv}
_BINARY_NAMES = {"add", "sub", "mul", "add_", "sub_", "mul_", "div"}


def _torch_stack(model):
    import torch

    if isinstance(model, (list, tuple)):
        model = torch.nn.Sequential(*model)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a list of layers, got {type(model).__name__}")
    if type(model).__name__ in _LAYER_MODULES + _ELEMENTWISE_MODULES:
        model = torch.nn.Sequential(model)  # trace a lone layer as a one-layer stack
    return model


def _trace(model, input_shape) -> list[_Step]:
    """The model as a list of steps in topological order, with every node's output shape."""
    import torch
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    model = _torch_stack(model)
    input_shape = tuple(int(s) for s in input_shape)
    try:
        gm = symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds of errors on untraceable code
        raise ValueError(f"model could not be traced with torch.fx ({type(exc).__name__}: {exc})") from None
    if sum(node.op == "placeholder" for node in gm.graph.nodes) != 1:
        raise ValueError("model must take one input tensor for receptive fields")
    params = list(model.parameters())
    dtype = params[0].dtype if params else torch.float32
    modes = {m: m.training for m in gm.modules()}
    try:
        gm.eval()  # batch norm in training mode cannot run a batch of one 1x1 map
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((1, *input_shape), dtype=dtype))
    except Exception as exc:
        raise ValueError(f"model does not run on an input of shape {input_shape} ({exc})") from None
    finally:
        for m, mode in modes.items():  # leave the caller's model as it was
            m.training = mode
    steps: list[_Step] = []
    for node in gm.graph.nodes:
        if node.op == "output":
            out = node.args[0]
            if not hasattr(out, "op"):
                raise ValueError("model must return one tensor (not a tuple or dict) for receptive fields")
            steps.append(_Step("output", "same", [out.name], next(s.shape for s in steps if s.name == out.name)))
            break
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()
        if node.op == "placeholder":
            steps.append(_Step(node.name, "input", [], shape))
        elif node.op == "get_attr":
            steps.append(_Step(node.name, "constant", [], shape))  # a parameter or buffer
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            cls = type(mod).__name__
            label = f"{node.target!r} ({cls})"
            src = [a.name for a in node.args if hasattr(a, "op")]
            if cls in _ELEMENTWISE_MODULES:
                steps.append(_Step(node.name, "same", src[:1], shape, label=label))
            elif cls in _LAYER_MODULES:
                steps.append(_Step(node.name, "layer", src[:1], shape, mod, label))
            else:
                raise ValueError(
                    f"layer {label} is not supported for receptive fields (supported: convolutions, pooling, "
                    "padding layers, batch norm, dropout, identity and element-wise activations)"
                )
        else:  # call_function / call_method
            steps.append(_function_step(node, shape))
    # Parameters and buffers (get_attr) add no input neurons: drop them as sources.
    constants = {s.name for s in steps if s.kind == "constant"}
    for s in steps:
        s.sources = [src for src in s.sources if src not in constants]
    return [s for s in steps if s.kind != "constant"]


def _function_step(node, shape) -> _Step:
    import torch

    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    tensors = [a.name for a in node.args if hasattr(a, "op")]
    label = f"{node.name!r} ({name})"
    if target in (torch.cat, torch.concat) or name in ("cat", "concat"):
        parts = node.args[0] if node.args else node.kwargs["tensors"]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ndim = len(shape) + 1
        if dim % ndim != 1:
            raise ValueError(f"concatenation {label} along dim {dim}: only the channel axis (dim 1) is supported")
        return _Step(node.name, "cat", [p.name for p in parts], shape, label=label)
    if target in _BINARY or name in _BINARY_NAMES or target in (torch.add, torch.sub, torch.mul):
        return _Step(node.name, "union" if len(tensors) > 1 else "same", tensors, shape, label=label)
    if name in _ELEMENTWISE_NAMES and len(tensors) == 1:
        return _Step(node.name, "same", tensors, shape, label=label)
    raise ValueError(
        f"operation {label} is not supported for receptive fields (supported: additions, concatenations along "
        "channels and element-wise functions)"
    )


# --------------------------------------------------------------------------- layers
def _ints(value, nd):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def _layer(step: _Step, in_shape: tuple):
    """(geometry of the layer as a convolution, row selection or None, field per axis or None).

    Pooling is a grouped convolution with a ones kernel; a padding layer a 1x1
    grouped convolution with that padding (asymmetric padding: pad by the larger
    side, then keep the right rows).
    """
    from ..core.matrix import conv_geometry

    mod, cls = step.module, type(step.module).__name__
    nd, channels, spatial = len(in_shape) - 1, in_shape[0], in_shape[1:]
    if cls.startswith("Conv"):
        transposed = "Transpose" in cls
        kw = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups,
                  padding_mode=mod.padding_mode, transposed=transposed)
        if transposed:
            kw["output_padding"] = mod.output_padding
        geom = conv_geometry(tuple(mod.weight.shape), in_shape, **kw)
        return geom, None, None if transposed else _fields(geom)
    if "Adaptive" in cls:
        out = step.shape[1:]
        if any(n % o for n, o in zip(spatial, out)):
            raise ValueError(
                f"layer {step.label} maps {spatial} to {out}: only integer ratios have a receptive field"
            )
        k = tuple(n // o for n, o in zip(spatial, out))
        geom = conv_geometry((channels, 1, *k), in_shape, stride=k, groups=channels)
        return geom, None, _fields(geom)
    if "Pool" in cls:
        k = _ints(mod.kernel_size, nd)
        stride = _ints(mod.stride if mod.stride is not None else k, nd) or k
        geom = conv_geometry((channels, 1, *k), in_shape, stride=stride, padding=_ints(mod.padding, nd),
                             dilation=_ints(getattr(mod, "dilation", 1), nd), groups=channels)
        return geom, None, _fields(geom)
    # padding layers: torch's padding tuple lists the last axis first, (low, high) each
    pads = tuple(mod.padding) if isinstance(mod.padding, (tuple, list)) else (mod.padding,) * (2 * nd)
    lohi = [(pads[2 * (nd - 1 - ax)], pads[2 * (nd - 1 - ax) + 1]) for ax in range(nd)]
    mode = {"Reflection": "reflect", "Replication": "replicate", "Circular": "circular"}
    mode = next((m for key, m in mode.items() if cls.startswith(key)), "zeros")
    big = tuple(max(lo, hi) for lo, hi in lohi)
    geom = conv_geometry((channels, 1, *(1,) * nd), in_shape, padding=big, padding_mode=mode, groups=channels)
    select = None
    if any(lo != hi for lo, hi in lohi):
        ranges = [np.arange(b - lo, b + n + hi) for (lo, hi), b, n in zip(lohi, big, spatial)]
        grid = np.ix_(np.arange(channels), *ranges)
        select = np.ravel_multi_index(tuple(np.broadcast_arrays(*grid)), geom.output_shape).ravel()
    return geom, select, tuple((1, 1, lo) for lo, _ in lohi)


def _fields(geom) -> tuple:
    return tuple(layer_field(geom.kernel_size[ax], geom.stride[ax], geom.dilation[ax], geom.padding[ax][0])
                 for ax in range(geom.ndim))


def _pull_back(geom, select, v: np.ndarray) -> np.ndarray:
    """The input neurons read by the output neurons marked in ``v`` (a boolean vector).

    Within one group every (output, input) channel pair has the same spatial
    pattern, so one spatial tap pattern (a 1x1-channel layer) answers for all:
    a group's input channels are read at the union of the columns of the
    output positions marked in any of its output channels.
    """
    if select is not None:  # asymmetric padding: v indexes the kept rows of the larger layer
        full = np.zeros(prod(geom.output_shape), dtype=bool)
        full[select] = v
        v = full
    spatial = spatial_pattern(geom)
    hits = v.reshape(geom.groups, geom.out_per_group, -1).any(axis=1)  # (groups, output positions)
    out = np.zeros((geom.groups, geom.in_per_group, prod(geom.input_size)), dtype=bool)
    for g, rows in enumerate(hits):
        rows = np.flatnonzero(rows)
        starts, lens = spatial.ptr[rows], spatial.row_counts[rows]
        entries = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        out[g][:, spatial.col[entries]] = True
    return out.ravel()


# --------------------------------------------------------------------------- public
def receptive_field(model, input_shape) -> ReceptiveField:
    """Receptive field (size, stride, padding per spatial axis) of a model's output neurons.

    Parameters
    ----------
    model : torch.nn.Module or list of modules
        A layer, an ``nn.Sequential``, a list of layers or an fx-traceable module
        (additions and channel concatenations take the covering box of their paths).
    input_shape : tuple of int
        ``(C, *spatial)`` (needed for adaptive pooling and to check the model runs).

    Raises
    ------
    ValueError
        For a transposed convolution (its jump is a fraction) or an unsupported
        layer, naming it; for paths joined with different strides.

    Examples
    --------
    >>> import torch.nn as nn
    >>> rf = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)), (1, 8, 8))
    >>> rf.size, rf.stride, rf.padding
    ((4, 4), (2, 2), (1, 1))
    """
    return _field_walk(_trace(model, input_shape), len(input_shape) - 1)


def _field_walk(steps: list[_Step], nd: int) -> ReceptiveField:
    fields: dict[str, tuple] = {}
    shapes = {s.name: s.shape for s in steps}
    table = []
    for step in steps:
        if step.kind == "input":
            fields[step.name] = ((1, 1, 0),) * nd
        elif step.kind == "same":
            fields[step.name] = fields[step.sources[0]]
        elif step.kind in ("union", "cat"):
            fields[step.name] = _union([fields[s] for s in step.sources if s in fields], step.label)
        else:
            geom, _, per_axis = _layer(step, shapes[step.sources[0]])
            if per_axis is None:
                raise ValueError(
                    f"layer {step.label} is a transposed convolution: the jump between neighbouring outputs "
                    "is a fraction (1/stride), so it has no receptive field of integer size, stride and padding"
                )
            fields[step.name] = tuple(compose_field(a, b) for a, b in zip(fields[step.sources[0]], per_axis))
        if step.kind != "input":
            f = fields[step.name]
            table.append((step.name, *(tuple(v[i] for v in f) for i in range(3))))
    f = fields["output"]
    return ReceptiveField(tuple(v[0] for v in f), tuple(v[1] for v in f), tuple(v[2] for v in f), table)


def _union(parts: list[tuple], label: str) -> tuple:
    """The covering box of several paths' fields (they must share the jump)."""
    out = []
    for axis in zip(*parts):
        jumps = {j for _, j, _ in axis}
        if len(jumps) > 1:
            raise ValueError(f"{label} joins paths with different strides {sorted(jumps)}: no common field")
        pad = max(p for _, _, p in axis)
        end = max(s - p for s, _, p in axis)
        out.append((end + pad, jumps.pop(), pad))
    return tuple(out)


def receptive_set(model, input_shape, index_or_coords) -> ReceptiveSet:
    """The exact set of input neurons one output neuron of a model depends on.

    The non-zero pattern of row ``index`` of ``M_L ... M_1`` (the layers'
    sparsity patterns; additions and concatenations take the union over paths).
    For a model without cancellations (e.g. positive weights and inputs, or no
    non-linearities) this is exactly where the gradient of that output with
    respect to the input is non-zero; through ReLU or max pooling the gradient
    at one input point is non-zero on a subset of it.

    Examples
    --------
    A stride-2 conv (kernel 1) after a 3-tap conv: the even outputs' fields.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv1d(1, 1, 1, stride=2), nn.Conv1d(1, 1, 2, dilation=2))
    >>> receptive_set(net, (1, 9), 0).flat.tolist()
    [0, 4]
    """
    steps = _trace(model, input_shape)
    shapes = {s.name: s.shape for s in steps}
    out_shape = shapes["output"]
    flat, coords = parse_index("index_or_coords", index_or_coords, out_shape)
    masks: dict[str, np.ndarray] = {"output": np.zeros(prod(out_shape), dtype=bool)}
    masks["output"][flat] = True
    for step in reversed(steps):
        v = masks.get(step.name)
        if v is None or step.kind == "input":
            continue
        if step.kind == "layer":
            geom, select, _ = _layer(step, shapes[step.sources[0]])
            _merge(masks, step.sources[0], _pull_back(geom, select, v))
        elif step.kind == "cat":
            parts = v.reshape(step.shape[0], -1)
            start = 0
            for src in step.sources:
                c = shapes[src][0]
                _merge(masks, src, parts[start:start + c].ravel())
                start += c
        else:  # same, union: every tensor source of the element-wise op
            for src in step.sources:
                if shapes[src] != step.shape:
                    raise ValueError(f"{step.label} broadcasts {shapes[src]} to {step.shape}: not supported")
                _merge(masks, src, v)
    name = next(s.name for s in steps if s.kind == "input")
    in_shape = shapes[name]
    x = masks.get(name, np.zeros(prod(in_shape), dtype=bool))
    flat_in = np.flatnonzero(x)
    try:
        box = _field_walk(steps, len(in_shape) - 1).box(coords[1:])
    except ValueError:  # a transposed layer: no box arithmetic
        box = None
    maps = {"input": x.reshape(in_shape)}
    for s in steps:
        if s.kind != "input" and s.name != "output":
            mask = masks.get(s.name, np.zeros(prod(s.shape), dtype=bool))
            maps[s.label or s.name] = mask.reshape(s.shape)
    in_coords = [tuple(int(v) for v in c) for c in zip(*np.unravel_index(flat_in, in_shape))]
    return ReceptiveSet(flat, coords, flat_in, in_coords, box, maps)


def _merge(masks: dict, name: str, v: np.ndarray) -> None:
    masks[name] = v.copy() if name not in masks else (masks[name] | v)
