"""Beyond one machine: a layer's matrix as a chunked Dask array, stored in Zarr.

The matrix of a big layer (a 64->64 3x3 layer at 224x224 stores 1.84e9 entries,
about 22 GB as CSR) need not fit in one memory. :func:`dask_matrix` cuts it into
row blocks of at most ``block_bytes`` (as CSR) and lets Dask build each block
where it is needed: the task graph holds only the weight and the geometry,
and every task builds its rows with the core (:func:`convmatrix.core.matrix.build_csr`)
and hands them on as a pydata ``sparse.GCXS`` array (dask's ``matmul`` works on
those chunks; on SciPy chunks it fails).

Storage layout of :func:`to_zarr` (a folder; the blocks in Zarr format 3)::

    store.zarr/
      convmatrix.json           the manifest: shape, dtype, row_bounds, source (for a layer:
                                the weight's sha256, its shape and dtype, the geometry),
                                the fingerprint (a hash of all these) and your metadata
      blocks/<i>/data           the CSR arrays of rows row_bounds[i]:row_bounds[i+1]
      blocks/<i>/indices        (Blosc lz4 + shuffle, chunks of 4M entries)
      blocks/<i>/indptr
      done/<i>.json             block i's marker: rows, nnz, CRC-32 of each array, fingerprint

The store cannot lie under a kill at any instant. Every JSON file is written whole
(a temporary file renamed over it). The manifest is written before anything else and
deleted after everything else, so even a half-created or half-deleted store is known
as one (``overwrite=True`` deletes it; a folder that is not a store is never deleted).
A block's marker is written last, so a block counts as finished only when its arrays
are all there; every read checks the block against its marker (entry count and
checksums), so a changed or deleted chunk file is reported by block number instead of
being read as zeros, and ``resume=True`` writes such blocks again. A resume with a
matrix of another fingerprint (another weight, geometry, dtype or blocks) is refused,
naming what differs.

This module imports dask, sparse and zarr; it is reached lazily through
``convmatrix._LAZY`` so that ``import convmatrix`` does not need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import weakref
import zlib
from dataclasses import asdict, dataclass, field, replace
from math import prod

import numpy as np
import scipy.sparse as sp

from ._optional import require
from ._progress import progress_bar
from .analysis.spectral import LANCZOS_TOL
from .core.blocks import block_bounds
from .core.geometry import ConvGeometry, format_bytes
from .core.matrix import as_weight_array, build_csr, conv_geometry
from .core.operator import ConvOperator
from .core.threads import single_threaded

dask = require("dask", extra="dask", feature="Dask and Zarr support")
da = require("dask.array", extra="dask", feature="Dask and Zarr support")
sparse = require("sparse", extra="dask", feature="Dask and Zarr support")
zarr = require("zarr", extra="dask", feature="Dask and Zarr support")

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

FORMAT_VERSION = 2  # 2: manifest file with a fingerprint, one marker file per block with checksums
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
    source = _layer_source(w, geom)
    w_key = dask.delayed(np.ascontiguousarray(w), pure=True)  # the weight: one key, shared by all tasks
    D = da.map_blocks(
        _build_block, w_key, geom,
        chunks=(tuple(np.diff(bounds).tolist()), (geom.matrix_shape[1],)),
        dtype=w.dtype, meta=_meta(w.dtype), name=f"convmatrix-block-{_digest([source, list(bounds)])[:32]}",
    )
    _SOURCES[D.name] = source  # what to_zarr records, and checks on resume
    D._convmatrix_layer = _LAYERS[D.name] = _Layer(w, geom)  # for dask_spectral_norm, as long as D lives
    return D


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


# -------------------------------------------------------------- fingerprints
# What each matrix of this module was made from, by the Dask name of its array (a name
# depends on the graph only, so it survives ``persist``). ``to_zarr`` records it in the
# store, and a resume from anything else is refused.
_SOURCES: dict[str, dict] = {}


def weight_digest(w: np.ndarray) -> str:
    """The sha256 (hex) of a weight's values in C order and native byte order.

    >>> weight_digest(np.zeros(2))[:12]
    '374708fff771'
    """
    native = np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("="))
    return hashlib.sha256(native.tobytes()).hexdigest()


def _layer_source(w: np.ndarray, geom: ConvGeometry) -> dict:
    """Everything that determines a layer's matrix: the weight's hash, shape and dtype, the geometry."""
    return {"kind": "layer", "weight_sha256": weight_digest(w), "weight_shape": list(w.shape),
            "weight_dtype": str(w.dtype.newbyteorder("=")), "geometry": json.loads(json.dumps(asdict(geom)))}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _short(value, width: int = 60) -> str:
    text = str(tuple(value) if isinstance(value, list) and len(value) <= 4 else value)
    return text if len(text) <= width else text[: width - 2] + ".."


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between a store's fingerprint and a new one, in words (empty when nothing does)."""
    out = []
    a, b = old.get("source", {}), new["source"]
    if a.get("kind") != b["kind"] or a.get("name") != b.get("name"):
        what = {"layer": "a layer's weight and geometry", "dask": "the Dask array {name!r}"}
        out.append(f"another source ({what.get(a.get('kind'), '?').format(**a)} in the store, "
                   f"{what[b['kind']].format(**b)} now)")
    elif b["kind"] == "layer":
        if a["weight_sha256"] != b["weight_sha256"]:
            out.append(f"another weight (sha256 {a['weight_sha256'][:12]}.. in the store, "
                       f"{b['weight_sha256'][:12]}.. now)")
        for key in ("weight_shape", "weight_dtype"):
            if a[key] != b[key]:
                out.append(f"another {key.replace('_', ' ')} ({_short(a[key])} != {_short(b[key])})")
        ga, gb = a["geometry"], b["geometry"]
        out += [f"another {key} ({_short(ga.get(key))} != {_short(gb.get(key))})"
                for key in sorted(set(ga) | set(gb)) if ga.get(key) != gb.get(key)]
    for key, what in (("shape", "matrix shape"), ("dtype", "dtype")):
        if old.get(key) != new[key]:
            out.append(f"another {what} ({_short(old.get(key))} != {_short(new[key])})")
    if not out and old.get("row_bounds") != new["row_bounds"]:
        out.append(f"other row blocks ({len(old['row_bounds']) - 1} blocks in the store, "
                   f"{len(new['row_bounds']) - 1} now: pass the block_bytes it was built with)")
    return out


# ------------------------------------------------------------------- storage
MANIFEST = "convmatrix.json"  # the store's description and fingerprint: written first, deleted last
MARKERS = "done"  # one file per finished block, written after its arrays
STORE_FORMAT = "convmatrix-csr-blocks"
_CSR = ("data", "indices", "indptr")
_REBUILD = "; rebuild it with to_zarr(..., resume=True) or convmatrix build --resume"


def _atomic_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` at once: a temporary file renamed over it, so a kill at
    any instant leaves the whole file or none (never a part)."""
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
    """The JSON object in ``path``; None when there is no such file or it holds no JSON object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _legacy_version(path: str) -> int | None:
    """The format version of a store written by an older convmatrix (its root Zarr attributes), or None."""
    attrs = (_read_json(os.path.join(path, "zarr.json")) or {}).get("attributes", {})
    old = attrs.get("convmatrix") if isinstance(attrs, dict) else None
    return old.get("format_version") if isinstance(old, dict) else None


def _leftovers_only(path: str) -> bool:
    """True for a folder that holds nothing but what an interrupted write or delete leaves behind."""
    return all(name.endswith(".tmp") for name in os.listdir(path))


def _open_manifest(path: str) -> dict:
    """The manifest of the store at ``path``, or a ValueError saying why there is none."""
    if not os.path.isdir(path):
        raise ValueError(f"path {path!r} is not a store written by convmatrix.to_zarr: "
                         f"{'it is a file' if os.path.exists(path) else 'there is no such folder'}")
    manifest = _read_json(os.path.join(path, MANIFEST))
    if manifest is not None and manifest.get("format") == STORE_FORMAT:
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"the store {path!r} has store format {manifest.get('format_version')!r}; this "
                             f"convmatrix reads format {FORMAT_VERSION}: build it again with overwrite=True")
        return manifest
    if _legacy_version(path) is not None:
        raise ValueError(f"the store {path!r} was written by an older convmatrix (store format "
                         f"{_legacy_version(path)}, without checksums): build it again with overwrite=True")
    if _leftovers_only(path):
        raise ValueError(f"path {path!r} is an empty or half-deleted store (an interrupted overwrite?): "
                         "start again with overwrite=True")
    raise ValueError(f"path {path!r} is not a store written by convmatrix.to_zarr (no {MANIFEST} in it)")


def _is_ours(path: str) -> bool:
    """Whether ``overwrite=True`` may delete the folder: a store of this library (of any format, whole
    or half deleted), or a folder holding nothing but leftovers of one."""
    if _leftovers_only(path) or _legacy_version(path) is not None:
        return True
    return (_read_json(os.path.join(path, MANIFEST)) or {}).get("format") == STORE_FORMAT


def _delete_store(path: str) -> None:
    """Delete a store so that a kill at any point leaves a store still recognised as ours (and
    deleted by the next overwrite): the block markers first, the manifest and Zarr root last."""
    last = (MANIFEST, "zarr.json")
    for name in sorted(os.listdir(path), key=lambda n: (n != MARKERS) + (n in last)):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def _ensure_layout(path: str) -> None:
    """The Zarr root group, its ``blocks`` group and the markers' folder (kept where they exist)."""
    root = zarr.open_group(path, mode="a", attributes={"convmatrix": f"a convmatrix store: see {MANIFEST}"})
    root.require_group("blocks")
    os.makedirs(os.path.join(path, MARKERS), exist_ok=True)


def _marker_path(path: str, i: int) -> str:
    return os.path.join(path, MARKERS, f"{i}.json")


@dataclass(frozen=True)
class _Blocks:
    """Where a store's blocks are and what they must match: enough for a task to read one block."""

    path: str
    row_bounds: tuple[int, ...]
    n_cols: int
    fingerprint: str

    @classmethod
    def of(cls, path: str, manifest: dict) -> "_Blocks":
        return cls(path, tuple(manifest["row_bounds"]), manifest["shape"][1], manifest["fingerprint"])

    def marker(self, i: int) -> dict | None:
        """The completion marker of block i when it is there and belongs to this store, else None."""
        m = _read_json(_marker_path(self.path, i))
        rows = [self.row_bounds[i], self.row_bounds[i + 1]]
        return m if m is not None and m.get("fingerprint") == self.fingerprint and m.get("rows") == rows else None

    def load(self, i: int) -> sp.csr_array:
        """Block i, checked against its marker (entries and checksums); ValueError naming the block
        when it is missing or damaged, never zeros in place of lost data."""
        a, b = self.row_bounds[i], self.row_bounds[i + 1]
        where = f"block {i} (rows {a}:{b}) of the store {self.path!r}"
        marker = self.marker(i)
        if marker is None:
            raise ValueError(f"{where} is missing or unfinished{_REBUILD}")
        try:
            g = zarr.open_group(self.path, path=f"blocks/{i}", mode="r")
            arrays = [g[name][...] for name in _CSR]
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{where} is damaged: its arrays cannot be read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}){_REBUILD}") from None
        for name, arr, crc in zip(_CSR, arrays, _checksums(arrays)):
            if crc != marker["crc32"][name]:
                raise ValueError(f"{where} is damaged: the checksum of its {name} is {crc}, not "
                                 f"{marker['crc32'][name]} (a chunk file was changed or deleted){_REBUILD}")
        data, indices, indptr = arrays
        if not len(data) == len(indices) == indptr[-1] == marker["nnz"] or len(indptr) != b - a + 1:
            raise ValueError(f"{where} is damaged: it holds {len(data)} entries and {len(indptr) - 1} rows, "
                             f"its marker says {marker['nnz']} and {b - a}{_REBUILD}")
        return sp.csr_array((data, indices, indptr), shape=(b - a, self.n_cols), copy=False)

    def is_intact(self, i: int) -> bool:
        try:
            self.load(i)
        except ValueError:
            return False
        return True


def _checksums(arrays) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(arr)) for arr in arrays]


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds: shape, dtype, blocks, which are finished, entries and bytes, its source.

    ``complete`` lists the blocks whose completion marker is there; their checksums are
    verified whenever they are read (:func:`from_zarr`, :func:`matvec_store`, a resume).
    ``source`` is what the matrix was made from (for a layer: the weight's sha256 and
    the geometry).
    """

    path: str
    shape: tuple[int, int]
    dtype: str
    row_bounds: tuple[int, ...]
    complete: tuple[int, ...]  # indices of the blocks whose completion marker exists
    nnz: int  # stored entries of the complete blocks
    csr_bytes: int  # their size as CSR in memory
    disk_bytes: int  # bytes of the store's files (local stores)
    metadata: dict
    source: dict = field(default_factory=dict)

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


def _disk_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def store_info(path) -> StoreInfo:
    """Shape, blocks (and which are finished), stored entries and bytes of a store; reads no block."""
    path = _store_path(path)
    manifest = _open_manifest(path)
    blocks = _Blocks.of(path, manifest)
    done, nnz, nbytes = [], 0, 0
    for i in range(len(blocks.row_bounds) - 1):
        marker = blocks.marker(i)
        if marker is not None:
            done.append(i)
            nnz += marker["nnz"]
            nbytes += marker["csr_bytes"]
    return StoreInfo(path, tuple(manifest["shape"]), manifest["dtype"], blocks.row_bounds, tuple(done), nnz,
                     nbytes, _disk_bytes(path), manifest.get("metadata", {}), manifest["source"])


def _codec():
    """Blosc lz4 with byte shuffle: on conv matrices (the kernel's values repeat, indices are
    regular) it compresses 128 MB of CSR to 4.8 MB at 3x zstd's speed, as fast as no compression."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _write_block(chunk, blocks: _Blocks, todo: tuple[int, ...], block_info=None) -> np.ndarray:
    """Dask task: write one block's CSR arrays, then (last, in one rename) its marker; return its nnz."""
    i = todo[block_info[0]["chunk-location"][0]]
    m = _as_csr(chunk)
    marker = _marker_path(blocks.path, i)
    if os.path.exists(marker):  # a damaged block, written again: unmark it first
        os.remove(marker)
    g = zarr.open_group(blocks.path, path="blocks", mode="r+").create_group(str(i), overwrite=True)
    arrays = [getattr(m, name) for name in _CSR]
    for name, arr in zip(_CSR, arrays):
        g.create_array(name, data=arr, chunks=(max(1, min(len(arr), ZARR_CHUNK)),), compressors=[_codec()])
    _atomic_json(marker, {
        "rows": [blocks.row_bounds[i], blocks.row_bounds[i + 1]], "nnz": int(m.nnz),
        "csr_bytes": int(sum(arr.nbytes for arr in arrays)), "crc32": dict(zip(_CSR, _checksums(arrays))),
        "fingerprint": blocks.fingerprint,
    })
    return np.array([[m.nnz]], dtype=np.int64)


def _check_rows_only(D) -> None:
    if not isinstance(D, da.Array) or D.ndim != 2:
        raise TypeError(f"D must be a 2-D dask.array.Array (from convmatrix.dask_matrix), got {type(D).__name__}")
    if len(D.chunks[1]) != 1:
        raise ValueError(
            f"D must be chunked along rows only (one column chunk), got column chunks {D.chunks[1]}; "
            "rechunk it with D.rechunk({1: -1})"
        )


def _new_manifest(D, metadata) -> dict:
    """The manifest of a store of D: its fingerprint (a hash of what determines the matrix and its
    blocks) beside your metadata."""
    manifest = {
        "format": STORE_FORMAT, "format_version": FORMAT_VERSION, "shape": list(D.shape), "dtype": str(D.dtype),
        "row_bounds": [0, *np.cumsum(D.chunks[0]).tolist()],
        "source": _SOURCES.get(D.name, {"kind": "dask", "name": D.name}),
    }
    manifest["fingerprint"] = _digest(manifest)
    manifest["metadata"] = {} if metadata is None else metadata
    try:
        json.dumps(manifest)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be a JSON-serialisable dict: {exc}") from None
    return manifest


def _blocks_to_write(path: str, manifest: dict) -> list[int]:
    """Resume: the blocks whose marker is missing or whose arrays do not match it (checked in parallel)."""
    old = _open_manifest(path)
    diffs = _differences(old, manifest)
    if diffs:
        raise ValueError(f"resume=True: the store {path!r} was written for {', '.join(diffs)}; pass "
                         "overwrite=True (CLI: --overwrite) to start again, or what it was built with")
    _ensure_layout(path)  # an interrupted creation may have left the manifest alone
    blocks = _Blocks.of(path, old)
    marked = [i for i in range(len(blocks.row_bounds) - 1) if blocks.marker(i) is not None]
    intact = dask.compute(*[dask.delayed(blocks.is_intact)(i) for i in marked]) if marked else ()
    done = {i for i, ok in zip(marked, intact) if ok}
    return [i for i in range(len(blocks.row_bounds) - 1) if i not in done]


def _prepare_store(path: str, manifest: dict, overwrite: bool, resume: bool) -> list[int]:
    """Create, reuse or refuse the store at ``path``; return the blocks still to write."""
    if os.path.exists(path):
        if resume:
            return _blocks_to_write(path, manifest)
        if not overwrite:
            raise ValueError(
                f"the store {path!r} exists; pass overwrite=True to start again or resume=True to "
                "write only its missing blocks (CLI: --overwrite / --resume)"
            )
        if not os.path.isdir(path) or not _is_ours(path):
            raise ValueError(f"overwrite=True deletes only a store written by convmatrix.to_zarr, and {path!r} "
                             "is not one; remove it yourself or choose another path")
        _delete_store(path)
    os.makedirs(path)
    _atomic_json(os.path.join(path, MANIFEST), manifest)
    _ensure_layout(path)
    return list(range(len(manifest["row_bounds"]) - 1))


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
        Delete an existing store first (only a store this function wrote, whole or half
        deleted; any other folder is refused).
    resume : bool
        Keep an existing store made from the same source (for :func:`dask_matrix`: the
        same weight bytes, geometry, dtype and blocks; ValueError naming what differs
        otherwise) and write only the blocks that are missing, unfinished or damaged
        (every finished block is checked against its marker first, in parallel).
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
    manifest = _new_manifest(D, metadata)
    todo = _prepare_store(path, manifest, overwrite, resume)
    if not todo:
        write = da.zeros((0, 1), dtype=np.int64, chunks=(0, 1))
    else:
        # All blocks: map over D itself, so that Dask fuses each block's build and write into one task.
        parts = D if len(todo) == D.numblocks[0] else D.blocks[todo]
        write = da.map_blocks(
            _write_block, parts, _Blocks.of(path, manifest), tuple(todo), chunks=((1,) * len(todo), (1,)),
            dtype=np.int64, meta=np.empty((0, 0), dtype=np.int64),
        )
    if not compute:
        return write
    write.compute()
    return store_info(path)


def _read_block(blocks: _Blocks, block_info=None) -> "sparse.GCXS":
    """Dask task: block i of a store, checked, as a GCXS chunk."""
    return _gcxs(blocks.load(block_info[None]["chunk-location"][0]))


def from_zarr(path) -> "da.Array":
    """A store written by :func:`to_zarr`, read back lazily as a row-chunked Dask array of GCXS chunks.

    Each task reads one block and checks it against its completion marker (entry
    count and checksums): a block whose files were changed or deleted raises a
    ValueError naming it, at compute time, instead of reading as zeros.
    ValueError at once when ``path`` is not such a store or some blocks are
    unfinished (resume the build first).
    """
    path = _store_path(path)
    info = store_info(path)
    if not info.is_complete:
        missing = sorted(set(range(info.n_blocks)) - set(info.complete))
        raise ValueError(
            f"the store {path!r} is incomplete: blocks {missing[:10]}{'...' if len(missing) > 10 else ''} "
            f"of {info.n_blocks} are missing; finish it with to_zarr(..., resume=True) or convmatrix build --resume"
        )
    blocks = _Blocks.of(path, _open_manifest(path))
    dtype = np.dtype(info.dtype)
    D = da.map_blocks(
        _read_block, blocks, chunks=(tuple(np.diff(info.row_bounds).tolist()), (info.shape[1],)),
        dtype=dtype, meta=_meta(dtype), name=f"convmatrix-zarr-{dask.base.tokenize(blocks)}",
    )
    _SOURCES[D.name] = info.source  # a copy of the store is the same matrix
    return D


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
    blocks = _Blocks.of(path, _open_manifest(path))
    for i in range(info.n_blocks):
        a, b = info.row_bounds[i], info.row_bounds[i + 1]
        block = blocks.load(i)
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
# ARPACK's tolerance on the Gram matrix's eigenvalue: the one convmatrix.spectral_norm uses.
GRAM_TOL = LANCZOS_TOL


class _Layer:
    """The weight and geometry behind a :func:`dask_matrix` array, for matrix-free work on it.

    Held by the array itself (so it lives as long as the array) and found by the array's
    name in ``_LAYERS``, a weak mapping: nothing is kept once the arrays are gone."""

    def __init__(self, w: np.ndarray, geom: ConvGeometry):
        self.w, self.geom = w, geom


_LAYERS: "weakref.WeakValueDictionary[str, _Layer]" = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class _Piece:
    """Rows ``rows[0]:rows[1]`` of a matrix, nonzero only in columns ``cols[0]:cols[1]``, as ``A``:
    a double-precision SciPy CSR block or a matrix-free sub-layer (a ConvOperator)."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    A: object

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """These rows of ``M @ x`` (``x``: the whole vector)."""
        x = x[self.cols[0]:self.cols[1]]
        return self.A.matvec(x) if isinstance(self.A, ConvOperator) else self.A @ x

    def rmatvec(self, y: np.ndarray) -> np.ndarray:
        """Columns ``cols`` of ``M^H @ y`` for ``y`` zero outside these rows (``y``: these rows only)."""
        if isinstance(self.A, ConvOperator):
            return self.A.rmatvec(y)
        if np.iscomplexobj(self.A.data):
            return np.conj(self.A.T @ np.conj(y))
        return self.A.T @ y


def _double(dtype) -> type:
    return np.complex128 if np.iscomplexobj(np.empty(0, dtype)) else np.float64


def _csr_piece(chunk, rows: tuple[int, int], n_cols: int) -> _Piece:
    """Dask task: a row chunk of D as a piece, in double precision (as spectral_norm computes)."""
    m = _as_csr(chunk)
    return _Piece(rows, (0, n_cols), m.astype(_double(m.dtype), copy=False))


def _layer_pieces(w: np.ndarray, geom: ConvGeometry, parts: int) -> list[_Piece]:
    """A layer's matrix cut into about ``parts`` pieces of whole output channels, each a matrix-free
    sub-layer on the input channels of its groups: whole groups when there are at least
    ``parts`` of them, else slices of the output channels of every group."""
    w = w.astype(_double(w.dtype), copy=False)
    g, cin, cout = geom.groups, geom.in_channels // geom.groups, geom.out_channels // geom.groups
    per_row, per_col = prod(geom.output_size), prod(geom.input_size)
    if g >= parts:
        step = -(-g // parts)
        spans = [(j, min(j + step, g), 0, cout) for j in range(0, g, step)]  # groups j0:j1, every channel
    else:
        step = -(-cout * g // parts)
        spans = [(j, j + 1, c, min(c + step, cout)) for j in range(g) for c in range(0, cout, step)]
    pieces = []
    for j0, j1, c0, c1 in spans:
        k = j1 - j0  # groups in the piece; output channels c0:c1 of each
        outs = np.concatenate([np.arange(j * cout + c0, j * cout + c1) for j in range(j0, j1)])
        sub = w[j0 * cin:j1 * cin, c0:c1] if geom.transposed else w[outs]  # transposed: (C_in, C_out/g, *k)
        sub_geom = replace(geom, in_channels=k * cin, out_channels=k * (c1 - c0), groups=k)
        rows = (int(outs[0]) * per_row, (int(outs[-1]) + 1) * per_row)
        pieces.append(_Piece(rows, (j0 * cin * per_col, j1 * cin * per_col),
                             ConvOperator(np.ascontiguousarray(sub), sub_geom)))
    return pieces


def _embed_sum(parts, n: int, dtype) -> np.ndarray:
    """Dask task: the sum of ``((lo, hi), vector)`` parts, each added into ``out[lo:hi]``."""
    out = np.zeros(n, dtype=dtype)
    for (lo, hi), vec in parts:
        out[lo:hi] += vec
    return out


def _gram_part(piece: _Piece, v: np.ndarray):
    """Dask task: ``A^H (A v)`` of one piece: the Gram matrix ``M^H M`` is their sum."""
    return piece.cols, piece.rmatvec(piece.matvec(v))


def _adjoint_part(piece: _Piece, u: np.ndarray):
    return piece.cols, piece.rmatvec(u[piece.rows[0]:piece.rows[1]])


def _matvec_part(piece: _Piece, z: np.ndarray):
    return piece.rows, piece.matvec(z)


def _scheduler_client():
    """The ``dask.distributed`` client that ``dask.compute`` would use now, or None."""
    owner = getattr(dask.base.get_scheduler(), "__self__", None)
    return owner if type(owner).__name__ == "Client" else None


# Multiply-adds of one Gram product per piece below which more pieces cost more (one more
# round trip to the workers per step, the input gathered once more per piece) than they save.
PIECE_WORK = 2 * 10**8


def _layer_parts(geom: ConvGeometry, parts: int | None, client) -> int:
    """Pieces to cut a layer into: ``parts``, or one per ``PIECE_WORK`` of a Gram product, at most
    one per worker thread."""
    if parts is not None:
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts must be a positive int or None (chosen by the work per step), got {parts!r}")
        return parts
    threads = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
    work = 2 * geom.matrix_shape[0] * prod(geom.kernel_size) * (geom.in_channels // geom.groups)
    return max(1, min(threads, work // PIECE_WORK))


def _pieces(D, persist: bool, parts: int | None, bar) -> list:
    """D as pieces for the Gram products: matrix-free sub-layers for a :func:`dask_matrix` array
    (nothing is built), else its row chunks as double-precision CSR; made once and kept where
    they were made (the workers' memory on a cluster), the CSR blocks only when ``persist``."""
    client = _scheduler_client()
    layer = _LAYERS.get(D.name)
    if layer is not None:  # sent to the workers once, not with every step
        n = _layer_parts(layer.geom, parts, client)
        pieces = [dask.delayed(p) for p in _layer_pieces(layer.w, layer.geom, n)]
        if len(pieces) == 1:
            return pieces
    else:
        bounds = [0, *np.cumsum(D.chunks[0]).tolist()]
        pieces = [dask.delayed(_csr_piece)(chunk, (a, b), D.shape[1])
                  for chunk, a, b in zip(D.to_delayed().ravel(), bounds[:-1], bounds[1:])]
        if not persist:
            return pieces
    bar.set_postfix_str(f"making {len(pieces)} pieces")
    if client is None:
        return list(dask.persist(*pieces))
    from distributed import wait

    pieces = list(client.persist(pieces))
    wait(pieces)
    return pieces


def _gram_product(pieces: list, shape: tuple[int, int], dtype, task=dask.delayed):
    """``v -> D^H D v`` (D tall or square) or ``u -> D D^H u`` (D wide), one task per piece, summed
    (for ``D D^H``: then one more per piece, summed). With ``task=dask.delayed`` every product is
    one Dask computation; with the identity (inside one task) it runs right here."""
    rows, cols = shape
    run = (lambda x: dask.compute(x)[0]) if task is dask.delayed else (lambda x: x)

    def gram(v):
        v = task(np.asarray(v), pure=True) if task is dask.delayed else v  # one key, sent once per worker
        if cols <= rows:
            return run(task(_embed_sum)([task(_gram_part)(p, v) for p in pieces], cols, dtype))
        z = task(_embed_sum)([task(_adjoint_part)(p, v) for p in pieces], cols, dtype)
        return run(task(_embed_sum)([task(_matvec_part)(p, z) for p in pieces], rows, dtype))

    return gram


@single_threaded  # ARPACK's own BLAS calls on long vectors: threads only wait for each other
def _top_eigenvalue(gram, n: int, dtype, tol: float, maxiter: int | None) -> float:
    """The largest eigenvalue of the n x n Hermitian positive semi-definite ``gram`` (a callable)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if n <= 2:  # ARPACK needs n > k + 1: form the tiny Gram matrix instead
        return float(np.linalg.eigvalsh(np.column_stack([gram(e) for e in np.eye(n, dtype=dtype)])).max())
    op = LinearOperator((n, n), matvec=gram, dtype=dtype)
    v0 = np.random.default_rng(0).standard_normal(n).astype(dtype)
    lam = eigsh(op, k=1, which="LA", tol=tol, maxiter=maxiter, v0=v0, ncv=min(n, 20), return_eigenvectors=False)
    return float(np.real(lam[0]))


def _eigenvalue_task(pieces: list, shape: tuple[int, int], dtype, tol: float, maxiter: int | None) -> float:
    """Dask task: the whole Lanczos run on one piece's worker (no round trip per step)."""
    return _top_eigenvalue(_gram_product(pieces, shape, dtype, task=lambda f, **_: f), min(shape), dtype, tol,
                           maxiter)


def dask_spectral_norm(D, *, tol: float = GRAM_TOL, maxiter: int | None = None, persist: bool = True,
                       parts: int | None = None, progress: bool | None = None) -> float:
    """The largest singular value of a row-chunked matrix, by Lanczos (ARPACK) on its Gram matrix.

    Parameters
    ----------
    D : dask.array.Array
        Chunked along rows only, as :func:`dask_matrix` and :func:`from_zarr` give.
    tol : float
        ARPACK's relative tolerance on the Gram matrix's top eigenvalue. The default,
        the one :func:`convmatrix.spectral_norm` uses, gives the norm to 1e-6 relative.
    maxiter : int, optional
        At most this many Lanczos restarts (ARPACK's default when None).
    persist : bool
        For a matrix that is not a :func:`dask_matrix` array (e.g. :func:`from_zarr`):
        True (default) builds or reads every block once, as double-precision CSR, and
        keeps it where it was made (a ``dask.distributed`` cluster must hold the matrix:
        about its CSR bytes, more for float32); every step is then one task per block.
        False rebuilds or re-reads every block at every step (memory of one block per
        worker).
    parts : int, optional
        For a :func:`dask_matrix` array, which needs no block at all: the number of
        matrix-free pieces (sub-layers of a range of output channels each) that share
        every step. None: one per ``PIECE_WORK`` multiply-adds of a step, at most one per
        worker thread. With one piece the whole Lanczos run is a single task on a worker.
    progress : bool or None
        A progress bar on stderr (one tick per Lanczos step); None: only on a terminal.

    Returns
    -------
    float
        ``||D||_2``, computed in double precision whatever D's dtype, from ``D^H D`` or
        ``D D^H``, whichever is smaller, on the current scheduler (threads, or a
        ``dask.distributed`` client).

    >>> import numpy as np, convmatrix
    >>> D = convmatrix.dask_matrix(np.ones((1, 1, 2)), (1, 4), block_bytes=100)
    >>> round(dask_spectral_norm(D), 6)  # the 3x4 matrix of [1, 1]: 2 cos(pi/8)
    1.847759
    """
    _check_rows_only(D)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ValueError(f"tol must be a number in [0, 1) (0: machine precision), got {tol!r}")
    if min(D.shape) == 0:
        return 0.0
    n, dtype = min(D.shape), _double(D.dtype)
    with progress_bar(None, "spectral norm (Dask)", show=progress, unit="step") as bar:
        pieces = _pieces(D, persist, parts, bar)
        if len(pieces) == 1 and D.name in _LAYERS:
            bar.set_postfix_str("Lanczos in one task")
            lam = dask.compute(dask.delayed(_eigenvalue_task)(pieces, D.shape, dtype, tol, maxiter))[0]
        else:
            product = _gram_product(pieces, D.shape, dtype)
            bar.set_postfix_str("Lanczos on the Gram matrix")

            def gram(v):
                bar.update()
                return product(v)

            lam = _top_eigenvalue(gram, n, dtype, tol, maxiter)
    return float(np.sqrt(max(lam, 0.0)))


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
