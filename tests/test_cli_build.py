"""``convmatrix build`` run as a user runs it (a subprocess), checked against torch and conv_matrix."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("zarr")

import convmatrix  # noqa: E402
from oracles import torch_conv  # noqa: E402


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "convmatrix", "build", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=os.environ, timeout=120)


def test_build_resume_and_refusal(tmp_path, rng):
    w = rng.standard_normal((4, 2, 3, 3))
    np.save(tmp_path / "w.npy", w)
    args = ["w.npy", "4x9x8", "--padding", "1", "--stride", "2,1", "--groups", "2", "--padding-mode", "reflect",
            "--out", "m.zarr", "--block-bytes", "2kB"]
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    M = convmatrix.conv_matrix(w, (4, 9, 8), padding=1, stride=(2, 1), groups=2, padding_mode="reflect")
    assert f"{M.shape[0]:,} x {M.shape[1]:,} float64, {M.nnz:,} stored entries" in r.stdout
    info = convmatrix.store_info(tmp_path / "m.zarr")
    assert info.is_complete and info.n_blocks > 3 and f"blocks   {info.n_blocks} " in r.stdout
    assert info.metadata["layer"]["output_shape"] == [4, 5, 8]
    x = rng.standard_normal((4, 9, 8))
    np.testing.assert_allclose(convmatrix.matvec_store(tmp_path / "m.zarr", x.ravel()),
                               torch_conv(w, x, padding=1, stride=(2, 1), groups=2, padding_mode="reflect").ravel(),
                               rtol=1e-12, atol=1e-12)
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert f"error: the store {str(tmp_path / 'm.zarr')!r} exists" in again.stderr and "--overwrite / --resume" in again.stderr
    resumed = cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(0 written now, {info.n_blocks} already there)" in resumed.stdout


def test_build_random_weights_of_a_shape(tmp_path, rng):
    r = cli("3x2x3", "2x20", "--dilation", "2", "--seed", "7", "--dtype", "float64", "--out", "m.zarr",
            "--block-bytes", "600", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    w = np.random.default_rng(7).standard_normal((3, 2, 3))
    x = rng.standard_normal((2, 20))
    np.testing.assert_allclose(convmatrix.matvec_store(tmp_path / "m.zarr", x.ravel()),
                               torch_conv(w, x, dilation=2).ravel(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("args, message", [
    (["8x4x3x3", "4x8x8", "--padding", "1", "--block-bytes", "100"],
     "block_bytes='100' (100 B) is smaller than one row of the matrix: the largest row needs 296 bytes as CSR"),
    (["nothing-here", "4x8x8"], "WEIGHT must be a .npy file or a weight shape like 64x64x3x3, got 'nothing-here'"),
    (["2x1x3x3", "1x8x8", "--scheduler", "tcp://127.0.0.1:9", "--timeout", "0.5"],
     "scheduler: no dask scheduler answered at 'tcp://127.0.0.1:9' within 0.5 s"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    r = cli(*args, "--out", "m.zarr", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("convmatrix build: error: ")
    assert message in r.stderr
    assert not (tmp_path / "m.zarr").exists()
