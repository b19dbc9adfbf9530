"""``convmatrix spectrum`` run as a subprocess, checked against numpy's dense SVD."""

import os
import re
import subprocess
import sys

import numpy as np
from oracles import dense_by_probing
from threadpoolctl import threadpool_limits


def run(*args):
    return subprocess.run([sys.executable, "-m", "convmatrix", "spectrum", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)


def value_after(text, label):
    line = next(ln for ln in text.splitlines() if ln.startswith(label))
    return line[len(label):].split()[0]


def test_spectrum_of_a_weight_file(tmp_path, rng):
    W = rng.standard_normal((3, 2, 3, 3))
    np.save(tmp_path / "w.npy", W)
    out = tmp_path / "s.png"
    p = run("3x2x3x3", "2x6x5", "--padding", "1", "--stride", "2,1", "--weight", str(tmp_path / "w.npy"),
            "-k", "3", "--plot", str(out))
    assert p.returncode == 0, p.stderr
    s = np.linalg.svd(dense_by_probing(W, (2, 6, 5), padding=1, stride=(2, 1)), compute_uv=False)
    assert abs(float(value_after(p.stdout, "spectral norm ||M||_2:")) - s[0]) <= 1e-8 * s[0]
    top = [float(v) for v in p.stdout.split("singular values")[1].split(":", 1)[1].split()[:3]]
    np.testing.assert_allclose(top, s[:3], rtol=1e-5)
    lo, hi = re.search(r"certified bracket: \[([^,]+), ([^\]]+)\]", p.stdout).groups()
    assert float(lo) <= s[0] * (1 + 1e-6) and float(hi) >= s[0] * (1 - 1e-6)
    assert "torch.nn.utils.spectral_norm" in p.stdout
    assert out.stat().st_size > 1000


def test_spectrum_random_circular():
    p = run("4x4x3x3", "4x8x8", "--padding", "1", "--padding-mode", "circular", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert "FFT, exact" in p.stdout


def test_spectrum_errors():
    p = run("4x4x3x3", "3x8x8")
    assert p.returncode == 2 and "input_shape has 3 channel" in p.stderr and "Traceback" not in p.stderr
    p = run("4x4x3x3", "4x8x8", "-k", "0")
    assert p.returncode == 2 and "-k must be at least 1" in p.stderr
    p = run("4x4x3x3", "4x8x8", "--weight", "/nonexistent.npy")
    assert p.returncode == 2 and "--weight" in p.stderr and "cannot read" in p.stderr


def test_spectrum_weight_shape_mismatch(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((4, 4, 3, 1)))
    p = run("4x4x3x3", "4x8x8", "--weight", str(tmp_path / "w.npy"))
    assert p.returncode == 2 and "has shape 4x4x3x1, but WEIGHT_SHAPE is 4x4x3x3" in p.stderr


def test_spectrum_refuses_a_long_run_at_once_with_the_estimate():
    # The layer of a 512-channel 224x224 network: Lanczos would take about an hour here.
    p = run("512x512x3x3", "512x224x224", "--padding", "1", "-k", "1", "--max-minutes", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert "products with M^H M" in p.stderr and "--bracket-only" in p.stderr and "--max-minutes" in p.stderr
    assert p.stdout.startswith("layer: weight 512x512x3x3")


def test_spectrum_bracket_only_and_progress():
    p = run("4x4x3x3", "4x12x12", "--padding", "1", "--bracket-only", "--progress", "--seed", "0")
    assert p.returncode == 0, p.stderr
    assert "spectral norm ||M||_2" not in p.stdout and "top" not in p.stdout
    assert "bracket: power iteration" in p.stderr  # the bar, forced on without a terminal
    lo, hi = (float(v) for v in re.search(r"certified bracket: \[([^,]+), ([^\]]+)\]", p.stdout).groups())
    W = np.random.default_rng(0).standard_normal((4, 4, 3, 3)) / 6  # the CLI's kernel: seed 0, 1/sqrt(36)
    with threadpool_limits(1):
        exact = np.linalg.svd(dense_by_probing(W, (4, 12, 12), padding=1), compute_uv=False)[0]
    assert lo <= exact * (1 + 1e-5) and hi >= exact * (1 - 1e-5)


def test_spectrum_lanczos_route_with_progress():
    # 4 x 24 x 24 = 2,304 columns and k=2: Lanczos, with its bar on stderr.
    p = run("4x4x3x3", "4x24x24", "--padding", "1", "-k", "2", "--progress")
    assert p.returncode == 0, p.stderr
    assert "exact values by Lanczos" in p.stdout and "(Lanczos)" in p.stderr
    W = np.random.default_rng(0).standard_normal((4, 4, 3, 3)) / 6
    with threadpool_limits(1):  # the oracle's dense SVD, on one thread on a busy machine
        s = np.linalg.svd(dense_by_probing(W, (4, 24, 24), padding=1), compute_uv=False)
    assert abs(float(value_after(p.stdout, "spectral norm ||M||_2:")) - s[0]) <= 1e-8 * s[0]
    top = [float(v) for v in p.stdout.split("top 2 singular values:")[1].split()[:2]]
    np.testing.assert_allclose(top, s[:2], rtol=1e-5)


def test_spectrum_bad_max_minutes():
    p = run("4x4x3x3", "4x8x8", "--max-minutes", "0")
    assert p.returncode == 2 and "--max-minutes must be positive" in p.stderr
