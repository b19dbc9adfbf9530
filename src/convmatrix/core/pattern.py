"""The tap pattern: the sparsity structure of a conv matrix, independent of weight values.

This module is the only place that knows convolution index arithmetic.

A stored entry ``M[row, col]`` of a conv matrix is the sum of one or more
kernel entries ("taps"). The structure depends only on the geometry, and it
factorises: along each spatial axis, output position ``o`` reads input
position ``i`` through kernel tap ``t`` (:func:`axis_taps`), and the N-D
pattern is the Kronecker-like product of the per-axis patterns and of the
input channels of one group. Every output channel of a group has the same
columns; only the weight slab that fills them differs. So we build, once per
geometry, a *template* for one output channel:

    ptr[o] : ptr[o+1]       the template entries of spatial output position o
    col[e]                  their column (input neuron), sorted within a row
    tap_ptr[e] : tap_ptr[e+1], tap[...]   the taps summed into entry e, as flat
                            indices into the output channel's (C_in/groups, *k) slab

and the whole matrix is the template repeated per output channel, shifted by
the group's column offset, with values gathered from that channel's slab
(:meth:`TapPattern.fill`). Entries fold several taps only with reflect,
replicate and circular padding; then values are summed with ``np.add.reduceat``.
"""

from __future__ import annotations

import dataclasses
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from math import prod

import numpy as np

from .geometry import ConvGeometry, check_memory
from .threads import workers

__all__ = ["axis_taps", "TapPattern", "tap_pattern", "index_dtype_for", "row_counts", "axis_entries",
           "matrix_entries", "pattern_bytes", "check_pattern_memory"]

INT32_MAX = np.iinfo(np.int32).max


# ------------------------------------------------------------ size estimates
# Closed forms from the geometry alone: nothing here allocates more than O(kernel size).

_AXIS_WORK_BYTES = 48  # int64 arrays the 1-D pattern holds per (output position, tap) pair
_EXACT_TAP_LIMIT = 2**22  # taps enumerated for an exact count of a folding padding


def _count_in_range(m: int, s: int, c: np.ndarray, n: int) -> int:
    """``sum over c`` of the number of ``j in [0, m)`` with ``0 <= j*s + c < n``."""
    first = np.maximum(0, -(c // s))
    last = np.minimum(m - 1, (n - 1 - c) // s)
    return int(np.maximum(0, last - first + 1).sum())


def axis_entries(geom: ConvGeometry, axis: int) -> tuple[int, bool]:
    """Stored entries of the layer's 1-D pattern along ``axis`` and whether the count is exact.

    Zero padding (and transposed layers) never fold taps, so the count is exact:
    output ``o`` reads tap ``t`` at input ``o*stride + t*dilation - pad_low`` when
    that lies in ``[0, n)``. Reflect, replicate and circular padding fold taps of
    border outputs onto one input: each output reads at most ``min(k, n)`` inputs,
    counted exactly where the taps are few.

    >>> g = ConvGeometry.from_args((1, 1, 3), (1, 5), padding=1)
    >>> axis_entries(g, 0)     # 5 outputs x 3 taps, less the 2 that fall in the padding
    (13, True)
    """
    n, n_out = geom.input_size[axis], geom.output_size[axis]
    k, s, d = geom.kernel_size[axis], geom.stride[axis], geom.dilation[axis]
    lo, hi = geom.padding[axis]
    upper = n * k if geom.transposed else n_out * min(k, n)
    if k > _EXACT_TAP_LIMIT or d * (k - 1) + lo >= 2**62:  # beyond int64 arithmetic
        return upper, False
    t_off = np.arange(k, dtype=np.int64) * d - lo
    if geom.transposed:  # input i feeds output i*s + t*d - lo
        return _count_in_range(n, s, t_off, n_out), True
    if geom.padding_mode == "zeros" or lo == hi == 0:
        return _count_in_range(n_out, s, t_off, n), True
    if n_out * k <= _EXACT_TAP_LIMIT:
        o, i, _ = axis_taps(geom, axis)
        return int(np.count_nonzero(np.diff(o, prepend=-1) | np.diff(i, prepend=-1))), True
    return upper, False


def matrix_entries(geom: ConvGeometry) -> tuple[int, bool]:
    """Stored entries of the whole matrix (exact, or an upper bound) without building it.

    >>> matrix_entries(ConvGeometry.from_args((2, 1, 2, 2), (1, 3, 3)))
    (32, True)
    """
    total, exact = geom.out_channels * geom.in_per_group, True
    for ax in range(geom.ndim):
        count, ok = axis_entries(geom, ax)
        total, exact = total * count, exact and ok
    return total, exact


def pattern_bytes(geom: ConvGeometry) -> int:
    """An upper estimate of the memory the cached tap pattern of ``geom`` holds while it is built.

    Row pointers and counts of one output channel, the 1-D patterns, and for
    padding that folds taps the per-channel template of entries and taps.
    """
    positions = prod(geom.output_size)
    work = sum(o * k for o, k in zip(geom.output_size, geom.kernel_size)) * _AXIS_WORK_BYTES
    total = 16 * (positions + 1) + work
    folds = not geom.transposed and geom.padding_mode != "zeros" and any(lo or hi for lo, hi in geom.padding)
    if folds:
        per_channel = matrix_entries(geom)[0] // geom.out_channels
        total += 64 * per_channel
    return total


def check_pattern_memory(geom: ConvGeometry, what: str = "the tap pattern", alternatives: str = "") -> None:
    """ValueError with the estimate when the tap pattern of ``geom`` would not fit in memory."""
    check_memory(
        pattern_bytes(geom), None,
        f"{what} of the layer {geom.input_shape} -> {geom.output_shape} (one output channel's "
        f"{prod(geom.output_size):,} rows)",
        alternatives or "use a smaller input, or a larger stride",
    )


def index_dtype_for(n_cols: int, nnz: int) -> type:
    """int32 while columns and stored entries fit, int64 beyond (SciPy's rule)."""
    return np.int32 if max(n_cols, nnz) <= INT32_MAX else np.int64


def axis_taps(geom: ConvGeometry, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which input position each output position reads, through which tap, along one axis.

    Returns int64 arrays ``(o, i, t)`` sorted by ``(o, i, t)``: output position
    ``o`` reads input position ``i`` weighted by kernel tap ``t``.

    Forward: the padded position is ``q = o*stride + t*dilation - pad_low``; zero
    padding drops ``q`` outside ``[0, n)``, reflect mirrors it (``-q`` or
    ``2(n-1) - q``), replicate clamps it, circular wraps it modulo ``n``.

    Transposed (the adjoint of the forward map): ``o`` reads ``i`` through ``t``
    when ``i*stride + t*dilation - pad_low == o``, for ``0 <= i < n``.
    """
    n = geom.input_size[axis]
    n_out = geom.output_size[axis]
    k, s, d = geom.kernel_size[axis], geom.stride[axis], geom.dilation[axis]
    lo = geom.padding[axis][0]
    check_memory(n_out * k * 48, None, f"the 1-D tap pattern of spatial dimension {axis} ({n_out:,} outputs x "
                 f"{k:,} taps)", "use a smaller input, or a larger stride")
    o = np.repeat(np.arange(n_out, dtype=np.int64), k)
    # Transposed layers read input positions that fall as the tap grows: listing taps
    # backwards there leaves zero padding already sorted by (o, i, t).
    t = np.tile(np.arange(k, dtype=np.int64)[:: -1 if geom.transposed else 1], n_out)
    if geom.transposed:
        num = o + lo - t * d
        i, rem = np.divmod(num, s)
        keep = (rem == 0) & (i >= 0) & (i < n)
    else:
        q = o * s + t * d - lo
        mode = geom.padding_mode
        if mode == "zeros":
            i, keep = q, (q >= 0) & (q < n)
        elif mode == "reflect":
            # torch's reflect needs pad < n, so one reflection always lands inside.
            i, keep = np.where(q < 0, -q, np.where(q >= n, 2 * (n - 1) - q, q)), None
        elif mode == "replicate":
            i, keep = np.clip(q, 0, n - 1), None
        else:  # circular
            i, keep = np.mod(q, n), None
    if keep is not None:
        o, i, t = o[keep], i[keep], t[keep]
    if not _sorted(o, i, t):
        order = np.lexsort((t, i, o))
        o, i, t = o[order], i[order], t[order]
    return o, i, t


def _sorted(o: np.ndarray, i: np.ndarray, t: np.ndarray) -> bool:
    """Whether the triples are sorted by (o, i, t) (cheaper than sorting again)."""
    do, di, dt = np.diff(o), np.diff(i), np.diff(t)
    return bool(np.all((do > 0) | ((do == 0) & ((di > 0) | ((di == 0) & (dt >= 0))))))


@dataclass(frozen=True)
class _Ragged:
    """Rows -> entries (sorted ``col``) -> taps, all CSR-style."""

    ptr: np.ndarray  # (rows + 1,) entry offsets per row
    col: np.ndarray  # (entries,)
    tap_ptr: np.ndarray  # (entries + 1,) tap offsets per entry
    tap: np.ndarray  # (taps,)
    n_cols: int  # size of the column index space
    n_taps: int  # size of the tap index space

    @classmethod
    def from_axis(cls, o, i, t, n_rows, n_cols, n_taps) -> "_Ragged":
        # Merge taps that land on the same (o, i): one entry, several taps.
        new_entry = np.ones(len(o), dtype=bool)
        new_entry[1:] = (o[1:] != o[:-1]) | (i[1:] != i[:-1])
        starts = np.flatnonzero(new_entry)
        tap_ptr = np.append(starts, len(o)).astype(np.int64)
        ptr = np.searchsorted(o[starts], np.arange(n_rows + 1), side="left").astype(np.int64)
        return cls(ptr, i[starts], tap_ptr, t, n_cols, n_taps)

    def __mul__(self, other: "_Ragged") -> "_Ragged":
        """Product pattern: rows, columns and taps in C order of (self, other)."""
        n_a, n_b = len(self.ptr) - 1, len(other.ptr) - 1
        ra = np.repeat(np.arange(n_a, dtype=np.int64), n_b)
        rb = np.tile(np.arange(n_b, dtype=np.int64), n_a)
        ptr, ea, eb = _pairs(self.ptr, other.ptr, ra, rb)
        tap_ptr, ta, tb = _pairs(self.tap_ptr, other.tap_ptr, ea, eb)
        return _Ragged(
            ptr,
            self.col[ea] * other.n_cols + other.col[eb],
            tap_ptr,
            self.tap[ta] * other.n_taps + other.tap[tb],
            self.n_cols * other.n_cols,
            self.n_taps * other.n_taps,
        )


def _pairs(ptr_a, ptr_b, ia, ib):
    """Enumerate, for each pair ``(ia[k], ib[k])``, the items of segment ``ia[k]`` of
    ``ptr_a`` times those of segment ``ib[k]`` of ``ptr_b`` (a-major).

    Returns the offsets of each pair's items and the item indices into a and b.
    """
    ca = (ptr_a[1:] - ptr_a[:-1])[ia]
    cb = (ptr_b[1:] - ptr_b[:-1])[ib]
    counts = ca * cb
    out_ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    k = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    local = np.arange(out_ptr[-1], dtype=np.int64) - out_ptr[k]
    cbk = cb[k]
    return out_ptr, ptr_a[ia[k]] + local // cbk, ptr_b[ib[k]] + local % cbk


def _axis_ragged(geom: ConvGeometry, axis: int) -> _Ragged:
    o, i, t = axis_taps(geom, axis)
    return _Ragged.from_axis(
        o, i, t, geom.output_size[axis], geom.input_size[axis], geom.kernel_size[axis]
    )


def axis_nnz(geom: ConvGeometry) -> int:
    """Exact number of stored entries of the matrix: closed forms, else the 1-D patterns (cheap)."""
    nnz, exact = matrix_entries(geom)
    if exact:
        return nnz
    spatial = prod(int(_axis_ragged(geom, ax).ptr[-1]) for ax in range(geom.ndim))
    return geom.out_channels * geom.in_per_group * spatial


def row_counts(geom: ConvGeometry) -> np.ndarray:
    """Stored entries of each row of one output channel, from the 1-D patterns alone (cheap).

    Equals ``tap_pattern(geom).row_counts`` without building the template: the
    pattern is a product over the group's input channels and the spatial axes,
    so a row's count is ``in_per_group`` times its per-axis counts.
    """
    counts = np.full((), geom.in_per_group, dtype=np.int64)
    for ax in range(geom.ndim):
        counts = np.multiply.outer(counts, np.diff(_axis_ragged(geom, ax).ptr))
    return counts.reshape(-1)


@dataclass(frozen=True)
class _Run:
    """Output positions ``a + j*step`` (``j < count``) of one axis that read the same taps.

    Along such a run the input position of every tap moves by ``di`` per step and
    the number of entries before the position (per unit of the other axes) by
    ``dc``, so the run's rows form a strided block of the CSR arrays.
    """

    a: int
    step: int
    count: int
    taps: np.ndarray  # the taps read, in increasing input position
    i: np.ndarray  # their input positions at j = 0
    di: int
    cum: int  # entries before position a along this axis
    dc: int
    tap_slice: slice  # the taps (an arithmetic progression) as a slice of the kernel axis


def _axis_runs(geom: ConvGeometry, axis: int) -> tuple[list[_Run], np.ndarray]:
    """Zero padding only: the runs of one axis, and its entry count per output position.

    Every (output position, tap) pair reads at most one input position, so no
    entry folds taps; ordering the taps by input position orders the columns.
    """
    o, i, t = axis_taps(geom, axis)
    n_out, k = geom.output_size[axis], geom.kernel_size[axis]
    counts = np.bincount(o, minlength=n_out)
    cum = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    reads = np.zeros((n_out, k), dtype=bool)
    reads[o, t] = True
    # Input position of each position's first tap (positions that read nothing: unused).
    first_i = i[np.minimum(cum[:-1], len(i) - 1)] if len(i) else np.zeros(n_out, dtype=np.int64)
    # Transposed layers read taps by residue of the position modulo the stride:
    # runs step through one residue class at a time.
    period = geom.stride[axis] if geom.transposed else 1
    runs: list[_Run] = []
    for r in range(min(period, n_out)):
        ps = np.arange(r, n_out, period)
        same = np.all(reads[ps[1:]] == reads[ps[:-1]], axis=1)  # pair (j-1, j) reads the same taps
        step = np.stack([np.diff(first_i[ps]), np.diff(cum[ps])], axis=1)
        # A run starts where the taps change, or where the step from the previous position
        # changes (the input position and the entry offset must be affine along a run; the
        # step of every tap equals that of the first, as all read the same taps).
        start = np.ones(len(ps), dtype=bool)
        start[1:] = ~same
        start[2:] |= same[:-1] & same[1:] & np.any(step[1:] != step[:-1], axis=1)
        bounds = np.append(np.flatnonzero(start), len(ps))
        for ja, jb in zip(bounds[:-1], bounds[1:]):
            a = int(ps[ja])
            if counts[a] == 0:  # positions that read nothing store nothing
                continue
            di, dc = (int(x) for x in step[ja]) if jb - ja > 1 else (0, 0)
            taps = t[cum[a] : cum[a + 1]]
            runs.append(_Run(a, period, int(jb - ja), taps, i[cum[a] : cum[a + 1]], di, int(cum[a]), dc,
                             _as_slice(taps)))
    return runs, counts


def _as_slice(taps: np.ndarray) -> slice:
    """An arithmetic progression of taps as a slice (``taps`` is never empty)."""
    first, step = int(taps[0]), int(taps[1] - taps[0]) if len(taps) > 1 else 1
    last = first + (len(taps) - 1) * step
    assert np.array_equal(taps, np.arange(first, last + step, step)), taps
    return slice(first, None if last + step < 0 else last + step, step)


@dataclass(frozen=True)
class _Block:
    """One product of runs (one per axis): rows of equal width whose entries
    and columns are affine in the run indices ``j`` of every axis."""

    runs: tuple
    width: int  # entries per row
    before: tuple  # entries before a row, per unit of cum along each axis
    steps: tuple  # entries between rows one j apart, along each axis
    move0: np.ndarray  # (count_0,) column shift along the first axis
    rest: np.ndarray  # (count_1, ..., count_last, width) columns, less the first axis' shift
    taps: tuple  # the kernel slices that fill a row

    @classmethod
    def of(cls, runs, cols, moves, cg, totals, channel_cols) -> "_Block":
        """``cols[ax]``: a run's input columns at j = 0; ``moves[ax]``: its column shift per j."""
        nd = len(runs)
        counts = [len(r.taps) for r in runs]
        # Row offsets in one channel (see ptr): cg * sum over axes of
        # prod(counts before) * cum_axis * prod(totals after): affine in every j.
        before = tuple(prod(counts[:ax]) * prod(totals[ax + 1 :]) * cg for ax in range(nd))
        # Columns of the first row: channel, then the input position along every axis.
        rest = channel_cols
        for c in cols:
            rest = np.add.outer(rest, c)
        rest = rest.ravel()
        for m in moves[:0:-1]:
            rest = np.add.outer(m, rest)
        return cls(tuple(runs), cg * prod(counts), before, tuple(b * r.dc for b, r in zip(before, runs)),
                   moves[0], rest, tuple(r.tap_slice for r in runs))


def _strided(out: np.ndarray, base: int, shape, steps) -> np.ndarray:
    """A writeable strided view of ``out`` starting at element ``base`` (steps in elements)."""
    last = base + sum((n - 1) * st for n, st in zip(shape, steps))
    assert 0 <= base and last < len(out), (base, last, len(out))  # never write outside
    return np.ndarray(shape, out.dtype, out, base * out.itemsize, [st * out.itemsize for st in steps])


def _boxes(a: int, b: int, shape: tuple[int, ...]) -> list[list[tuple[int, int]]]:
    """Split the C-order flat range ``[a, b)`` of an array of ``shape`` into boxes.

    >>> _boxes(3, 9, (3, 4))
    [[(0, 1), (3, 4)], [(1, 2), (0, 4)], [(2, 3), (0, 1)]]
    """
    if a >= b:
        return []
    if len(shape) == 1:
        return [[(a, b)]]
    inner = prod(shape[1:])
    (qa, ra), (qb, rb) = divmod(a, inner), divmod(b, inner)
    if qa == qb:
        return [[(qa, qa + 1)] + box for box in _boxes(ra, rb, shape[1:])]
    out = []
    if ra:
        out += [[(qa, qa + 1)] + box for box in _boxes(ra, inner, shape[1:])]
        qa += 1
    if qb > qa:
        out.append([(qa, qb)] + [(0, n) for n in shape[1:]])
    if rb:
        out += [[(qb, qb + 1)] + box for box in _boxes(0, rb, shape[1:])]
    return out


class TapPattern:
    """The tap pattern of one geometry: where every output channel's entries go.

    Use :func:`tap_pattern` (cached) rather than the constructor. ``ptr`` and
    ``row_counts`` give the entries of one output channel per spatial output
    position; every output channel has the same, shifted by its group's columns.

    Zero padding (and transposed layers) never fold taps: then the matrix is
    written run block by run block (:class:`_Run`), each block one strided
    NumPy assignment for all output channels at once, with no per-entry
    template. Reflect, replicate and circular padding use a per-channel
    template (``col``, ``tap_ptr``, ``tap``) and sum folded taps.
    """

    def __init__(self, geom: ConvGeometry):
        self.geometry = geom
        self.n_positions = prod(geom.output_size)  # rows per output channel
        self.group_cols = geom.in_per_group * prod(geom.input_size)  # column offset between groups
        self.shape = geom.matrix_shape
        no_padding = all(lo == hi == 0 for lo, hi in geom.padding)
        self.folded = False
        self._col = self._taps = None
        if geom.transposed or geom.padding_mode == "zeros" or no_padding:
            axes = [_axis_runs(geom, ax) for ax in range(geom.ndim)]
            self.runs = [r for r, _ in axes]
            self.axis_counts = [c for _, c in axes]
            counts = np.full(1, geom.in_per_group, dtype=np.int64)
            for c in self.axis_counts:
                counts = np.multiply.outer(counts, c).ravel()
            self.row_counts = counts
            self.ptr = np.zeros(self.n_positions + 1, dtype=np.int64)
            np.cumsum(counts, out=self.ptr[1:])
            self._block_cache: dict = {}
        else:
            self.runs = None
            self._build_template(geom)
        self.nnz = geom.out_channels * int(self.ptr[-1])

    def _build_template(self, geom: ConvGeometry) -> None:
        cg = geom.in_per_group
        tmpl = _Ragged(
            ptr=np.array([0, cg], dtype=np.int64),
            col=np.arange(cg, dtype=np.int64),
            tap_ptr=np.arange(cg + 1, dtype=np.int64),
            tap=np.arange(cg, dtype=np.int64),
            n_cols=1,
            n_taps=1,
        )
        for ax in range(geom.ndim):
            tmpl = tmpl * _axis_ragged(geom, ax)
        self.ptr, self._col, self._taps = tmpl.ptr, tmpl.col, (tmpl.tap_ptr, tmpl.tap)
        self.row_counts = np.diff(self.ptr)
        self.folded = len(tmpl.tap) > len(tmpl.col)
        self._cols_cache: dict = {}

    # The template of output channel 0: the folded path builds it, the run path
    # derives it on first use (it is as large as one channel of the matrix).
    @property
    def col(self) -> np.ndarray:
        """Column of every entry of output channel 0 (group 0), int64."""
        if self._col is None:
            self._col = self.fill(None, 0, self.n_positions, workers=1)[1].astype(np.int64)
        return self._col

    @property
    def tap_ptr(self) -> np.ndarray:
        """Entry e of channel 0 sums the taps ``tap[tap_ptr[e]:tap_ptr[e+1]]``."""
        return self._channel_taps()[0]

    @property
    def tap(self) -> np.ndarray:
        """Taps of channel 0's entries, as flat indices into its slab."""
        return self._channel_taps()[1]

    def _channel_taps(self):
        if self._taps is None:
            self._taps = self.entry_taps(0, self.n_positions)
        return self._taps

    # ------------------------------------------------------------------ helpers
    def _cols(self, dtype) -> np.ndarray:
        if dtype not in self._cols_cache:
            self._cols_cache[dtype] = self.col.astype(dtype)
        return self._cols_cache[dtype]

    def _check_rows(self, start: int, stop: int) -> tuple[int, int]:
        n = self.shape[0]
        if not (0 <= start <= stop <= n):
            raise ValueError(f"rows must satisfy 0 <= start <= stop <= {n}, got ({start}, {stop})")
        return int(start), int(stop)

    def _segments(self, start: int, stop: int):
        """Per output channel u touched by rows [start, stop): (u, o_a, o_b)."""
        p = self.n_positions
        if p == 0:
            return
        for u in range(start // p, -(-stop // p)):
            oa, ob = max(start - u * p, 0), min(stop - u * p, p)
            if ob > oa:
                yield u, oa, ob

    def _offset(self, row: int) -> int:
        """Stored entries before matrix row ``row``."""
        p = max(self.n_positions, 1)
        return (row // p) * int(self.ptr[-1]) + int(self.ptr[row % p]) if row < self.shape[0] else self.nnz

    def indptr(self, start: int, stop: int, dtype) -> np.ndarray:
        """CSR row pointer of rows ``[start, stop)``: ``ptr`` shifted per output channel."""
        p, per, origin = self.n_positions, int(self.ptr[-1]), self._offset(start)
        out = np.empty(stop - start + 1, dtype=dtype)
        i, r = 0, start
        while r < stop:  # a partial channel, whole channels, a partial channel
            u, oa = divmod(r, p)
            if oa == 0 and stop - r >= p:
                nu = (stop - r) // p
                shifts = np.arange(u, u + nu, dtype=np.int64) * per - origin
                np.add.outer(shifts, self.ptr[:-1], out=out[i : i + nu * p].reshape(nu, p), casting="same_kind")
                n = nu * p
            else:
                n = min(p - oa, stop - r)
                np.add(self.ptr[oa : oa + n], u * per - origin, out=out[i : i + n], casting="same_kind")
            i, r = i + n, r + n
        out[-1] = self._offset(stop) - origin
        return out

    def nnz_rows(self, start: int, stop: int) -> int:
        start, stop = self._check_rows(start, stop)
        return self._offset(stop) - self._offset(start) if stop > start else 0

    # --------------------------------------------------------------------- fill
    def fill(self, slabs: np.ndarray | None, start: int = 0, stop: int | None = None, *, workers: int | None = None):
        """Build rows ``[start, stop)`` of the matrix as CSR arrays.

        ``slabs`` has shape ``(out_channels, in_per_group * kernel_numel)``: row u
        is the weight that output channel u applies to its group's input.
        Returns ``(data, indices, indptr)`` with int32 indices while they fit
        (``data`` is None when ``slabs`` is None: the structure only).
        ``workers`` threads fill disjoint row ranges (default: 1 below 4M entries).
        """
        stop = self.shape[0] if stop is None else stop
        start, stop = self._check_rows(start, stop)
        nnz = self.nnz_rows(start, stop)
        idx_dtype = index_dtype_for(self.shape[1], nnz)
        indptr = self.indptr(start, stop, idx_dtype)
        indices = np.empty(nnz, dtype=idx_dtype)
        data = None if slabs is None else np.empty(nnz, dtype=slabs.dtype)
        origin = self._offset(start)
        write = self._write_folded if self.runs is None else self._write_runs

        workers = _default_workers(nnz) if workers is None else workers
        if workers > 1 and stop - start > 1:
            # Row ranges with about equal entries; each thread writes its own slice.
            cuts = np.searchsorted(indptr, np.linspace(0, nnz, workers + 1)[1:-1]) + start
            bounds = [start, *sorted(set(int(c) for c in cuts) - {start, stop}), stop]
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda ab: write(slabs, data, indices, ab[0], ab[1], origin), zip(bounds, bounds[1:])))
        else:
            write(slabs, data, indices, start, stop, origin)
        return data, indices, indptr

    def _write_folded(self, slabs, data, indices, start, stop, origin):
        """Rows [start, stop) from the per-channel template (sums folded taps)."""
        cols = self._cols(indices.dtype)
        cout_g = self.geometry.out_per_group
        for u, oa, ob in self._segments(start, stop):
            ea, eb = int(self.ptr[oa]), int(self.ptr[ob])
            base = self._offset(u * self.n_positions + oa) - origin
            dst = slice(base, base + eb - ea)
            np.add(cols[ea:eb], (u // cout_g) * self.group_cols, out=indices[dst], dtype=indices.dtype)
            if data is None:
                continue
            if not self.folded:
                np.take(slabs[u], self.tap[ea:eb], out=data[dst])
            elif eb > ea:
                ta, tb = int(self.tap_ptr[ea]), int(self.tap_ptr[eb])
                vals = np.take(slabs[u], self.tap[ta:tb])
                np.add.reduceat(vals, self.tap_ptr[ea:eb] - ta, out=data[dst])

    def _pieces(self, start: int, stop: int):
        """Rows [start, stop) as (first channel, channel count, box of output positions)."""
        p = self.n_positions
        full_a, full_b = -(-start // p), stop // p
        if full_a > full_b:  # inside one channel
            return [(start // p, 1, box) for box in _boxes(start % p, stop % p or p, self.geometry.output_size)]
        everything = [(0, n) for n in self.geometry.output_size]
        pieces = [(full_a - 1, 1, box) for box in _boxes(start % p, p, self.geometry.output_size)] if start % p else []
        if full_b > full_a:
            pieces.append((full_a, full_b - full_a, everything))
        pieces += [(full_b, 1, box) for box in _boxes(0, stop % p, self.geometry.output_size)]
        return pieces

    def _blocks(self, idx_dtype) -> list["_Block"]:
        """The weight-independent part of every product of runs (cached per index dtype)."""
        if idx_dtype not in self._block_cache:
            geom = self.geometry
            totals = [int(c.sum()) for c in self.axis_counts]
            in_strides = [prod(geom.input_size[ax + 1 :]) for ax in range(geom.ndim)]
            channel_cols = (np.arange(geom.in_per_group) * prod(geom.input_size)).astype(idx_dtype)
            # Per run (not per product of runs): its columns at j = 0 and its shift per j.
            cols = [{id(r): (r.i * st).astype(idx_dtype) for r in runs} for runs, st in zip(self.runs, in_strides)]
            moves = [{id(r): (np.arange(r.count) * (r.di * st)).astype(idx_dtype) for r in runs}
                     for runs, st in zip(self.runs, in_strides)]
            self._block_cache[idx_dtype] = [
                _Block.of(runs, [c[id(r)] for c, r in zip(cols, runs)], [m[id(r)] for m, r in zip(moves, runs)],
                          geom.in_per_group, totals, channel_cols)
                for runs in itertools.product(*self.runs)
            ]
        return self._block_cache[idx_dtype]

    def _write_runs(self, slabs, data, indices, start, stop, origin):
        """Rows [start, stop): per channel range and box of positions, one strided
        assignment of indices and one of values per product of runs."""
        geom = self.geometry
        if self.n_positions == 0:
            return
        per = int(self.ptr[-1])
        kernel = (slice(None), slice(None))
        blocks = self._blocks(indices.dtype)
        for u0, nu, box in self._pieces(start, stop):
            shift = ((np.arange(u0, u0 + nu) // geom.out_per_group) * self.group_cols).astype(indices.dtype)
            if data is not None:
                w = slabs[u0 : u0 + nu].reshape((nu, geom.in_per_group, *geom.kernel_size))
            for blk in blocks:
                # Clip every run to the box: j in [jlo, jhi).
                j = [(max(0, -(-(lo - r.a) // r.step)), min(r.count, -(-(hi - r.a) // r.step)))
                     for r, (lo, hi) in zip(blk.runs, box)]
                if any(jhi <= jlo for jlo, jhi in j):
                    continue
                base = u0 * per - origin + sum(b * (r.cum + jlo * r.dc) for b, r, (jlo, _) in zip(blk.before, blk.runs, j))
                shape = (nu, *(jhi - jlo for jlo, jhi in j), blk.width)
                steps = (per, *blk.steps, 1)
                lead = np.add.outer(shift, blk.move0[j[0][0] : j[0][1]])
                rest = blk.rest[tuple(slice(*jj) for jj in j[1:])]
                np.add(lead.reshape(lead.shape + (1,) * len(j)), rest[None, None],
                       out=_strided(indices, base, shape, steps))
                if data is None:
                    continue
                # The taps of a run are an arithmetic progression: slice the weights, no gather.
                vals = w[kernel + blk.taps].reshape(nu, *(1,) * len(j), blk.width)
                if len(j) > 1 and shape[-2] > 1 and blk.width < 64 and nu * shape[-2] * blk.width <= 1 << 20:
                    # Short rows: repeat them along the last axis so NumPy copies long lines.
                    vals = np.broadcast_to(vals, (*vals.shape[:-2], shape[-2], blk.width)).copy()
                _strided(data, base, shape, steps)[...] = vals

    @property
    def spatial(self) -> "TapPattern":
        """The pattern of the spatial part alone (one input and one output channel).

        Within a group every (output, input) channel pair has this same pattern, so
        structure questions (which neurons are connected) need only it.
        """
        g = self.geometry
        return tap_pattern(dataclasses.replace(g, in_channels=1, out_channels=1, groups=1))

    def column_positions(self, col: int) -> tuple[int, np.ndarray]:
        """Which rows read input neuron ``col`` (one column of M), without building M.

        Returns ``(first, positions)``: the first output channel of ``col``'s group and
        the sorted spatial output positions whose window holds ``col``'s position.
        Every output channel ``u`` of that group reads ``col`` at those positions: the
        rows are ``u * n_positions + positions`` for ``u`` in ``first .. first +
        out_per_group - 1`` (:meth:`column`).

        >>> p = tap_pattern(ConvGeometry.from_args((2, 1, 2, 2), (1, 3, 3)))
        >>> first, positions = p.column_positions(4)      # the centre of the 3x3 input
        >>> first, positions.tolist(), p.column(4).tolist()
        (0, [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7])
        """
        g = self.geometry
        if not 0 <= int(col) < self.shape[1]:
            raise ValueError(f"col must be an input neuron in [0, {self.shape[1]}), got {col}")
        channel, pos = divmod(int(col), prod(g.input_size))
        columns = _spatial_columns(self.spatial)
        first = (channel // g.in_per_group) * g.out_per_group
        return first, columns.indices[columns.indptr[pos]:columns.indptr[pos + 1]].astype(np.int64)

    def column(self, col: int) -> np.ndarray:
        """The rows (output neurons) that read input neuron ``col``, sorted: one column of M's pattern."""
        first, positions = self.column_positions(col)
        channels = np.arange(first, first + self.geometry.out_per_group, dtype=np.int64)
        return (channels[:, None] * self.n_positions + positions[None, :]).ravel()

    def entry_taps(self, start: int = 0, stop: int | None = None):
        """For every stored entry of rows ``[start, stop)``, the taps summed into it.

        Returns ``(tap_ptr, taps)``: entry e is the sum of ``slabs.ravel()[taps[tap_ptr[e]:tap_ptr[e+1]]]``
        (flat indices into the ``(out_channels, in_per_group*kernel_numel)`` slab array).
        """
        stop = self.shape[0] if stop is None else stop
        start, stop = self._check_rows(start, stop)
        if self.runs is not None:  # one tap per entry: fill with the slab's own flat indices
            g = self.geometry
            flat = np.arange(g.out_channels * g.in_per_group * g.kernel_numel, dtype=np.int64)
            taps, _, _ = self.fill(flat.reshape(g.out_channels, -1), start, stop, workers=1)
            return np.arange(len(taps) + 1, dtype=np.int64), taps
        slab = self.tap_ptr.dtype.type(self.geometry.in_per_group * self.geometry.kernel_numel)
        ptrs, taps, offset = [np.zeros(1, dtype=np.int64)], [], 0
        for u, oa, ob in self._segments(start, stop):
            ea, eb = int(self.ptr[oa]), int(self.ptr[ob])
            ta, tb = int(self.tap_ptr[ea]), int(self.tap_ptr[eb])
            ptrs.append(self.tap_ptr[ea + 1 : eb + 1] - ta + offset)
            taps.append(self.tap[ta:tb] + u * slab)
            offset += tb - ta
        return np.concatenate(ptrs), (np.concatenate(taps) if taps else np.zeros(0, dtype=np.int64))


def _default_workers(nnz: int) -> int:
    """Threads for a fill: 1 below 4M entries (threads do not pay there), else one
    per core, at most 8 or ``$CONVMATRIX_THREADS`` (:func:`convmatrix.core.threads.workers`)."""
    return 1 if nnz < 4_000_000 else workers(8)


@lru_cache(maxsize=16)
def _spatial_columns(spatial: TapPattern):
    """A one-channel pattern column-major (CSC): output positions per input position."""
    import scipy.sparse as sp

    _, indices, indptr = spatial.fill(None)
    rows = sp.csr_array((np.ones(len(indices), dtype=np.int8), indices, indptr), shape=spatial.shape)
    return rows.tocsc()


@lru_cache(maxsize=16)
def tap_pattern(geom: ConvGeometry) -> TapPattern:
    """The (cached) tap pattern of a geometry; ValueError with the estimate if it cannot fit in memory."""
    check_pattern_memory(geom)
    return TapPattern(geom)


def slab_permutation(geom: ConvGeometry) -> np.ndarray:
    """Flat weight index of every slab entry: ``slabs.ravel() == weight.ravel()[perm]``.

    Forward weights ``(C_out, C_in/g, *k)`` already are slabs. Transposed weights
    ``(C_in, C_out/g, *k)`` are regrouped so that output channel ``g*C_out/g + v``
    gets ``weight[g*C_in/g : (g+1)*C_in/g, v]``.
    """
    n = prod(geom.weight_shape)
    idx = np.arange(n, dtype=np.int64)
    if not geom.transposed:
        return idx
    g, cig, cog, k = geom.groups, geom.in_per_group, geom.out_per_group, geom.kernel_numel
    return idx.reshape(g, cig, cog, k).transpose(0, 2, 1, 3).reshape(-1)
