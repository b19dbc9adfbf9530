"""``convmatrix spectrum`` run as a subprocess, checked against numpy's dense SVD."""

import os
import re
import subprocess
import sys

import numpy as np
from oracles import dense_by_probing


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
    assert p.returncode == 2 and "cannot read --weight" in p.stderr


def test_spectrum_weight_shape_mismatch(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((4, 4, 3, 1)))
    p = run("4x4x3x3", "4x8x8", "--weight", str(tmp_path / "w.npy"))
    assert p.returncode == 2 and "has shape 4x4x3x1, but WEIGHT_SHAPE is 4x4x3x3" in p.stderr
