"""Neurons of a conv layer: what one output neuron reads, what one input neuron feeds.

A *neuron* is one entry of a feature map: one row of M (an output neuron) or
one column of M (an input neuron). This module answers, for one layer, which
input neurons an output neuron reads and with which weights (:func:`neuron`),
and which output neurons an input neuron feeds (:func:`feeds`). Receptive
fields through whole stacks live in :mod:`convmatrix.explain.receptive`.

Coordinates convention (used everywhere in convmatrix)
------------------------------------------------------
A neuron is named either by its **flat index** (its row or column of M: the
C-order index into the ``(C, *spatial)`` tensor) or by its **coordinates**
``(channel, *position)``, where ``position`` lists the spatial indices in
**array-axis order**, exactly as you would index the tensor ``x[c, i, j]``:
for 2-D maps ``i`` is the row (the height axis, top to bottom) and ``j`` the
column (the width axis, left to right); for 3-D maps ``(d, i, j)``. There is no
"x" and "y" axis: tools disagree on which is which, so we never use them.
So ``(0, 1, 2)`` in a ``1x3x3`` map is channel 0, row 1, column 2, flat
index ``0*9 + 1*3 + 2 = 5``.

A receptive-field *box* is given per spatial axis as a half-open
``(start, stop)`` range of input positions in the same order; it may reach
outside the input (into the padding), where the exact set of inputs read is
folded back (reflect, replicate, circular) or dropped (zeros).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..core.geometry import ConvGeometry, as_index
from .receptive import layer_field, pull_back
from .symbolic import entry_weights, kernel_names

__all__ = ["neuron", "feeds", "Neuron", "Fanout", "NetworkNeuron", "parse_index"]


parse_index = as_index  # a flat index or (channel, *position), checked against a shape


def _as_layer(weight, input_shape, conv_kwargs):
    """(geometry, weight values or None, names): a weight array, or only its shape (symbolic)."""
    from ..core.matrix import as_weight_array, conv_geometry

    if np.ndim(weight) == 1:  # a shape: symbols only
        geom = conv_geometry(tuple(weight), input_shape, **conv_kwargs)
        values = None
    else:
        values = as_weight_array(weight)
        geom = conv_geometry(values.shape, input_shape, **conv_kwargs)
        values = values.reshape(-1)
    return geom, values, kernel_names(geom.weight_shape)


def _term(weight_name: str, x: str) -> str:
    name = f"({weight_name})" if "+" in weight_name else weight_name
    return f"{name}*{x}"


def _signed_sum(terms) -> str:
    """``[(2, "*x"), (-1, "*y"), (0.5, "")]`` -> ``"2*x - 1*y + 0.5"``: numbers with their signs.

    >>> _signed_sum([(2.0, "*x[0]"), (-1.0, "*x[1]"), (0.5, "")])
    '2*x[0] - 1*x[1] + 0.5'
    """
    out = ""
    for k, (w, rest) in enumerate(terms):
        sign = "-" if w < 0 else "+"
        text = f"{abs(w):.6g}{rest}"
        out += (f"-{text}" if sign == "-" else text) if k == 0 else f" {sign} {text}"
    return out or "0"


def _coord_str(prefix: str, coords: tuple[int, ...]) -> str:
    return f"{prefix}[" + ",".join(map(str, coords)) + "]"


@dataclass(frozen=True)
class Neuron:
    """One output neuron of a layer: its row of M and what it reads.

    ``inputs[k]`` (flat) / ``input_coords[k]`` (channel, *position) is read with
    weight ``weights[k]``, the sum of the kernel entries ``taps[k]`` (names);
    ``box`` is the receptive-field box (half-open ranges per spatial axis).
    """

    index: int
    coords: tuple[int, ...]
    row: np.ndarray
    inputs: np.ndarray
    input_coords: list[tuple[int, ...]]
    weights: np.ndarray | None
    taps: list[tuple[str, ...]]
    bias: float
    box: tuple[tuple[int, int], ...]
    formula: str
    words: str
    geometry: ConvGeometry = field(repr=False)
    values: str | None = None  # the formula with the numbers, when the weight is known
    activation: str | None = None  # the activation that follows the layer (a torch.nn class name)

    @property
    def output_formula(self) -> str | None:
        """``a[...] = ReLU(y[...])`` where an activation follows, else None."""
        if self.activation is None:
            return None
        return f"{_coord_str('a', self.coords)} = {self.activation}({_coord_str('y', self.coords)})"

    def pre_activation(self, x) -> np.ndarray:
        """``y_i = m_i . x + b_i`` for a batch ``x`` of layer inputs ``(N, *input_shape)`` (needs the weight)."""
        if self.row is None:
            raise ValueError("pre_activation needs the weight's numbers; this neuron was given only a weight shape")
        X = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        return X.reshape(X.shape[0], -1) @ np.asarray(self.row, dtype=np.float64) + self.bias

    def output(self, x) -> np.ndarray:
        """The neuron's output ``a_i = act(y_i)`` (``y_i`` itself without an activation)."""
        from ..network.activations import apply_activation

        y = self.pre_activation(x)
        return y if self.activation is None else apply_activation(self.activation, {}, y[:, None])[:, 0]

    def __str__(self) -> str:
        lines = [self.words, "", "  " + self.formula]
        if self.values:
            lines.append("  " + self.values)
        if self.activation:
            lines.append(f"  {self.output_formula}   (the neuron's output: the activation of its pre-activation)")
        lines += ["", "  input neuron (flat)  (channel, *position)  weight"]
        for k, (flat, c) in enumerate(zip(self.inputs, self.input_coords)):
            w = "+".join(self.taps[k])
            if self.weights is not None:
                w += f" = {self.weights[k]:.6g}"
            lines.append(f"  {int(flat):>19}  {str(c):<22}  {w}")
        lines.append(f"  receptive-field box (per spatial axis, [start, stop)): {list(self.box)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Fanout:
    """One input neuron of a layer: the output neurons it feeds (its column of M)."""

    index: int
    coords: tuple[int, ...]
    outputs: np.ndarray
    output_coords: list[tuple[int, ...]]
    weights: np.ndarray | None
    taps: list[tuple[str, ...]]

    def __str__(self) -> str:
        head = (f"input neuron {self.index} (channel, *position) = {self.coords} feeds "
                f"{len(self.outputs)} output neuron(s):")
        lines = [head, "  output neuron (flat)  (channel, *position)  weight"]
        for k, (flat, c) in enumerate(zip(self.outputs, self.output_coords)):
            w = "+".join(self.taps[k])
            if self.weights is not None:
                w += f" = {self.weights[k]:.6g}"
            lines.append(f"  {int(flat):>20}  {str(c):<22}  {w}")
        return "\n".join(lines)


def neuron(weight, input_shape, index_or_coords, *, bias=None, activation=None, layer=None, **conv_kwargs):
    """One output neuron of a conv layer (a :class:`Neuron`), or of any layer of a model (a :class:`NetworkNeuron`).

    A neuron has two numbers: its pre-activation ``y_i = m_i . x + b_i`` (``m_i`` its
    row of the layer's matrix M) and, when an activation follows, its output
    ``a_i = act(y_i)``, e.g. ``relu(m_i . x + b_i)``.

    With a torch module or an ONNX file (path or ``onnx.ModelProto``) as the first
    argument, ``layer`` names the layer (its name in the model, or its number in
    the model's layer table, see :func:`network_neuron`).

    Parameters
    ----------
    weight : array or tuple of int
        The layer's weight, or only its shape (then the answer is symbolic:
        ``weights`` and ``row`` are None / kernel names only).
    input_shape : tuple of int
        ``(C_in, *spatial)``.
    index_or_coords : int or tuple
        The output neuron: a flat index (its row of M) or ``(channel, *position)``
        (see the module docstring for the axis order).
    bias : array or float, optional
        The layer's bias (one per output channel) or a scalar.
    activation : str, optional
        The activation that follows the layer (``"relu"``, ``"sigmoid"``, ...).

    Examples
    --------
    The 2x1x2x2 example layer: output neuron 1 is ``y[0,0,1]``.

    >>> n = neuron((2, 1, 2, 2), (1, 3, 3), 1)
    >>> n.coords, n.inputs.tolist(), n.box
    ((0, 0, 1), [1, 2, 4, 5], ((0, 2), (1, 3)))
    >>> n.formula
    'y[0,0,1] = a*x[0,0,1] + b*x[0,0,2] + c*x[0,1,1] + d*x[0,1,2]'
    >>> neuron((2, 1, 2, 2), (1, 3, 3), 1, activation="relu").output_formula
    'a[0,0,1] = ReLU(y[0,0,1])'
    """
    if layer is not None or _is_model(weight):
        if bias is not None or activation is not None or conv_kwargs:
            raise ValueError("bias, activation and conv options come from the model; do not pass them with a model")
        return network_neuron(weight, input_shape, index_or_coords, layer=layer)
    kind = None
    if activation is not None:
        from ..network.activations import activation_kind

        kind = activation_kind(activation)
    return dataclasses.replace(_layer_neuron(weight, input_shape, index_or_coords, bias, conv_kwargs),
                               activation=kind)


def _is_model(obj) -> bool:
    import os

    if isinstance(obj, (str, bytes, os.PathLike)) or type(obj).__name__ == "ModelProto":
        return True
    return any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in type(obj).__mro__)


def _layer_neuron(weight, input_shape, index_or_coords, bias, conv_kwargs) -> Neuron:
    geom, values, names = _as_layer(weight, input_shape, conv_kwargs)
    flat, coords = parse_index("index_or_coords", index_or_coords, geom.output_shape)
    indptr, cols, tap_ptr, widx = entry_weights(geom, flat, flat + 1)
    cols = np.asarray(cols, dtype=np.int64)
    taps = [tuple(names[i] for i in sorted(widx[tap_ptr[e]:tap_ptr[e + 1]])) for e in range(len(cols))]
    weights = row = None
    if values is not None:
        weights = np.array([values[widx[tap_ptr[e]:tap_ptr[e + 1]]].sum() for e in range(len(cols))],
                           dtype=values.dtype)
        row = np.zeros(geom.matrix_shape[1], dtype=values.dtype)
        row[cols] = weights
    b = _bias(bias, geom, coords[0])
    in_coords = [tuple(int(v) for v in c) for c in zip(*np.unravel_index(cols, geom.input_shape))]
    box = _box(geom, coords[1:], in_coords)
    y = _coord_str("y", coords)
    terms = [_term("+".join(t), _coord_str("x", c)) for t, c in zip(taps, in_coords)]
    formula = f"{y} = " + (" + ".join(terms) if terms else "0") + (f" + bias[{coords[0]}]" if bias is not None else "")
    values_formula = None
    if weights is not None:
        values = [(float(w), f"*{_coord_str('x', c)}") for w, c in zip(weights, in_coords)]
        if bias is not None:
            values.append((float(b), ""))
        values_formula = f"{y} = {_signed_sum(values)}"
    words = (
        f"Output neuron {flat} (row {flat} of M) is channel {coords[0]} at position {coords[1:]} of the "
        f"{geom.output_shape} output. It reads {len(cols)} of the {geom.matrix_shape[1]} input neurons "
        f"(the non-zero columns of its row), multiplies each by its weight (a kernel entry of output "
        f"channel {coords[0]}, or a sum of them where padding folds taps together), adds them up"
        + (f" and adds the bias {b:.6g}." if b else " (no bias).")
    )
    return Neuron(flat, coords, row, cols, in_coords, weights, taps, b, box, formula, words, geom, values_formula)


def _bias(bias, geom: ConvGeometry, channel: int) -> float:
    if bias is None:
        return 0.0
    b = np.asarray(bias.detach().cpu().numpy() if hasattr(bias, "detach") else bias)
    if b.ndim == 0:
        return float(b)
    if b.shape != (geom.out_channels,):
        raise ValueError(f"bias must be a scalar or have shape ({geom.out_channels},), got {b.shape}")
    return float(b[channel])


def _box(geom: ConvGeometry, position: tuple[int, ...], in_coords) -> tuple[tuple[int, int], ...]:
    """The receptive-field box: the kernel's span in the padded input (forward layers), or
    the bounding box of the inputs read (transposed layers, whose field is no regular span)."""
    if geom.transposed:
        if not in_coords:
            return tuple((0, 0) for _ in position)
        pos = np.array([c[1:] for c in in_coords])
        return tuple((int(lo), int(hi) + 1) for lo, hi in zip(pos.min(0), pos.max(0)))
    box = []
    for ax, o in enumerate(position):
        size, jump, pad = layer_field(geom.kernel_size[ax], geom.stride[ax], geom.dilation[ax],
                                      geom.padding[ax][0])
        box.append((o * jump - pad, o * jump - pad + size))
    return tuple(box)


def feeds(weight, input_shape, index_or_coords, **conv_kwargs) -> Fanout:
    """The output neurons one input neuron feeds (its column of M), with the weights.

    >>> f = feeds((2, 1, 2, 2), (1, 3, 3), (0, 1, 1))
    >>> f.outputs.tolist(), [t[0] for t in f.taps]
    ([0, 1, 2, 3, 4, 5, 6, 7], ['d', 'c', 'b', 'a', 'h', 'g', 'f', 'e'])
    """
    geom, values, names = _as_layer(weight, input_shape, conv_kwargs)
    flat, coords = parse_index("index_or_coords", index_or_coords, geom.input_shape)
    from ..core.pattern import tap_pattern

    rows = tap_pattern(geom).column(flat)  # every output channel of the group, at the windows holding it
    taps, weights = [], []
    for r in rows:
        indptr, cols, tap_ptr, widx = entry_weights(geom, int(r), int(r) + 1)
        e = int(np.flatnonzero(np.asarray(cols) == flat)[0])
        w = widx[tap_ptr[e]:tap_ptr[e + 1]]
        taps.append(tuple(names[i] for i in sorted(w)))
        if values is not None:
            weights.append(values[w].sum())
    out_coords = [tuple(int(v) for v in c) for c in zip(*np.unravel_index(rows, geom.output_shape))]
    return Fanout(flat, coords, rows, out_coords,
                  None if values is None else np.array(weights, dtype=values.dtype), taps)


# --------------------------------------------------------------------------- network neurons
def _elide(values, sep: str = ", ", head: int = 8, tail: int = 4) -> str:
    """``values`` joined by ``sep``, the middle elided (with its count) when there are many."""
    values = [str(v) for v in values]
    if len(values) <= head + tail:
        return sep.join(values)
    return sep.join(values[:head]) + f"{sep}... ({len(values) - head - tail} more) ...{sep}" + sep.join(values[-tail:])


@dataclass(frozen=True)
class NetworkNeuron:
    """One neuron of a layer inside a model: its layer, row, activation and exact input set.

    ``layer``: the layer's name (``number``: its number in the model's layer table);
    ``index`` / ``coords``: the neuron in that layer's output; ``row``: its row of the
    layer's matrix, a 1-row ``csr_array`` over the layer's input (for max pooling: 1 on
    the window it takes the max of), ``bias`` its bias; ``activation``: the activation
    applied to it (a ``torch.nn`` class name, ``"Max"`` for max pooling) or None;
    ``inputs``: the sorted flat indices of the network inputs it depends on (as
    :func:`~convmatrix.receptive_set`). ``pre_activation(x)`` / ``output(x)``: its two
    numbers for a batch ``x`` of network inputs.
    """

    layer: str
    number: int
    index: int
    coords: tuple[int, ...]
    row: object  # scipy.sparse.csr_array of shape (1, layer input size)
    bias: float
    activation: str | None
    inputs: np.ndarray
    graph: object = field(repr=False)
    pre_node: int = field(repr=False, default=0)
    out_node: int = field(repr=False, default=0)

    def _values(self, x, node: int) -> np.ndarray:
        X = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        n_in = self.graph.nodes[0].size
        if X.ndim < 1 or X.size != X.shape[0] * n_in:
            raise ValueError(f"x must be a batch of network inputs (N, *{self.graph.sample_shapes[0]}), got {X.shape}")
        return self.graph.evaluate(X.reshape(X.shape[0], n_in), node)[:, self.index]

    def pre_activation(self, x) -> np.ndarray:
        """``y_i = m_i . h + b_i`` (``h`` the layer's input) for a batch ``x`` of network inputs."""
        return self._values(x, self.pre_node)

    def output(self, x) -> np.ndarray:
        """The neuron's output after its activation (``y_i`` itself without one)."""
        return self._values(x, self.out_node)

    def __str__(self) -> str:
        cols = self.row.indices.tolist()
        terms = [f"{v:.6g}*h[{c}]" for c, v in zip(cols, self.row.data)]
        shape = self.graph.sample_shapes[self.pre_node]
        act = f"{self.activation}(y)" if self.activation else "y (no activation follows)"
        return "\n".join([
            f"neuron {self.index} {self.coords} of layer {self.number} {self.layer!r} (output {shape})",
            f"  row of the matrix of {self.graph.label(self.pre_node)}: {len(cols)} of {self.row.shape[1]} entries: "
            f"y = {_elide(terms, ' + ') or '0'}" + (f" {'+-'[self.bias < 0]} {abs(self.bias):.6g}" if self.bias else ""),
            f"  activation: {self.activation}   output a = {act}",
            f"  depends on {len(self.inputs)} of {self.graph.nodes[0].size} network inputs: {_elide(self.inputs.tolist())}",
        ])


def layer_table(graph) -> list[str]:
    """The model's layer table: ``number 'name' (origin) shape``, one line per node after the input."""
    shapes = graph.sample_shapes
    return [f"{j} {graph.label(j)} {'x'.join(map(str, shapes[j]))}" for j in range(1, len(graph.nodes))]


def _resolve_layer(graph, layer) -> int:
    """The node id of ``layer`` (a name or a number of the layer table); a one-line error otherwise."""
    n = len(graph.nodes)
    given = layer
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool) and 1 <= int(layer) < n:
        return int(layer)
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        layer = str(int(layer))  # not a number of the table (they start at 1): maybe a name, as "0" of a Sequential
    if isinstance(layer, str):
        named = [j for j in range(1, n) if graph.nodes[j].name == layer]
        if named:
            return named[-1]
        if layer.isdigit() and 1 <= int(layer) < n:
            return int(layer)
    table = layer_table(graph)
    shown = table if len(table) <= 24 else table[:16] + [f"... ({len(table) - 20} more)"] + table[-4:]
    raise ValueError(f"layer {given!r} is not a layer of the model; valid layers (number 'name' (op) shape): "
                     + "; ".join(shown))


def _row_of(graph, j: int, i: int):
    """``(row, bias)`` of neuron ``i`` of node ``j``: its matrix row over the node's input."""
    import scipy.sparse as sp

    node = graph.nodes[j]
    if node.op == "Affine":
        return sp.csr_array(node.M[[i]]), float(node.b[i])
    n_in = sum(graph.nodes[k].size for k in node.inputs)
    if node.op == "Max":
        cols = np.unique(node.groups[i])
    elif node.op == "Add":
        cols = np.cumsum([0] + [graph.nodes[k].size for k in node.inputs[:-1]]) + i
    else:  # Concat, Act: the neuron itself
        cols = np.array([i])
    return sp.csr_array((np.ones(len(cols)), (np.zeros(len(cols), dtype=int), cols)), shape=(1, n_in)), 0.0


def network_neuron(model, input_shape, index_or_coords, *, layer) -> NetworkNeuron:
    """Neuron ``index_or_coords`` of the output of layer ``layer`` of a model (torch module or ONNX file).

    ``layer`` is the layer's name in the model or its number in the model's layer
    table (the nodes of :func:`convmatrix.network.load`'s graph, input 0). An
    activation layer names the neuron of the layer it follows, seen after the
    activation; a layer followed by an activation has it as its ``activation``.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Conv1d(2, 1, 2)).eval()
    >>> n = network_neuron(net, (1, 6), (1, 0), layer="0")
    >>> n.activation, n.row.indices.tolist(), n.inputs.tolist()
    ('ReLU', [0, 1, 2], [0, 1, 2])
    """
    from ..network import load

    graph = load(model, input_shape, eval_mode=True)
    j = _resolve_layer(graph, layer)
    shapes = graph.sample_shapes
    flat, coords = parse_index("index_or_coords", index_or_coords, shapes[j])
    node, pre, out = graph.nodes[j], j, j
    activation = None
    if node.op == "Act":
        activation, pre = node.kind, node.inputs[0]
    else:
        nexts = graph.consumers()[j]
        if len(nexts) == 1 and graph.nodes[nexts[0]].op == "Act":
            out, activation = nexts[0], graph.nodes[nexts[0]].kind
        elif node.op == "Max":
            activation = "Max"
    row, bias = _row_of(graph, pre, flat)
    mask = np.zeros(graph.nodes[pre].size, dtype=bool)
    mask[flat] = True
    inputs = np.flatnonzero(pull_back(graph, shapes, pre, mask).get(0, np.zeros(graph.nodes[0].size, bool)))
    return NetworkNeuron(graph.nodes[j].name, j, flat, coords, row, bias, activation, inputs, graph, pre, out)
