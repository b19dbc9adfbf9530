"""Block-wise builds: any contiguous block of rows of a conv matrix, without the rest.

A layer whose matrix does not fit in memory can still be built, stored or
multiplied block by block: :func:`conv_matrix_rows` builds rows
``[start, stop)``, :func:`conv_matrix_channels` the rows of a range of output
channels, and :func:`conv_matrix_blocks` walks the whole matrix in row blocks
whose CSR bytes stay within a budget. Stacked, the blocks are exactly
:func:`convmatrix.conv_matrix`. Only NumPy and SciPy are needed.
"""

from __future__ import annotations

from math import prod
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from .geometry import ConvGeometry, as_range, check_memory, format_bytes, parse_bytes
from .matrix import BUILD_ALTERNATIVES, as_weight_array, build_csr, conv_geometry
from .pattern import index_dtype_for, row_counts

__all__ = ["conv_matrix_rows", "conv_matrix_channels", "conv_matrix_blocks"]


def _prepare(weight, input_shape, conv_kwargs) -> tuple[np.ndarray, ConvGeometry]:
    w = as_weight_array(weight)
    return w, conv_geometry(w.shape, input_shape, **conv_kwargs)


class _RowBytes:
    """CSR bytes of any row range, in O(1), from the per-row counts of one output channel.

    Every output channel repeats the same rows, so the stored entries of
    rows ``[0, r)`` are ``(r // P) * nnz_per_channel + ptr[r % P]`` (``P`` rows per
    channel): no per-row array of the whole matrix, nor the tap pattern's
    template, is ever made.
    """

    def __init__(self, w: np.ndarray, geom: ConvGeometry):
        positions = prod(geom.output_size)
        check_memory(16 * (positions + 1), None,
                     f"planning the row blocks (the entry counts of one output channel's {positions:,} rows)",
                     "use a smaller input, or a larger stride")
        counts = row_counts(geom)
        self.ptr = np.concatenate([[0], np.cumsum(counts)])
        self.n_positions = max(len(counts), 1)
        self.widest = int(counts.max(initial=0))
        self.rows, cols = geom.matrix_shape
        self.per_channel = int(self.ptr[-1])
        # The whole matrix's index dtype: never narrower than any block's, so the count is safe.
        self.idx = np.dtype(index_dtype_for(cols, self.per_channel * geom.out_channels)).itemsize
        self.entry = w.dtype.itemsize + self.idx

    def nnz_before(self, r: int) -> int:
        p = self.n_positions
        return (r // p) * self.per_channel + int(self.ptr[r % p])

    def block(self, start: int, stop: int) -> int:
        """Bytes of rows ``[start, stop)`` as CSR (data, indices and indptr)."""
        nnz = self.nnz_before(stop) - self.nnz_before(start)
        return nnz * self.entry + (stop - start + 1) * self.idx

    def largest_row(self) -> int:
        return self.widest * self.entry + 2 * self.idx

    def last_stop(self, start: int, budget: int) -> int:
        """The largest ``stop`` with ``block(start, stop) <= budget`` (bytes grow with stop)."""
        lo, hi = start + 1, self.rows  # block(start, start + 1) <= budget is known
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.block(start, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def conv_matrix_rows(weight, input_shape, start: int, stop: int, *, max_bytes: int | None = None,
                     **conv_kwargs) -> sp.csr_array:
    """Rows ``[start, stop)`` of :func:`convmatrix.conv_matrix`, built without the others.

    Takes the same convolution arguments as ``conv_matrix``. Row ``r`` is the
    output neuron ``r`` (C order of the output), so the result is
    ``conv_matrix(weight, input_shape, **conv_kwargs)[start:stop]``: a canonical
    ``csr_array`` of shape ``(stop - start, prod(input_shape))``, with int64
    indices where columns or stored entries pass ``2**31 - 1``.

    Example
    -------
    >>> import numpy as np
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> conv_matrix_rows(K, (1, 3, 3), 4, 6).toarray().astype(int)
    array([[5, 6, 0, 7, 8, 0, 0, 0, 0],
           [0, 5, 6, 0, 7, 8, 0, 0, 0]])
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    start, stop = as_range(("start", "stop"), start, stop, geom.matrix_shape[0], "number of rows")
    sizes = _RowBytes(w, geom)
    check_memory(sizes.block(start, stop), max_bytes, f"rows [{start}, {stop}) of the matrix", BUILD_ALTERNATIVES)
    return build_csr(w, geom, start, stop)


def conv_matrix_channels(weight, input_shape, c0: int, c1: int, *, max_bytes: int | None = None,
                         **conv_kwargs) -> sp.csr_array:
    """The rows of output channels ``[c0, c1)``: rows ``c0*P`` to ``c1*P``, ``P = prod(output spatial size)``.

    Example
    -------
    >>> import numpy as np
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> conv_matrix_channels(K, (1, 3, 3), 1, 2).shape
    (4, 9)
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    c0, c1 = as_range(("c0", "c1"), c0, c1, geom.out_channels, "number of output channels")
    p = int(np.prod(geom.output_size))
    return conv_matrix_rows(w, input_shape, c0 * p, c1 * p, max_bytes=max_bytes, **conv_kwargs)


def conv_matrix_blocks(weight, input_shape, *, block_bytes: int | str = "512MB",
                       **conv_kwargs) -> Iterator[tuple[int, int, sp.csr_array]]:
    """Walk the matrix in row blocks: yields ``(start, stop, M[start:stop])``.

    Each block is as many consecutive rows as fit in ``block_bytes`` (an int, or a
    string like ``"512MB"``, ``"1GB"``) counted as CSR: values, column indices and
    row pointers. The blocks cover every row once, in order, so
    ``scipy.sparse.vstack`` of them is ``conv_matrix(weight, input_shape, **conv_kwargs)``.
    Arguments are checked, and the budget against the largest row, before the
    first block is built.

    Example
    -------
    >>> import numpy as np
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> [(a, b, blk.nnz) for a, b, blk in conv_matrix_blocks(K, (1, 3, 3), block_bytes=220)]
    [(0, 4, 16), (4, 8, 16)]
    """
    w, geom = _prepare(weight, input_shape, conv_kwargs)
    budget, sizes = _budget(block_bytes, w, geom)
    return _blocks(w, geom, sizes, budget)


def _budget(block_bytes, w: np.ndarray, geom: ConvGeometry) -> tuple[int, _RowBytes]:
    """The budget in bytes (checked against the largest row) and the row sizes of the layer."""
    budget = parse_bytes(block_bytes, "block_bytes")
    sizes = _RowBytes(w, geom)
    if sizes.rows and budget < sizes.largest_row():
        raise ValueError(
            f"block_bytes={block_bytes!r} ({format_bytes(budget)}) is smaller than one row of the matrix: "
            f"the largest row needs {sizes.largest_row()} bytes as CSR"
        )
    return budget, sizes


def block_bounds(w: np.ndarray, geom: ConvGeometry, block_bytes) -> list[int]:
    """Row boundaries ``[0, r1, ..., rows]`` of the blocks :func:`conv_matrix_blocks` walks.

    Cheap (nothing is built); for planners that hand the blocks to others, like
    :func:`convmatrix.dask_matrix`.

    >>> from convmatrix import ConvGeometry
    >>> g = ConvGeometry.from_args((2, 1, 2, 2), (1, 3, 3))   # 8 rows of 4 entries
    >>> block_bounds(np.zeros(1), g, 200)   # three rows: 3*4*(8+4) + 4*4 = 160 bytes; four: 212
    [0, 3, 6, 8]
    """
    budget, sizes = _budget(block_bytes, w, geom)
    bounds = [0]
    while bounds[-1] < sizes.rows:
        bounds.append(sizes.last_stop(bounds[-1], budget))
    return bounds


def _blocks(w, geom, sizes: _RowBytes, budget: int):
    # A generator apart from the checks above, so that bad arguments raise at the call.
    start = 0
    while start < sizes.rows:
        stop = sizes.last_stop(start, budget)
        yield start, stop, build_csr(w, geom, start, stop)
        start = stop
