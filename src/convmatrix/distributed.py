"""Beyond one machine: a layer's matrix as a chunked Dask array, stored in Zarr.

The matrix of a big layer (a 64->64 3x3 layer at 224x224 stores 1.84e9 entries,
about 22 GB as CSR) need not fit in one memory. :func:`dask_matrix` cuts it into
row blocks of at most ``block_bytes`` (as CSR) and lets Dask build each block
where it is needed: the task graph holds only the weight and the geometry,
and every task builds its rows with the core (:func:`convmatrix.core.matrix.build_csr`)
and hands them on as a pydata ``sparse.GCXS`` array (dask's ``matmul`` works on
those chunks; on SciPy chunks it fails).

Storage layout of :func:`to_zarr` (Zarr format 3)::

    store.zarr/                 attrs["convmatrix"]: shape, dtype, row_bounds, metadata
      blocks/<i>/data           the CSR arrays of rows row_bounds[i]:row_bounds[i+1]
                                (Blosc lz4 + shuffle, chunks of 4M entries)
      blocks/<i>/indices
      blocks/<i>/indptr
                                attrs of blocks/<i>: {"complete": true, "nnz": ...},
                                written after the three arrays

A block counts as written only once its ``complete`` marker is there, so a build
that was interrupted mid-block redoes that block when resumed.

This module imports dask, sparse and zarr; it is reached lazily through
``convmatrix._LAZY`` so that ``import convmatrix`` does not need them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from .core.blocks import block_bounds
from .core.geometry import ConvGeometry, format_bytes
from .core.matrix import as_weight_array, build_csr, conv_geometry

try:
    import dask
    import dask.array as da
    import sparse
    import zarr
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"convmatrix's Dask/Zarr features need the 'dask' extra ({exc}); "
        "install it with: pip install 'convmatrix[dask]'"
    ) from exc

__all__ = [
    "dask_matrix",
    "to_zarr",
    "from_zarr",
    "store_info",
    "matvec_store",
    "evaluate_stored",
    "dask_spectral_norm",
    "connect",
    "layer_metadata",
]

FORMAT_VERSION = 1
# Elements per Zarr chunk of the stored CSR arrays: 4M (16-32 MB) keeps each
# compressed write small next to a block while giving few files per block.
ZARR_CHUNK = 1 << 22


# --------------------------------------------------------- chunks and builders
def _gcxs(m: sp.csr_array) -> "sparse.GCXS":
    """A canonical SciPy CSR block as a GCXS array sharing its buffers (no densifying, no copy)."""
    return sparse.GCXS((m.data, m.indices, m.indptr), shape=m.shape, compressed_axes=(0,))


def _as_csr(chunk) -> sp.csr_array:
    """Any chunk (GCXS, COO, SciPy sparse, ndarray) as a canonical SciPy CSR array."""
    if isinstance(chunk, sparse.GCXS) and chunk.compressed_axes == (0,) and chunk.ndim == 2:
        m = sp.csr_array((chunk.data, chunk.indices, chunk.indptr), shape=chunk.shape, copy=False)
    elif isinstance(chunk, sparse.SparseArray):
        m = sp.csr_array(chunk.to_scipy_sparse())
    else:
        m = sp.csr_array(chunk)
    m.sum_duplicates()
    return m


def _meta(dtype) -> "sparse.GCXS":
    """An empty chunk that tells Dask the chunk type; int32 indices like most blocks, so the
    numba-compiled validation of sparse is compiled once for both (from_numpy would compile more)."""
    empty = np.zeros(1, dtype=np.int32)
    return sparse.GCXS((np.zeros(0, dtype=dtype), empty[:0], empty), shape=(0, 0), compressed_axes=(0,))


def _build_block(w: np.ndarray, geom: ConvGeometry, block_info=None) -> "sparse.GCXS":
    """Dask task: rows ``array-location`` of the layer's matrix, built here, on the worker."""
    start, stop = block_info[None]["array-location"][0]
    # One thread per block: Dask already runs blocks in parallel.
    return _gcxs(build_csr(w, geom, start, stop, workers=1))


def dask_matrix(weight, input_shape, *, block_bytes="512MB", **conv_kwargs) -> "da.Array":
    """The layer's matrix as a Dask array of row blocks, each a ``sparse.GCXS`` chunk.

    Parameters
    ----------
    weight, input_shape, **conv_kwargs
        As for :func:`convmatrix.conv_matrix` (``stride``, ``padding``, ``dilation``,
        ``groups``, ``padding_mode``, ``transposed``, ``output_padding``).
    block_bytes : int or str
        Budget of one block as CSR, like ``"512MB"``, ``"1GB"`` or a number of bytes.
        ValueError when it is smaller than one row.

    Returns
    -------
    D : dask.array.Array, shape ``(prod(output_shape), prod(input_shape))``
        Equal to ``conv_matrix(weight, input_shape, **conv_kwargs)``, chunked along
        rows only. Nothing is built until it is computed; every block is built by
        the thread or worker that computes it (the graph holds only the weight and
        the geometry). ``(D @ x).compute()`` and ``(D.T @ y).compute()`` give NumPy
        arrays on the local scheduler or a ``dask.distributed`` cluster.

    Examples
    --------
    >>> import numpy as np, convmatrix
    >>> K = np.arange(1., 9.).reshape(2, 1, 2, 2)
    >>> D = convmatrix.dask_matrix(K, (1, 3, 3), block_bytes=200)
    >>> D.shape, D.chunks[0]
    ((8, 9), (3, 3, 2))
    >>> (D @ np.arange(1., 10.)).compute()[:4]
    array([37., 47., 67., 77.])
    """
    w = as_weight_array(weight)
    geom = conv_geometry(w.shape, input_shape, **conv_kwargs)
    bounds = block_bounds(w, geom, block_bytes)  # the planner of conv_matrix_blocks: nothing built here
    w_key = dask.delayed(np.ascontiguousarray(w), pure=True)  # the weight: one key, shared by all tasks
    return da.map_blocks(
        _build_block, w_key, geom,
        chunks=(tuple(np.diff(bounds).tolist()), (geom.matrix_shape[1],)),
        dtype=w.dtype, meta=_meta(w.dtype), name=f"convmatrix-block-{dask.base.tokenize(w, geom, bounds)}",
    )


def layer_metadata(weight, input_shape, **conv_kwargs) -> dict:
    """A JSON-ready description of a layer's geometry, to store beside its matrix.

    >>> layer_metadata(np.zeros((2, 1, 2, 2)), (1, 3, 3))["output_shape"]
    [2, 2, 2]
    """
    w = as_weight_array(weight)
    geom = conv_geometry(w.shape, input_shape, **conv_kwargs)
    d = asdict(geom)
    d.update(weight_shape=geom.weight_shape, input_shape=geom.input_shape, output_shape=geom.output_shape,
             matrix_shape=geom.matrix_shape, weight_dtype=str(w.dtype))
    return json.loads(json.dumps(d))  # tuples -> lists, checks it is JSON


# ------------------------------------------------------------------- storage
@dataclass(frozen=True)
class StoreInfo:
    """What a store holds: shape, dtype, blocks, how many are complete, entries and bytes."""

    path: str
    shape: tuple[int, int]
    dtype: str
    row_bounds: tuple[int, ...]
    complete: tuple[int, ...]  # indices of the blocks whose completion marker exists
    nnz: int  # stored entries of the complete blocks
    csr_bytes: int  # their size as CSR in memory
    disk_bytes: int  # bytes of the store's files (local stores)
    metadata: dict

    @property
    def n_blocks(self) -> int:
        return len(self.row_bounds) - 1

    @property
    def is_complete(self) -> bool:
        return len(self.complete) == self.n_blocks

    def summary(self) -> str:
        rows, cols = self.shape
        return (
            f"{self.path}: {rows:,} x {cols:,} {self.dtype} matrix, {self.nnz:,} stored entries, "
            f"{len(self.complete)}/{self.n_blocks} blocks, {format_bytes(self.csr_bytes)} as CSR, "
            f"{format_bytes(self.disk_bytes)} on disk"
        )


def _store_path(path) -> str:
    """A store folder as an absolute path: workers may run in other folders.

    Stores live on a file system (local, or shared by the cluster's machines);
    URLs of object stores are refused rather than half supported.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike folder, got {type(path).__name__}")
    path = os.fspath(path)
    if "://" in path:
        raise ValueError(f"path must be a folder on a (shared) file system, got the URL {path!r}")
    return os.path.abspath(path)


def _root_attrs(path: str) -> dict:
    try:
        root = zarr.open_group(path, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        raise ValueError(f"path {path!r} is not a Zarr store written by convmatrix.to_zarr") from None
    attrs = root.attrs.get("convmatrix")
    if not isinstance(attrs, dict) or attrs.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"path {path!r} is a Zarr store but not one written by convmatrix.to_zarr")
    return attrs


def _block_marker(path: str, i: int) -> dict | None:
    """The completion marker of block i, or None when the block is missing or unfinished."""
    try:
        g = zarr.open_group(path, path=f"blocks/{i}", mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    attrs = dict(g.attrs)
    return attrs if attrs.get("complete") is True else None


def _disk_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def store_info(path) -> StoreInfo:
    """Shape, blocks (and which are complete), stored entries and bytes of a store."""
    path = _store_path(path)
    attrs = _root_attrs(path)
    bounds = tuple(attrs["row_bounds"])
    done, nnz, nbytes = [], 0, 0
    for i in range(len(bounds) - 1):
        marker = _block_marker(path, i)
        if marker is not None:
            done.append(i)
            nnz += marker["nnz"]
            nbytes += marker["csr_bytes"]
    return StoreInfo(path, tuple(attrs["shape"]), attrs["dtype"], bounds, tuple(done), nnz, nbytes,
                     _disk_bytes(path), attrs.get("metadata", {}))


def _codec():
    """Blosc lz4 with byte shuffle: on conv matrices (the kernel's values repeat, indices are
    regular) it compresses 128 MB of CSR to 4.8 MB at 3x zstd's speed, as fast as no compression."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _write_block(chunk, path: str, blocks: tuple[int, ...], block_info=None) -> np.ndarray:
    """Dask task: write one block's CSR arrays, then its completion marker; return its nnz."""
    i = blocks[block_info[0]["chunk-location"][0]]
    m = _as_csr(chunk)
    parent = zarr.open_group(path, path="blocks", mode="r+")
    g = parent.create_group(str(i), overwrite=True)  # drops what an interrupted write left
    for name in ("data", "indices", "indptr"):
        arr = getattr(m, name)
        g.create_array(name, data=arr, chunks=(max(1, min(len(arr), ZARR_CHUNK)),), compressors=[_codec()])
    csr_bytes = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    g.attrs.update({"complete": True, "nnz": int(m.nnz), "csr_bytes": int(csr_bytes)})
    return np.array([[m.nnz]], dtype=np.int64)


def _check_rows_only(D) -> None:
    if not isinstance(D, da.Array) or D.ndim != 2:
        raise TypeError(f"D must be a 2-D dask.array.Array (from convmatrix.dask_matrix), got {type(D).__name__}")
    if len(D.chunks[1]) != 1:
        raise ValueError(
            f"D must be chunked along rows only (one column chunk), got column chunks {D.chunks[1]}; "
            "rechunk it with D.rechunk({1: -1})"
        )


def _prepare_store(path: str, D, overwrite: bool, resume: bool, metadata) -> list[int]:
    """Create, reuse or refuse the store at ``path``; return the blocks still to write."""
    bounds = [0, *np.cumsum(D.chunks[0]).tolist()]
    attrs = {
        "format_version": FORMAT_VERSION, "shape": list(D.shape), "dtype": str(D.dtype),
        "row_bounds": bounds, "metadata": {} if metadata is None else metadata,
    }
    try:
        json.dumps(attrs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be a JSON-serialisable dict: {exc}") from None
    if os.path.exists(path):
        if not overwrite and not resume:
            raise ValueError(
                f"the store {path!r} exists; pass overwrite=True to start again or resume=True to "
                "write only its missing blocks (CLI: --overwrite / --resume)"
            )
        if resume:
            old = _root_attrs(path)
            if old["shape"] != attrs["shape"] or old["row_bounds"] != bounds or old["dtype"] != attrs["dtype"]:
                raise ValueError(
                    f"resume=True needs the same matrix and blocks as the store {path!r} holds: it has "
                    f"shape {tuple(old['shape'])}, dtype {old['dtype']}, {len(old['row_bounds']) - 1} blocks; "
                    f"D has shape {D.shape}, dtype {D.dtype}, {len(bounds) - 1} blocks (same block_bytes?)"
                )
            return [i for i in range(len(bounds) - 1) if _block_marker(path, i) is None]
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "zarr.json")):
            raise ValueError(f"overwrite=True refuses to delete {path!r}: it is not a Zarr store; remove it yourself")
        shutil.rmtree(path)
    root = zarr.open_group(path, mode="w")
    root.attrs["convmatrix"] = attrs
    root.create_group("blocks")
    return list(range(len(bounds) - 1))


def to_zarr(D, path, *, overwrite: bool = False, resume: bool = False, metadata: dict | None = None,
            compute: bool = True):
    """Write a row-chunked matrix to a Zarr store, one Dask task per block, in parallel.

    Parameters
    ----------
    D : dask.array.Array
        Chunked along rows only (as :func:`dask_matrix` and :func:`from_zarr` give);
        chunks may be GCXS, COO, SciPy sparse or dense.
    path : str or os.PathLike
        The store (a folder); created.
    overwrite : bool
        Delete an existing store first.
    resume : bool
        Keep an existing store of the same shape, dtype and blocks and write only the
        blocks whose completion marker is missing (interrupted blocks are redone).
    metadata : dict, optional
        JSON-serialisable, stored beside the blocks (e.g. :func:`layer_metadata`).
    compute : bool
        ``False``: prepare the store and return the lazy write (a dask array of the
        entries written per block) for the caller to compute, e.g. with a progress bar.

    Returns
    -------
    StoreInfo of the finished store (or the lazy write when ``compute=False``).
    Each task builds or reads its own block and writes it, so only block numbers
    and entry counts travel between tasks and the client.

    Examples
    --------
    >>> import numpy as np, convmatrix, tempfile, os
    >>> D = convmatrix.dask_matrix(np.ones((2, 1, 2, 2)), (1, 3, 3), block_bytes=200)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "m.zarr")
    >>> convmatrix.to_zarr(D, path).nnz
    32
    >>> convmatrix.from_zarr(path).chunks == D.chunks
    True
    >>> tmp.cleanup()
    """
    _check_rows_only(D)
    if overwrite and resume:
        raise ValueError("pass at most one of overwrite=True and resume=True")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    path = _store_path(path)
    todo = _prepare_store(path, D, overwrite, resume, metadata)
    if not todo:
        write = da.zeros((0, 1), dtype=np.int64, chunks=(0, 1))
    else:
        # All blocks: map over D itself, so that Dask fuses each block's build and write into one task.
        parts = D if len(todo) == D.numblocks[0] else D.blocks[todo]
        write = da.map_blocks(
            _write_block, parts, path, tuple(todo), chunks=((1,) * len(todo), (1,)), dtype=np.int64,
            meta=np.empty((0, 0), dtype=np.int64),
        )
    if not compute:
        return write
    write.compute()
    return store_info(path)


def _read_csr(path: str, i: int, shape: tuple[int, int]) -> sp.csr_array:
    """Block i of a store as a SciPy CSR array (ValueError when it is unfinished)."""
    g = zarr.open_group(path, path=f"blocks/{i}", mode="r")
    if g.attrs.get("complete") is not True:
        raise ValueError(f"block {i} of the store {path!r} is missing or incomplete; finish it with resume=True")
    data, indices, indptr = (g[name][...] for name in ("data", "indices", "indptr"))
    return sp.csr_array((data, indices, indptr), shape=shape, copy=False)


def _read_block(path: str, bounds: tuple[int, ...], n_cols: int, block_info=None) -> "sparse.GCXS":
    """Dask task: block i of a store as a GCXS chunk."""
    i = block_info[None]["chunk-location"][0]
    return _gcxs(_read_csr(path, i, (bounds[i + 1] - bounds[i], n_cols)))


def from_zarr(path) -> "da.Array":
    """A store written by :func:`to_zarr`, read back lazily as a row-chunked Dask array of GCXS chunks.

    Each task reads one block. ValueError when ``path`` is not such a store or
    some blocks are unfinished (resume the build first).
    """
    path = _store_path(path)
    info = store_info(path)
    if not info.is_complete:
        missing = sorted(set(range(info.n_blocks)) - set(info.complete))
        raise ValueError(
            f"the store {path!r} is incomplete: blocks {missing[:10]}{'...' if len(missing) > 10 else ''} "
            f"of {info.n_blocks} are missing; finish it with to_zarr(..., resume=True) or convmatrix build --resume"
        )
    dtype = np.dtype(info.dtype)
    return da.map_blocks(
        _read_block, path, info.row_bounds, info.shape[1],
        chunks=(tuple(np.diff(info.row_bounds).tolist()), (info.shape[1],)),
        dtype=dtype, meta=_meta(dtype), name=f"convmatrix-zarr-{dask.base.tokenize(os.path.abspath(path), info)}",
    )


def matvec_store(path, x, *, transpose: bool = False) -> np.ndarray:
    """``M @ x`` (or ``M.T @ x``) for a stored matrix, reading one block at a time.

    Memory stays near one block plus the vectors; no Dask scheduler is involved.
    ``x`` is a vector or a matrix (one column per vector).

    >>> import numpy as np, convmatrix, tempfile, os
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "m.zarr")
    >>> _ = convmatrix.to_zarr(convmatrix.dask_matrix(np.ones((1, 1, 2)), (1, 4)), path)
    >>> matvec_store(path, np.arange(4.))
    array([1., 3., 5.])
    >>> tmp.cleanup()
    """
    path = _store_path(path)
    info = store_info(path)
    x = np.asarray(x)
    rows, cols = info.shape
    need = rows if transpose else cols
    if x.ndim not in (1, 2) or x.shape[0] != need:
        raise ValueError(
            f"x must have {need} rows ({'M.T' if transpose else 'M'} is "
            f"{(cols, rows) if transpose else (rows, cols)}), got shape {x.shape}"
        )
    out_dtype = np.result_type(np.dtype(info.dtype), x.dtype)
    out = np.zeros(((cols if transpose else rows), *x.shape[1:]), dtype=out_dtype)
    for i in range(info.n_blocks):
        a, b = info.row_bounds[i], info.row_bounds[i + 1]
        block = _read_csr(path, i, (b - a, cols))
        if transpose:
            out += block.T @ x[a:b]
        else:
            out[a:b] = block @ x
    return out


_ACTIVATIONS = {
    "relu": lambda v: np.maximum(v, 0),
    "identity": lambda v: v,
}


def evaluate_stored(paths, x, *, biases=None, activation: str = "relu") -> np.ndarray:
    """A stored network ``x -> f(M1 x + b1) -> ... -> Mn (...) + bn``, one block in memory at a time.

    ``paths`` are stores written by :func:`to_zarr`, in order; ``biases`` one vector
    (or None) per layer; ``activation`` (``"relu"`` or ``"identity"``) is applied
    between layers, not after the last. ``x`` is a flat input or a matrix of
    inputs, one per column.

    >>> import numpy as np, convmatrix, tempfile, os
    >>> tmp = tempfile.TemporaryDirectory()
    >>> a, b = os.path.join(tmp.name, "a.zarr"), os.path.join(tmp.name, "b.zarr")
    >>> _ = convmatrix.to_zarr(convmatrix.dask_matrix(np.ones((1, 1, 2)), (1, 4)), a)    # 4 -> 3
    >>> _ = convmatrix.to_zarr(convmatrix.dask_matrix(-np.ones((1, 1, 2)), (1, 3)), b)   # 3 -> 2
    >>> evaluate_stored([a, b], np.array([1., -3., 1., 1.]), biases=[None, np.ones(2)])
    array([ 1., -1.])
    >>> tmp.cleanup()
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("paths must name at least one store")
    biases = [None] * len(paths) if biases is None else list(biases)
    if len(biases) != len(paths):
        raise ValueError(f"biases must have one entry (a vector or None) per store: {len(paths)} stores, "
                         f"{len(biases)} biases")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    h = np.asarray(x)
    for k, (path, b) in enumerate(zip(paths, biases)):
        h = matvec_store(path, h)
        if b is not None:
            b = np.asarray(b)
            if b.shape != (h.shape[0],):
                raise ValueError(f"biases[{k}] must have shape ({h.shape[0]},) to match the store {path!r}, "
                                 f"got {b.shape}")
            h = h + (b if h.ndim == 1 else b[:, None])
        if k < len(paths) - 1:
            h = _ACTIVATIONS[activation](h)
    return h


# ------------------------------------------------------------ linear algebra
def dask_spectral_norm(D, *, tol: float = 1e-12, maxiter: int | None = None) -> float:
    """The largest singular value of a chunked matrix, by Lanczos (ARPACK) on its Gram matrix.

    Every iteration computes ``D^H (D v)`` (or ``D (D^H v)``, whichever is smaller)
    through Dask, so blocks are rebuilt or re-read each time; ``D.persist()`` first
    when the blocks fit in the cluster's memory.

    >>> import numpy as np, convmatrix
    >>> D = convmatrix.dask_matrix(np.ones((1, 1, 2)), (1, 4), block_bytes=100)
    >>> round(dask_spectral_norm(D), 6)  # the 3x4 matrix of [1, 1]: 2 cos(pi/8)
    1.847759
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    _check_rows_only(D)
    rows, cols = D.shape
    DH = D.conj().T if np.iscomplexobj(np.empty(0, D.dtype)) else D.T
    if min(rows, cols) == 0:
        return 0.0
    first, second, n = (D, DH, cols) if cols <= rows else (DH, D, rows)

    def gram(v):
        return np.asarray((second @ (first @ v)).compute()).ravel()

    if n <= 2:  # ARPACK needs n > k + 1: form the tiny Gram matrix instead
        G = np.column_stack([gram(e) for e in np.eye(n, dtype=D.dtype)])
        return float(np.sqrt(max(np.linalg.eigvalsh(G).max(), 0.0)))
    op = LinearOperator((n, n), matvec=gram, dtype=D.dtype)
    v0 = np.random.default_rng(0).standard_normal(n).astype(D.dtype)
    lam = eigsh(op, k=1, which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
    return float(np.sqrt(max(float(np.real(lam[0])), 0.0)))


# -------------------------------------------------------------- schedulers
def connect(address: str, *, timeout: float = 5.0):
    """A ``dask.distributed.Client`` for the scheduler at ``address``, or a clear ValueError.

    Fails within about ``timeout`` seconds when nothing answers there.
    """
    from distributed import Client

    if not isinstance(address, str) or not address:
        raise TypeError(f"scheduler must be an address string like 'tcp://10.0.0.5:8786', got {address!r}")
    t0 = time.monotonic()
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(
            f"scheduler: no dask scheduler answered at {address!r} within {timeout:g} s "
            f"({time.monotonic() - t0:.1f} s spent): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
