r"""Symbolic matrices: every entry of M written as the name of the kernel entry that fills it.

``str(symbolic((2, 1, 2, 2), (1, 3, 3)))`` is the 8x9 matrix of the 2x1x2x2
example, laid out as that example is usually written by hand: kernel entries
are named ``a, b, c, ...`` in C order of the weight (``K[u,i,p,q]`` past 26
entries), ``0`` marks a structural zero, ``a+c`` an entry where padding folds
several taps onto one input neuron; ``|`` stands between image rows of the
input and ``||`` between input channels. Which kernel entries fill which
matrix entry comes from the tap pattern (:mod:`convmatrix.core.pattern`); this module only formats.

With ``weight=`` the entries are numbers instead of names (``bias=`` adds each
row's bias). The same object renders as aligned text, Markdown, LaTeX (an
``array`` in ``\left[ \right]``, any width) and HTML, displays itself in
Jupyter, and becomes a ``sympy.Matrix`` (:meth:`SymbolicMatrix.to_sympy`).
Large matrices elide their middle rows and columns; ``rows=`` and ``cols=``
ask for a window.
"""

from __future__ import annotations

import html
import re
import string
from math import prod
from typing import Sequence

import numpy as np

from ..core.geometry import ConvGeometry, as_int, as_window
from ..core.pattern import check_pattern_memory, slab_permutation, tap_pattern

__all__ = ["kernel_names", "symbolic", "SymbolicMatrix", "entry_weights", "format_number"]

#: Default limits before the middle rows / columns are elided.
MAX_ROWS = 200
MAX_COLS = 200
#: The most rows and columns :meth:`SymbolicMatrix.to_latex` shows before eliding the middle
#: (TeX runs out of memory near 200 x 200 cells).
MAX_LATEX_ROWS = 100
MAX_LATEX_COLS = 64
#: The largest window :meth:`SymbolicMatrix.to_sympy` builds (a dense sympy matrix).
MAX_SYMPY_ENTRIES = 1_000_000

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


def format_number(v, precision: int = 4) -> str:
    """A number as a matrix entry: integers in full without a decimal point, others with
    ``precision`` significant digits.

    >>> [format_number(v) for v in (5.0, -1.0, 0.0625, 1 / 3, 123456.0, -0.0)]
    ['5', '-1', '0.0625', '0.3333', '123456', '0']
    """
    if isinstance(v, complex) or np.iscomplexobj(v):
        v = complex(v)
        if v.imag != 0:
            return format(v, f".{precision}g")
        v = v.real
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return format(v, f".{precision}g")


def _aligner(tokens: list[str], numeric: bool):
    """A function padding every token to one common width: numbers aligned on their decimal
    point, names right-aligned."""
    if not numeric:
        width = max((len(t) for t in tokens), default=1)
        return lambda t: t.rjust(width)

    def split(t: str) -> tuple[str, str]:
        k = t.find(".")
        return (t, "") if k < 0 else (t[:k], t[k:])

    parts = [split(t) for t in tokens]
    left = max((len(a) for a, _ in parts), default=1)
    right = max((len(b) for _, b in parts), default=0)
    return lambda t: split(t)[0].rjust(left) + split(t)[1].ljust(right)


def _signed(b: float, precision: int) -> tuple[str, str]:
    """A bias as ``(sign, magnitude)``: ``('+', '0.5')``, ``('-', '2')``."""
    text = format_number(b, precision)
    return ("-", text[1:]) if text.startswith("-") else ("+", text)


class SymbolicMatrix:
    """The matrix of one convolution, entries written as kernel names (or numbers).

    Build it with :func:`symbolic`. ``str()`` gives the aligned text layout;
    :meth:`to_markdown`, :meth:`to_latex` and :meth:`to_html` the other
    renderings; :meth:`to_sympy` a ``sympy.Matrix``; :meth:`cells` the shown
    entries as strings.
    """

    def __init__(self, geometry: ConvGeometry, names: list[str], weight: np.ndarray | None,
                 rows: range, cols: range, max_rows: int | None, max_cols: int | None,
                 separators: bool, precision: int, bias: np.ndarray | None = None):
        self.geometry = geometry
        self.names = names
        self.weight = weight
        self.bias = bias
        self.rows = rows
        self.cols = cols
        self.max_rows = max_rows
        self.max_cols = max_cols
        self.separators = separators
        self.precision = precision
        self._cells: dict = {}

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the whole matrix (not only the shown window)."""
        return self.geometry.matrix_shape

    def _entry(self, widx: np.ndarray) -> str:
        if self.weight is not None:
            return format_number(self.weight[widx].sum(), self.precision)
        return "+".join(self.names[i] for i in sorted(widx))

    def _row_bias(self, row: int) -> float:
        """The bias of matrix row ``row``: that of its output channel."""
        return float(self.bias[row // prod(self.geometry.output_size)])

    def _window_entries(self, rows: list[int | None]):
        """Per run of consecutive rows (``None`` kept): (start, stop, indptr, indices, tap_ptr, widx)."""
        for run in _runs(rows):
            yield None if run is None else (*run, *entry_weights(self.geometry, *run))

    def cells(self, max_rows: int | None = -1, max_cols: int | None = -1
              ) -> tuple[list[int | None], list[int | None], list[list[str] | None]]:
        """(row ids, column ids, grid): the shown rows and columns (``None`` where elided)
        and, per shown row, the text of every shown column (``None`` for the elided row).

        ``max_rows`` / ``max_cols`` override the object's elision limits (``-1``: keep them).
        """
        limits = (self.max_rows if max_rows == -1 else max_rows, self.max_cols if max_cols == -1 else max_cols)
        if limits not in self._cells:
            self._cells[limits] = self._grid(*limits)
        return self._cells[limits]

    def _grid(self, max_rows: int | None, max_cols: int | None):
        row_ids = _shown(self.rows, max_rows)
        col_ids = _shown(self.cols, max_cols)
        where = {c: k for k, c in enumerate(col_ids) if c is not None}
        blank = ["..." if c is None else "0" for c in col_ids]
        grid: list[list[str] | None] = []
        for run in self._window_entries(row_ids):
            if run is None:
                grid.append(None)
                continue
            a, b, indptr, indices, tap_ptr, widx = run
            for r in range(b - a):
                line = list(blank)
                for e in range(int(indptr[r]), int(indptr[r + 1])):
                    k = where.get(int(indices[e]))
                    if k is not None:
                        line[k] = self._entry(widx[tap_ptr[e]:tap_ptr[e + 1]])
                grid.append(line)
        return row_ids, col_ids, grid

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

    def _separators(self, col_ids: list[int | None]) -> list[str]:
        return [self._separator(a, b) for a, b in zip(col_ids, col_ids[1:])]

    # ------------------------------------------------------------------ renderers
    def to_text(self) -> str:
        """The layout of the 2x1x2x2 example: ``[``, one indented line per row, ``]``.

        Numbers are aligned on their decimal point. With a bias, each row ends with
        ``+ b`` (its neuron's bias), so row ``i`` reads ``m_i . x + b_i``.
        """
        row_ids, col_ids, grid = self.cells()
        pad = _aligner([t for line in grid if line for t in line], self.weight is not None)
        seps = self._separators(col_ids)
        biases = {r: _signed(self._row_bias(r), self.precision) for r in row_ids
                  if r is not None and self.bias is not None}
        pad_bias = _aligner([m for _, m in biases.values()], True)
        lines = ["["]
        for r, line in zip(row_ids, grid):
            if line is None:
                lines.append("    ...")
                continue
            parts = [pad(line[0])]
            for sep, token in zip(seps, line[1:]):
                parts += [sep, pad(token)]
            tail = f"  {biases[r][0]} {pad_bias(biases[r][1])}".rstrip() if r in biases else ""
            lines.append("    [" + "".join(parts) + "]" + tail)
        lines.append("]")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown table: rows labelled by output neuron, columns by input neuron
        (and a last column ``+ b`` with the bias, when given)."""
        row_ids, col_ids, grid = self.cells()
        ins, outs = self.geometry.input_shape, self.geometry.output_shape
        head = ["y \\ x"] + ["..." if c is None else _coords("x", c, ins) for c in col_ids]
        head += ["+ b"] if self.bias is not None else []
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r, line in zip(row_ids, grid):
            cells = ["⋮"] * len(col_ids) if line is None else list(line)
            if self.bias is not None:
                cells.append("⋮" if r is None else format_number(self._row_bias(r), self.precision))
            label = "⋮" if r is None else _coords("y", r, outs)
            lines.append("| " + " | ".join([label, *cells]) + " |")
        return "\n".join(lines)

    def to_latex(self) -> str:
        r"""The matrix as a LaTeX ``array`` inside ``\left[ \right]``, for math mode.

        It compiles in a plain ``article`` with ``amsmath`` at any width (``array``
        has no column limit, unlike ``bmatrix``'s 10). Image-row and channel
        separators are vertical rules of the column spec (``|``, ``||``); elided rows
        and columns show ``\vdots``, ``\cdots`` and ``\ddots``; ``K[0,1,2,2]`` becomes
        ``K_{0,1,2,2}``. With a bias it reads ``[M] x + [b]``. Custom ``names`` are
        written as given (so they may be LaTeX themselves). At most :data:`MAX_LATEX_ROWS`
        rows and :data:`MAX_LATEX_COLS` columns are shown (TeX runs out of memory near
        200 x 200 cells); ``rows=`` and ``cols=`` choose which.
        """
        row_ids, col_ids, grid = self.cells(*(cap if m is None else min(m, cap) for m, cap in
                                              ((self.max_rows, MAX_LATEX_ROWS), (self.max_cols, MAX_LATEX_COLS))))
        rule = {" ": "", "|": "|", "||": "||"}
        align = "r" if self.weight is not None else "c"
        spec = align + "".join(rule[s] + align for s in self._separators(col_ids))
        body = []
        for line in grid:
            if line is None:
                tokens = [r"\ddots" if c is None else r"\vdots" for c in col_ids]
            else:
                tokens = [r"\cdots" if c is None else _latex(t) for c, t in zip(col_ids, line)]
            body.append("  " + " & ".join(tokens) + r" \\")
        out = "\\left[\\begin{array}{" + spec + "}\n" + "\n".join(body) + "\n\\end{array}\\right]"
        if self.bias is not None:
            b = [r"\vdots" if r is None else _latex(format_number(self._row_bias(r), self.precision))
                 for r in row_ids]
            out += " x + \\left[\\begin{array}{r}\n" + "\n".join(f"  {t} \\\\" for t in b) + "\n\\end{array}\\right]"
        return out

    def to_html(self) -> str:
        """An HTML table; every shown entry carries ``data-row`` and ``data-col``
        (a bias, when given, is a last cell of class ``bias``)."""
        row_ids, col_ids, grid = self.cells()
        border = {" ": "", "|": "border-left:1px solid #888;", "||": "border-left:3px double #444;"}
        seps = [" ", *self._separators(col_ids)]
        out = ['<table class="convmatrix-symbolic" style="border-collapse:collapse;font-family:monospace">']
        for r, line in zip(row_ids, grid):
            out.append("<tr>")
            for k, c in enumerate(col_ids):
                text = "⋮" if line is None else ("⋯" if c is None else line[k])
                attrs = "" if r is None or c is None else f' data-row="{r}" data-col="{c}"'
                style = f"padding:0 0.3em;text-align:right;{border[seps[k]]}"
                out.append(f'<td{attrs} style="{style}">{html.escape(text)}</td>')
            if self.bias is not None:
                text = "⋮" if r is None else "{} {}".format(*_signed(self._row_bias(r), self.precision))
                out.append(f'<td class="bias" style="padding:0 0.6em;text-align:left">{html.escape(text)}</td>')
            out.append("</tr>")
        out.append("</table>")
        return "".join(out)

    def to_sympy(self):
        """The shown window (``rows`` x ``cols``, never elided) as a ``sympy.Matrix``.

        Entries are symbols named as in the text (``a``, ``b``, ...; ``K_0_1_2_2`` for
        ``K[0,1,2,2]``), sums where padding folds taps, and numbers (``Integer`` when
        integral, else ``Float``) when a weight was given. The bias is not part of ``M``.

        >>> import sympy
        >>> M = symbolic((1, 1, 2), (1, 3)).to_sympy()
        >>> M
        Matrix([
        [a, b, 0],
        [0, a, b]])
        >>> M * sympy.Matrix([1, 2, 3])
        Matrix([
        [  a + 2*b],
        [2*a + 3*b]])
        """
        from .._optional import require

        sympy = require("sympy", extra="sympy", feature="to_sympy")
        n_rows, n_cols = len(self.rows), len(self.cols)
        if n_rows * n_cols > MAX_SYMPY_ENTRIES:
            raise ValueError(f"to_sympy: the window has {n_rows} x {n_cols} entries, more than "
                             f"{MAX_SYMPY_ENTRIES:,}; pass rows=(start, stop) and cols=(start, stop) to symbolic")
        symbols = [sympy.Symbol(_sympy_name(n)) for n in self.names]

        def entry(widx):
            if self.weight is not None:
                return _sympy_number(sympy, self.weight[widx].sum())
            return sympy.Add(*(symbols[i] for i in widx))

        out = sympy.zeros(n_rows, n_cols)
        for a, b, indptr, indices, tap_ptr, widx in self._window_entries(list(self.rows)):
            for r in range(b - a):
                for e in range(int(indptr[r]), int(indptr[r + 1])):
                    c = int(indices[e]) - self.cols.start
                    if 0 <= c < n_cols:
                        out[a + r - self.rows.start, c] = entry(widx[tap_ptr[e]:tap_ptr[e + 1]])
        return out

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


_EXPONENT = re.compile(r"^(-?[0-9.]+)e([+-])0*([0-9]+)$")


def _latex(token: str) -> str:
    r"""One entry in LaTeX: ``K[0,1]`` -> ``K_{0,1}``, ``1.5e-05`` -> ``1.5\cdot10^{-5}``."""
    m = _EXPONENT.match(token)
    if m:
        return f"{m.group(1)}\\cdot10^{{{'-' if m.group(2) == '-' else ''}{m.group(3)}}}"
    return "+".join(_K_NAME.sub(r"K_{\1}", part) for part in token.split("+"))


def _sympy_name(name: str) -> str:
    """``K[0,1,2,2]`` -> ``K_0_1_2_2``; other names unchanged."""
    m = _K_NAME.match(name)
    return "K_" + m.group(1).replace(",", "_") if m else name


def _sympy_number(sympy, v):
    """A matrix entry as a sympy number: ``Integer`` when integral, else ``Float`` (or complex)."""
    v = complex(v) if np.iscomplexobj(v) else float(v)
    if isinstance(v, complex) and v.imag == 0:
        v = v.real
    if isinstance(v, float) and v.is_integer():
        return sympy.Integer(int(v))
    return sympy.sympify(v)


def _bias_array(bias, geom: ConvGeometry) -> np.ndarray:
    """A bias (a scalar or one per output channel) as an array of ``out_channels`` numbers."""
    b = np.asarray(bias.detach().cpu().numpy() if hasattr(bias, "detach") else bias)
    if b.dtype.kind not in "biufc":
        raise TypeError(f"bias must be numbers, got {bias!r}")
    if b.ndim == 0:
        return np.full(geom.out_channels, b[()])
    if b.shape != (geom.out_channels,):
        raise ValueError(f"bias must be a scalar or have shape ({geom.out_channels},) (one per output "
                         f"channel), got shape {b.shape}")
    return b.copy()


def symbolic(weight_shape, input_shape, *, names=None, weight=None, bias=None, rows=None, cols=None,
             max_rows: int | None = MAX_ROWS, max_cols: int | None = MAX_COLS, separators: bool = True,
             precision: int = 4, **conv_kwargs) -> SymbolicMatrix:
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
        where padding folds taps), integers in full and others with ``precision``
        significant digits, aligned on their decimal point.
    bias : float or array, optional
        A scalar or one number per output channel: each row then shows its bias
        (``+ b`` after the row in the text).
    rows, cols : (start, stop), slice or range, optional
        A window of the matrix to show.
    max_rows, max_cols : int or None
        Larger windows elide their middle rows / columns (``...``); ``None`` never elides.
    separators : bool
        ``|`` between image rows and ``||`` between input channels (else spaces).
    precision : int
        Significant digits of numbers that are not integers (default 4).
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
    >>> print(symbolic((1, 1, 3), (1, 4), weight=[[[0.5, -1, 2]]], bias=0.25))
    [
        [ 0.5 -1    2    0  ]  + 0.25
        [ 0    0.5 -1    2  ]  + 0.25
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
    if not isinstance(precision, (int, np.integer)) or isinstance(precision, bool) or not 1 <= precision <= 17:
        raise ValueError(f"precision must be an int from 1 to 17 (significant digits), got {precision!r}")
    return SymbolicMatrix(
        geom, names, weight, as_window("rows", rows, geom.matrix_shape[0]),
        as_window("cols", cols, geom.matrix_shape[1]), max_rows, max_cols, bool(separators), int(precision),
        None if bias is None else _bias_array(bias, geom),
    )
