"""Symbolic matrices: every entry of M written as the name of the kernel entry that fills it.

``str(symbolic((2, 1, 2, 2), (1, 3, 3)))`` is the 8x9 matrix of the seed
question's answer, character for character: kernel entries are named ``a, b,
c, ...`` in C order of the weight (``K[u,i,p,q]`` past 26 entries), ``0`` marks
a structural zero, ``a+c`` an entry where padding folds several taps onto one
input neuron; ``|`` stands between image rows of the input and ``||`` between
input channels. Which kernel entries fill which matrix entry comes from the
tap pattern (:mod:`convmatrix.core.pattern`); this module only formats.

The same object renders as aligned text, Markdown, LaTeX (``bmatrix``) and
HTML, and displays itself in Jupyter. Large matrices elide their middle rows
and columns; ``rows=`` and ``cols=`` ask for a window.
"""

from __future__ import annotations

import html
import re
import string
from math import prod
from typing import Sequence

import numpy as np

from ..core.geometry import ConvGeometry, as_int, as_window, check_pattern_memory
from ..core.pattern import slab_permutation, tap_pattern

__all__ = ["kernel_names", "symbolic", "SymbolicMatrix", "entry_weights"]

#: Default limits before the middle rows / columns are elided.
MAX_ROWS = 200
MAX_COLS = 200

_K_NAME = re.compile(r"^K\[([0-9,]+)\]$")


def kernel_names(weight_shape) -> list[str]:
    """Names of the kernel entries in C order of the weight.

    ``a, b, c, ...`` with at most 26 entries, otherwise ``K[u,i,p,q]`` by index.

    >>> kernel_names((2, 1, 2, 2))
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
    >>> kernel_names((1, 1, 3, 3, 3))[:2]
    ['K[0,0,0,0,0]', 'K[0,0,0,0,1]']
    """
    shape = tuple(int(s) for s in weight_shape)
    n = prod(shape)
    if n <= 26:
        return list(string.ascii_lowercase[:n])
    return ["K[" + ",".join(map(str, idx)) + "]" for idx in np.ndindex(*shape)]


def entry_weights(geom: ConvGeometry, start: int, stop: int):
    """Rows ``[start, stop)`` of the matrix as (indptr, indices, tap_ptr, widx).

    Stored entry ``e`` (CSR order) sits in column ``indices[e]`` and is the sum
    of the weight entries ``weight.ravel()[widx[tap_ptr[e]:tap_ptr[e+1]]]`` (flat
    indices into the weight in its own layout, forward or transposed).
    """
    pattern = tap_pattern(geom)
    _, indices, indptr = pattern.fill(None, start, stop)
    tap_ptr, taps = pattern.entry_taps(start, stop)
    return indptr, indices, tap_ptr, slab_permutation(geom)[taps]


def _shown(window: range, limit: int | None) -> list[int | None]:
    """The indices to show; ``None`` marks the elided middle."""
    if limit is None or len(window) <= limit:
        return list(window)
    head = (limit + 1) // 2
    return [*window[:head], None, *window[len(window) - (limit - head):]]


def _fmt_number(v, precision: int) -> str:
    if isinstance(v, complex) or np.iscomplexobj(v):
        return format(complex(v), f".{precision}g")
    v = float(v)
    return "0" if v == 0 else format(v, f".{precision}g")


class SymbolicMatrix:
    """The matrix of one convolution, entries written as kernel names (or numbers).

    Build it with :func:`symbolic`. ``str()`` gives the aligned text layout;
    :meth:`to_markdown`, :meth:`to_latex` and :meth:`to_html` the other
    renderings; :meth:`cells` the shown entries as strings.
    """

    def __init__(self, geometry: ConvGeometry, names: list[str], weight: np.ndarray | None,
                 rows: range, cols: range, max_rows: int | None, max_cols: int | None,
                 separators: bool, precision: int):
        self.geometry = geometry
        self.names = names
        self.weight = weight
        self.rows = rows
        self.cols = cols
        self.max_rows = max_rows
        self.max_cols = max_cols
        self.separators = separators
        self.precision = precision
        self._cells = None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the whole matrix (not only the shown window)."""
        return self.geometry.matrix_shape

    def _entry(self, widx: np.ndarray) -> str:
        if self.weight is not None:
            return _fmt_number(self.weight[widx].sum(), self.precision)
        return "+".join(self.names[i] for i in sorted(widx))

    def cells(self) -> tuple[list[int | None], list[int | None], list[list[str] | None]]:
        """(row ids, column ids, grid): the shown rows and columns (``None`` where elided)
        and, per shown row, the text of every shown column (``None`` for the elided row)."""
        if self._cells is not None:
            return self._cells
        row_ids = _shown(self.rows, self.max_rows)
        col_ids = _shown(self.cols, self.max_cols)
        where = {c: k for k, c in enumerate(col_ids) if c is not None}
        blank = ["..." if c is None else "0" for c in col_ids]
        grid: list[list[str] | None] = []
        runs = _runs(row_ids)
        for run in runs:
            if run is None:
                grid.append(None)
                continue
            a, b = run
            indptr, indices, tap_ptr, widx = entry_weights(self.geometry, a, b)
            for r in range(b - a):
                line = list(blank)
                for e in range(int(indptr[r]), int(indptr[r + 1])):
                    k = where.get(int(indices[e]))
                    if k is not None:
                        line[k] = self._entry(widx[tap_ptr[e]:tap_ptr[e + 1]])
                grid.append(line)
        self._cells = (row_ids, col_ids, grid)
        return self._cells

    def _separator(self, left: int | None, right: int | None) -> str:
        """What stands between two shown columns: ``||`` across input channels,
        ``|`` across image rows (the last spatial axis restarts), else a space."""
        if not self.separators or left is None or right is None:
            return " "
        per_channel = prod(self.geometry.input_size)
        if left // per_channel != right // per_channel:
            return "||"
        last = self.geometry.input_size[-1]
        return "|" if left // last != right // last else " "

    # ------------------------------------------------------------------ renderers
    def to_text(self) -> str:
        """The layout of the seed's answer: ``[``, one indented line per row, ``]``."""
        row_ids, col_ids, grid = self.cells()
        width = max((len(t) for line in grid if line for t in line), default=1)
        seps = [self._separator(a, b) for a, b in zip(col_ids, col_ids[1:])]
        lines = ["["]
        for line in grid:
            if line is None:
                lines.append("    ...")
                continue
            parts = [line[0].rjust(width)]
            for sep, token in zip(seps, line[1:]):
                parts += [sep, token.rjust(width)]
            lines.append("    [" + "".join(parts) + "]")
        lines.append("]")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown table: rows labelled by output neuron, columns by input neuron."""
        row_ids, col_ids, grid = self.cells()
        ins, outs = self.geometry.input_shape, self.geometry.output_shape
        head = ["y \\ x"] + ["..." if c is None else _coords("x", c, ins) for c in col_ids]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r, line in zip(row_ids, grid):
            cells = ["⋮"] * len(col_ids) if line is None else line
            label = "⋮" if r is None else _coords("y", r, outs)
            lines.append("| " + " | ".join([label, *cells]) + " |")
        return "\n".join(lines)

    def to_latex(self) -> str:
        r"""A LaTeX ``bmatrix`` (``K[0,1,2,2]`` becomes ``K_{0,1,2,2}``; separators as
        ``\vert`` / ``\Vert`` columns). MathJax takes any width; LaTeX's amsmath needs
        ``\setcounter{MaxMatrixCols}{N}`` for more than 10 columns."""
        row_ids, col_ids, grid = self.cells()
        seps = [self._separator(a, b) for a, b in zip(col_ids, col_ids[1:])]
        mark = {" ": None, "|": r"\vert", "||": r"\Vert"}
        body = []
        for line in grid:
            if line is None:
                tokens = [r"\ddots" if c is None else r"\vdots" for c in col_ids]
            else:
                tokens = [r"\cdots" if c is None else _latex(t) for c, t in zip(col_ids, line)]
            cells = [tokens[0]]
            for sep, token in zip(seps, tokens[1:]):
                if mark[sep]:
                    cells.append(mark[sep])
                cells.append(token)
            body.append("  " + " & ".join(cells) + r" \\")
        return "\\begin{bmatrix}\n" + "\n".join(body) + "\n\\end{bmatrix}"

    def to_html(self) -> str:
        """An HTML table; every shown entry carries ``data-row`` and ``data-col``."""
        row_ids, col_ids, grid = self.cells()
        border = {" ": "", "|": "border-left:1px solid #888;", "||": "border-left:3px double #444;"}
        seps = [" "] + [self._separator(a, b) for a, b in zip(col_ids, col_ids[1:])]
        out = ['<table class="convmatrix-symbolic" style="border-collapse:collapse;font-family:monospace">']
        for r, line in zip(row_ids, grid):
            out.append("<tr>")
            for k, c in enumerate(col_ids):
                text = "⋮" if line is None else ("⋯" if c is None else line[k])
                attrs = "" if r is None or c is None else f' data-row="{r}" data-col="{c}"'
                style = f"padding:0 0.3em;text-align:right;{border[seps[k]]}"
                out.append(f'<td{attrs} style="{style}">{html.escape(text)}</td>')
            out.append("</tr>")
        out.append("</table>")
        return "".join(out)

    def render(self, format: str = "text") -> str:
        """One of ``text``, ``markdown``, ``latex``, ``html``."""
        renderers = {"text": self.to_text, "markdown": self.to_markdown, "latex": self.to_latex,
                     "html": self.to_html}
        if format not in renderers:
            raise ValueError(f"format must be one of {tuple(renderers)}, got {format!r}")
        return renderers[format]()

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_latex_(self) -> str:
        return "$$\n" + self.to_latex() + "\n$$"

    def _repr_html_(self) -> str:
        return self.to_html()


def _runs(ids: list[int | None]) -> list[tuple[int, int] | None]:
    """Consecutive runs of row ids as (start, stop); ``None`` kept as a marker."""
    runs: list[tuple[int, int] | None] = []
    for i in ids:
        if i is None:
            runs.append(None)
        elif runs and runs[-1] is not None and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _coords(prefix: str, flat: int, shape: tuple[int, ...]) -> str:
    return f"{prefix}[" + ",".join(map(str, np.unravel_index(flat, shape))) + "]"


def _latex(token: str) -> str:
    return "+".join(_K_NAME.sub(r"K_{\1}", part) for part in token.split("+"))


def symbolic(weight_shape, input_shape, *, names=None, weight=None, rows=None, cols=None,
             max_rows: int | None = MAX_ROWS, max_cols: int | None = MAX_COLS, separators: bool = True,
             precision: int = 6, **conv_kwargs) -> SymbolicMatrix:
    """The matrix of a convolution with every entry written as the kernel entry that fills it.

    Parameters
    ----------
    weight_shape : tuple of int
        ``(C_out, C_in/groups, *k)`` (transposed: ``(C_in, C_out/groups, *k)``).
    input_shape : tuple of int
        ``(C_in, *spatial)``.
    names : sequence of str, optional
        One name per kernel entry in C order of the weight (a list or an array of
        the weight's shape); default :func:`kernel_names`.
    weight : array, optional
        Numeric weights of shape ``weight_shape``: entries are then numbers (sums
        where padding folds taps), written with ``precision`` significant digits.
    rows, cols : (start, stop), slice or range, optional
        A window of the matrix to show.
    max_rows, max_cols : int or None
        Larger windows elide their middle rows / columns (``...``); ``None`` never elides.
    separators : bool
        ``|`` between image rows and ``||`` between input channels (else spaces).
    **conv_kwargs
        ``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode``,
        ``transposed``, ``output_padding`` as in :func:`convmatrix.conv_matrix`.

    Examples
    --------
    >>> print(symbolic((1, 1, 2, 2), (1, 2, 3)))
    [
        [a b 0|c d 0]
        [0 a b|0 c d]
    ]
    >>> print(symbolic((1, 1, 3), (1, 3), padding=1, padding_mode="reflect"))
    [
        [  b a+c   0]
        [  a   b   c]
        [  0 a+c   b]
    ]
    """
    from ..core.matrix import as_weight_array, conv_geometry

    if weight is not None:
        weight = as_weight_array(weight)
        if weight_shape is None:
            weight_shape = weight.shape
        if tuple(weight.shape) != tuple(weight_shape):
            raise ValueError(f"weight must have shape weight_shape={tuple(weight_shape)}, got {weight.shape}")
        weight = weight.reshape(-1)
    geom = conv_geometry(weight_shape, input_shape, **conv_kwargs)
    check_pattern_memory(geom, "the symbolic matrix's tap pattern",
                         "show a smaller input: even a window of rows needs one output channel's pattern")
    n = prod(geom.weight_shape)
    if names is None:
        names = kernel_names(geom.weight_shape)
    else:
        if isinstance(names, str) or not isinstance(names, (Sequence, np.ndarray)):
            raise TypeError(f"names must be a sequence of strings, one per kernel entry, got {names!r}")
        names = [str(s) for s in np.asarray(names, dtype=object).reshape(-1)]
        if len(names) != n:
            raise ValueError(
                f"names must have one entry per kernel entry ({n} for weight shape {geom.weight_shape}), "
                f"got {len(names)}"
            )
    for label, limit in (("max_rows", max_rows), ("max_cols", max_cols)):
        if limit is not None:
            as_int(label, limit, minimum=2, maximum=None)
    return SymbolicMatrix(
        geom, names, weight, as_window("rows", rows, geom.matrix_shape[0]),
        as_window("cols", cols, geom.matrix_shape[1]), max_rows, max_cols, bool(separators), int(precision),
    )
