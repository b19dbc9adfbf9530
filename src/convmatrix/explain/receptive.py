"""Receptive fields through whole models: the classic arithmetic and the exact input set.

Two answers to "which input neurons can change this deep neuron?":

- :func:`receptive_field` - the classic arithmetic (size, jump, start) of the
  receptive-field literature and of google-research's published tables: one
  box per output neuron, ``[o*stride - padding, o*stride - padding + size)`` per
  spatial axis, with a per-layer table. A classifier's dense head (Flatten,
  Linear, ...) reads every position, so the field is reported up to the last
  spatial layer, and ``spatial_end`` names it.
- :func:`receptive_set` - the exact set: the non-zeros of ``e_o^T M_L ... M_1``,
  the product of the sparsity patterns of the layers' matrices (max pooling:
  its windows), pulled back node by node. It differs from the box at borders
  (zero padding drops, reflect/replicate/circular fold), with strides that skip
  inputs and with dilation gaps.

A model is anything :func:`convmatrix.network.load` reads (a torch layer, a list
of layers, an ``nn.Sequential``, any fx-traceable module, an ONNX file), read in
eval mode; additions and concatenations take the union over their paths.
Convolutions, pooling (max, average, adaptive with an integer ratio) and padding
layers have field arithmetic (their ``ConvRecord``); element-wise layers
(activations, batch norm, dropout, identity, scaling, channel concatenation)
keep the field. Positions follow the convention of
:mod:`convmatrix.explain.neurons`: ``(channel, *position)`` in array-axis order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import NamedTuple

import numpy as np

from ..core.geometry import as_index

__all__ = ["receptive_field", "receptive_set", "ReceptiveField", "ReceptiveSet", "FieldRow", "read_model",
           "pull_back", "layer_field", "compose_field"]


class FieldRow(NamedTuple):
    """One row of the per-layer table: the field of that layer's output neurons in the input."""

    layer: str
    size: tuple[int, ...]
    jump: tuple[int, ...]
    padding: tuple[int, ...]

    @property
    def start(self) -> tuple[int, ...]:
        """Where the first output neuron's field starts (``-padding``), per axis."""
        return tuple(-p for p in self.padding)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a model's output neurons in its input, one int per spatial axis.

    ``size``: the field's extent; ``stride``: the jump between neighbouring output
    neurons' fields; ``padding``: how far the first output neuron's field starts
    before the input's first entry. ``spatial_end``: the last spatial layer, whose
    output neurons these are (the model's output, or the layer before a dense
    head); ``head``: the layers after it, which read every position. ``table``:
    one :class:`FieldRow` ``(layer, size, jump, padding)`` per layer up to
    ``spatial_end``, in order.
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    spatial_end: str = ""
    table: list = field(default_factory=list, repr=False, compare=False)
    head: list = field(default_factory=list, repr=False, compare=False)

    def __str__(self) -> str:
        rows = [("layer", "size", "jump", "start")] + [
            (r.layer, *("x".join(map(str, v)) for v in (r.size, r.jump, r.start))) for r in self.table]
        widths = [max(len(r[k]) for r in rows) for k in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"receptive field of {self.spatial_end!r}: size {self.size}, stride {self.stride}, "
                     f"padding {self.padding} (a neuron at o reads [o*stride - padding, ... + size))")
        if self.head:
            lines.append(f"spatial part ends at {self.spatial_end!r}; the head after it reads every position: "
                         + ", ".join(self.head))
        return "\n".join(lines)

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



# --------------------------------------------------------------------------- reading
def read_model(model, input_shape):
    """The model as an IR graph (read in eval mode) and every node's shape without the batch axis."""
    from ..network import load

    graph = load(model, input_shape, eval_mode=True)
    return graph, graph.sample_shapes


def layer_field(kernel: int, stride: int, dilation: int, pad_lo: int) -> tuple[int, int, int]:
    """Receptive field of one forward layer along one axis: ``(size, jump, padding)``.

    Output position ``o`` reads the padded-input span
    ``[o*jump - padding, o*jump - padding + size)`` with
    ``size = dilation*(kernel-1) + 1``, ``jump = stride``, ``padding = pad_lo``.

    >>> layer_field(3, 2, 2, 1)
    (5, 2, 1)
    """
    return dilation * (kernel - 1) + 1, stride, pad_lo


def compose_field(inner: tuple[int, int, int], outer: tuple[int, int, int]) -> tuple[int, int, int]:
    """The field of ``outer`` (a layer on top of ``inner``'s output) in ``inner``'s input.

    ``size = s0 + (s1 - 1)*j0``, ``jump = j0*j1``, ``padding = p0 + p1*j0``.

    >>> compose_field((3, 1, 1), (2, 2, 0))   # 3x3 pad-1 conv, then a 2x2 pool
    (4, 2, 1)
    """
    s0, j0, p0 = inner
    s1, j1, p1 = outer
    return s0 + (s1 - 1) * j0, j0 * j1, p0 + p1 * j0


def _layer_fields(geom) -> tuple:
    return tuple(layer_field(geom.kernel_size[ax], geom.stride[ax], geom.dilation[ax], geom.padding[ax][0])
                 for ax in range(geom.ndim))


def keeps_positions(node, in_shapes, shape) -> bool:
    """An affine node that maps every neuron to neurons at the same spatial position (batch norm,
    scaling, identity, channel concatenation, channel shuffle): it keeps the receptive field."""
    spatial = shape[1:]
    if any(tuple(s[1:]) != tuple(spatial) for s in in_shapes):
        return False
    per = prod(spatial)
    rows = np.repeat(np.arange(node.M.shape[0]), np.diff(node.M.indptr))
    return bool(np.array_equal(rows % per, node.M.indices % per))


def _node_field(graph, shapes, j, fields, nd):
    """The field of node ``j``: a tuple of ``(size, jump, padding)`` per axis, or a message why none."""
    node, shape = graph.nodes[j], shapes[j]
    ins = [fields[i] for i in node.inputs]
    if any(isinstance(f, str) for f in ins):
        return next(f for f in ins if isinstance(f, str))
    label = f"layer {graph.label(j)}"
    rec = getattr(node, "conv", None)
    if rec is not None:
        if rec.geometry.transposed:
            return (f"{label} is a transposed convolution: the jump between neighbouring outputs is a fraction "
                    "(1/stride), so it has no receptive field of integer size, stride and padding")
        return tuple(compose_field(a, b) for a, b in zip(ins[0], _layer_fields(rec.geometry)))
    if node.op in ("Act", "Add") or (node.op == "Affine" and keeps_positions(node, [shapes[i] for i in node.inputs],
                                                                             shape)):
        return _union(ins, label)
    a, b = tuple(shapes[node.inputs[0]][1:]), tuple(shape[1:])
    if node.origin.startswith("Adaptive"):
        return f"{label} maps {a} to {b}: only integer ratios have a receptive field"
    return (f"{label} maps {a} to {b} in a way no convolution or pooling does: no receptive-field arithmetic "
            "(receptive_set gives the exact input set)")


def _spatial_end(graph, shapes, nd) -> tuple[list[int], list[str]]:
    """The last spatial nodes (read by the first node that is not spatial, or the output) and the head."""
    spatial = [len(s) == nd + 1 for s in shapes]
    for j, node in enumerate(graph.nodes[1 : graph.output + 1], 1):
        if not spatial[j]:
            ends = [i for i in node.inputs if spatial[i]] or [node.inputs[0]]
            return ends, [graph.label(k) for k in range(j, graph.output + 1)]
    return [graph.output], []


def _field_walk(graph, shapes) -> ReceptiveField:
    nd = len(shapes[0]) - 1
    ends, head = _spatial_end(graph, shapes, nd)
    fields: dict = {0: ((1, 1, 0),) * nd}
    table = []
    for j in range(1, max(ends) + 1):
        if len(shapes[j]) != nd + 1:
            fields[j] = f"layer {graph.label(j)} is not spatial"
            continue
        fields[j] = _node_field(graph, shapes, j, fields, nd)
        if not isinstance(fields[j], str):
            table.append(FieldRow(graph.nodes[j].name, *(tuple(v[k] for v in fields[j]) for k in range(3))))
    f = _union([fields[e] for e in ends], "the spatial end")
    if isinstance(f, str):
        raise ValueError(f)
    end = graph.nodes[ends[-1]].name if ends[-1] else "input"
    return ReceptiveField(tuple(v[0] for v in f), tuple(v[1] for v in f), tuple(v[2] for v in f), end, table,
                          head)


def _union(parts: list, label: str):
    """The covering box of several paths' fields (they must share the jump), or the first message."""
    if any(isinstance(p, str) for p in parts):
        return next(p for p in parts if isinstance(p, str))
    out = []
    for axis in zip(*parts):
        jumps = {j for _, j, _ in axis}
        if len(jumps) > 1:
            raise ValueError(f"{label} joins paths with different strides {sorted(jumps)}: no common field")
        pad = max(p for _, _, p in axis)
        end = max(s - p for s, _, p in axis)
        out.append((end + pad, jumps.pop(), pad))
    return tuple(out)


# --------------------------------------------------------------------------- public
def receptive_field(model, input_shape=None) -> ReceptiveField:
    """Receptive field (size, stride, padding per spatial axis) of a model's output neurons.

    Parameters
    ----------
    model : torch.nn.Module, list of modules, or an ONNX file
        Anything :func:`convmatrix.network.load` reads; additions and channel
        concatenations take the covering box of their paths. A dense head
        (Flatten, Linear, ...) reads every position: the field is that of the
        last spatial layer (``rf.spatial_end``).
    input_shape : tuple of int
        ``(C, *spatial)`` (ONNX files declare their own).

    Raises
    ------
    ValueError
        For a transposed convolution (its jump is a fraction) or a layer that moves
        positions as no convolution does, naming it; for paths joined with
        different strides; for what the model reader refuses.

    Examples
    --------
    >>> import torch.nn as nn
    >>> rf = receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)), (1, 8, 8))
    >>> rf.size, rf.stride, rf.padding, rf.spatial_end
    ((4, 4), (2, 2), (1, 1), '1')
    """
    graph, shapes = read_model(model, input_shape)
    return _field_walk(graph, shapes)


def _pull_back_conv(rec, v: np.ndarray) -> np.ndarray:
    """The input neurons read by the output neurons ``v`` of a convolution record, without its matrix.

    Within one group every (output, input) channel pair has the same spatial pattern:
    a group's input channels are read at the union of the columns of the output
    positions marked in any of its output channels.
    """
    from ..core.pattern import tap_pattern

    geom = rec.geometry
    _, cols, ptr = tap_pattern(geom).spatial.fill(None)
    hits = v.reshape(geom.groups, geom.out_per_group, -1).any(axis=1)  # (groups, output positions)
    out = np.zeros((geom.groups, geom.in_per_group, prod(geom.input_size)), dtype=bool)
    for g, marked in enumerate(hits):
        rows = np.flatnonzero(marked)
        starts, lens = ptr[rows], ptr[rows + 1] - ptr[rows]
        entries = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        out[g][:, cols[entries]] = True
    return out.ravel()


def pull_back(graph, shapes, node: int, mask: np.ndarray) -> dict[int, np.ndarray]:
    """For every node, the neurons on a path to the neurons ``mask`` of node ``node`` (boolean masks).

    Convolutions, pooling and padding layers pull back through their tap pattern,
    other affine nodes through the sparsity of their matrix, max pooling through its
    windows, element-wise nodes and additions through the same neurons.
    """
    masks = {node: np.asarray(mask, dtype=bool).reshape(-1)}
    for j in range(node, 0, -1):
        v = masks.get(j)
        if v is None or not v.any():
            continue
        n = graph.nodes[j]
        rows = np.flatnonzero(v)
        if getattr(n, "conv", None) is not None:
            reads = _pull_back_conv(n.conv, v)
        elif n.op == "Affine":
            sub = n.M[rows]
            reads = np.zeros(n.M.shape[1], dtype=bool)
            reads[sub.indices] = True
        elif n.op == "Max":
            reads = np.zeros(graph.nodes[n.inputs[0]].size, dtype=bool)
            reads[n.groups[rows].ravel()] = True
        else:  # Act, Add (the same neurons of every input), Concat (split below)
            reads = v
        start = 0
        for i in n.inputs:
            size = graph.nodes[i].size
            part = reads[start:start + size] if n.op in ("Affine", "Concat", "Max") else v
            masks[i] = part.copy() if i not in masks else masks[i] | part
            start += size
    return masks


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
    graph, shapes = read_model(model, input_shape)
    out_shape = shapes[graph.output]
    flat, coords = as_index("index_or_coords", index_or_coords, out_shape)
    v = np.zeros(prod(out_shape), dtype=bool)
    v[flat] = True
    masks = pull_back(graph, shapes, graph.output, v)
    x = masks.get(0, np.zeros(prod(shapes[0]), dtype=bool))
    flat_in = np.flatnonzero(x)
    box = None
    if len(out_shape) == len(shapes[0]):
        try:
            box = _field_walk(graph, shapes).box(coords[1:])
        except ValueError:  # a transposed layer, paths of different strides: no box arithmetic
            box = None
    maps = {"input": x.reshape(shapes[0])}
    for j in range(1, graph.output + 1):
        label = graph.label(j)
        maps[label if label not in maps else f"{label} #{j}"] = masks.get(
            j, np.zeros(prod(shapes[j]), dtype=bool)).reshape(shapes[j])
    in_coords = [tuple(int(v) for v in c) for c in zip(*np.unravel_index(flat_in, shapes[0]))]
    return ReceptiveSet(flat, coords, flat_in, in_coords, box, maps)
