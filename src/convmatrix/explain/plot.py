"""Pictures of a conv layer as a matrix (matplotlib, extra ``plot``).

- :func:`plot_matrix`: the sparsity pattern of M, every stored entry coloured by
  the kernel entry that fills it, with the block boundaries of the seed's
  answer (thin lines between image rows, thick lines between channels).
- :func:`plot_neuron`: one output neuron of one layer: the input neurons it
  reads (coloured by kernel entry) and its receptive-field box on the input grid.
- :func:`plot_receptive_field`: one output neuron of a stack of layers: the
  exact set of neurons it depends on in every feature map from the input up,
  with its receptive-field box on the input.

Every function returns a ``matplotlib.figure.Figure`` (built without pyplot, so
no display is needed); save it with ``fig.savefig("file.png")``.
"""

from __future__ import annotations

from math import prod

import numpy as np

from .neurons import neuron
from .symbolic import entry_weights, kernel_names

__all__ = ["plot_matrix", "plot_neuron", "plot_receptive_field"]

#: Refuse to draw matrices with more cells than this (ask for a window instead).
MAX_CELLS = 4_000_000


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("convmatrix's plots need matplotlib: pip install 'convmatrix[plot]'") from None
    return Figure(layout="constrained", **kw)


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n <= 20 else "turbo"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def plot_matrix(weight_shape, input_shape, *, rows=None, cols=None, annotate: bool | None = None,
                **conv_kwargs):
    """The sparsity pattern of M, coloured by kernel entry, with block boundaries.

    ``rows`` / ``cols``: ``(start, stop)`` windows. Entries where padding folds
    several taps are drawn black (their names say which, when annotated).
    ``annotate``: write the kernel names in the cells (default: when small).

    >>> fig = plot_matrix((2, 1, 2, 2), (1, 3, 3))
    >>> fig.axes[0].get_title()
    'M: 8 x 9, 32 stored entries (rows 0:8, columns 0:9)'
    """
    from ..core.matrix import conv_geometry
    from ..core.geometry import as_window as _window

    geom = conv_geometry(weight_shape, input_shape, **conv_kwargs)
    r = _window("rows", rows, geom.matrix_shape[0])
    c = _window("cols", cols, geom.matrix_shape[1])
    if len(r) * len(c) > MAX_CELLS:
        raise ValueError(
            f"the window of M has {len(r)} x {len(c)} cells, more than {MAX_CELLS:,} to draw; "
            "pass rows=(start, stop) and cols=(start, stop) to draw a part of it"
        )
    names = kernel_names(geom.weight_shape)
    n = len(names)
    code = np.full((len(r), len(c)), -1, dtype=np.int64)
    labels = {}
    indptr, indices, tap_ptr, widx = entry_weights(geom, r.start, r.stop)
    for row in range(len(r)):
        for e in range(int(indptr[row]), int(indptr[row + 1])):
            col = int(indices[e]) - c.start
            if 0 <= col < len(c):
                taps = sorted(widx[tap_ptr[e]:tap_ptr[e + 1]])
                code[row, col] = taps[0] if len(taps) == 1 else n
                labels[row, col] = "+".join(names[t] for t in taps)
    from matplotlib.colors import ListedColormap

    fig = _figure(figsize=(min(2 + 0.35 * len(c), 16), min(1.5 + 0.35 * len(r), 16)))
    ax = fig.add_subplot()
    cmap = ListedColormap(["white", *_colors(n), "black"])
    ax.imshow(code + 1, cmap=cmap, vmin=0, vmax=n + 1, interpolation="nearest", aspect="equal")
    _boundaries(ax, c, prod(geom.input_size), geom.input_size[-1], vertical=True)
    _boundaries(ax, r, prod(geom.output_size), geom.output_size[-1], vertical=False)
    if annotate is None:
        annotate = len(r) * len(c) <= 900
    if annotate:
        for (row, col), text in labels.items():
            ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if "+" in text else "black")
    if n <= 26:  # a legend: which colour is which kernel entry
        from matplotlib.patches import Patch

        handles = [Patch(color=col, label=name) for name, col in zip(names, _colors(n))]
        if (code == n).any():
            handles.append(Patch(color="black", label="sum (folded)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, title="kernel entry")
    nnz = int((code >= 0).sum())
    ax.set_title(f"M: {geom.matrix_shape[0]} x {geom.matrix_shape[1]}, {nnz} stored entries "
                 f"(rows {r.start}:{r.stop}, columns {c.start}:{c.stop})")
    ax.set_xlabel("input neuron (column)")
    ax.set_ylabel("output neuron (row)")
    _ticks(ax, c, vertical=True)
    _ticks(ax, r, vertical=False)
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
    step = max(1, len(window) // 12)
    pos = np.arange(0, len(window), step)
    (ax.set_xticks if vertical else ax.set_yticks)(pos, [str(window.start + p) for p in pos])


def _as_image(mask: np.ndarray) -> np.ndarray:
    """A feature-map mask (C, *spatial) -> a 2-D image, the union over channels."""
    m = mask.any(axis=0)
    if m.ndim == 1:
        return m[None, :]
    if m.ndim == 2:
        return m
    raise ValueError(f"only 1-D and 2-D feature maps can be drawn, got spatial shape {m.shape}")


def _grid(ax, image, title, *, box=None, mark=None, color="tab:orange"):
    """One feature map: its grid, the marked neurons filled, a box outline, one neuron ringed."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    h, w = image.shape
    ax.imshow(image.astype(int), cmap=ListedColormap(["whitesmoke", color]), vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="lightgrey", linewidth=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(which="minor", length=0)
    if box is not None:
        (r0, r1), (c0, c1) = box if len(box) == 2 else ((0, 1), box[0])
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="tab:blue",
                               linewidth=2, linestyle="--", label="receptive-field box"))
        ax.set_xlim(min(-0.5, c0 - 1), max(w - 0.5, c1))
        ax.set_ylim(max(h - 0.5, r1), min(-0.5, r0 - 1))
    if mark is not None:
        r, c = mark if len(mark) == 2 else (0, mark[0])
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    ax.set_title(title, fontsize=9)


def plot_neuron(weight, input_shape, index_or_coords, **conv_kwargs):
    """One output neuron of one layer: the inputs it reads (with their kernel entries)
    and its receptive-field box on the input grid, beside the output grid.

    ``weight`` is the weight or only its shape (as in :func:`convmatrix.neuron`).

    >>> fig = plot_neuron((1, 1, 3, 3), (1, 5, 5), 0, padding=1)
    >>> [ax.get_title().split(":")[0] for ax in fig.axes]
    ['input (1, 5, 5)', 'output (1, 5, 5)']
    """
    n = neuron(weight, input_shape, index_or_coords, **conv_kwargs)
    geom = n.geometry
    reads = np.zeros(geom.input_shape, dtype=bool)
    reads.reshape(-1)[n.inputs] = True
    out = np.zeros(geom.output_shape, dtype=bool)
    out.reshape(-1)[n.index] = True
    fig = _figure(figsize=(9, 4.5))
    ax_in, ax_out = fig.subplots(1, 2)
    _grid(ax_in, _as_image(reads), f"input {geom.input_shape}: {len(n.inputs)} neurons read",
          box=None if geom.transposed else n.box)
    for flat, c, taps in zip(n.inputs, n.input_coords, n.taps):
        pos = c[1:] if len(c) == 3 else (0, c[1])
        ax_in.text(pos[1], pos[0], "+".join(taps), ha="center", va="center", fontsize=7)
    _grid(ax_out, _as_image(out), f"output {geom.output_shape}: neuron {n.index} = {n.coords}",
          mark=n.coords[1:], color="tab:green")
    fig.suptitle(n.formula if len(n.formula) < 110 else n.formula[:107] + "...", fontsize=8)
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
    rows = -(-len(keep) // cols)
    fig = _figure(figsize=(3.6 * cols, 3.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for k, (ax, name) in enumerate(zip(axes, keep)):
        mask = rs.maps[name]
        first, last = k == 0, k == len(keep) - 1
        title = f"{name} {tuple(mask.shape)}: {int(mask.sum())} neuron(s)"
        _grid(ax, _as_image(mask), title, box=rs.box if first else None,
              mark=rs.coords[1:] if last else None, color="tab:green" if last else "tab:orange")
    for ax in axes[len(keep):]:
        ax.set_visible(False)
    fig.suptitle(f"output neuron {rs.index} = {rs.coords}: {len(rs.flat)} input neurons "
                 f"(box {rs.box})", fontsize=9)
    return fig
