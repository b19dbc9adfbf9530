"""Fuzzing at the edges of the contract: exact answers, clear refusals, no tracebacks, no HTTP 500.

Four kinds of random trials (derandomised by default; ``HYPOTHESIS_PROFILE=thorough`` runs more):

- valid geometries of every kind (forward and transposed, all padding modes) against torch;
- one bad argument at a time to the public functions: a ValueError or TypeError naming the
  argument (or, for a size too large, the estimate), raised before anything large is allocated;
- random command lines: exit status 0 or 2, never a traceback, errors in one line on stderr;
- random explorer specs and queries: HTTP 200 or 4xx, never 500.
"""

from __future__ import annotations

import json
import re
import resource

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convmatrix
from convmatrix.cli import main
from oracles import torch_conv, torch_module
from strategies import forward_convs, transposed_convs

SCALE = settings.default.max_examples / 60  # 1 in the default profile, 5 in the thorough one
HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def examples(n: int) -> settings:
    """``n`` examples in the default profile, proportionally more in the thorough one."""
    return settings(max_examples=max(1, round(n * SCALE)), suppress_health_check=HEALTH)


FEW = examples(30)


@pytest.fixture(autouse=True, scope="module")
def _memory_ceiling():
    """A refused size must be refused before allocating: a 4 GB address-space ceiling turns any
    large allocation into a MemoryError the tests see (and the machine survives)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = 6 * 2**30 + _current_vm()
    resource.setrlimit(resource.RLIMIT_AS, (min(limit, hard) if hard != resource.RLIM_INFINITY else limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _current_vm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------ valid geometries
@FEW
@given(st.one_of(forward_convs(), transposed_convs()), st.integers(0, 2**31 - 1))
def test_random_layers_equal_torch(layer, seed):
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, weight_shape).astype(np.float64)
    x = rng.integers(-3, 4, input_shape).astype(np.float64)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    np.testing.assert_array_equal(M @ x.ravel(), torch_conv(w, x, **kw).ravel())


@FEW
@given(st.one_of(forward_convs(max_nd=2), transposed_convs(max_nd=2)), st.integers(0, 2**31 - 1))
def test_random_modules_with_bias_equal_torch(layer, seed):
    weight_shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, weight_shape).astype(np.float64)
    out_channels = weight_shape[1] * kw["groups"] if kw.get("transposed") else weight_shape[0]
    bias = rng.integers(-3, 4, out_channels).astype(np.float64)
    module = torch_module(w, bias=bias, **kw)
    M, b = convmatrix.from_module(module, input_shape)
    x = rng.integers(-3, 4, input_shape).astype(np.float64)
    with torch.no_grad():
        want = module(torch.from_numpy(x)[None])[0].numpy().ravel()
    np.testing.assert_array_equal(M @ x.ravel() + b, want)


# ------------------------------------------------------------ bad arguments
W = np.arange(1.0, 2 * 1 * 3 * 3 + 1).reshape(2, 1, 3, 3)
GOOD = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros")

# (argument, bad value, what the message must contain): each value is wrong whatever the rest is.
BAD = [
    *[("stride", v, "stride") for v in (0, -1, "2", 2.5, None, True, (1, 1, 1), 10**20, [], {})],
    *[("dilation", v, "dilation") for v in (0, -2, "1", 1.0, None, False, (1,) * 3, 2**60)],
    *[("padding", v, "padding") for v in (-1, "full", 2.5, None, 10**20, (1, 1, 1), b"1", [-1, 0])],
    *[("groups", v, "groups") for v in (0, -1, "1", 1.5, True, None, 10**20, 3)],
    *[("padding_mode", v, "padding_mode") for v in ("mirror", 1, None, "")],
    *[("transposed", v, "transposed") for v in ("yes", 1, None)],
    *[("output_padding", v, "output_padding") for v in (-1, "1", 2.5, 10**20, 1)],
    *[("input_shape", v, "input_shape") for v in (
        "1x8x8", None, 5, (1,), (1, 8), (0, 8, 8), (1, -3, 3), (1, 2.5, 3), (1, 8, 8, 8), (1, 2**60, 1),
        np.array(8), (2, 8, 8), [1, "8", 8])],
    *[("weight", v, "weight") for v in (
        "abc", None, np.ones(2), np.ones((2, 1)), np.array([None] * 9, dtype=object).reshape(1, 1, 3, 3),
        np.ones((1, 1, 3, 3), dtype=bool), torch.ones(1, 1, 3, 3, device="meta"), np.ones((1, 0, 3, 3)),
        [[1, 2], [3]])],
    # Sizes too large to build: refused with the estimate ("would need ..."), not a MemoryError.
    ("input_shape", (1, 2**40, 1), "would need"),
    ("input_shape", (1, 10**6, 10**6), "would need"),
    ("padding", 10**8, "would need"),
    ("padding", (10**11, 0), "would need"),
]


def _call_conv_matrix(weight, input_shape, kw):
    return convmatrix.conv_matrix(weight, input_shape, **kw)


def _call_symbolic(weight, input_shape, kw):
    return str(convmatrix.symbolic(np.shape(weight) if isinstance(weight, np.ndarray) and weight.ndim == 4
                                   else weight, input_shape, **kw))


def _call_blocks(weight, input_shape, kw):
    return next(iter(convmatrix.conv_matrix_blocks(weight, input_shape, block_bytes="1MB", **kw)))


def _call_operator(weight, input_shape, kw):
    op = convmatrix.operator(weight, input_shape, **kw)
    return op @ np.ones(op.shape[1])  # refused sizes never get here: the operator checks its products


def _call_bounds(weight, input_shape, kw):
    return convmatrix.spectral_norm_bounds(weight, input_shape, **kw)


def _call_singular_values(weight, input_shape, kw):
    return convmatrix.singular_values(weight, input_shape, k=1, **kw)


CALLS = [_call_conv_matrix, _call_symbolic, _call_blocks, _call_operator, _call_bounds, _call_singular_values]


def _names_it(exc: BaseException, word: str) -> bool:
    text = str(exc)
    return word in text or (word == "weight" and "weight" in text.lower())


@examples(60)
@given(st.sampled_from(BAD), st.sampled_from(CALLS))
def test_one_bad_argument_is_named(bad, call):
    name, value, word = bad
    kw, weight, shape = dict(GOOD), W, (1, 8, 8)
    if name == "weight":
        weight = value
    elif name == "input_shape":
        shape = value
    else:
        kw[name] = value
    if name == "output_padding" and value == 1:
        kw["transposed"] = True  # 1 is not smaller than stride 1 or dilation 1
        weight = np.ones((1, 2, 3, 3))
    if call is _call_symbolic and name == "weight":
        return  # symbolic takes a shape, not values
    with pytest.raises((ValueError, TypeError)) as info:
        call(weight, shape, kw)
    assert _names_it(info.value, word), f"{call.__name__}({name}={value!r}): {info.value}"


SIGNAL_BAD = [("n", v) for v in ("3", 3.5, -1, 0, None, True, 10**20, (3, 3))] + \
             [("a", v) for v in ("abc", None, np.ones((2, 2, 2, 2)), np.array(["x"]))] + \
             [("mode", v) for v in (1, "wide", None)]


@examples(40)
@given(st.sampled_from(SIGNAL_BAD), st.sampled_from(["convolution_matrix", "convmtx", "convmtx2"]))
def test_signal_functions_name_the_bad_argument(bad, which):
    name, value = bad
    args = {"a": [1.0, 2.0, 3.0], "n": 4, "mode": "full"}
    args[name] = value
    if which == "convolution_matrix":
        call = lambda: convmatrix.convolution_matrix(args["a"], args["n"], args["mode"])  # noqa: E731
    elif name == "mode":
        return  # MATLAB's functions have no mode
    elif which == "convmtx":
        call = lambda: convmatrix.convmtx(args["a"], args["n"])  # noqa: E731
    else:
        H = np.ones((2, 2)) if name != "a" else value
        call = lambda: convmatrix.convmtx2(H, 3, args["n"])  # noqa: E731
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    own = {"convolution_matrix": "a", "convmtx": "h", "convmtx2": "H"}[which] if name == "a" else name
    assert re.search(rf"\b{own}\b", str(info.value)), (which, name, value, str(info.value))


@pytest.mark.parametrize("call", [convmatrix.singular_values, convmatrix.spectral_norm,
                                  convmatrix.spectral_norm_bounds])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_by_spectral_functions(call, bad):
    w = np.ones((2, 1, 3, 3))
    w[1, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="weight must be finite, got 1 NaN or infinite entry"):
        call(w, (1, 8, 8), padding=1)


def test_non_finite_weights_propagate_exactly_in_the_matrix():
    """conv_matrix's arithmetic is a gather: a NaN weight gives NaN exactly where torch's does."""
    w = np.ones((1, 1, 3, 3))
    w[0, 0, 0, 0] = np.nan
    M = convmatrix.conv_matrix(w, (1, 5, 5))
    x = np.arange(25.0).reshape(1, 5, 5)
    np.testing.assert_array_equal(np.isnan(M @ x.ravel()), np.isnan(torch_conv(w, x).ravel()))


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">c16", ">i4", "<f8"])
def test_any_byte_order_is_converted(dtype):
    w = np.arange(18).reshape(2, 1, 3, 3).astype(dtype)
    M = convmatrix.conv_matrix(w, (1, 5, 5), padding=1)
    want = convmatrix.conv_matrix(w.astype(w.dtype.newbyteorder("=")), (1, 5, 5), padding=1)
    assert (M != want).nnz == 0 and M.dtype.isnative


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantised_weights_are_dequantised():
    q = torch.quantize_per_tensor(torch.arange(9.0).reshape(1, 1, 3, 3) / 4, 0.25, 0, torch.qint8)
    M = convmatrix.conv_matrix(q, (1, 4, 4))
    want = convmatrix.conv_matrix(q.dequantize().numpy(), (1, 4, 4))
    assert (M != want).nnz == 0


@pytest.mark.parametrize("bias, match", [
    (torch.randn(3), r"module.bias must have shape \(4,\)"),
    (torch.randn(4, 1), r"module.bias must have shape \(4,\)"),
])
def test_module_with_inconsistent_bias_is_refused(bias, match):
    c = torch.nn.Conv2d(1, 4, 3)
    c.bias = torch.nn.Parameter(bias)
    with pytest.raises(ValueError, match=match):
        convmatrix.from_module(c, (1, 5, 5))


@pytest.mark.parametrize("module", [torch.nn.Conv2d(1, 4, 3), torch.nn.ConvTranspose2d(1, 4, 3, groups=1)])
def test_module_with_inconsistent_weight_is_refused(module):
    module.weight = torch.nn.Parameter(torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match=r"module.weight must have shape"):
        convmatrix.from_module(module, (1, 5, 5))


def test_large_layers_are_refused_by_their_estimate():
    with pytest.raises(ValueError, match=r"singular_values\(k=None\).*would need about .*k="):
        convmatrix.singular_values(np.ones((64, 64, 3, 3), np.float32), (64, 4096, 4096), padding=1,
                                   padding_mode="circular")
    with pytest.raises(ValueError, match=r"symbolic matrix's tap pattern .* would need"):
        convmatrix.symbolic((1, 1, 3, 3), (1, 10**6, 10**6))
    with pytest.raises(ValueError, match=r"iterations=10\*\*9|Krylov basis of iterations=1000000000"):
        convmatrix.spectral_norm_bounds(np.ones((1, 1, 3)), (1, 10**6), iterations=10**9)


def test_to_mlp_checks_max_bytes_before_building():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(64, 64, 3, padding=1)).eval()
    with pytest.raises(ValueError, match=r"dense Linear weights would need [\d.]+ GB, more than max_bytes"):
        convmatrix.to_mlp(net, (3, 64, 64), max_bytes=10**6)


def test_dask_matrix_of_a_huge_input_is_refused_by_the_planner():
    pytest.importorskip("dask")
    with pytest.raises(ValueError, match=r"planning the row blocks .* would need"):
        convmatrix.dask_matrix(np.ones((1, 1, 3, 3)), (1, 10**6, 10**6))


# ------------------------------------------------------------ command line
SHAPES = ["2x1x2x2", "1x1x3x3", "1x3x3", "1x8x8", "2x8", "1x1x3", "0x1x3x3", "axb", "1x", "", "-1x3",
          "1x1000000x1000000", "99999999999999999999x1x3x3", "1x99999999999999999999x1", "1x1x1x1x1x1x1"]
VALUES = ["0", "1", "2", "-1", "1,2", "2,1,1", "a", "", "same", "valid", "99999999999999999999", "100000000",
          "1.5", "1e3", ",", "0:3", "3:1", "zeros", "circular"]
OPTIONS = ["--stride", "--padding", "--dilation", "--groups", "--output-padding", "--padding-mode",
           "--rows", "--cols", "--max-rows", "--max-cols", "-k", "--seed", "--layer", "--format"]
FLAGS = ["--transposed", "--no-separators", "--help", "--bogus"]


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(["show", "spectrum", "explore", "neuron", "bogus"]))
    argv = [command, *draw(st.lists(st.sampled_from(SHAPES), min_size=0, max_size=3))]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            argv += [draw(st.sampled_from(OPTIONS)), draw(st.sampled_from(VALUES))]
        else:
            argv.append(draw(st.sampled_from(FLAGS)))
    if command == "explore":
        argv += ["-o", "PAGE"]
    return argv


@examples(80)
@given(argv=command_lines())
def test_random_command_lines_exit_cleanly(tmp_path, capsys, argv):
    argv = [str(tmp_path / "page.html") if a == "PAGE" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        status = exc.code
    out, err = capsys.readouterr()
    assert status in (0, 2), (argv, status, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    if status == 2 and "usage:" not in err:
        assert len(err.strip().splitlines()) == 1, (argv, err)


def test_no_command_prints_usage_on_stderr(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: convmatrix") and "a command is required" in err


def test_internal_errors_are_one_line_unless_debug(monkeypatch, capsys):
    from convmatrix.cli import show

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(show, "run", broken)
    assert main(["show", "2x1x2x2", "1x3x3"]) == 1
    err = capsys.readouterr().err
    assert "internal error (KeyError" in err and "--debug" in err and len(err.splitlines()) == 1
    with pytest.raises(KeyError):
        main(["--debug", "show", "2x1x2x2", "1x3x3"])


# ------------------------------------------------------------ explorer
TEXTS = st.sampled_from(["1", "2", "0", "-1", "1,1", "same", "valid", "99999999999999999999", "100000", "x", "",
                         "zeros", "reflect", "circular", "1x1x3x3", "2x1x2x2", "1x8x8", "1x3x3"])
JUNK = st.recursive(st.none() | st.booleans() | st.integers(-2, 10**20) | st.floats() | TEXTS,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
                    max_leaves=6)
FIELDS = ["weight", "stride", "padding", "dilation", "groups", "padding_mode", "transposed", "output_padding",
          "label", "bogus"]


@st.composite
def specs(draw):
    layers = [draw(st.dictionaries(st.sampled_from(FIELDS), TEXTS | JUNK, max_size=5)) for _ in
              range(draw(st.integers(0, 3)))]
    spec = {"input": draw(TEXTS | JUNK), "layers": layers}
    return draw(st.sampled_from([spec, layers, {"layers": layers}, draw(JUNK)]))


QUERIES = [("/api/summary", {}),
           ("/api/window", {"layer": "0", "r0": "0", "r1": "4", "c0": "0", "c1": "4"}),
           ("/api/sparsity", {"layer": "0", "r0": "0", "r1": "4", "c0": "0", "c1": "4", "h": "9", "w": "9"}),
           ("/api/neuron", {"neuron": "out:0:0:0"}), ("/api/neuron", {"neuron": "in:0:1:1", "field": "1"})]


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from convmatrix.explorer.data import default_spec
    from convmatrix.explorer.server import create_app

    return TestClient(create_app(default_spec()))


@examples(80)
@given(specs(), st.sampled_from(QUERIES), st.dictionaries(st.sampled_from(["layer", "r0", "r1", "neuron", "h"]),
                                                          TEXTS, max_size=2))
def test_random_specs_never_answer_500(client, spec, query, extra):
    path, params = query
    r = client.get(path, params={**params, **extra, "spec": json.dumps(spec)})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (spec, r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]


@pytest.mark.parametrize("spec_text", ["[" * 1000 + "]" * 1000, '{"input": ' * 1000 + "1" + "}" * 1000,
                                       "{" * 15_000, "x" * 60_000])
def test_nested_or_huge_spec_texts_answer_400(client, spec_text):
    r = client.get("/api/summary", params={"spec": spec_text})
    assert r.status_code == 400 and r.json()["error"]


# ------------------------------------------------------------ convert: outputs without a batch axis, odd constants
@pytest.mark.parametrize("node, in_dims, out_dims", [
    (dict(op_type="ReduceSum", keepdims=0), [1, 4], []),  # a scalar from a batch-of-one input
    (dict(op_type="Transpose", perm=[1, 0]), [1, 3], [3, 1]),  # the batch axis moved back
])
def test_convert_checks_outputs_without_a_batch_axis(node, in_dims, out_dims, tmp_path, capsys):
    from onnx import helper, save
    from onnx_cases import model, ort_run

    op = node.pop("op_type")
    save(model([helper.make_node(op, ["x"], ["y"], **node)], in_dims, out_dims), tmp_path / "m.onnx")
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--quiet"]) == 0, \
        capsys.readouterr().err
    x = np.random.default_rng(0).standard_normal(in_dims).astype(np.float32)
    want, got = ort_run(str(tmp_path / "m.onnx"), x), ort_run(str(tmp_path / "o.onnx"), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("op, c", [("Div", [2.0, 0.0, -4.0]), ("Mul", [1.0, np.inf, 2.0])])
def test_convert_refuses_a_non_finite_scale_in_one_line(op, c, tmp_path, capsys):
    from onnx import helper, save
    from onnx_cases import model

    m = model([helper.make_node(op, ["x", "c"], ["y"])], [1, 3], [1, 3], {"c": np.array(c, np.float32)})
    save(m, tmp_path / "m.onnx")
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and op in err and "Warning" not in err, err


def test_spectrum_refuses_billions_of_tiny_fourier_blocks_by_time(capsys):
    """A 1x1 kernel on a 10^10-pixel image: ten billion 1x1 SVDs cost their call overhead, not 10 flops."""
    assert main(["spectrum", "1x1x1x1", "1x99999x99999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-minutes" in err and "FFT" in err, err
    from convmatrix.analysis.spectral import cost_estimate

    est = cost_estimate(np.ones((8, 8, 3, 3)), (8, 16, 16), padding=1, padding_mode="circular")
    assert est.route == "FFT" and 0 < est.seconds < 1


@pytest.mark.parametrize("call", [convmatrix.receptive_field, lambda m, s: convmatrix.neuron(m, s, 0, layer=1)])
def test_torch_models_refuse_a_huge_input_shape_by_its_size(call):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"input_shape=\(1, 1000000000, 1000000000\).*more than"):
        call(model, (1, 10**9, 10**9))


def _convert_one_line(m, tmp_path, capsys, *options):
    from onnx import save

    save(m, tmp_path / "m.onnx")
    rc = main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--quiet", *options])
    err = capsys.readouterr().err
    assert err.count("\n") == (rc != 0) and "Warning" not in err, err
    return rc, err


def test_convert_a_batch_of_scalars(tmp_path, capsys):
    from onnx import helper
    from onnx_cases import model, ort_run

    rc, _ = _convert_one_line(model([helper.make_node("Relu", ["x"], ["y"])], ["N"], ["N"]), tmp_path, capsys)
    x = np.array([-1.5, 0.0, 2.0], np.float32)
    assert rc == 0 and ort_run(str(tmp_path / "o.onnx"), x).tolist() == [0.0, 0.0, 2.0]


def test_convert_says_when_onnxruntime_cannot_run_the_original(tmp_path):
    """onnxruntime failing on a check batch is a ValueError naming the file (one line at the CLI)."""
    from onnx import helper, save
    from onnx_cases import model

    from convmatrix.network.convert import run_onnx

    save(model([helper.make_node("Relu", ["x"], ["y"])], [1, 3], [1, 3]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"onnxruntime cannot run m.onnx on an input of shape \(2, 4\)"):
        run_onnx(tmp_path / "m.onnx", [np.zeros((2, 4), np.float32)], "x")


def test_convert_refuses_an_output_that_lost_a_dynamic_batch_axis(tmp_path, capsys):
    from onnx import helper
    from onnx_cases import model

    m = model([helper.make_node("Sum", ["c", "x"], ["y"])], ["N"], [3], {"c": np.ones(3, np.float32)})
    rc, err = _convert_one_line(m, tmp_path, capsys)
    assert rc == 2 and "lost the batch axis" in err


@pytest.mark.parametrize("op, inputs", [("MatMul", ["x", "c"]), ("Add", ["x", "c"]), ("BatchNormalization",
                                                                                        ["x", "c", "b", "b", "c"])])
def test_convert_refuses_non_finite_weights_by_name(op, inputs, tmp_path, capsys):
    from onnx import helper
    from onnx_cases import model

    c = np.array([1.0, np.nan, 2.0], np.float32)
    consts = {"c": c.reshape(3, 1) if op == "MatMul" else c, "b": np.ones(3, np.float32)}
    dims = [1, 3] if op != "BatchNormalization" else [1, 3, 2]
    out = [1, 1] if op == "MatMul" else dims
    m = model([helper.make_node(op, inputs, ["y"])], dims, out, consts)
    rc, err = _convert_one_line(m, tmp_path, capsys)
    assert rc == 2 and "'c' holds inf or NaN" in err


@pytest.mark.parametrize("op, const", [("Tile", [2, 2]), ("Expand", [2, 3])])
def test_convert_refuses_ops_that_repeat_a_dynamic_batch(op, const, tmp_path, capsys):
    """Tile or Expand along axis 0 of a batch [N, 3] mixes samples: refused, never converted per sample."""
    from onnx import helper
    from onnx_cases import model

    m = model([helper.make_node(op, ["x", "s"], ["y"])], ["N", 3], None, {"s": np.array(const)})
    rc, err = _convert_one_line(m, tmp_path, capsys, "--check", "0")
    assert rc == 2 and "batch axis" in err, err


@pytest.mark.parametrize("hi, rc", [(np.inf, 0), (np.nan, 2)])
def test_convert_clip_takes_an_infinite_bound_but_not_nan(hi, rc, tmp_path, capsys):
    from onnx import helper
    from onnx_cases import model

    consts = {"lo": np.array(-1, np.float32), "hi": np.array(hi, np.float32)}
    m = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [1, 5], [1, 5], consts)
    assert _convert_one_line(m, tmp_path, capsys)[0] == rc
