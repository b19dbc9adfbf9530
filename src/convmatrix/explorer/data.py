"""The explorer's data: every number the page shows, computed by the library.

A *spec* (plain JSON, as the page's controls send it) describes a stack of
layers::

    {"input": "1x3x3", "layers": [{"weight": "2x1x2x2", "stride": "1", "padding": "0",
     "dilation": "1", "groups": "1", "padding_mode": "zeros", "transposed": false,
     "output_padding": "0"}]}

:func:`build_stack` validates it with the library's own rules (the error names the
layer and the control it belongs to) and gives a :class:`Stack`, whose methods
answer the page's queries as JSON-ready dicts: the summary, a window of matrix
entries, a neuron (what it reads, what it feeds, its formula and its exact
receptive field through every layer) and a sparsity image. Which input neuron
meets which kernel entry comes only from :mod:`convmatrix.core.pattern` (through
``tap_pattern``, ``build_csr`` and ``slab_permutation``); nothing here or in the
page's JavaScript repeats convolution index arithmetic.

Maps are numbered 0 (the input, ``in``) to L (the output, ``out``); layer l maps
map l to map l+1, and neuron n of map l+1 is row n of layer l's matrix, neuron n
of map l its column n (C-order flattening, as everywhere in convmatrix).
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from functools import cached_property
from math import prod

import numpy as np

from .. import notation
from ..core.geometry import ConvGeometry, check_memory, format_bytes
from ..core.matrix import as_weight_array, build_csr, conv_geometry, estimate_bytes
from ..core.pattern import axis_nnz, slab_permutation, tap_pattern
from ..explain.symbolic import kernel_names

__all__ = ["SpecError", "QueryError", "Layer", "Stack", "build_stack", "default_spec", "layer_spec"]

#: Memory the server may spend on one layer's pattern or a stack's structure matrices.
DEFAULT_BUDGET = 2_000_000_000
#: The largest matrix window (rows x columns) one query returns as cells.
MAX_WINDOW = (96, 128)
#: Terms of a formula written out before it is cut short.
MAX_TERMS = 48
#: Kernel entries the summary lists (the page draws the kernel up to this size).
MAX_KERNEL = 4096
#: Neurons listed with their kernel entry before lists give only ids.
MAX_NAMED = 4096
#: Stored entries of a stack up to which the summary carries every neuron's value (M @ x + b, layer by layer).
MAX_VALUE_ENTRIES = 4_000_000
#: Neurons of one map up to which the summary carries their values.
MAX_VALUE_NEURONS = 65_536

CONV_FIELDS = notation.CONV_FIELDS


class SpecError(ValueError):
    """A layer spec the library refuses; ``layer`` and ``field`` say which control it concerns."""

    def __init__(self, message: str, layer: int | None = None, field: str = "weight"):
        super().__init__(message)
        self.layer, self.field = layer, field

    def as_json(self) -> dict:
        return {"error": str(self), "layer": self.layer, "field": self.field}


class QueryError(ValueError):
    """A malformed query (a neuron or window outside the layer, a bad number)."""


# ------------------------------------------------------------------------ specs
def default_spec() -> dict:
    """The 2x1x2x2 example layer: a 2x1x2x2 kernel on a 1x3x3 input."""
    return {"input": "1x3x3", "layers": [layer_spec((2, 1, 2, 2))]}


def _dims(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(int(v)) for v in value)
    return str(value)


def layer_spec(weight_shape, **conv_kwargs) -> dict:
    """A layer's spec (the page's control values) from a weight shape and conv keywords."""
    spec = {"weight": "x".join(str(int(s)) for s in weight_shape), "stride": "1", "padding": "0",
            "dilation": "1", "groups": "1", "padding_mode": "zeros", "transposed": False,
            "output_padding": "0"}
    for key, value in conv_kwargs.items():
        if key not in CONV_FIELDS:
            raise TypeError(f"unknown convolution argument {key!r}; allowed: {list(CONV_FIELDS)}")
        spec[key] = bool(value) if key == "transposed" else _dims(value)
    return spec


# Which control an error message of the library concerns (first keyword found wins).
_FIELD_WORDS = (
    ("kernel larger", "weight"), ("input_shape has", "input"), ("input_shape must", "input"), ("output_padding", "output_padding"), ("groups", "groups"),
    ("padding_mode", "padding_mode"), ("padding", "padding"), ("stride", "stride"),
    ("dilation", "dilation"), ("transposed", "transposed"),
)


def _field_of(message: str) -> str:
    for word, name in _FIELD_WORDS:
        if word in message:
            return name
    return "weight"


def _parse(kind, text, layer: int, name: str):
    try:
        return kind(str(text).strip())
    except ValueError as exc:
        raise SpecError(f"{name}: {exc}", layer, name) from None


def _layer_kwargs(spec: dict, i: int) -> dict:
    if not isinstance(spec, dict):
        raise SpecError(f"layer {i + 1} must be an object of control values, got {spec!r}", i)
    unknown = set(spec) - {"weight", "label", *CONV_FIELDS}
    if unknown:
        raise SpecError(f"layer {i + 1} has unknown settings {sorted(unknown)}", i)
    if not isinstance(spec.get("label", ""), str):  # what the layer is in a model (explore(model))
        raise SpecError(f"layer {i + 1}'s label must be text, got {spec['label']!r}", i)
    kw = {}
    for name, kind in (("stride", notation.int_or_tuple), ("padding", notation.padding),
                       ("dilation", notation.int_or_tuple), ("output_padding", notation.int_or_tuple)):
        if name in spec:
            kw[name] = _parse(kind, spec[name], i, name)
    if "groups" in spec:
        try:
            kw["groups"] = int(str(spec["groups"]).strip())
        except ValueError:
            raise SpecError(f"groups must be an int, got {spec['groups']!r}", i, "groups") from None
    if "padding_mode" in spec:
        kw["padding_mode"] = str(spec["padding_mode"])
    if "transposed" in spec:
        if not isinstance(spec["transposed"], bool):
            raise SpecError(f"transposed must be true or false, got {spec['transposed']!r}", i, "transposed")
        kw["transposed"] = spec["transposed"]
    return kw


# ----------------------------------------------------------------------- layers
@dataclass
class Layer:
    """One layer: its geometry, weight (the layer's own layout) and bias."""

    geom: ConvGeometry
    weight: np.ndarray
    bias: np.ndarray
    spec: dict
    given: bool = False  # the weight was given (else 1, 2, 3, ... standing for the letters)

    @property
    def pattern(self):
        # The page asks for its first views in parallel: build the pattern once, not per thread.
        with _LOCK:
            return tap_pattern(self.geom)

    @cached_property
    def names(self) -> np.ndarray:
        """Kernel-entry name of every slab entry (the slab order the pattern's taps index)."""
        return np.asarray(kernel_names(self.geom.weight_shape), dtype=object)[slab_permutation(self.geom)]

    @cached_property
    def slab_values(self) -> np.ndarray:
        return self.weight.reshape(-1)[slab_permutation(self.geom)]

    def rows(self, start: int, stop: int):
        """Rows ``[start, stop)``: (indptr, columns, entry names, entry values)."""
        M = build_csr(self.weight, self.geom, start, stop)
        tap_ptr, taps = self.pattern.entry_taps(start, stop)
        names = self.names[taps]
        if len(taps) != len(M.indices):  # padding folded taps: the entry is their sum
            names = np.array(["+".join(names[a:b]) for a, b in zip(tap_ptr[:-1], tap_ptr[1:])], dtype=object)
        return M.indptr, M.indices, names, M.data

    def structure_rows(self, start: int, stop: int) -> np.ndarray:
        """Columns read by rows ``[start, stop)`` (structure only, cheap)."""
        return self.pattern.fill(None, start, stop)[1]

    def columns_of(self, rows: np.ndarray) -> np.ndarray:
        """Sorted union of the columns read by ``rows`` (sorted, unique)."""
        if len(rows) == 0:
            return rows
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        stops = np.append(starts[1:], len(rows))
        parts = [self.structure_rows(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def column_rows(self, col: int) -> np.ndarray:
        """Rows (output neurons) that read column ``col``, sorted.

        The pattern repeats one output channel's columns for every output channel of a
        group, so the column of the group's first channel's row block, shifted by one
        block per channel, is the whole column.
        """
        return self.pattern.column(col)

    def _column_positions(self, col: int):
        """(first output channel of col's group, spatial output positions reading col)."""
        return self.pattern.column_positions(col)

    def column(self, col: int, limit: int):
        """Rows that read column ``col`` (sorted) with the names and values of their entries.

        Only the group's first output channel is asked for its taps (one short row per
        position); every other channel of the group applies its own row of the slab
        array at the same taps, which is what the slab layout of ``entry_taps`` means.
        """
        first, positions = self._column_positions(col)
        p, count = self.pattern.n_positions, self.geom.out_per_group
        slab = self.geom.in_per_group * self.geom.kernel_numel
        taps = []
        for o in positions:
            r = int(first * p + o)
            cols = self.structure_rows(r, r + 1)
            tap_ptr, t = self.pattern.entry_taps(r, r + 1)
            j = int(np.searchsorted(cols, col))
            taps.append(t[tap_ptr[j]:tap_ptr[j + 1]] - first * slab)
        rows, names, values = [], [], []
        channels = min(count, -(-limit // max(len(positions), 1)))  # name at most about `limit` entries
        for u in range(first, first + channels):
            for o, t in zip(positions, taps):
                k = t + u * slab
                rows.append(u * p + int(o))
                names.append("+".join(self.names[k]))
                values.append(self.slab_values[k].sum())
        return np.asarray(rows, dtype=np.int64), names, values


_LOCK = threading.RLock()


def _default_weight(shape) -> np.ndarray:
    """1, 2, 3, ... in C order: numbers that match the letters a, b, c, ..."""
    return np.arange(1, prod(shape) + 1, dtype=np.float32).reshape(shape)


# ------------------------------------------------------------------------ stack
@dataclass
class Stack:
    """A validated stack of layers and the queries the page asks of it."""

    layers: list[Layer]
    budget: int = DEFAULT_BUDGET
    model: dict | None = None  # a model's stack: its source, skipped and left-out nodes (models.py)
    x: np.ndarray | None = None  # the input's numbers (default 1, 2, 3, ..., as in the classic worked example)

    @cached_property
    def values(self) -> list[np.ndarray] | None:
        """Every neuron's value, map by map: the input ``x`` (default 1, 2, 3, ...), then
        ``M_l @ values[l] + b_l`` layer by layer. None for a model's stack (its skipped
        element-wise layers would make the numbers not the model's) and for stacks with
        more than :data:`MAX_VALUE_ENTRIES` stored entries."""
        if self.model is not None or sum(axis_nnz(lay.geom) for lay in self.layers) > MAX_VALUE_ENTRIES:
            return None
        n = prod(self.layers[0].geom.input_shape)
        v = self.x.reshape(-1) if self.x is not None else np.arange(1, n + 1, dtype=np.float64)
        out = [v]
        for lay in self.layers:
            M = build_csr(lay.weight, lay.geom)
            v = M @ v + np.repeat(lay.bias, prod(lay.geom.output_size))
            out.append(v)
        return out

    @property
    def maps(self) -> list[tuple[str, tuple[int, ...]]]:
        """(prefix, shape) of every feature map: ``in``, ``h1``, ..., ``out``."""
        n = len(self.layers)
        shapes = [self.layers[0].geom.input_shape] + [layer.geom.output_shape for layer in self.layers]
        prefixes = ["in"] + [f"h{k}" for k in range(1, n)] + ["out"]
        return list(zip(prefixes, shapes))

    @property
    def spec(self) -> dict:
        spec = {"input": "x".join(map(str, self.layers[0].geom.input_shape)),
                "layers": [layer.spec for layer in self.layers]}
        if self.model is not None:
            spec["model"] = self.model
        return spec

    # ------------------------------------------------------------- neuron ids
    def neuron_id(self, k: int, flat) -> list[str] | str:
        prefix, shape = self.maps[k]
        coords = np.unravel_index(np.asarray(flat, dtype=np.int64), shape)
        if np.ndim(flat) == 0:
            return ":".join([prefix, *(str(int(c)) for c in coords)])
        return [":".join([prefix, *map(str, t)]) for t in zip(*(c.tolist() for c in coords))]

    def parse_neuron(self, text: str) -> tuple[int, int]:
        """``"out:0:1:1"`` -> (map index, flat index); QueryError when malformed."""
        parts = str(text).split(":")
        prefixes = [p for p, _ in self.maps]
        if parts[0] not in prefixes:
            raise QueryError(f"neuron must start with one of {prefixes}, got {text!r}")
        k = prefixes.index(parts[0])
        shape = self.maps[k][1]
        try:
            coords = [int(p) for p in parts[1:]]
        except ValueError:
            raise QueryError(f"neuron coordinates must be ints, got {text!r}") from None
        if len(coords) != len(shape) or any(not 0 <= c < s for c, s in zip(coords, shape)):
            raise QueryError(
                f"neuron {text!r} is not in map {parts[0]} of shape {'x'.join(map(str, shape))} "
                f"(channel and {len(shape) - 1} position(s), each from 0)"
            )
        return k, int(np.ravel_multi_index(coords, shape))

    # ---------------------------------------------------------------- summary
    def summary(self) -> dict:
        """Shapes, formulas, sizes and kernels of every layer (everything the page draws first)."""
        layers = []
        for i, layer in enumerate(self.layers):
            g = layer.geom
            nnz = axis_nnz(g)
            rows, cols = g.matrix_shape
            item = layer.weight.dtype.itemsize
            layers.append({
                "index": i,
                "spec": layer.spec,
                "input_shape": list(g.input_shape),
                "output_shape": list(g.output_shape),
                "weight_shape": list(g.weight_shape),
                "matrix_shape": [rows, cols],
                "nnz": nnz,
                "density": nnz / max(rows * cols, 1),
                "csr_bytes": format_bytes(estimate_bytes(g, item, "csr", nnz)),
                "dense_bytes": format_bytes(estimate_bytes(g, item, "dense")),
                "dtype": str(layer.weight.dtype),
                "formulas": output_size_formulas(g),
                # Large kernels are not listed whole; the page shows them entry by entry on hover.
                "kernel": {"names": kernel_names(g.weight_shape),
                           "values": [_num(v) for v in layer.weight.reshape(-1)]}
                if layer.weight.size <= MAX_KERNEL else None,
                "bias": [_num(v) for v in layer.bias],
                "values_given": layer.given,
                "out_channel_rows": prod(g.output_size),
            })
        values = self.values or [None] * len(self.maps)
        maps = [{"prefix": p, "shape": list(s),
                 "values": [_num(x) for x in v] if v is not None and v.size <= MAX_VALUE_NEURONS else None}
                for (p, s), v in zip(self.maps, values)]
        return {"spec": self.spec, "maps": maps, "layers": layers, "model": self.model,
                "input_given": self.x is not None}

    # ----------------------------------------------------------------- window
    def window(self, layer: int, r0: int, r1: int, c0: int, c1: int, *, limit=MAX_WINDOW) -> dict:
        """Entries of ``M[r0:r1, c0:c1]`` of one layer, with names, values and separators."""
        layer = _int(layer, "layer")
        lay = self._layer(layer)
        rows, cols = lay.geom.matrix_shape
        r0, r1, c0, c1 = (_int(v, n) for v, n in ((r0, "r0"), (r1, "r1"), (c0, "c0"), (c1, "c1")))
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
            raise QueryError(f"window must satisfy 0 <= r0 < r1 <= {rows} and 0 <= c0 < c1 <= {cols}, "
                             f"got rows [{r0}, {r1}) columns [{c0}, {c1})")
        if limit and (r1 - r0 > limit[0] or c1 - c0 > limit[1]):
            raise QueryError(f"window is at most {limit[0]} rows by {limit[1]} columns, "
                             f"got {r1 - r0} by {c1 - c0}")
        indptr, indices, names, values = lay.rows(r0, r1)
        row_of = np.repeat(np.arange(r0, r1), np.diff(indptr))
        keep = (indices >= c0) & (indices < c1)
        entries = [[int(r), int(c), str(n), _num(v)] for r, c, n, v in
                   zip(row_of[keep], indices[keep], names[keep], values[keep])]
        return {
            "layer": layer, "r0": r0, "r1": r1, "c0": c0, "c1": c1, "entries": entries,
            "row_ids": self.neuron_id(layer + 1, np.arange(r0, r1)),
            "col_ids": self.neuron_id(layer, np.arange(c0, c1)),
            "row_sep": _separators(np.arange(r0, r1), lay.geom.output_shape, rows_only=True),
            "col_sep": _separators(np.arange(c0, c1), lay.geom.input_shape),
        }

    # --------------------------------------------------------------- sparsity
    def sparsity(self, layer: int, r0: int, r1: int, c0: int, c1: int, h: int = 256, w: int = 256) -> dict:
        """A sparsity image of ``M[r0:r1, c0:c1]``: ``h x w`` counts, one sampled matrix row per pixel row."""
        layer = _int(layer, "layer")
        lay = self._layer(layer)
        rows, cols = lay.geom.matrix_shape
        r0, r1, c0, c1, h, w = (_int(v, n) for v, n in
                                ((r0, "r0"), (r1, "r1"), (c0, "c0"), (c1, "c1"), (h, "h"), (w, "w")))
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols) or not (1 <= h <= 1024 and 1 <= w <= 1024):
            raise QueryError(f"sparsity view must satisfy 0 <= r0 < r1 <= {rows}, 0 <= c0 < c1 <= {cols} "
                             f"and 1 <= h, w <= 1024, got [{r0}, {r1}) x [{c0}, {c1}) at {h}x{w}")
        h, w = min(h, r1 - r0), min(w, c1 - c0)
        if r1 - r0 == h:
            sampled = [(r0, r1)]
        else:
            sampled = [(r, r + 1) for r in np.linspace(r0, r1 - 1, h).round().astype(np.int64)]
        image = np.zeros((h, w), dtype=np.int64)
        for y, (a, b) in enumerate(sampled):
            _, indices, indptr = lay.pattern.fill(None, int(a), int(b))
            row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)) + y
            keep = (indices >= c0) & (indices < c1)
            x = (indices[keep].astype(np.int64) - c0) * w // (c1 - c0)
            np.add.at(image, (row_of[keep], x), 1)
        data = np.minimum(image, 255).astype(np.uint8)
        return {"layer": layer, "r0": r0, "r1": r1, "c0": c0, "c1": c1, "h": h, "w": w,
                "sampled": r1 - r0 > h, "data": base64.b64encode(data.tobytes()).decode("ascii")}

    # ----------------------------------------------------------------- neuron
    def neuron(self, text: str, *, fields: bool = False) -> dict:
        """One neuron: what it reads (with kernel entries), what it feeds and its formula;
        with ``fields``, also its exact input set in every earlier map (:meth:`field`)."""
        k, n = self.parse_neuron(text)
        out = {"id": text, "map": k, "index": n}
        if k > 0:
            lay = self.layers[k - 1]
            _, cols, names, values = lay.rows(n, n + 1)
            out["reads"] = _named(self.neuron_id(k - 1, cols), names, values)
            u = n // lay.pattern.n_positions  # the output channel, whose bias this neuron adds
            out["bias"] = _num(lay.bias[u])
            has_bias = bool(np.any(lay.bias))  # as `convmatrix neuron`: no bias term without a bias
            out["formula"] = _formula(text, out["reads"], f"bias[{u}]" if has_bias else None)
            out["formula_values"] = _formula(text, out["reads"], _fmt(out["bias"]) if has_bias else None,
                                             numbers=True)
        if k < len(self.layers):
            lay = self.layers[k]
            rows = lay.column_rows(n)
            ids = self.neuron_id(k + 1, rows)
            _, names, values = lay.column(n, MAX_NAMED)
            out["feeds"] = [[i, str(nm), _num(v)] for i, nm, v in zip(ids, names, values)] + \
                [[i, "", None] for i in ids[len(names):]]
        if fields and k > 0:
            out["field"] = self.field(k, n)
        return out

    def field(self, k: int, n: int) -> list[dict]:
        """The exact input set of neuron ``n`` of map ``k`` in every earlier map, with its box.

        The set in map j-1 is the support of (indicator of the set in map j) times layer
        j-1's sparsity pattern: the union of the columns of those rows, read from the
        pattern run by run of consecutive rows (no whole structure matrix is built).
        """
        result, current = [], np.array([n], dtype=np.int64)
        for j in range(k, 0, -1):
            current = self.layers[j - 1].columns_of(current)
            coords = np.unravel_index(current, self.maps[j - 1][1])
            box = {"lo": [int(c.min()) for c in coords[1:]], "hi": [int(c.max()) for c in coords[1:]]} \
                if len(current) else None
            result.append({"map": j - 1, "prefix": self.maps[j - 1][0], "count": int(len(current)),
                           "ids": self.neuron_id(j - 1, current), "box": box})
        return result[::-1]

    def _layer(self, index) -> Layer:
        i = _int(index, "layer")
        if not 0 <= i < len(self.layers):
            raise QueryError(f"layer must be from 0 to {len(self.layers) - 1}, got {i}")
        return self.layers[i]


# ------------------------------------------------------------------- building
def build_stack(spec: dict, weights=None, biases=None, *, budget: int = DEFAULT_BUDGET, x=None) -> Stack:
    """Validate a spec (SpecError names the layer and the control) and build its stack.

    ``weights[i]`` / ``biases[i]`` give layer i's values when their geometry matches the
    spec's; otherwise the weight is 1, 2, 3, ... (matching the letters) and the bias 0.
    ``x``, the input's numbers, likewise when its shape is the spec's input shape.

    >>> s = build_stack(default_spec())
    >>> s.summary()["layers"][0]["formulas"][0]
    "H' = floor((H + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1 = floor((3 + 0 + 0 - 1*(2-1) - 1) / 1) + 1 = 2"
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise SpecError("the spec must have an input shape and a non-empty list of layers", None, "input")
    shape = _parse(notation.shape, spec.get("input", ""), 0, "input")
    model = _model_notes(spec.get("model"))
    layers, used = [], 0
    for i, ls in enumerate(spec["layers"]):
        kw = _layer_kwargs(ls, i)
        wshape = _parse(notation.shape, ls.get("weight", ""), i, "weight")
        try:
            geom = conv_geometry(wshape, shape, **kw)
            tmpl = axis_nnz(geom) // geom.out_channels
            # The pattern keeps one output channel's entries: column, tap and two pointers each;
            # the budget holds for the whole stack, not for each layer alone.
            need = 32 * tmpl + 8 * geom.matrix_shape[0]
            check_memory(used + need, budget,
                         f"the tap pattern of layer {i + 1} ({tmpl:,} entries per output channel"
                         f"{', with the layers before it' if used else ''})", "explore a smaller layer")
            used += need
        except (ValueError, TypeError) as exc:
            control = _field_of(str(exc))
            if control == "input" and i > 0:  # a deeper layer's input is the previous layer's output
                control = "weight"
            raise SpecError(str(exc), i, control) from None
        w = weights[i] if weights is not None and i < len(weights) else None
        given = w is not None and tuple(np.shape(w)) == geom.weight_shape
        w = as_weight_array(w) if given else _default_weight(geom.weight_shape)
        b = biases[i] if biases is not None and i < len(biases) else None
        b = np.asarray(b, dtype=np.float64).reshape(-1) if b is not None and np.size(b) == geom.out_channels \
            else np.zeros(geom.out_channels)
        layers.append(Layer(geom, w, b, _canonical(ls, wshape, kw), given))
        shape = geom.output_shape
    x = _input_values(x, layers[0].geom.input_shape)
    return Stack(layers, budget, model, x)


def _input_values(x, shape) -> np.ndarray | None:
    """The input's numbers as float64 when given with the stack's input shape (else None)."""
    if x is None:
        return None
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"x must be real numbers, got dtype {x.dtype}")
    if x.size != prod(shape):
        return None  # another geometry (the page's controls changed it): default numbers
    return x.astype(np.float64).reshape(shape)


def _model_notes(model) -> dict | None:
    """A spec's ``model`` entry: text, or lists of text, by name (the page shows them as text)."""
    if model is None:
        return None
    ok = isinstance(model, dict) and all(
        isinstance(k, str) and (isinstance(v, str) or isinstance(v, list) and all(isinstance(t, str) for t in v))
        for k, v in model.items())
    if not ok:
        raise SpecError(f"model must be an object of texts or lists of texts, got {model!r}", None, "input")
    return model


def _canonical(ls: dict, wshape, kw) -> dict:
    spec = layer_spec(wshape)
    spec.update({k: (v if k == "transposed" else str(v).strip()) for k, v in ls.items() if k != "weight"})
    return spec


def output_size_formulas(g: ConvGeometry) -> list[str]:
    """The output-size formula of every spatial axis, with the numbers filled in."""
    axes = ["H", "W"] if g.ndim == 2 else (["L"] if g.ndim == 1 else ["D", "H", "W"])
    out = []
    for ax, name in enumerate(axes):
        n, k, s, d = g.input_size[ax], g.kernel_size[ax], g.stride[ax], g.dilation[ax]
        lo, hi = g.padding[ax]
        if g.transposed:
            op = g.output_padding[ax]
            out.append(f"{name}' = ({name} - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1 "
                       f"= ({n} - 1)*{s} - 2*{lo} + {d}*({k}-1) + {op} + 1 = {g.output_size[ax]}")
        else:
            out.append(f"{name}' = floor(({name} + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1 "
                       f"= floor(({n} + {lo} + {hi} - {d}*({k}-1) - 1) / {s}) + 1 = {g.output_size[ax]}")
    return out


# -------------------------------------------------------------------- helpers
def _num(v):
    v = float(v.real if np.iscomplexobj(v) else v)
    return int(v) if v.is_integer() and abs(v) < 2**53 else float(f"{v:.6g}")


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be an int, got {value!r}") from None


def _named(ids, names, values) -> list:
    return [[i, str(n), _num(v)] for i, n, v in zip(ids, names, values)]


def _separators(index: np.ndarray, shape, rows_only: bool = False) -> list[int]:
    """Separator before each index: 2 at a channel boundary (``||``), 1 at an image row (``|``)."""
    per_channel = prod(shape[1:])
    sep = np.where(index % per_channel == 0, 2, 0)
    if not rows_only and len(shape) > 2:
        sep = np.where((sep == 0) & (index % shape[-1] == 0), 1, sep)
    sep[index == 0] = 0
    return sep.tolist()


def _formula(target: str, reads: list, bias: str | None, *, numbers: bool = False) -> str:
    """``y[out:0:0:0] = a*x[in:0:0:0] + ... + bias[0]``: the neuron as a fully connected unit
    (no bias term when ``bias`` is None, as ``convmatrix neuron`` writes it)."""
    terms = [f"{(_fmt(v) if numbers else n)}*x[{i}]" for i, n, v in reads[:MAX_TERMS]]
    more = f" + ... ({len(reads) - MAX_TERMS} more terms)" if len(reads) > MAX_TERMS else ""
    return f"y[{target}] = " + (" + ".join(terms) or "0") + more + (f" + {bias}" if bias is not None else "")


def _fmt(v) -> str:
    return str(v) if not isinstance(v, float) else f"{v:.4g}"
