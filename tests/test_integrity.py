"""One test per refusal of the value boundary, the size estimates and the interfaces' error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convmatrix
from convmatrix.cli import main
from convmatrix.core.geometry import (
    ConvGeometry, as_index, as_int, as_range, as_shape, as_window, int_tuple,
)
from convmatrix.core.pattern import matrix_entries, pattern_bytes
from convmatrix.core.matrix import as_bias, as_weight_array
from convmatrix.core.pattern import axis_nnz, axis_taps


# ------------------------------------------------------------ validators
@pytest.mark.parametrize("call, exc, match", [
    (lambda: as_int("k", 2**49), ValueError, r"k must be at most 281,474,976,710,656 \(2\*\*48\), got"),
    (lambda: as_int("k", True), TypeError, r"k must be an int, got True \(bool\)"),
    (lambda: as_int("k", np.float64(2)), TypeError, r"k must be an int, got np.float64\(2.0\) \(float64\)"),
    (lambda: int_tuple("stride", (1, 2, 3), 2), ValueError, r"stride must be an int or a sequence of 2 ints"),
    (lambda: int_tuple("stride", (1, 2.0), 2), TypeError, r"stride must be an int or a sequence of 2 ints"),
    (lambda: as_shape("input_shape", np.array(4)), TypeError, r"input_shape must be a sequence of ints, got an "
                                                               r"array of shape \(\)"),
    (lambda: as_shape("input_shape", (1, 2), ndim=3), ValueError, r"input_shape must have 3 entries"),
    (lambda: as_range(("start", "stop"), 3, 2, 8, "rows"), ValueError, r"0 <= start <= stop <= 8 \(the rows\)"),
    (lambda: as_window("rows", (0, 1.5), 8), TypeError, r"rows must hold ints"),
    (lambda: as_window("rows", "0:3", 8), TypeError, r"rows must be None, \(start, stop\)"),
    (lambda: as_index("index", (0, 9), (1, 3)), ValueError, r"index \(0, 9\) is outside the shape"),
    (lambda: as_index("index", "3", (1, 3)), TypeError, r"index must be an int or a tuple"),
])
def test_validators_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_as_index_round_trips_numpy():
    shape = (2, 3, 4)
    for flat in range(24):
        f, coords = as_index("i", flat, shape)
        assert coords == tuple(int(c) for c in np.unravel_index(flat, shape))
        assert as_index("i", coords, shape) == (f, coords)


# ------------------------------------------------------------ estimates
@pytest.mark.parametrize("weight_shape, input_shape, kw", [
    ((2, 1, 3, 3), (1, 9, 7), dict(padding=2, stride=2)),
    ((1, 1, 5), (1, 3), dict(padding=2, padding_mode="reflect")),
    ((1, 1, 4), (1, 3), dict(padding=3, padding_mode="circular")),
    ((1, 1, 4), (1, 3), dict(padding=7, padding_mode="replicate", dilation=2)),
    ((2, 3, 3), (2, 5), dict(transposed=True, stride=3, padding=1, output_padding=2)),
])
def test_matrix_entries_match_the_built_pattern(weight_shape, input_shape, kw):
    geom = ConvGeometry.from_args(weight_shape, input_shape, **kw)
    nnz = convmatrix.conv_matrix(np.ones(weight_shape), input_shape, **kw).nnz
    assert matrix_entries(geom) == (nnz, True) and axis_nnz(geom) == nnz


def test_estimates_allocate_nothing_for_absurd_layers():
    geom = ConvGeometry.from_args((1, 1, 3, 3), (1, 10**9, 10**9), padding=10**6)
    assert matrix_entries(geom) == ((10**9) ** 2 * 9, True)
    assert pattern_bytes(geom) > 10**18


def test_the_1d_pattern_refuses_what_cannot_fit():
    geom = ConvGeometry.from_args((1, 1, 3), (1, 2**40), padding=1, padding_mode="replicate")
    with pytest.raises(ValueError, match=r"the 1-D tap pattern of spatial dimension 0 .* would need"):
        axis_taps(geom, 0)


def test_block_planner_refuses_what_cannot_fit():
    with pytest.raises(ValueError, match=r"planning the row blocks .* would need"):
        next(iter(convmatrix.conv_matrix_blocks(np.ones((1, 1, 3, 3)), (1, 10**6, 10**6))))


@pytest.mark.parametrize("call, match", [
    (lambda: convmatrix.singular_values(np.ones((64, 64, 1, 1), np.float32), (64, 8192, 8192), k=1),
     r"per-frequency SVDs .* would take about .* flops.*spectral_norm_bounds"),
    (lambda: convmatrix.singular_values(np.ones((1, 1, 3, 3)), (1, 10**5, 10**5), k=1),
     r"singular_values: the Lanczos vectors .* would need"),
    (lambda: convmatrix.spectral_norm(np.ones((1, 1, 3, 3)), (1, 10**6, 10**6)),
     r"spectral_norm: the Lanczos vectors .* would need"),
    (lambda: convmatrix.singular_values(np.ones((1, 1, 3)), (1, 8), max_bytes="x"), r"max_bytes must be an int"),
])
def test_spectral_routes_refuse_by_their_estimate(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ------------------------------------------------------------ values
@pytest.mark.parametrize("weight, dtype", [
    (np.ones((1, 1, 2), dtype=np.longdouble), np.float64),
    (np.ones((1, 1, 2), dtype=">i2"), np.float64),
    (np.ones((1, 1, 2), dtype=np.float16), np.float32),
    (torch.ones(1, 1, 2, dtype=torch.bfloat16), np.float32),
    (torch.ones(1, 1, 2).to_sparse(), np.float32),
    (torch.ones(1, 1, 2, requires_grad=True), np.float32),
])
def test_weights_of_any_kind_become_native_arrays(weight, dtype):
    arr = as_weight_array(weight)
    assert arr.dtype == dtype and arr.dtype.isnative and np.array_equal(arr, np.ones((1, 1, 2)))


def test_bias_shape_is_checked():
    assert as_bias(torch.tensor([1.0, 2.0]), 2).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\) \(one per output channel\), got \(2, 1\)"):
        as_bias(np.ones((2, 1)), 2)


def test_meta_modules_are_refused_by_name():
    with pytest.raises(ValueError, match=r"weight is on the 'meta' device"):
        convmatrix.from_module(torch.nn.Conv2d(1, 2, 3, device="meta"), (1, 5, 5))


def test_to_mlp_refuses_an_input_that_cannot_fit_before_running_the_model():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval()
    with pytest.raises(ValueError, match=r"an input of shape \(1, 1099511627776, 1\) would need"):
        convmatrix.to_mlp(net, (1, 2**40, 1))


def test_to_mlp_leaves_a_training_model_untouched():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="eval mode"):
        convmatrix.to_mlp(net, (3,))
    assert torch.equal(net[1].running_mean, before) and net[1].num_batches_tracked == 0


# ------------------------------------------------------------ interfaces
def test_memory_errors_on_the_command_line_are_one_line_with_status_2(monkeypatch, capsys):
    from convmatrix.cli import show

    def exhausted(args):
        raise MemoryError("Unable to allocate 8 TiB")

    monkeypatch.setattr(show, "run", exhausted)
    assert main(["show", "2x1x2x2", "1x3x3"]) == 2
    err = capsys.readouterr().err
    assert err == "convmatrix show: error: too large for this machine (MemoryError: Unable to allocate 8 TiB)\n"


def test_the_server_answers_413_when_memory_runs_out(monkeypatch):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from convmatrix.explorer import server
    from convmatrix.explorer.data import default_spec

    client = TestClient(server.create_app(default_spec()))

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(server, "build_stack", exhausted)
    r = client.get("/api/summary", params={"spec": '{"input": "1x4x4", "layers": [{"weight": "1x1x2x2"}]}'})
    assert r.status_code == 413 and "too large for this machine" in r.json()["error"]


def test_the_explorer_budget_holds_for_the_whole_stack():
    pytest.importorskip("starlette")
    from convmatrix.explorer.data import build_stack

    layer = {"weight": "1x1x3x3", "padding": "1"}
    build_stack({"input": "1x64x64", "layers": [layer] * 4}, budget=4_800_000)
    with pytest.raises(ValueError, match=r"tap pattern of layer 5 .*with the layers before it.* would need"):
        build_stack({"input": "1x64x64", "layers": [layer] * 5}, budget=4_800_000)


def _weight_files(tmp_path):
    """Files a user might pass as a weight that are not a plain float tensor of the right shape."""
    files = {"empty.npy": b"", "empty.pt": b"", "junk.pt": bytes(range(256)) * 2}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.nn.Conv2d(1, 2, 2), tmp_path / "module.pt")
    return [str(tmp_path / n) for n in (*files, "module.pt")]


@pytest.mark.parametrize("command", [["show"], ["neuron"], ["plot", "-o", "p.png"], ["explore", "-o", "e.html"]])
def test_unreadable_weight_files_are_one_line_with_status_2(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in [*_weight_files(tmp_path), ""]:
        argv = [command[0], "2x1x2x2", "1x3x3", *(["0"] if command[0] == "neuron" else command[1:])]
        assert main([*argv, "--weight", path]) == 2, path
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--weight" in err, err


@pytest.mark.parametrize("make", [
    lambda w: w.to(torch.bfloat16), lambda w: w.to_sparse(),
    lambda w: torch.quantize_per_tensor(w, 0.5, 0, torch.qint8),
])
def test_tensor_files_of_any_kind_are_read_as_their_values(make, tmp_path, capsys):
    w = torch.tensor([1.0, -2.0, 3.0, 0.5]).reshape(1, 1, 2, 2)
    torch.save(make(w), tmp_path / "w.pt")
    np.save(tmp_path / "w.npy", w.numpy())
    assert main(["show", "1x1x2x2", "1x2x2", "--weight", str(tmp_path / "w.pt")]) == 0
    out, err = capsys.readouterr()
    assert main(["show", "1x1x2x2", "1x2x2", "--weight", str(tmp_path / "w.npy")]) == 0
    assert (out, err) == capsys.readouterr()


def test_plot_refuses_a_dpi_the_renderer_cannot_draw(tmp_path, capsys):
    assert main(["plot", "2x1x2x2", "1x3x3", "-o", str(tmp_path / "p.png"), "--dpi", "1"]) == 2
    assert "--dpi" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--kernel", "nan,1;1,1"], ["--kernel", "1e400,1;1,1"],
                                    ["--kernel", "box", "--bias", "inf"]])
def test_kernel_and_bias_texts_must_be_finite(option, capsys):
    assert main(["show", "2x1x2x2", "1x3x3", *option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finite" in err and option[-2] in err, err
