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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from math import prod

import numpy as np

from .geometry import ConvGeometry

__all__ = ["axis_taps", "TapPattern", "tap_pattern", "index_dtype_for", "row_counts"]

INT32_MAX = np.iinfo(np.int32).max


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
    o = np.repeat(np.arange(n_out, dtype=np.int64), k)
    t = np.tile(np.arange(k, dtype=np.int64), n_out)
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
    order = np.lexsort((t, i, o))
    return o[order], i[order], t[order]


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
    """Exact number of stored entries of the matrix, from the 1-D patterns alone (cheap)."""
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


class TapPattern:
    """The tap pattern of one geometry: a template for one output channel.

    Use :func:`tap_pattern` (cached) rather than the constructor.
    """

    def __init__(self, geom: ConvGeometry):
        self.geometry = geom
        cg = geom.in_per_group
        channels = _Ragged(
            ptr=np.array([0, cg], dtype=np.int64),
            col=np.arange(cg, dtype=np.int64),
            tap_ptr=np.arange(cg + 1, dtype=np.int64),
            tap=np.arange(cg, dtype=np.int64),
            n_cols=1,
            n_taps=1,
        )
        tmpl = channels
        for ax in range(geom.ndim):
            tmpl = tmpl * _axis_ragged(geom, ax)
        self.n_positions = prod(geom.output_size)  # rows per output channel
        self.group_cols = cg * prod(geom.input_size)  # column offset between groups
        self.ptr = tmpl.ptr
        self.col = tmpl.col
        self.tap_ptr = tmpl.tap_ptr
        self.tap = tmpl.tap
        self.row_counts = np.diff(self.ptr)
        self.folded = len(self.tap) > len(self.col)
        self.nnz = geom.out_channels * len(self.col)
        self.shape = geom.matrix_shape
        self._cols_cache: dict = {}

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

    def indptr(self, start: int, stop: int, dtype) -> np.ndarray:
        """CSR row pointer of rows ``[start, stop)``."""
        rows = np.arange(start, stop, dtype=np.int64) % max(self.n_positions, 1)
        out = np.zeros(stop - start + 1, dtype=dtype)
        np.cumsum(self.row_counts[rows], out=out[1:])
        return out

    def nnz_rows(self, start: int, stop: int) -> int:
        start, stop = self._check_rows(start, stop)
        return sum(int(self.ptr[ob] - self.ptr[oa]) for _, oa, ob in self._segments(start, stop))

    # --------------------------------------------------------------------- fill
    def fill(self, slabs: np.ndarray | None, start: int = 0, stop: int | None = None, *, workers: int | None = None):
        """Build rows ``[start, stop)`` of the matrix as CSR arrays.

        ``slabs`` has shape ``(out_channels, in_per_group * kernel_numel)``: row u
        is the weight that output channel u applies to its group's input.
        Returns ``(data, indices, indptr)`` with int32 indices while they fit
        (``data`` is None when ``slabs`` is None: the structure only).
        """
        stop = self.shape[0] if stop is None else stop
        start, stop = self._check_rows(start, stop)
        nnz = self.nnz_rows(start, stop)
        idx_dtype = index_dtype_for(self.shape[1], nnz)
        indptr = self.indptr(start, stop, idx_dtype)
        indices = np.empty(nnz, dtype=idx_dtype)
        data = None if slabs is None else np.empty(nnz, dtype=slabs.dtype)
        cols = self._cols(idx_dtype)
        cout_g = self.geometry.out_per_group
        p = self.n_positions

        def one(seg):
            u, oa, ob = seg
            ea, eb = int(self.ptr[oa]), int(self.ptr[ob])
            base = int(indptr[u * p + oa - start])
            dst = slice(base, base + eb - ea)
            np.add(cols[ea:eb], (u // cout_g) * self.group_cols, out=indices[dst], dtype=idx_dtype)
            if data is None:
                return
            if not self.folded:
                np.take(slabs[u], self.tap[ea:eb], out=data[dst])
            elif eb > ea:
                ta, tb = int(self.tap_ptr[ea]), int(self.tap_ptr[eb])
                vals = np.take(slabs[u], self.tap[ta:tb])
                np.add.reduceat(vals, self.tap_ptr[ea:eb] - ta, out=data[dst])

        segments = list(self._segments(start, stop))
        workers = _default_workers(nnz) if workers is None else workers
        if workers > 1 and len(segments) > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, segments))
        else:
            for seg in segments:
                one(seg)
        return data, indices, indptr

    def entry_taps(self, start: int = 0, stop: int | None = None):
        """For every stored entry of rows ``[start, stop)``, the taps summed into it.

        Returns ``(tap_ptr, taps)``: entry e is the sum of ``slabs.ravel()[taps[tap_ptr[e]:tap_ptr[e+1]]]``
        (flat indices into the ``(out_channels, in_per_group*kernel_numel)`` slab array).
        """
        stop = self.shape[0] if stop is None else stop
        start, stop = self._check_rows(start, stop)
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
    if nnz < 4_000_000:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@lru_cache(maxsize=16)
def tap_pattern(geom: ConvGeometry) -> TapPattern:
    """The (cached) tap pattern of a geometry."""
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
