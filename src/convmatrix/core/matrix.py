"""``conv_matrix``: the exact sparse matrix of a convolution, with values.

Geometry first (validation, output shape, memory estimate), pattern second
(:mod:`convmatrix.core.pattern`), values third (a gather from the weight).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from .geometry import ConvGeometry, check_memory, format_bytes
from .pattern import axis_nnz, index_dtype_for, tap_pattern, matrix_entries

__all__ = ["conv_matrix", "conv_geometry", "as_weight_array", "as_bias", "weight_slabs", "FORMATS"]

FORMATS = ("csr", "csc", "coo", "dense", "torch")

BUILD_ALTERNATIVES = (
    "build it in row blocks (convmatrix.conv_matrix_blocks), use the matrix-free "
    "convmatrix.operator(...), or a chunked convmatrix.dask_matrix(...); pass max_bytes= to raise the limit"
)


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _torch_to_numpy(t, name: str) -> np.ndarray:
    """A torch tensor's values as NumPy: detached, on the CPU, dequantised, float16/bfloat16 widened."""
    import torch

    if t.device.type == "meta":
        raise ValueError(
            f"{name} is on the 'meta' device: it has a shape but no values; load or initialise the "
            "weights first (e.g. module.to_empty(device='cpu') and a state dict)"
        )
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()  # the real values the quantised tensor stands for
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu()
    if t.dtype.is_floating_point and t.element_size() < 4:  # float16, bfloat16
        t = t.float()
    if t.dtype.is_complex and t.element_size() < 8:  # complex32
        t = t.to(dtype=torch.complex64)
    return t.resolve_conj().resolve_neg().numpy()


def as_weight_array(weight: Any, name: str = "weight", *, finite: bool = False) -> np.ndarray:
    """A weight as a NumPy array with a dtype SciPy sparse supports: the one boundary for values.

    float32/float64/complex keep their dtype; float16 and bfloat16 become
    float32; integers become float64; non-native byte orders become native.
    torch tensors are detached, moved to the CPU and dequantised; meta tensors
    (no values) are a ValueError. Anything non-numeric is a TypeError. With
    ``finite=True``, NaN or infinite entries are a ValueError.

    >>> as_weight_array(np.ones((1, 1, 2), dtype=">f8")).dtype.byteorder
    '='
    """
    if _is_torch_tensor(weight):
        weight = _torch_to_numpy(weight, name)
    try:
        arr = np.asarray(weight)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor of numbers: {exc}") from None
    kind = arr.dtype.kind
    if kind not in "fciu":
        raise TypeError(
            f"{name} must hold numbers (float, complex or int), got dtype {arr.dtype} "
            f"({type(weight).__name__})"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if kind in "iu":
        arr = arr.astype(np.float64)
    elif kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    elif kind == "f" and arr.dtype.itemsize > 8:  # long double: SciPy sparse has no such type
        arr = arr.astype(np.float64)
    elif kind == "c" and arr.dtype.itemsize > 16:
        arr = arr.astype(np.complex128)
    if finite and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}")
    return arr


def as_bias(bias: Any, n_channels: int, name: str = "bias", dtype=None) -> np.ndarray:
    """A bias as a 1-D array of ``n_channels`` numbers (one per output channel), checked like a weight.

    >>> as_bias([1, 2], 2)
    array([1., 2.])
    """
    b = as_weight_array(bias, name)
    if b.shape != (n_channels,):
        raise ValueError(f"{name} must have shape ({n_channels},) (one per output channel), got {b.shape}")
    return b if dtype is None else b.astype(dtype, copy=False)


def conv_geometry(weight_shape, input_shape, **conv_kwargs) -> ConvGeometry:
    """:meth:`ConvGeometry.from_args` with a clear error for unknown keywords."""
    allowed = {"stride", "padding", "dilation", "groups", "padding_mode", "transposed", "output_padding"}
    unknown = set(conv_kwargs) - allowed
    if unknown:
        raise TypeError(f"unknown convolution argument(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return ConvGeometry.from_args(weight_shape, input_shape, **conv_kwargs)


def weight_slabs(weight, geom: ConvGeometry):
    """The weight as ``(out_channels, in_per_group*kernel_numel)`` slabs (NumPy or torch).

    A view for forward weights; transposed weights are regrouped (a copy).
    """
    if not geom.transposed:
        return weight.reshape(geom.out_channels, -1)
    g, cig, cog = geom.groups, geom.in_per_group, geom.out_per_group
    w = weight.reshape(g, cig, cog, -1)
    w = w.permute(0, 2, 1, 3) if _is_torch_tensor(w) else w.transpose(0, 2, 1, 3)
    return w.reshape(geom.out_channels, -1)


def estimate_bytes(geom: ConvGeometry, itemsize: int, fmt: str = "csr", nnz: int | None = None) -> int:
    """Bytes of the finished matrix in format ``fmt`` (exact for CSR)."""
    rows, cols = geom.matrix_shape
    if fmt == "dense":
        return rows * cols * itemsize
    nnz = axis_nnz(geom) if nnz is None else nnz
    idx = np.dtype(index_dtype_for(cols, nnz)).itemsize
    if fmt == "coo":
        return nnz * (itemsize + 2 * idx)
    return nnz * (itemsize + idx) + ((cols if fmt == "csc" else rows) + 1) * idx


def conv_matrix(
    weight,
    input_shape,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    transposed: bool = False,
    output_padding=0,
    format: str = "csr",
    max_bytes: int | None = None,
):
    r"""The matrix ``M`` of a convolution: ``flatten(conv(x)) == M @ flatten(x)``.

    Parameters
    ----------
    weight : ndarray or torch.Tensor
        Shape ``(C_out, C_in/groups, *k)``, or ``(C_in, C_out/groups, *k)`` when
        ``transposed``; 1, 2 or 3 spatial dimensions.
    input_shape : tuple of int
        ``(C_in, *spatial)``, without the batch axis.
    stride, padding, dilation, groups, padding_mode, output_padding
        As in ``torch.nn.ConvNd`` / ``ConvTransposeNd``. ``padding`` may be an
        int, one int per dimension, ``"same"`` or ``"valid"``.
    transposed : bool
        The matrix of ``conv_transpose{1,2,3}d``.
    format : {"csr", "csc", "coo", "dense", "torch"}
        ``"csr"`` (default) is a canonical ``scipy.sparse.csr_array``; ``"dense"``
        a NumPy array; ``"torch"`` a torch sparse CSR tensor whose values are
        differentiable in a torch ``weight``.
    max_bytes : int, optional
        Refuse (ValueError) a result larger than this; default: the memory available.

    Returns
    -------
    M : scipy.sparse.csr_array, shape ``(prod(output_shape), prod(input_shape))``
        Rows are output neurons, columns input neurons, both flattened in C
        order. For a 2-D forward layer with zero padding,
        ``M[u*H'*W' + v*W' + w, i*H*W + j*W + k] = K[u, i, (j - v*s - p)/d, ...]``;
        where padding folds several taps onto one input neuron the entry is
        their sum.

    Examples
    --------
    The classic worked example: a 2x1x2x2 kernel on a 1x3x3 input.

    >>> import numpy as np, convmatrix
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> M = convmatrix.conv_matrix(K, (1, 3, 3))
    >>> M.shape
    (8, 9)
    >>> M.toarray()[:2].astype(int)
    array([[1, 2, 0, 3, 4, 0, 0, 0, 0],
           [0, 1, 2, 0, 3, 4, 0, 0, 0]])
    >>> (M @ np.arange(1., 10.))[:4]
    array([37., 47., 67., 77.])
    """
    if not isinstance(format, str):
        raise TypeError(f"format must be one of {FORMATS}, got {format!r} ({type(format).__name__})")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    torch_weight = weight if (format == "torch" and _is_torch_tensor(weight)) else None
    w = as_weight_array(weight)
    geom = conv_geometry(
        w.shape, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, transposed=transposed, output_padding=output_padding,
    )
    check_matrix_memory(geom, w.dtype.itemsize, format, max_bytes)
    if format == "torch":
        return _torch_csr(torch_weight if torch_weight is not None else w, geom)
    M = build_csr(w, geom)
    if format == "csr":
        return M
    if format == "csc":
        return M.tocsc()
    if format == "coo":
        return M.tocoo()
    return M.toarray()


def check_matrix_memory(geom: ConvGeometry, itemsize: int, format: str, max_bytes: int | None = None) -> None:
    """ValueError (with alternatives) when the ``format`` matrix would not fit ``max_bytes``.

    The estimate comes from the geometry alone (:func:`matrix_entries`), so an
    absurd layer is refused before anything of its size is allocated.
    """
    nnz, exact = matrix_entries(geom)
    needed = estimate_bytes(geom, itemsize, format, nnz)
    if format == "dense":
        needed += estimate_bytes(geom, itemsize, "csr", nnz)
    check_memory(
        needed, max_bytes,
        f"the {format} matrix of shape {geom.matrix_shape} ({'' if exact else 'up to '}{nnz:,} stored entries)",
        BUILD_ALTERNATIVES,
    )


def build_csr(w: np.ndarray, geom: ConvGeometry, start: int = 0, stop: int | None = None,
              *, workers: int | None = None) -> sp.csr_array:
    """Rows ``[start, stop)`` of the matrix as a canonical ``csr_array`` (no validation)."""
    pattern = tap_pattern(geom)
    stop = geom.matrix_shape[0] if stop is None else stop
    data, indices, indptr = pattern.fill(weight_slabs(w, geom), start, stop, workers=workers)
    M = sp.csr_array((data, indices, indptr), shape=(stop - start, geom.matrix_shape[1]), copy=False)
    # The pattern is sorted and duplicate-free by construction; say so instead of re-checking.
    M.has_sorted_indices = True
    M.has_canonical_format = True
    return M


def torch_csr_structure(geom: ConvGeometry):
    """The weight-independent part of the torch CSR matrix of a geometry, built once.

    Returns ``(crow_indices, col_indices, taps, segments)``, torch int tensors on
    the CPU: stored entry ``e`` holds ``slabs.reshape(-1)[taps[k]]`` summed over the
    ``k`` with ``segments[k] == e`` (flat indices into :func:`weight_slabs`).
    ``segments`` is None when every entry holds one tap (``taps[e]``): all but
    reflect, replicate and circular padding that folds taps. Feed it to
    :func:`torch_csr_values`.

    Example
    -------
    Reflect padding folds taps 0 and 2 of a 3-tap kernel into column 1 of rows 0 and 2:

    >>> geom = conv_geometry((1, 1, 3), (1, 3), padding=1, padding_mode="reflect")
    >>> crow, col, taps, segments = torch_csr_structure(geom)
    >>> crow.tolist(), col.tolist()
    ([0, 2, 5, 7], [0, 1, 0, 1, 2, 1, 2])
    >>> taps.tolist(), segments.tolist()
    ([1, 0, 2, 0, 1, 2, 0, 2, 1], [0, 1, 1, 2, 3, 4, 5, 5, 6])
    """
    import torch

    pattern = tap_pattern(geom)
    n_slab = geom.out_channels * geom.in_per_group * geom.kernel_numel
    if pattern.folded:
        _, indices, indptr = pattern.fill(None)
        tap_ptr, taps = pattern.entry_taps()
        seg_dtype = index_dtype_for(len(taps), len(taps))
        segments = np.repeat(np.arange(len(tap_ptr) - 1, dtype=seg_dtype), np.diff(tap_ptr))
        segments = torch.from_numpy(segments)
    else:
        # One tap per entry: filling with every slab entry's own flat index gives
        # the taps and the structure in one pass.
        flat = np.arange(n_slab, dtype=index_dtype_for(n_slab, 0)).reshape(geom.out_channels, -1)
        taps, indices, indptr = pattern.fill(flat)
        segments = None
    # int32 taps while they fit: half the memory, and index_select takes them as they are.
    taps = torch.from_numpy(taps.astype(index_dtype_for(n_slab, 0), copy=False))
    return torch.from_numpy(indptr), torch.from_numpy(indices), taps, segments


def torch_csr_values(slabs, taps, segments, nnz: int):
    """The stored values of the torch CSR matrix: a gather (and fold) autograd follows.

    ``slabs`` is :func:`weight_slabs` of a torch weight; ``taps`` and ``segments``
    come from :func:`torch_csr_structure` (on the same device as ``slabs``);
    ``nnz`` is the number of stored entries.
    """
    # index_select, not slabs[taps]: about 3x faster on large index tensors (torch CPU).
    gathered = slabs.reshape(-1).index_select(0, taps)
    if segments is None:
        return gathered
    return gathered.new_zeros(nnz).index_add(0, segments, gathered)


def torch_csr_transpose(crow, col, n_cols: int):
    """The structure of ``M.T`` in CSR: ``(crow_t, col_t, perm)``, with ``values_t = values[perm]``.

    Built once (a counting sort by column, O(nnz), on the CPU) from the torch
    CSR structure ``(crow, col)`` of ``M``; the tensors come back on ``col``'s
    device, in ``col``'s index dtype.

    Example
    -------
    >>> import torch
    >>> crow, col = torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1])   # M = [[a, 0, b], [0, c, 0]]
    >>> [t.tolist() for t in torch_csr_transpose(crow, col, 3)]       # M.T = [[a, 0], [0, c], [b, 0]]
    [[0, 1, 2, 3], [0, 1, 0], [0, 2, 1]]
    """
    import torch

    indptr, indices = crow.cpu().numpy(), col.cpu().numpy()
    nnz = len(indices)
    # The entry numbers as values: SciPy's CSR -> CSC conversion carries them to their transposed place.
    numbers = np.arange(nnz, dtype=indices.dtype)
    csc = sp.csr_array((numbers, indices, indptr), shape=(len(indptr) - 1, n_cols)).tocsc()
    dtype = indices.dtype
    return tuple(
        torch.from_numpy(a.astype(dtype, copy=False)).to(col.device) for a in (csc.indptr, csc.indices, csc.data)
    )


def torch_csr(crow, col, values, shape):
    """A torch sparse CSR tensor from trusted parts (no invariant checks, no beta notice)."""
    import torch

    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def as_torch_weight(weight):
    """A weight as a torch tensor sparse CSR values can hold (float16/bfloat16 become float32)."""
    import torch

    if not _is_torch_tensor(weight):
        return torch.from_numpy(np.ascontiguousarray(weight))
    return weight.float() if weight.dtype in (torch.float16, torch.bfloat16) else weight


def _torch_csr(weight, geom: ConvGeometry):
    """A torch sparse CSR tensor; values gathered with torch ops (differentiable)."""
    weight = as_torch_weight(weight)
    crow, col, taps, segments = (
        None if t is None else t.to(weight.device) for t in torch_csr_structure(geom)
    )
    values = torch_csr_values(weight_slabs(weight, geom), taps, segments, len(col))
    return torch_csr(crow, col, values, geom.matrix_shape)


def describe(geom: ConvGeometry, itemsize: int = 4) -> str:
    """One line: shapes, stored entries, density and CSR bytes of a layer's matrix."""
    nnz = axis_nnz(geom)
    rows, cols = geom.matrix_shape
    density = nnz / max(rows * cols, 1)
    return (
        f"{geom.input_shape} -> {geom.output_shape}: M is {rows:,} x {cols:,}, {nnz:,} stored entries "
        f"(density {density:.3g}), {format_bytes(estimate_bytes(geom, itemsize, 'csr', nnz))} as CSR, "
        f"{format_bytes(rows * cols * itemsize)} dense"
    )
