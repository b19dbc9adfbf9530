"""``dask_spectral_norm`` against NumPy's dense SVD and the in-memory ``spectral_norm``.

Every route is exercised: a ``dask_matrix`` array as one Lanczos task and as several
matrix-free pieces per step, a stored matrix as persisted CSR blocks and as blocks
re-read every step, tall and wide matrices (``D^H D`` and ``D D^H``), on the local
scheduler and on a 2-worker ``dask.distributed`` cluster.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("zarr")

import dask  # noqa: E402

import convmatrix  # noqa: E402
from test_distributed import LAYERS, budget_for, layer  # noqa: E402

# name -> weight shape, input shape, conv kwargs: a wide matrix (D D^H) and a complex one.
EXTRA = {
    "wide-stride": ((2, 3, 3, 3), (3, 8, 8), dict(stride=2, padding=1)),
    "complex-groups": ((4, 1, 3), (2, 9), dict(groups=2, padding=1, padding_mode="circular", dilation=2)),
}


def extra(name):
    wshape, ishape, kw = EXTRA[name]
    rng = np.random.default_rng(3)
    w = rng.standard_normal(wshape)
    if name.startswith("complex"):
        w = w + 1j * rng.standard_normal(wshape)
    return w, ishape, kw, convmatrix.conv_matrix(w, ishape, **kw)


def cases():
    return [layer(name) for name in LAYERS] + [extra(name) for name in EXTRA]


def dense_norm(M) -> float:
    return float(np.linalg.norm(M.toarray(), 2))  # NumPy's dense SVD


def routes(w, ishape, kw, M, store=None):
    """Ways to the norm, (label, D, keyword arguments): the layer's pieces, and with ``store`` (a path)
    also one Lanczos task and the stored matrix's blocks, persisted and re-read."""
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M), **kw)
    out = [("pieces", D, dict(parts=3))]
    if store is not None:
        convmatrix.to_zarr(D, store)
        stored = convmatrix.from_zarr(store)
        out += [("one task", D, {}), ("stored, persisted", stored, {}), ("stored, re-read", stored, dict(persist=False))]
    return out


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_every_route_equals_the_dense_svd(tmp_path):
    """The layers' pieces for every geometry; every route for a tall, a wide and a complex matrix."""
    with dask.config.set(scheduler="threads"):
        for i, (w, ishape, kw, M) in enumerate(cases()):
            exact = dense_norm(M)
            assert convmatrix.spectral_norm(w, ishape, **kw) == pytest.approx(exact, rel=1e-9)
            store = tmp_path / f"{i}.zarr" if i in (0, len(LAYERS), len(LAYERS) + 1) else None
            for label, D, options in routes(w, ishape, kw, M, store):
                got = convmatrix.dask_spectral_norm(D, **options)
                assert got == pytest.approx(exact, rel=1e-9), (label, kw)


def test_float32_layer_equals_the_in_memory_norm():
    """On a layer past the dense Gram matrix's size: Lanczos on both sides, in double precision."""
    w = np.random.default_rng(5).standard_normal((6, 4, 3, 3)).astype(np.float32)
    expected = convmatrix.spectral_norm(w, (4, 20, 20), padding=1)
    D = convmatrix.dask_matrix(w, (4, 20, 20), padding=1, block_bytes="20kB")
    with dask.config.set(scheduler="threads"):
        for options in ({}, dict(parts=4)):
            assert convmatrix.dask_spectral_norm(D, **options) == pytest.approx(expected, rel=1e-6)


def test_two_worker_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        w, ishape, kw, M = extra("wide-stride")
        for label, D, options in routes(w, ishape, kw, M, tmp_path / "m.zarr"):
            assert convmatrix.dask_spectral_norm(D, **options) == pytest.approx(dense_norm(M), rel=1e-9), label


def test_progress_bar_counts_the_steps(capsys):
    pytest.importorskip("tqdm")
    w, ishape, kw, M = layer("reflect-stride-groups")
    D = convmatrix.dask_matrix(w, ishape, block_bytes=budget_for(M), **kw)
    with dask.config.set(scheduler="threads"):
        convmatrix.dask_spectral_norm(D, parts=2, progress=True)
        assert "spectral norm (Dask)" in capsys.readouterr().err
        convmatrix.dask_spectral_norm(D, parts=2)  # not a terminal: no bar
        assert capsys.readouterr().err == ""


def test_bad_arguments():
    D = convmatrix.dask_matrix(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match=r"tol must be a number in \[0, 1\) .* got 2"):
        convmatrix.dask_spectral_norm(D, tol=2)
    with pytest.raises(ValueError, match="parts must be a positive int or None .* got 0"):
        convmatrix.dask_spectral_norm(D, parts=0)
    with pytest.raises(TypeError, match="D must be a 2-D dask.array.Array"):
        convmatrix.dask_spectral_norm(np.ones((2, 2)))
