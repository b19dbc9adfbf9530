"""Stores under faults: real ``convmatrix build`` processes killed with SIGKILL, then resumed.

Every kill point leaves a store that ``--resume`` completes to exactly ``conv_matrix``
(the stored CSR arrays compared entry for entry); a store is never completed with
another weight; a damaged block is reported by number. The children are forked from
one zygote process (tests/killbuild.py), so a run costs a fork, not an interpreter start.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("dask")
pytest.importorskip("zarr")

import dask  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import convmatrix  # noqa: E402
from killbuild import Killer  # noqa: E402

SHAPE = (2, 10, 10)
OPTIONS = ["--padding", "1", "--stride", "1,2"]
KW = dict(padding=1, stride=(1, 2))
BLOCK_BYTES = "6kB"  # the layer's 200 x 200 float64 matrix (3,420 entries, 42 kB as CSR) in 8 blocks


@pytest.fixture(scope="module")
def killer():
    k = Killer()
    yield k
    k.close()


@pytest.fixture
def weights(tmp_path):
    """Two weights of the same shape, saved as w1.npy and w2.npy in the test's folder."""
    rng = np.random.default_rng(7)
    w = [rng.standard_normal((4, 2, 3, 3)) for _ in range(2)]
    for i, wi in enumerate(w, 1):
        np.save(tmp_path / f"w{i}.npy", wi)
    return w


def build_args(weight_file, *extra):
    return ["build", weight_file, "x".join(map(str, SHAPE)), *OPTIONS, "--out", "s.zarr",
            "--block-bytes", BLOCK_BYTES, "-q", *extra]


def assert_store_is(path, w):
    """The store's blocks, read through from_zarr, stacked: exactly conv_matrix's CSR arrays."""
    M = convmatrix.conv_matrix(w, SHAPE, **KW)
    chunks = dask.compute(*convmatrix.from_zarr(path).to_delayed().ravel())  # the GCXS chunks themselves
    got = sp.vstack([sp.csr_array((c.data, c.indices, c.indptr), shape=c.shape) for c in chunks], format="csr")
    assert got.shape == M.shape and len(chunks) >= 6
    np.testing.assert_array_equal(got.indptr, M.indptr)
    np.testing.assert_array_equal(got.indices, M.indices)
    np.testing.assert_array_equal(got.data, M.data)  # bit for bit: the same float64 products


def kill_then_resume(killer, cwd, w, event, n):
    """Run a build killed at (event, n) (or finished: n past its last such event), then resume it."""
    sig, rc, _, err = killer.run(build_args("w1.npy"), cwd, event, n)
    assert sig == signal.SIGKILL or (sig == 0 and rc == 0), (sig, rc, err)
    return resume(killer, cwd, w)


def resume(killer, cwd, w):
    """``--resume`` with w1.npy; the store must then be exactly w's matrix."""
    sig, rc, out, err = killer.run(build_args("w1.npy", "--resume"), cwd)
    assert (sig, rc) == (0, 0), err
    assert_store_is(cwd / "s.zarr", w)
    return out


@pytest.mark.parametrize("event, n", [("chunk", 1), ("chunk", 10), ("chunk", 33), ("marker", 1), ("marker", 5)])
def test_killed_build_resumes_to_the_exact_matrix(killer, tmp_path, weights, event, n):
    sig, rc, _, err = killer.run(build_args("w1.npy"), tmp_path, event, n)
    assert sig == signal.SIGKILL, (rc, err)  # killed where asked, before finishing
    before = convmatrix.store_info(tmp_path / "s.zarr")
    assert not before.is_complete
    out = resume(killer, tmp_path, weights[0])
    assert f"({before.n_blocks - len(before.complete)} written now, {len(before.complete)} already there)" in out


def test_kill_during_overwrite_deletion(killer, tmp_path, weights):
    """A kill while --overwrite deletes the old store: the half-deleted store still says whose it is,
    refuses a resume with the new weight, resumes with its own, and is deleted by --overwrite."""
    assert killer.run(build_args("w1.npy"), tmp_path)[:2] == (0, 0)
    sig, *_ = killer.run(build_args("w2.npy", "--overwrite"), tmp_path, "delete", 12)
    assert sig == signal.SIGKILL
    sig, rc, out, err = killer.run(build_args("w2.npy", "--resume"), tmp_path)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "written for another weight (sha256 " in err
    resume(killer, tmp_path, weights[0])  # the half-deleted store completed with w1
    assert killer.run(build_args("w2.npy", "--overwrite"), tmp_path, "delete", 40)[0] == signal.SIGKILL
    assert killer.run(build_args("w2.npy", "--overwrite"), tmp_path)[:2] == (0, 0)
    assert_store_is(tmp_path / "s.zarr", weights[1])


def test_external_kill_at_any_time(killer, tmp_path, weights):
    """SIGKILL from outside, as soon as some blocks are finished, at an instant nobody chose."""
    pid = killer.start(build_args("w1.npy"), tmp_path)
    done = tmp_path / "s.zarr" / "done"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (done.is_dir() and len(os.listdir(done)) >= 2):
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it had finished already
        pass
    killer.wait(tmp_path)
    resume(killer, tmp_path, weights[0])


def test_resume_with_another_weight_or_geometry_is_refused(killer, tmp_path, weights):
    sig, *_ = killer.run(build_args("w1.npy"), tmp_path, "marker", 4)
    assert sig == signal.SIGKILL
    before = sorted(os.listdir(tmp_path / "s.zarr" / "done"))
    sig, rc, out, err = killer.run(build_args("w2.npy", "--resume"), tmp_path)
    sha = [convmatrix.distributed.weight_digest(w)[:12] for w in weights]
    assert (rc, out) == (2, "") and err.count("\n") == 1
    assert f"written for another weight (sha256 {sha[0]}.. in the store, {sha[1]}.. now); pass overwrite=True" in err
    other = ["build", "w1.npy", "x".join(map(str, SHAPE)), "--padding", "1", "--out", "s.zarr",
             "--block-bytes", BLOCK_BYTES, "--resume"]
    sig, rc, out, err = killer.run(other, tmp_path)
    assert rc == 2 and "another stride ((1, 2) != (1, 1)), another matrix shape ((200, 200) != (400, 200))" in err
    f32 = np.load(tmp_path / "w1.npy").astype(np.float32)
    np.save(tmp_path / "w1f.npy", f32)
    rc, err = killer.run(build_args("w1f.npy", "--resume"), tmp_path)[1::2]
    assert rc == 2 and "another weight (sha256" in err and "another weight dtype (float64 != float32)" in err
    assert sorted(os.listdir(tmp_path / "s.zarr" / "done")) == before  # nothing written by the refused runs
    resume(killer, tmp_path, weights[0])


def test_deleted_chunk_is_reported_by_block_number(killer, tmp_path, weights, rng):
    assert killer.run(build_args("w1.npy"), tmp_path)[:2] == (0, 0)
    path = tmp_path / "s.zarr"
    os.remove(path / "blocks" / "3" / "data" / "c" / "0")  # Zarr alone would read it back as zeros
    info = convmatrix.store_info(path)
    a, b = info.row_bounds[3], info.row_bounds[4]
    message = (rf"block 3 \(rows {a}:{b}\) of the store .* is damaged: the checksum of its data is \d+, not \d+ "
               r"\(a chunk file was changed or deleted\); rebuild it with to_zarr\(..., resume=True\)")
    with pytest.raises(ValueError, match=message):
        convmatrix.from_zarr(path).compute()
    with pytest.raises(ValueError, match=message):
        convmatrix.matvec_store(path, rng.standard_normal(info.shape[1]))
    os.remove(path / "blocks" / "5" / "indptr" / "zarr.json")
    with pytest.raises(ValueError, match=r"block 5 \(rows \d+:\d+\) .* is damaged: its arrays cannot be read"):
        convmatrix.from_zarr(path).blocks[5].compute()
    out = resume(killer, tmp_path, weights[0])
    assert f"(2 written now, {info.n_blocks - 2} already there)" in out


def test_overwrite_refuses_a_folder_it_did_not_write(killer, tmp_path, weights):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "thesis.tex").write_text("keep me")
    sig, rc, out, err = killer.run(build_args("w1.npy", "--overwrite"), tmp_path)
    assert rc == 2 and err.count("\n") == 1 and "deletes only a store written by convmatrix.to_zarr" in err
    assert (tmp_path / "s.zarr" / "thesis.tex").read_text() == "keep me"


@given(event=st.sampled_from(["chunk", "marker", "overwrite"]), n=st.integers(1, 60))
@settings(max_examples=max(3, settings.default.max_examples // 12))
def test_fuzz_kill_points(killer, tmp_path_factory, event, n):
    """Any kill point of a build (or of an overwrite of another layer's store) resumes to the exact matrix."""
    cwd = tmp_path_factory.mktemp("fuzz")
    w = np.random.default_rng(n).standard_normal((4, 2, 3, 3))
    np.save(cwd / "w1.npy", w)
    if event == "overwrite":  # first a store of another layer, deleted by the killed --overwrite
        np.save(cwd / "other.npy", np.ones((1, 1, 2)))
        assert killer.run(["build", "other.npy", "1x40", "--out", "s.zarr", "--block-bytes", "100"], cwd)[1] == 0
        sig, rc, _, err = killer.run(build_args("w1.npy", "--overwrite"), cwd, "delete", n)
        assert sig == signal.SIGKILL or rc == 0, err
        if sig:  # resume cannot complete a half-deleted store of another layer: overwrite again
            assert killer.run(build_args("w1.npy", "--overwrite"), cwd)[:2] == (0, 0)
        assert_store_is(cwd / "s.zarr", w)
    else:
        kill_then_resume(killer, cwd, w, event, n)
