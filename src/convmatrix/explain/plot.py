"""Pictures of a conv layer as a matrix (matplotlib, extra ``plot``).

- :func:`plot_matrix`: the matrix M, every stored entry coloured by the kernel
  entry that fills it (or by its value, when the weight is given), with the block
  boundaries of the classic worked example (thin lines between image rows, thick lines
  between channels).
- :func:`plot_neuron`: one output neuron of one layer: the input neurons it reads,
  one grid per input channel, each cell coloured by its kernel entry (or weight),
  with the receptive-field box, beside the output grid.
- :func:`plot_receptive_field`: one output neuron of a stack of layers: the exact
  set of neurons it depends on in every feature map from the input up, with its
  receptive-field box on the input.

Every picture is meant for a slide: a cell carries its label (kernel name or
number) only where the label fits the cell at the figure's size, in black or white
by the cell's luminance; otherwise the colours speak, through a legend or a colour
bar. The palettes are colour-blind safe (Okabe-Ito for up to 8 kernel entries,
viridis beyond, cividis for values). Every function returns a
``matplotlib.figure.Figure`` (built without pyplot, so no display is needed); save
it with ``fig.savefig("file.png")``: labels are fitted in points, so any dpi keeps
them fitting.
"""

from __future__ import annotations

import textwrap
from math import prod

import numpy as np

from .._optional import require
from .neurons import neuron
from .symbolic import entry_weights, kernel_names

require("matplotlib", extra="plot", feature="plotting")

__all__ = ["plot_matrix", "plot_neuron", "plot_receptive_field", "OKABE_ITO"]

#: Refuse to draw matrices with more cells than this (ask for a window instead).
MAX_CELLS = 4_000_000
#: Cells labelled at most (beyond, the colours alone say it).
MAX_LABELS = 5000
#: Input channels drawn by :func:`plot_neuron` (one grid each).
MAX_CHANNEL_GRIDS = 8
#: Okabe and Ito's colour-blind-safe palette (black left out; it marks folded sums).
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
FOLDED = "#000000"
#: Label font sizes tried, largest first (points); a label smaller than the last is not drawn.
FONT_SIZES = (9, 8, 7, 6)
EMPTY, READ, BOX = "#F5F5F5", "#E69F00", "#D55E00"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure labels with, whatever the backend
    return fig


# ------------------------------------------------------------------------- colours
class _Palette:
    """Colours of the stored entries: by kernel entry (names) or by value (numbers)."""

    def __init__(self, names: list[str], values: np.ndarray | None, folded: bool, title: str = "kernel entry"):
        from matplotlib import colormaps
        from matplotlib.colors import Normalize

        self.names, self.values, self.folded, self.title = names, values, folded, title
        n = len(names)
        if values is not None:
            lo, hi = float(np.min(values)), float(np.max(values))
            self.norm = Normalize(lo - 0.5, hi + 0.5) if lo == hi else Normalize(lo, hi)
            self.cmap = colormaps["cividis"]
        elif n <= len(OKABE_ITO):
            self.categorical = list(OKABE_ITO[:n])
        else:
            self.cmap = colormaps["viridis"]
            self.norm = Normalize(-0.5, n - 0.5)

    def entry(self, taps, value=None):
        """The RGBA colour of one stored entry: its kernel entries ``taps`` (flat indices), its value."""
        from matplotlib.colors import to_rgba

        if self.values is not None:
            return self.cmap(self.norm(value))
        if len(taps) > 1:
            return to_rgba(FOLDED)
        if hasattr(self, "categorical"):
            return to_rgba(self.categorical[taps[0]])
        return self.cmap(self.norm(taps[0]))

    def key(self, fig, axes, used=None) -> None:
        """A legend (up to 26 named entries) or a colour bar, right of ``axes``."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.patches import Patch

        if self.values is not None:
            cb = fig.colorbar(ScalarMappable(self.norm, self.cmap), ax=axes, shrink=0.8, aspect=25)
            cb.set_label("weight (the value of the entry)", fontsize=8)
            cb.ax.tick_params(labelsize=7)
            return
        shown = [k for k in range(len(self.names)) if used is None or k in used]
        if len(shown) <= 26:
            handles = [Patch(facecolor=self.entry([k]), edgecolor="none", label=self.names[k]) for k in shown]
            if self.folded:
                handles.append(Patch(facecolor=FOLDED, label="sum (folded taps)"))
            anchor = axes[-1] if isinstance(axes, list) else axes
            rows = max(1, int(anchor.get_position().height * fig.get_figheight() * 72 * 0.9 // 12))
            anchor.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1), fontsize=7,
                          title=self.title, title_fontsize=8, ncols=-(-len(handles) // rows), frameon=False)
            return
        cb = fig.colorbar(ScalarMappable(self.norm, self.cmap), ax=axes, shrink=0.8, aspect=25)
        ticks = np.unique(np.linspace(0, len(self.names) - 1, min(6, len(self.names))).round().astype(int))
        cb.set_ticks(ticks, labels=[self.names[t] for t in ticks], fontsize=7)
        cb.set_label(self.title + ("; black: sum of folded taps" if self.folded else ""), fontsize=8)


def entry_keys(geom) -> tuple[np.ndarray, list[str], str]:
    """What the colours and labels of a picture name: (key of every weight entry, in the
    weight's C order; the keys' names; the legend's title).

    Up to 26 kernel entries each is its own key, its letter. Past that the names
    ``K[u,i,p,q]`` do not fit a cell, so the key is the kernel position alone (``p,q``),
    the same in every (output, input) channel block; the block lines of the matrix and
    the panels of a neuron say which channels.

    >>> from convmatrix import ConvGeometry
    >>> keys, names, title = entry_keys(ConvGeometry.from_args((3, 1, 3, 3), (1, 5, 5)))
    >>> keys[:10].tolist(), names[:3], title
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 0], ['0,0', '0,1', '0,2'], 'kernel entry K[u,i,p,q],\\nnamed by p,q')
    """
    names = kernel_names(geom.weight_shape)
    if not names[0].startswith("K["):
        return np.arange(len(names)), names, "kernel entry"
    k = geom.kernel_numel
    spatial = [",".join(map(str, c)) for c in zip(*(a.tolist() for a in np.unravel_index(np.arange(k), geom.kernel_size)))]
    axes = {1: "q", 2: "p,q"}.get(geom.ndim, "d,p,q")
    return np.arange(len(names)) % k, spatial, f"kernel entry K[u,i,{axes}],\nnamed by {axes}"


def ink(rgba) -> str:
    """Black or white, whichever reads better on ``rgba`` (WCAG relative luminance).

    >>> ink((1, 1, 0, 1)), ink((0, 0, 0.5, 1))
    ('black', 'white')
    """
    channel = np.asarray(rgba[:3], dtype=float)
    linear = np.where(channel <= 0.04045, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)
    return "black" if float(linear @ (0.2126, 0.7152, 0.0722)) > 0.179 else "white"


def number(v) -> str:
    """A weight as a short label: integers without a decimal point, others to 3 digits.

    >>> number(5.0), number(-1.0), number(0.0625)
    ('5', '-1', '0.0625')
    """
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e6 else f"{v:.3g}"


# -------------------------------------------------------------------------- labels
def _label_cells(fig, grids) -> int:
    """Write labels into cells, each only where it fits its cell; ``grids`` lists
    ``(ax, cells)`` with cells ``(row, col, text, rgba)``.

    Draws the figure once (so that the layout is final) and measures the cells and
    labels in pixels: the labels of one axes share the largest font size of
    :data:`FONT_SIZES` at which every one fits with a margin; where none is that
    short, the smallest size is used and the labels that do not fit even so are left
    out (their colour says it). Returns the number of labels written.
    """
    from matplotlib.font_manager import FontProperties

    grids = [(ax, cells) for ax, cells in grids if 0 < len(cells) <= MAX_LABELS]
    if not grids:
        return 0
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    written = 0
    for ax, cells in grids:
        (x0, y0), (x1, y1) = ax.transData.transform([(0, 0), (1, 1)])
        room_w, room_h = 0.86 * abs(x1 - x0) - 2, 0.86 * abs(y1 - y0) - 2

        def fits(text: str, size: float) -> bool:
            w, h, d = renderer.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
            return w <= room_w and h + d <= room_h

        texts = sorted({c[2] for c in cells}, key=len)
        size = next((s for s in FONT_SIZES if all(fits(t, s) for t in texts[-8:])), FONT_SIZES[-1])
        ok = {t for t in texts if fits(t, size)}
        for row, col, text, rgba in cells:
            if text in ok:
                t = ax.text(col, row, text, ha="center", va="center", fontsize=size, color=ink(rgba), clip_on=True)
                t.set_in_layout(False)
                written += 1
    return written


def _wrapped(text: str, width: float, fontsize: float, max_lines: int = 3) -> str:
    """``text`` wrapped to ``width`` inches, at most ``max_lines`` lines (then ``...``)."""
    chars = max(20, int(width * 72 / (0.62 * fontsize)))
    lines = textwrap.wrap(text, chars)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:chars - 4] + " ..."
    return "\n".join(lines)


# -------------------------------------------------------------------------- matrix
def _layer(weight, input_shape, conv_kwargs):
    """(geometry, weight values as a flat array or None): a weight array, or only its shape."""
    from ..core.matrix import as_weight_array, conv_geometry

    if np.ndim(weight) == 1:
        return conv_geometry(tuple(int(s) for s in weight), input_shape, **conv_kwargs), None
    values = as_weight_array(weight)
    if np.iscomplexobj(values):
        raise TypeError("plots draw real weights; got a complex weight")
    return conv_geometry(values.shape, input_shape, **conv_kwargs), values.reshape(-1)


def plot_matrix(weight_shape, input_shape, *, rows=None, cols=None, annotate: bool | None = None,
                weight=None, **conv_kwargs):
    """The matrix M: every stored entry coloured by its kernel entry (or value), with block boundaries.

    ``weight_shape`` alone: the cells carry kernel names, coloured by entry (entries
    where padding folds several taps are black and named as sums). With ``weight`` (an
    array of ``weight_shape``; or the array itself in place of the shape) the cells
    carry its numbers, coloured by value. ``rows`` / ``cols``: ``(start, stop)``
    windows. ``annotate=False`` leaves every cell unlabelled; otherwise labels are
    written where they fit their cells.

    >>> fig = plot_matrix((2, 1, 2, 2), (1, 3, 3))
    >>> fig.axes[0].get_title()
    'M: 8 x 9, 32 stored entries'
    >>> sorted({t.get_text() for t in fig.axes[0].texts})
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
    """
    from ..core.geometry import as_window as _window

    if weight is not None:
        expected = tuple(int(v) for v in np.ravel(weight_shape))
        if np.shape(weight) != expected:
            raise ValueError(f"weight must have weight_shape {expected}, got {np.shape(weight)}")
        weight_shape = weight
    geom, values = _layer(weight_shape, input_shape, conv_kwargs)
    r = _window("rows", rows, geom.matrix_shape[0])
    c = _window("cols", cols, geom.matrix_shape[1])
    if len(r) * len(c) > MAX_CELLS:
        raise ValueError(
            f"the window of M has {len(r)} x {len(c)} cells, more than {MAX_CELLS:,} to draw; "
            "pass rows=(start, stop) and cols=(start, stop) to draw a part of it"
        )
    keys, names, title = entry_keys(geom)
    indptr, indices, tap_ptr, widx = entry_weights(geom, r.start, r.stop)
    entries = []  # (row, col, taps, value) within the window
    for row in range(len(r)):
        for e in range(int(indptr[row]), int(indptr[row + 1])):
            col = int(indices[e]) - c.start
            if 0 <= col < len(c):
                taps = sorted(int(t) for t in widx[tap_ptr[e]:tap_ptr[e + 1]])
                value = None if values is None else float(values[taps].sum())
                entries.append((row, col, [int(keys[t]) for t in taps], value))
    palette = _Palette(names, None if values is None else np.array([e[3] for e in entries] or [0.0]),
                       folded=any(len(e[2]) > 1 for e in entries), title=title)
    image = np.ones((len(r), len(c), 4))
    cells = []
    for row, col, taps, v in entries:
        image[row, col] = palette.entry(taps, v)
        cells.append((row, col, "+".join(names[t] for t in taps) if v is None else number(v), image[row, col]))
    cell = min(0.32, 13 / len(c), 13 / len(r))  # inches: the figure keeps the window's aspect
    fig = _figure(max(5.0, 3.7 + cell * len(c)), max(3.0, 1.6 + cell * len(r)))  # + a legend's width
    ax = fig.add_subplot()
    ax.imshow(image, interpolation="nearest", aspect="equal")
    _boundaries(ax, c, prod(geom.input_size), geom.input_size[-1], vertical=True)
    _boundaries(ax, r, prod(geom.output_size), geom.output_size[-1], vertical=False)
    window = "" if (len(r), len(c)) == geom.matrix_shape else f" (rows {r.start}:{r.stop}, columns {c.start}:{c.stop})"
    ax.set_title(f"M: {geom.matrix_shape[0]} x {geom.matrix_shape[1]}, {len(entries)} stored entries{window}",
                 fontsize=10)
    ax.set_xlabel("input neuron (column of M)", fontsize=9)
    ax.set_ylabel("output neuron (row of M)", fontsize=9)
    _ticks(ax, c, vertical=True)
    _ticks(ax, r, vertical=False)
    palette.key(fig, ax, used={t for e in entries for t in e[2]})
    if annotate is not False:
        _label_cells(fig, [(ax, cells)])
    return fig


def _boundaries(ax, window: range, per_channel: int, per_row: int, vertical: bool) -> None:
    """Thin lines between image rows, thick ones between channels (within the window)."""
    line = ax.axvline if vertical else ax.axhline
    for k in range(window.start + 1, window.stop):
        pos = k - window.start - 0.5
        if k % per_channel == 0:
            line(pos, color="black", linewidth=2)
        elif per_row < per_channel and k % per_row == 0:
            line(pos, color="grey", linewidth=0.6)


def _ticks(ax, window: range, vertical: bool) -> None:
    step = max(1, -(-len(window) // 12))
    pos = np.arange(0, len(window), step)
    (ax.set_xticks if vertical else ax.set_yticks)(pos, [str(window.start + p) for p in pos], fontsize=7)


# -------------------------------------------------------------------------- grids
def _as_image(mask: np.ndarray) -> np.ndarray:
    """A feature-map mask (C, *spatial) -> a 2-D image, the union over channels."""
    m = mask.any(axis=0)
    return _spatial_image(m)


def _spatial_image(m: np.ndarray) -> np.ndarray:
    if m.ndim == 1:
        return m[None, :]
    if m.ndim == 2:
        return m
    raise ValueError(f"only 1-D and 2-D feature maps can be drawn, got spatial shape {m.shape}")


def _grid(ax, image, title, *, box=None, mark=None):
    """One feature map: an RGBA (or boolean: filled where True) image on a cell grid,
    an optional receptive-field box and one neuron ringed."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    if image.dtype == bool:
        image = np.where(image[..., None], to_rgba(READ), to_rgba(EMPTY))
    h, w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="#BBBBBB", linewidth=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.tick_params(which="minor", length=0)
    ax.tick_params(labelsize=7)
    if h == 1:
        ax.set_yticks([])
    if box is not None:
        (r0, r1), (c0, c1) = box if len(box) == 2 else ((0, 1), box[0])
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor=BOX,
                               linewidth=2, linestyle="--", label="receptive-field box"))
        ax.set_xlim(min(-0.5, c0 - 1), max(w - 0.5, c1))
        ax.set_ylim(max(h - 0.5, r1), min(-0.5, r0 - 1))
    if mark is not None:
        r, c = mark if len(mark) == 2 else (0, mark[0])
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    ax.set_title(title, fontsize=9)


def _panels(fig, count: int, cols: int):
    """``count`` axes in a grid of ``cols`` columns (the unused ones hidden)."""
    rows = -(-count // cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return list(axes[:count])


def plot_neuron(weight, input_shape, index_or_coords, *, bias=None, **conv_kwargs):
    """One output neuron of one layer: the inputs it reads, one grid per input channel,
    each cell coloured by its kernel entry (numbers: by weight) with the receptive-field
    box, beside the output grid with the neuron ringed; its formula on top.

    ``weight`` is the weight or only its shape (as in :func:`convmatrix.neuron`);
    ``bias`` as there.

    >>> fig = plot_neuron((2, 3, 3, 3), (3, 6, 6), (1, 2, 2), padding=1)
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes[:4]]
    ['input channel 0: 9 read', 'input channel 1: 9 read', 'input channel 2: 9 read', 'output channel 1: (2, 2)']
    """
    from matplotlib.colors import to_rgba

    n = neuron(weight, input_shape, index_or_coords, bias=bias, **conv_kwargs)
    geom = n.geometry
    keys, names, title = entry_keys(geom)
    index_of = {name: k for k, name in enumerate(kernel_names(geom.weight_shape))}
    taps = [[int(keys[index_of[t]]) for t in ts] for ts in n.taps]
    palette = _Palette(names, None if n.weights is None else np.asarray(n.weights, dtype=float),
                       folded=any(len(t) > 1 for t in taps), title=title)
    long = n.weights is None and title != "kernel entry"

    group = n.coords[0] // geom.out_per_group
    channels = list(range(group * geom.in_per_group, (group + 1) * geom.in_per_group))
    shown = channels[:MAX_CHANNEL_GRIDS]
    cols = min(len(shown) + 1, 5)
    panel = min(4.0, max(2.9, 8 / cols))  # inches: few grids are drawn larger
    fig = _figure(panel * cols + 1.6, panel * -(-(len(shown) + 1) // cols) + 0.9)
    axes = _panels(fig, len(shown) + 1, cols)
    spatial = geom.input_shape[1:]
    labelled = []
    for ax, ch in zip(axes, shown):
        image = np.tile(to_rgba(EMPTY), (*_spatial_image(np.zeros(spatial)).shape, 1))
        cells = []
        for k, c in enumerate(n.input_coords):
            if c[0] != ch:
                continue
            pos = (0, c[1]) if len(c) == 2 else c[1:]
            rgba = palette.entry(taps[k], None if n.weights is None else n.weights[k])
            image[pos] = rgba
            text = "+".join(names[t] for t in taps[k]) if n.weights is None else number(n.weights[k])
            cells.append((pos[0], pos[1], text, rgba))
        title = f"input channel {ch}: {len(cells)} read"
        if long and cells:  # every cell of the panel is K[u,i,...] with the same u, i: name the rest
            head = n.taps[next(k for k, c in enumerate(n.input_coords) if c[0] == ch)][0].split(",")[:2]
            axes_names = ",".join("pq"[-geom.ndim:]) if geom.ndim < 3 else "d,p,q"
            title += f"\ncell {axes_names}: {','.join(head)},{axes_names}]"
        _grid(ax, image, title, box=None if geom.transposed else n.box)
        labelled.append((ax, cells))
    out = np.zeros(geom.output_shape[1:], dtype=bool)
    out[n.coords[1:]] = True
    _grid(axes[-1], _spatial_image(out), f"output channel {n.coords[0]}: {n.coords[1:]}", mark=n.coords[1:])
    more = f" (channels {shown[0]}..{shown[-1]} of {len(channels)} drawn)" if len(shown) < len(channels) else ""
    head = (f"output neuron {n.index} = y{list(n.coords)} reads {len(n.inputs)} input neurons in "
            f"{len(channels)} channel(s){more}")
    formula = n.values or n.formula
    fig.suptitle(head + "\n" + _wrapped(formula, fig.get_figwidth(), 8), fontsize=8)
    palette.key(fig, axes, used={t for ts in taps for t in ts})
    _label_cells(fig, labelled)
    return fig


def plot_receptive_field(model, input_shape, index_or_coords):
    """One output neuron of a stack: the exact set it depends on in every feature map.

    ``model`` as in :func:`convmatrix.receptive_set` (a torch layer, a list of
    layers, an ``nn.Sequential`` or an fx-traceable module). One panel per
    layer output from the input up (channels merged: a position is filled when
    any of its channels is on a path); the input panel also shows the
    receptive-field box, the last one rings the neuron itself.
    """
    from .receptive import receptive_set

    rs = receptive_set(model, input_shape, index_or_coords)
    panels = list(rs.maps)
    # Consecutive maps of the same shape and mask (activations, batch norm) add nothing: drop them.
    keep = [panels[0]]
    for k in panels[1:]:
        prev = rs.maps[keep[-1]]
        if not (prev.shape == rs.maps[k].shape and np.array_equal(prev, rs.maps[k])):
            keep.append(k)
    if keep[-1] != panels[-1]:
        keep.append(panels[-1])
    cols = min(len(keep), 4)
    fig = _figure(3.4 * cols, 3.4 * -(-len(keep) // cols) + 0.5)
    axes = _panels(fig, len(keep), cols)
    for k, (ax, name) in enumerate(zip(axes, keep)):
        mask = rs.maps[name]
        first, last = k == 0, k == len(keep) - 1
        channels = int(mask.any(axis=tuple(range(1, mask.ndim))).sum())
        title = (_wrapped(f"{name} {'x'.join(map(str, mask.shape))}", 3.3, 9, max_lines=1) + f"\n{int(mask.sum())} "
                 f"neuron(s)" + (f" in {channels} of {mask.shape[0]} channels" if mask.shape[0] > 1 else ""))
        _grid(ax, _as_image(mask), title, box=rs.box if first else None, mark=rs.coords[1:] if last else None)
    fig.suptitle(f"output neuron {rs.index} = {rs.coords}: {len(rs.flat)} input neurons (box {rs.box})",
                 fontsize=9)
    return fig
