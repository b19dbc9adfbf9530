"""convmatrix show / neuron / plot through a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import convmatrix
from test_symbolic import CONTRACT_SEED, seed_matrix


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "convmatrix", *args], capture_output=True, text=True,
                          env=os.environ.copy(), cwd=cwd, timeout=120)


def test_show_seed(shared_dir):
    r = cli("show", "2x1x2x2", "1x3x3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == seed_matrix(shared_dir) + "\n"


def test_show_is_str_symbolic_with_options():
    r = cli("show", "2x1x2x2", "1x3x3")
    assert r.returncode == 0 and r.stdout == CONTRACT_SEED + "\n"
    args = ["4x2x3x3", "4x6x5", "--groups", "2", "--stride", "2,1", "--padding", "1",
            "--padding-mode", "circular", "--rows", "2:11", "--cols", "0:20", "--dilation", "1,2"]
    r = cli("show", *args)
    expected = convmatrix.symbolic((4, 2, 3, 3), (4, 6, 5), groups=2, stride=(2, 1), padding=1,
                                   padding_mode="circular", dilation=(1, 2), rows=(2, 11), cols=(0, 20))
    assert r.returncode == 0, r.stderr
    assert r.stdout == str(expected) + "\n"
    r = cli("show", "2x1x3", "2x4", "--transposed", "--stride", "2", "--output-padding", "1", "--format", "latex")
    assert r.stdout == convmatrix.symbolic((2, 1, 3), (2, 4), transposed=True, stride=2,
                                           output_padding=1).to_latex() + "\n"
    r = cli("show", "1x1x3", "1x50", "--max-cols", "0", "--max-rows", "0", "--format", "markdown")
    assert len(r.stdout.splitlines()) == 48 + 2 and "..." not in r.stdout


def test_neuron_and_feeds():
    r = cli("neuron", "2x1x2x2", "1x3x3", "1,1,1")
    assert r.returncode == 0, r.stderr
    assert "y[1,1,1] = e*x[0,1,1] + f*x[0,1,2] + g*x[0,2,1] + h*x[0,2,2]" in r.stdout
    assert cli("neuron", "2x1x2x2", "1x3x3", "7").stdout == r.stdout
    r = cli("neuron", "2x1x2x2", "1x3x3", "4", "--feeds")
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert [int(x[0]) for x in rows] == list(range(8)) and [x[-1] for x in rows] == list("dcbahgfe")


@pytest.mark.parametrize("args, message", [
    (["show", "2x1x2", "1x3x3"], "input_shape must be (channels, *spatial)"),
    (["show", "2x1x2x2", "1x3x3", "--rows", "3:9"], "rows must satisfy"),
    (["show", "2x1x2x2", "1x3x3", "--rows", "3-9"], "a window is START:STOP"),
    (["show", "2xax2", "1x3x3"], "a shape is positive ints"),
    (["neuron", "2x1x2x2", "1x3x3", "8"], "must be a flat index in [0, 8)"),
    (["neuron", "2x1x2x2", "1x3x3", "a"], "a neuron is a flat index"),
    (["plot", "2x1x2x2", "1x3x3"], "required: -o/--output"),
    (["show", "2x1x2x2", "1x3x3", "--padding-mode", "reflect", "--padding", "3"], "reflect padding must be"),
])
def test_bad_input_one_line_exit_2(args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_help_has_examples():
    for cmd in ("show", "neuron", "plot"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and "examples:" in r.stdout and f"convmatrix {cmd} 2x1x2x2" in r.stdout


def test_plot_files(tmp_path):
    from test_plot import check_png

    out = tmp_path / "m.png"
    r = cli("plot", "2x1x2x2", "1x3x3", "-o", str(out), "--dpi", "50")
    assert r.returncode == 0, r.stderr
    check_png(out)
    out = tmp_path / "n.png"
    r = cli("plot", "1x1x3x3", "1x5x5", "--padding", "1", "--neuron", "0,2,2", "-o", str(out), "--dpi", "50")
    assert r.returncode == 0, r.stderr
    check_png(out)
