"""Chunked matrices on Dask and their Zarr stores (convmatrix.distributed).

Oracles: torch's own convolution (forward) and its autograd vector-Jacobian
product (``M.T @ y``), the in-memory ``conv_matrix`` for block-for-block equality,
and SciPy slices for block sizes (the spectral norm: test_distributed_spectral.py).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("dask")
pytest.importorskip("zarr")
pytest.importorskip("sparse")

import dask  # noqa: E402
import sparse  # noqa: E402
import zarr  # noqa: E402

import convmatrix  # noqa: E402
from convmatrix import distributed as dist  # noqa: E402
from convmatrix.core.blocks import block_bounds  # noqa: E402
from convmatrix.core.pattern import row_counts  # noqa: E402
from oracles import torch_conv, torch_module  # noqa: E402

# name -> (weight shape, input shape, conv kwargs); each is cut into several blocks.
LAYERS = {
    # reflect padding folds taps at every border; stride and groups on top
    "reflect-stride-groups": ((4, 2, 3, 3), (4, 7, 6), dict(padding=1, padding_mode="reflect", stride=(2, 1), groups=2)),
    # circular padding on an input shorter than the dilated kernel's span
    "circular-1d": ((3, 2, 3), (2, 4), dict(padding=2, padding_mode="circular", dilation=2)),
    "replicate-3d": ((2, 1, 2, 2, 2), (1, 3, 4, 3), dict(padding=1, padding_mode="replicate")),
    "same-even-dilated": ((3, 2, 4, 2), (2, 6, 5), dict(padding="same", dilation=(1, 2))),
    "transposed-groups": ((4, 1, 3, 3), (4, 4, 5), dict(transposed=True, stride=2, output_padding=1, groups=2, padding=1)),
}


def layer(name, seed=0):
    wshape, ishape, kw = LAYERS[name]
    w = np.random.default_rng(seed).standard_normal(wshape)
    M = convmatrix.conv_matrix(w, ishape, **kw)
    return w, ishape, kw, M


def csr_bytes(m) -> int:
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


def budget_for(M, parts=4) -> int:
    return csr_bytes(M) // parts


def chunk_csr(chunk):
    """A GCXS row chunk's own CSR arrays (no conversion through sparse's code)."""
    assert isinstance(chunk, sparse.GCXS) and chunk.compressed_axes == (0,)
    return chunk.data, chunk.indices, chunk.indptr


def assert_same_block(chunk, expected):
    data, indices, indptr = chunk_csr(chunk)
    assert chunk.shape == expected.shape
    np.testing.assert_array_equal(indptr, expected.indptr)
    np.testing.assert_array_equal(indices, expected.indices)
    np.testing.assert_array_equal(data, expected.data)


def torch_vjp(w, input_shape, y, **kw):
    """M.T @ y from torch's autograd: the gradient of <conv(x), y> in x."""
    x = torch.zeros((1, *input_shape), dtype=torch.float64, requires_grad=True)
    out = torch_module(w, **kw)(x)
    (g,) = torch.autograd.grad(out, x, torch.as_tensor(y).reshape(out.shape))
    return g.reshape(-1).numpy()


@pytest.fixture
def local_scheduler():
    with dask.config.set(scheduler="threads"):
        yield


# ------------------------------------------------------------------ the blocks
@pytest.mark.parametrize("name", LAYERS)
def test_blocks_equal_the_in_memory_matrix(name, local_scheduler):
    w, ishape, kw, M = layer(name)
    budget = budget_for(M)
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget, **kw)
    assert D.shape == M.shape and D.dtype == M.dtype
    assert len(D.chunks[1]) == 1 and len(D.chunks[0]) >= 4
    assert isinstance(D._meta, sparse.GCXS)
    bounds = np.concatenate([[0], np.cumsum(D.chunks[0])])
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        expected = M[a:b]
        assert_same_block(D.blocks[i].compute(), expected)
        assert csr_bytes(expected) <= budget
        if b < M.shape[0]:  # greedy: one row more would not fit
            assert csr_bytes(M[a:b + 1]) > budget


@given(
    k=st.integers(1, 4), n=st.integers(4, 9), c=st.integers(1, 3), stride=st.integers(1, 3),
    pad=st.integers(0, 2), mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    parts=st.integers(1, 12), itemsize=st.sampled_from([4, 8]),
)
@settings(max_examples=40)
def test_row_blocks_fit_the_budget_and_are_greedy(k, n, c, stride, pad, mode, parts, itemsize):
    """Against SciPy's own CSR slices of the built matrix: every block fits, none could grow."""
    pad = min(pad, n - 1)
    dtype = np.float32 if itemsize == 4 else np.float64
    w = np.ones((2, c, k, k), dtype=dtype)
    M = convmatrix.conv_matrix(w, (c, n, n), stride=stride, padding=pad, padding_mode=mode)
    widest = int(np.diff(M.indptr).max())
    budget = max(csr_bytes(M) // parts, widest * (itemsize + 4) + 8)
    geom = convmatrix.ConvGeometry.from_args(w.shape, (c, n, n), stride=stride, padding=pad, padding_mode=mode)
    bounds = block_bounds(w, geom, budget)  # what dask_matrix cuts the rows by
    assert bounds[0] == 0 and bounds[-1] == M.shape[0] and np.all(np.diff(bounds) > 0)
    for a, b in zip(bounds[:-1], bounds[1:]):
        assert csr_bytes(M[a:b]) <= budget
        if b < M.shape[0]:
            assert csr_bytes(M[a:b + 1]) > budget


@given(
    k=st.integers(1, 4), n=st.integers(3, 8), c=st.integers(1, 2), stride=st.integers(1, 3),
    dilation=st.integers(1, 2), pad=st.integers(0, 3), nd=st.integers(1, 3),
    mode=st.sampled_from(["zeros", "reflect", "replicate", "circular", "transposed"]),
)
@settings(max_examples=60)
def test_row_counts_match_the_built_matrix(k, n, c, stride, dilation, pad, nd, mode):
    """Against the stored entries per row of the matrix conv_matrix builds."""
    from hypothesis import assume

    transposed = mode == "transposed"
    kw = dict(stride=stride, dilation=dilation, padding=pad, transposed=transposed,
              padding_mode="zeros" if transposed else mode)
    try:
        geom = convmatrix.ConvGeometry.from_args((2, c) + (k,) * nd if not transposed else (c, 2) + (k,) * nd,
                                                 (c,) + (n,) * nd, **kw)
    except ValueError:
        assume(False)
    w = np.ones(geom.weight_shape)
    M = convmatrix.conv_matrix(w, geom.input_shape, **kw)
    counts = np.diff(M.indptr).reshape(geom.out_channels, -1)
    for u in range(geom.out_channels):
        np.testing.assert_array_equal(row_counts(geom), counts[u])


def test_graph_holds_only_the_weight_and_the_geometry():
    w, ishape, kw, M = layer("reflect-stride-groups")
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M, 6), **kw)
    graph = dict(D.__dask_graph__())
    assert len(graph) == D.numblocks[0] + 1  # one task per block, plus the weight
    # The graph stays small however large the blocks: the weight once, a few hundred bytes per task.
    size = len(pickle.dumps(graph))
    assert size < w.nbytes + 1000 * D.numblocks[0] + 2000


# ---------------------------------------------------------------- linear algebra
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", LAYERS)
def test_matvecs_agree_with_torch_and_the_matrix(name, local_scheduler, rng):
    w, ishape, kw, M = layer(name)
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M), **kw)
    x = rng.standard_normal(ishape)
    y = rng.standard_normal(M.shape[0])
    X = rng.standard_normal((M.shape[1], 2))
    Dx = (D @ x.ravel()).compute()
    assert isinstance(Dx, np.ndarray) and Dx.shape == (M.shape[0],)
    np.testing.assert_allclose(Dx, torch_conv(w, x, **kw).ravel(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Dx, M @ x.ravel(), rtol=1e-13, atol=1e-13)
    DTy = np.asarray((D.T @ y).compute())
    np.testing.assert_allclose(DTy, torch_vjp(w, ishape, y, **kw), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray((D @ X).compute()), M @ X, rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------ Zarr
def stored_blocks(path):
    """The block arrays as Zarr holds them, read with zarr itself."""
    root = zarr.open_group(str(path), mode="r")
    with open(os.path.join(path, "convmatrix.json")) as f:
        bounds = json.load(f)["row_bounds"]
    return bounds, [tuple(root[f"blocks/{i}/{a}"][...] for a in ("data", "indices", "indptr"))
                    for i in range(len(bounds) - 1)]


@pytest.mark.parametrize("name", LAYERS)
def test_store_round_trip_block_for_block(name, tmp_path, local_scheduler, rng):
    w, ishape, kw, M = layer(name)
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M), **kw)
    meta = dist.layer_metadata(w, ishape, **kw)
    info = convmatrix.to_zarr(D, tmp_path / "m.zarr", metadata=meta)
    assert info.is_complete and info.nnz == M.nnz and info.csr_bytes <= csr_bytes(M) + 8 * info.n_blocks
    bounds, blocks = stored_blocks(tmp_path / "m.zarr")
    assert bounds == [0, *np.cumsum(D.chunks[0]).tolist()]
    for (a, b), (data, indices, indptr) in zip(zip(bounds[:-1], bounds[1:]), blocks):
        expected = M[a:b]
        np.testing.assert_array_equal(indptr, expected.indptr)
        np.testing.assert_array_equal(indices, expected.indices)
        np.testing.assert_array_equal(data, expected.data)
    D2 = convmatrix.from_zarr(tmp_path / "m.zarr")
    assert D2.chunks == D.chunks and D2.dtype == M.dtype and isinstance(D2._meta, sparse.GCXS)
    assert_same_block(D2.blocks[1].compute(), M[bounds[1]:bounds[2]])
    x, y = rng.standard_normal(M.shape[1]), rng.standard_normal(M.shape[0])
    np.testing.assert_allclose((D2 @ x).compute(), M @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(convmatrix.matvec_store(tmp_path / "m.zarr", x), M @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(convmatrix.matvec_store(tmp_path / "m.zarr", y, transpose=True), M.T @ y,
                               rtol=1e-12, atol=1e-12)
    assert convmatrix.store_info(tmp_path / "m.zarr").metadata == meta


def test_stored_network_against_torch(tmp_path, local_scheduler, rng):
    """conv -> ReLU -> strided conv, both stored, against torch.nn.Sequential with biases."""
    w1, b1 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    w2, b2 = rng.standard_normal((3, 4, 3, 3)), rng.standard_normal(3)
    net = torch.nn.Sequential(torch_module(w1, padding=1, padding_mode="replicate", bias=b1), torch.nn.ReLU(),
                              torch_module(w2, stride=2, bias=b2))
    convmatrix.to_zarr(convmatrix.dask_matrix(w1, (2, 7, 7), padding=1, padding_mode="replicate",
                                              block_bytes=3000), tmp_path / "1.zarr")
    convmatrix.to_zarr(convmatrix.dask_matrix(w2, (4, 7, 7), stride=2, block_bytes=3000), tmp_path / "2.zarr")
    X = rng.standard_normal((5, 2, 7, 7))
    with torch.no_grad():
        expected = net(torch.as_tensor(X)).reshape(5, -1).numpy()
    paths = [tmp_path / "1.zarr", tmp_path / "2.zarr"]
    got = convmatrix.evaluate_stored(paths, X.reshape(5, -1).T, biases=[np.repeat(b1, 49), np.repeat(b2, 9)])
    np.testing.assert_allclose(got.T, expected, rtol=1e-12, atol=1e-12)
    one = convmatrix.evaluate_stored(paths, X[0].ravel(), biases=[np.repeat(b1, 49), np.repeat(b2, 9)])
    np.testing.assert_allclose(one, expected[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"biases\[1\] must have shape \(27,\) to match the store"):
        convmatrix.evaluate_stored(paths, X[0].ravel(), biases=[None, b2])
    with pytest.raises(ValueError, match="biases must have one entry .* 2 stores, 1 biases"):
        convmatrix.evaluate_stored(paths, X[0].ravel(), biases=[None])
    with pytest.raises(ValueError, match="activation must be one of \\['identity', 'relu'\\], got 'tanh'"):
        convmatrix.evaluate_stored(paths, X[0].ravel(), activation="tanh")
    with pytest.raises(ValueError, match="paths must name at least one store"):
        convmatrix.evaluate_stored([], X[0].ravel())


def file_times(path, block):
    folder = os.path.join(path, "blocks", str(block))
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def test_resume_writes_only_missing_blocks(tmp_path, local_scheduler):
    w, ishape, kw, M = layer("reflect-stride-groups")
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M, 6), **kw)
    path = str(tmp_path / "m.zarr")
    convmatrix.to_zarr(D, path)
    n = D.numblocks[0]
    assert n >= 5
    # Block 1: interrupted after its arrays (no marker, data garbled); block 3: never started;
    # block 4: marked finished, but its data changed since (the checksum catches it).
    os.remove(os.path.join(path, "done", "1.json"))
    zarr.open_group(path, path="blocks/1", mode="r+")["data"][...] = -1.0
    shutil.rmtree(os.path.join(path, "blocks", "3"))
    os.remove(os.path.join(path, "done", "3.json"))
    zarr.open_group(path, path="blocks/4", mode="r+")["data"][:1] = 7.0
    kept = [i for i in range(n) if i not in (1, 3, 4)]
    before = {i: file_times(path, i) for i in kept}
    assert convmatrix.store_info(path).complete == tuple(sorted(kept + [4]))
    with pytest.raises(ValueError, match=r"incomplete: blocks \[1, 3\]"):
        convmatrix.from_zarr(path)
    time.sleep(0.01)  # so that a rewrite would show in the file times
    lazy = convmatrix.to_zarr(D, path, resume=True, compute=False)
    assert lazy.shape[0] == 3  # only the missing and the damaged blocks are built and written
    lazy.compute()
    assert {i: file_times(path, i) for i in kept} == before
    bounds, blocks = stored_blocks(path)
    for i in (1, 3, 4):
        np.testing.assert_array_equal(blocks[i][0], M[bounds[i]:bounds[i + 1]].data)
    assert convmatrix.store_info(path).is_complete
    # Nothing left to do: a second resume writes nothing.
    assert convmatrix.to_zarr(D, path, resume=True, compute=False).shape[0] == 0


def test_overwrite_starts_again(tmp_path, local_scheduler):
    w, ishape, kw, M = layer("circular-1d")
    path = tmp_path / "m.zarr"
    convmatrix.to_zarr(convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M), **kw), path)
    w2, ishape2, kw2, M2 = layer("same-even-dilated")
    info = convmatrix.to_zarr(convmatrix.dask_matrix(w2, ishape2, block_bytes=budget_for(M2, 3), **kw2), path,
                              overwrite=True)
    assert info.shape == M2.shape and info.nnz == M2.nnz and info.n_blocks == len(os.listdir(path / "blocks")) - 1
    np.testing.assert_array_equal(convmatrix.from_zarr(path).blocks[0].compute().indptr,
                                  M2[: info.row_bounds[1]].indptr)


# ------------------------------------------------------------ dask.distributed
def test_two_worker_cluster(tmp_path, rng, monkeypatch):
    distributed = pytest.importorskip("distributed")
    w, ishape, kw, M = layer("transposed-groups")
    x, y = rng.standard_normal(M.shape[1]), rng.standard_normal(M.shape[0])
    built_on = []  # the worker of every block build (threads workers share this list)

    def recording_build(*args, **kwargs):
        built_on.append(distributed.get_worker().address)  # ValueError outside a worker
        return build_csr(*args, **kwargs)

    build_csr = dist.build_csr
    monkeypatch.setattr(dist, "build_csr", recording_build)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M, 6), **kw)
        Dx = (D @ x).compute()
        assert len(built_on) == D.numblocks[0] and set(built_on) <= set(cluster.scheduler.workers)
        np.testing.assert_allclose(Dx, torch_conv(w, x.reshape(ishape), **kw).ravel(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose((D.T @ y).compute(), torch_vjp(w, ishape, y, **kw), rtol=1e-12, atol=1e-12)
        info = convmatrix.to_zarr(D, tmp_path / "m.zarr")
        assert info.is_complete and info.nnz == M.nnz and len(client.scheduler_info()["workers"]) == 2
        np.testing.assert_allclose((convmatrix.from_zarr(tmp_path / "m.zarr") @ x).compute(), M @ x,
                                   rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------ bad input
def test_budget_smaller_than_one_row():
    with pytest.raises(ValueError, match=r"block_bytes=100 .* smaller than one row .* 440 bytes as CSR"):
        convmatrix.dask_matrix(np.ones((8, 4, 3, 3)), (4, 8, 8), padding=1, block_bytes=100)  # 36 x (8 + 4) + 2 x 4


def test_budget_not_a_size():
    with pytest.raises(ValueError, match="block_bytes must be a number of bytes or a size like .* got '12 apples'"):
        convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8), block_bytes="12 apples")
    with pytest.raises(TypeError, match="block_bytes must be a number of bytes or a string like '512MB', got \\[1\\]"):
        convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8), block_bytes=[1])


def test_existing_store_is_refused(tmp_path, local_scheduler):
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    convmatrix.to_zarr(D, tmp_path / "m.zarr")
    with pytest.raises(ValueError, match="exists; pass overwrite=True to start again or resume=True"):
        convmatrix.to_zarr(D, tmp_path / "m.zarr")


def test_overwrite_and_resume_together(tmp_path):
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match="at most one of overwrite=True and resume=True"):
        convmatrix.to_zarr(D, tmp_path / "m.zarr", overwrite=True, resume=True)


def test_resume_with_other_blocks(tmp_path, local_scheduler):
    w = np.ones((2, 1, 3, 3))
    convmatrix.to_zarr(convmatrix.dask_matrix(w, (1, 8, 8), block_bytes=600), tmp_path / "m.zarr")
    with pytest.raises(ValueError, match=r"resume=True: the store .* was written for other row blocks \(\d+ blocks in "
                       r"the store, \d+ now: pass the block_bytes it was built with\); pass overwrite=True"):
        convmatrix.to_zarr(convmatrix.dask_matrix(w, (1, 8, 8), block_bytes=900), tmp_path / "m.zarr", resume=True)


def test_resume_on_a_foreign_store(tmp_path):
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match="is not a store written by convmatrix.to_zarr .no convmatrix.json in it"):
        convmatrix.to_zarr(D, tmp_path / "other.zarr", resume=True)


def test_store_path_must_be_a_folder():
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match="path must be a folder on a .shared. file system, got the URL 's3://b/m.zarr'"):
        convmatrix.to_zarr(D, "s3://b/m.zarr")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike folder, got int"):
        convmatrix.from_zarr(3)


def test_from_zarr_on_a_plain_folder(tmp_path):
    with pytest.raises(ValueError, match="is an empty or half-deleted store .* start again with overwrite=True"):
        convmatrix.from_zarr(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a store written by convmatrix.to_zarr .no convmatrix.json in it"):
        convmatrix.from_zarr(tmp_path)
    with pytest.raises(ValueError, match="is not a store written by convmatrix.to_zarr: there is no such folder"):
        convmatrix.from_zarr(tmp_path / "nothing")


def test_overwrite_refuses_to_delete_a_non_store(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match="overwrite=True deletes only a store written by convmatrix.to_zarr, and .* "
                       "is not one; remove it yourself"):
        convmatrix.to_zarr(D, tmp_path, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_to_zarr_needs_row_chunks(tmp_path):
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8)).rechunk((3, 4))
    with pytest.raises(ValueError, match=r"chunked along rows only .* column chunks \(4, 4\)"):
        convmatrix.to_zarr(D, tmp_path / "m.zarr")
    with pytest.raises(TypeError, match="D must be a 2-D dask.array.Array"):
        convmatrix.to_zarr(np.ones((2, 2)), tmp_path / "m.zarr")


def test_metadata_must_be_json(tmp_path):
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(TypeError, match="metadata must be a JSON-serialisable dict"):
        convmatrix.to_zarr(D, tmp_path / "m.zarr", metadata={"w": np.ones(2)})
    with pytest.raises(TypeError, match="metadata must be a dict, got list"):
        convmatrix.to_zarr(D, tmp_path / "m.zarr", metadata=[1])


def test_matvec_store_shape(tmp_path, local_scheduler):
    convmatrix.to_zarr(convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8)), tmp_path / "m.zarr")
    with pytest.raises(ValueError, match=r"x must have 8 rows \(M is \(6, 8\)\), got shape \(6,\)"):
        convmatrix.matvec_store(tmp_path / "m.zarr", np.ones(6))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler():
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=f"scheduler: no dask scheduler answered at '{address}' within 0.5 s"):
        dist.connect(address, timeout=0.5)
    assert time.monotonic() - t0 < 10
    with pytest.raises(TypeError, match="scheduler must be an address string"):
        dist.connect(None)


def test_store_of_an_older_format(tmp_path):
    """A store written before fingerprints and checksums (format 1) is never read or resumed, only replaced."""
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    old.attrs["convmatrix"] = {"format_version": 1, "shape": [6, 8], "dtype": "float64", "row_bounds": [0, 6]}
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    for call in (lambda: convmatrix.from_zarr(tmp_path / "old.zarr"),
                 lambda: convmatrix.to_zarr(D, tmp_path / "old.zarr", resume=True)):
        with pytest.raises(ValueError, match=r"written by an older convmatrix \(store format 1, without checksums\): "
                                             "build it again with overwrite=True"):
            call()
    assert convmatrix.to_zarr(D, tmp_path / "old.zarr", overwrite=True).nnz == 18
