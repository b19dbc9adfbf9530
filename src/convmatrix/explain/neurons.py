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

from dataclasses import dataclass, field
from functools import lru_cache
from math import prod

import numpy as np

from ..core.geometry import ConvGeometry, as_index
from .symbolic import entry_weights, kernel_names

__all__ = ["neuron", "feeds", "Neuron", "Fanout", "parse_index", "layer_field", "compose_field", "spatial_pattern"]


parse_index = as_index  # a flat index or (channel, *position), checked against a shape


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


def spatial_pattern(geom: ConvGeometry):
    """The tap pattern of the layer's spatial part alone (one input, one output channel).

    Within a group every (output, input) channel pair of a layer has this same
    pattern, so structure questions (which neurons are connected) need only it.
    """
    from ..core.matrix import conv_geometry
    from ..core.pattern import tap_pattern

    kw = geom.conv_kwargs()
    kw.pop("groups")
    return tap_pattern(conv_geometry((1, 1, *geom.kernel_size), (1, *geom.input_size), **kw))


def reading_positions(geom: ConvGeometry, col: int) -> tuple[int, np.ndarray]:
    """Which rows read input neuron ``col`` (one column of M), without building M.

    Returns ``(first, positions)``: the first output channel of ``col``'s group and
    the sorted spatial output positions whose window holds ``col``'s position. Every
    output channel ``u`` of that group reads ``col`` at those positions, so the rows
    are ``u * prod(output_size) + positions`` for ``u`` in ``first .. first +
    out_per_group - 1``.

    >>> g = ConvGeometry.from_args((2, 1, 2, 2), (1, 3, 3))
    >>> first, positions = reading_positions(g, 4)      # the centre of the 3x3 input
    >>> first, positions.tolist()
    (0, [0, 1, 2, 3])
    """
    channel, pos = divmod(int(col), prod(geom.input_size))
    columns = _spatial_columns(spatial_pattern(geom))
    first = (channel // geom.in_per_group) * geom.out_per_group
    return first, columns.indices[columns.indptr[pos]:columns.indptr[pos + 1]].astype(np.int64)


@lru_cache(maxsize=16)
def _spatial_columns(spatial):
    """The spatial pattern column-major (CSC): output positions per input position."""
    import scipy.sparse as sp

    _, indices, indptr = spatial.fill(None)
    rows = sp.csr_array((np.ones(len(indices), dtype=np.int8), indices, indptr), shape=spatial.shape)
    return rows.tocsc()


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

    def __str__(self) -> str:
        lines = [self.words, "", "  " + self.formula]
        if self.values:
            lines.append("  " + self.values)
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


def neuron(weight, input_shape, index_or_coords, *, bias=None, **conv_kwargs) -> Neuron:
    """One output neuron of a conv layer: its row of M, its inputs with their weights, its formula.

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

    Examples
    --------
    The seed question's layer: output neuron 1 is ``y[0,0,1]``.

    >>> n = neuron((2, 1, 2, 2), (1, 3, 3), 1)
    >>> n.coords, n.inputs.tolist(), n.box
    ((0, 0, 1), [1, 2, 4, 5], ((0, 2), (1, 3)))
    >>> n.formula
    'y[0,0,1] = a*x[0,0,1] + b*x[0,0,2] + c*x[0,1,1] + d*x[0,1,2]'
    """
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
        terms = [f"{w:.6g}*{_coord_str('x', c)}" for w, c in zip(weights, in_coords)]
        values_formula = f"{y} = " + (" + ".join(terms) if terms else "0") + (f" + {b:.6g}" if bias is not None else "")
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
    # Output positions whose window holds this input position, from the spatial pattern;
    # every output channel of the input channel's group reads it there.
    first, positions = reading_positions(geom, flat)
    channels = np.arange(first, first + geom.out_per_group, dtype=np.int64)
    rows = (channels[:, None] * prod(geom.output_size) + positions[None, :]).ravel()
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
