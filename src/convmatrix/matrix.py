"""``conv_matrix``: the exact sparse matrix of a convolution, with values.

Geometry first (validation, output shape, memory estimate), pattern second
(:mod:`convmatrix.pattern`), values third (a gather from the weight).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from .geometry import ConvGeometry, check_memory, format_bytes
from .pattern import axis_nnz, index_dtype_for, tap_pattern

__all__ = ["conv_matrix", "conv_geometry", "as_weight_array", "weight_slabs", "FORMATS"]

FORMATS = ("csr", "csc", "coo", "dense", "torch")

_ALTERNATIVES = (
    "build it in row blocks (convmatrix.conv_matrix_blocks), use the matrix-free "
    "convmatrix.operator(...), or a chunked convmatrix.dask_matrix(...); pass max_bytes= to raise the limit"
)


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def as_weight_array(weight: Any, name: str = "weight") -> np.ndarray:
    """A weight as a NumPy array with a dtype SciPy sparse supports.

    float32/float64/complex keep their dtype; float16 and bfloat16 become
    float32; integers become float64. Anything non-numeric is a TypeError.
    """
    if _is_torch_tensor(weight):
        t = weight.detach().cpu()
        if t.dtype.is_floating_point and t.element_size() < 4:  # float16, bfloat16
            t = t.float()
        if t.dtype.is_complex and t.element_size() < 8:  # complex32
            t = t.to(dtype=__import__("torch").complex64)
        weight = t.resolve_conj().resolve_neg().numpy()
    try:
        arr = np.asarray(weight)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor of numbers: {exc}") from None
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(np.float32) if arr.dtype.itemsize < 4 else arr
    if kind == "c":
        return arr
    if kind in "iu":
        return arr.astype(np.float64)
    raise TypeError(
        f"{name} must hold numbers (float, complex or int), got dtype {arr.dtype} "
        f"({type(weight).__name__})"
    )


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
    The worked example of the seed question: a 2x1x2x2 kernel on a 1x3x3 input.

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
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    torch_weight = weight if (format == "torch" and _is_torch_tensor(weight)) else None
    w = as_weight_array(weight)
    geom = conv_geometry(
        w.shape, input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, transposed=transposed, output_padding=output_padding,
    )
    nnz = axis_nnz(geom)
    needed = estimate_bytes(geom, w.dtype.itemsize, format, nnz)
    if format == "dense":
        needed += estimate_bytes(geom, w.dtype.itemsize, "csr", nnz)
    check_memory(
        needed, max_bytes,
        f"the {format} matrix of shape {geom.matrix_shape} ({nnz:,} stored entries)", _ALTERNATIVES,
    )
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


def _torch_csr(weight, geom: ConvGeometry):
    """A torch sparse CSR tensor; values gathered with torch ops (differentiable)."""
    import torch

    if not _is_torch_tensor(weight):
        weight = torch.from_numpy(np.ascontiguousarray(weight))
    elif weight.dtype in (torch.float16, torch.bfloat16):
        weight = weight.float()
    pattern = tap_pattern(geom)
    _, indices, indptr = pattern.fill(None)
    tap_ptr, taps = pattern.entry_taps()
    slabs = weight_slabs(weight, geom).reshape(-1)
    gathered = slabs[torch.from_numpy(taps)]
    if pattern.folded:
        entry = np.repeat(np.arange(len(tap_ptr) - 1), np.diff(tap_ptr))
        values = torch.zeros(len(tap_ptr) - 1, dtype=slabs.dtype).index_add(0, torch.from_numpy(entry), gathered)
    else:
        values = gathered
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice, once per call
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr), torch.from_numpy(indices), values, size=geom.matrix_shape,
            check_invariants=False,
        )


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
