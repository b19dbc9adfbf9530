"""convmatrix show / neuron / plot through a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import convmatrix
from oracles import torch_module
from test_symbolic import CONTRACT_SEED, parse_bias, parse_text, seed_matrix


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


# ------------------------------------------------------------------ numbers from the command line
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
ASKER_ROWS = """\
[
    [ 0 -1  0  0  0|-1  5 -1  0  0| 0 -1  0  0  0| 0  0  0  0  0| 0  0  0  0  0]
    [ 0  0 -1  0  0| 0 -1  5 -1  0| 0  0 -1  0  0| 0  0  0  0  0| 0  0  0  0  0]
]
"""


def main(capsys, *args):
    """The command in this process: (exit status, stdout, stderr)."""
    from convmatrix.cli import main as cli_main

    try:
        rc = cli_main(list(args))
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_show_sharpen_rows_are_conv_matrix_rows():
    import torch

    r = cli("show", "3x1x3x3", "1x5x5", "--kernel", "sharpen", "--rows", "0:2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ASKER_ROWS
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert "$ convmatrix show 3x1x3x3 1x5x5 --kernel sharpen --rows 0:2\n" + ASKER_ROWS in readme
    K = np.broadcast_to(SHARPEN, (3, 1, 3, 3))
    assert r.stdout == str(convmatrix.symbolic((3, 1, 3, 3), (1, 5, 5), weight=K, rows=(0, 2))) + "\n"
    rows = np.array(parse_text(r.stdout.strip()), dtype=float)
    np.testing.assert_array_equal(rows, convmatrix.conv_matrix(K, (1, 5, 5))[[0, 1]].toarray())
    J = torch.autograd.functional.jacobian(
        lambda v: torch.nn.functional.conv2d(v.reshape(1, 1, 5, 5), torch.tensor(K.copy())).reshape(-1),
        torch.zeros(25, dtype=torch.float64))
    np.testing.assert_array_equal(rows, J[:2].numpy())


def test_show_weight_files_bias_and_precision(tmp_path, capsys, rng):
    import torch

    w = rng.standard_normal((2, 2, 3, 3))
    b = np.array([0.25, -1.5])
    np.save(tmp_path / "w.npy", w)
    torch.save(torch.tensor(w), tmp_path / "w.pt")
    kw = dict(padding=1, padding_mode="circular")
    args = ["2x2x3x3", "2x4x4", "--padding", "1", "--padding-mode", "circular", "--max-rows", "0", "--max-cols", "0"]
    rc, out, err = main(capsys, "show", *args, "--weight", str(tmp_path / "w.npy"), "--precision", "17",
                        "--bias", "0.25,-1.5")
    assert rc == 0, err
    M, bias = np.array(parse_text(out.strip()), dtype=float), np.array(parse_bias(out.strip()))
    x = rng.standard_normal((2, 4, 4))
    with torch.no_grad():
        want = torch_module(w, bias=b, **kw)(torch.as_tensor(x)[None])[0].numpy().ravel()
    np.testing.assert_allclose(M @ x.ravel() + bias, want, rtol=1e-12, atol=1e-12)
    rc, pt, _ = main(capsys, "show", *args, "--weight", str(tmp_path / "w.pt"), "--precision", "17",
                     "--bias", "0.25,-1.5")
    assert rc == 0 and pt == out
    rc, short, _ = main(capsys, "show", *args, "--weight", str(tmp_path / "w.npy"), "--precision", "2")
    M2 = np.array(parse_text(short.strip()), dtype=float)
    np.testing.assert_allclose(M2, convmatrix.conv_matrix(w, (2, 4, 4), **kw).toarray(), rtol=0.05)
    rc, tex, _ = main(capsys, "show", "3x1x3x3", "1x5x5", "--kernel", "laplace", "--format", "latex")
    assert rc == 0 and tex.startswith("\\left[\\begin{array}{rrrrr|rrrrr|")


def test_neuron_prints_the_numbers_of_its_formula(capsys):
    rc, out, err = main(capsys, "neuron", "3x1x3x3", "1x5x5", "1,1,2", "--kernel", "sharpen", "--bias", "0,0.5,0")
    assert rc == 0, err
    line = next(s.strip() for s in out.splitlines() if s.strip().startswith("y[1,1,2] =") and "K[" not in s)
    rhs = line.split(" = ", 1)[1]
    row = np.zeros(25)
    for sign, value, x in re.findall(r"(^|[+-]) ?([0-9.e]+)\*x\[([0-9,]+)\]", rhs):
        row[np.ravel_multi_index(tuple(int(v) for v in x.split(",")), (1, 5, 5))] = float(sign + value)
    bias = re.fullmatch(r".*([+-]) ([0-9.e]+)", rhs).group(1, 2)
    bias = float("".join(bias))
    K = np.broadcast_to(SHARPEN, (3, 1, 3, 3))
    np.testing.assert_array_equal(row, convmatrix.conv_matrix(K, (1, 5, 5))[[1 * 9 + 1 * 3 + 2]].toarray()[0])
    assert float(bias) == 0.5


def test_plot_with_numbers(tmp_path):
    from test_plot import check_png

    out = tmp_path / "rows.png"
    r = cli("plot", "3x1x3x3", "1x5x5", "--kernel", "sharpen", "--rows", "0:2", "-o", str(out), "--dpi", "50")
    assert r.returncode == 0, r.stderr
    check_png(out)
    fig = convmatrix.plot_matrix((3, 1, 3, 3), (1, 5, 5), rows=(0, 2), weight=np.broadcast_to(SHARPEN, (3, 1, 3, 3)))
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["0", "-1", "0", "-1", "5", "-1", "0", "-1", "0"] * 2)


@pytest.mark.parametrize("args, message", [
    (["show", "3x1x3x3", "1x5x5", "--kernel", "1,2;3,4"], "--kernel '1,2;3,4' is 2x2 but WEIGHT_SHAPE's kernel is 3x3"),
    (["show", "3x1x3x3", "1x5x5", "--kernel", "blur"], "--kernel is numbers like"),
    (["show", "3x1x3x3", "1x5x5", "--kernel", "1,x,3;1,2,3;1,2,3"], "--kernel: entries are finite numbers"),
    (["show", "3x1x3x3", "1x5x5", "--weight", "missing.npy"], "--weight missing.npy: cannot read it"),
    (["show", "3x1x3x3", "1x5x5", "--weight", "w.txt"], "--weight takes a .npy, .pt or .pth file"),
    (["show", "3x1x3x3", "1x5x5", "--weight", "W2.npy"], "has shape 2x1x2x2, but WEIGHT_SHAPE is 3x1x3x3"),
    (["show", "3x1x3x3", "1x5x5", "--weight", "W2.npy", "--kernel", "box"], "not allowed with argument"),
    (["show", "3x1x3x3", "1x5x5", "--bias", "1,2"], "--bias needs one number or 3 (one per output channel), got 2"),
    (["show", "3x1x3x3", "1x5x5", "--bias", "one"], "--bias is a finite number or numbers"),
    (["show", "3x1x3x3", "1x5x5", "--kernel", "box", "--precision", "0"], "precision must be an int from 1 to 17"),
    (["show", "3x1x3x3", "1x5x5", "--precision", "x"], "argument --precision: invalid int value"),
    (["neuron", "3x1x3x3", "1x5x5", "0", "--kernel", "sobel"], "--kernel is numbers like"),
    (["neuron", "3x1x3x3", "1x5x5", "0", "--weight", "W2.npy"], "but WEIGHT_SHAPE is 3x1x3x3"),
    (["neuron", "3x1x3x3", "1x5x5", "0", "--bias", "1,2"], "--bias needs one number or 3"),
    (["neuron", "3x1x3x3", "1x5x5", "0", "--feeds", "--bias", "1"], "--bias does not apply with --feeds"),
    (["plot", "3x1x3x3", "1x5x5", "-o", "m.png", "--kernel", "sharpen", "--bias", "1"], "--bias needs --neuron"),
    (["plot", "3x1x3x3", "1x5x5", "-o", "m.png", "--kernel", "1,2,3"], "is 3 but WEIGHT_SHAPE's kernel is 3x3"),
    (["plot", "3x1x3x3", "1x5x5", "-o", "m.png", "--neuron", "0", "--bias", "a"], "--bias is a finite number"),
])
def test_layer_value_errors_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("W2.npy", np.ones((2, 1, 2, 2)))
    rc, out, err = main(capsys, *args)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
