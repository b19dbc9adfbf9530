"""The explorer's data, server and command, without a browser.

Oracles: torch's convolution modules (dense matrix by probing, autograd Jacobians of
linear stacks) and the seed answer's matrix as CONTRACT.md prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import dense_by_probing, torch_module
from strategies import forward_convs, transposed_convs

import convmatrix
from convmatrix.explorer.data import QueryError, SpecError, build_stack, default_spec, layer_spec

SEED_ROWS = """\
a b 0 c d 0 0 0 0
0 a b 0 c d 0 0 0
0 0 0 a b 0 c d 0
0 0 0 0 a b 0 c d
e f 0 g h 0 0 0 0
0 e f 0 g h 0 0 0
0 0 0 e f 0 g h 0
0 0 0 0 e f 0 g h""".splitlines()  # CONTRACT.md, separators dropped


def ids(prefix, shape, flat):
    """Neuron ids of flat indices, written by the test (C order, as CONTRACT.md states)."""
    return {":".join([prefix, *map(str, c)]) for c in zip(*np.unravel_index(np.asarray(flat, int), shape))}


def stack_of(wshape, ishape, kw, weight=None):
    return build_stack({"input": "x".join(map(str, ishape)), "layers": [layer_spec(wshape, **kw)]},
                       None if weight is None else [weight])


def test_seed_window_is_the_seed_matrix():
    s = build_stack(default_spec())
    win = s.window(0, 0, 8, 0, 9)
    shown = [["0"] * 9 for _ in range(8)]
    for r, c, name, _ in win["entries"]:
        shown[r][c] = name
    assert [" ".join(row) for row in shown] == SEED_ROWS
    # separators: '|' before columns 3 and 6 (image rows), '||' before output channel 1's rows
    assert win["col_sep"] == [0, 0, 0, 1, 0, 0, 1, 0, 0]
    assert win["row_sep"] == [0, 0, 0, 0, 2, 0, 0, 0]
    assert win["row_ids"][5] == "out:1:0:1" and win["col_ids"][4] == "in:0:1:1"


def test_seed_summary_numbers():
    L = build_stack(default_spec()).summary()["layers"][0]
    assert L["matrix_shape"] == [8, 9] and L["nnz"] == 32 and L["density"] == pytest.approx(32 / 72)
    assert L["formulas"][0].endswith("= 2") and "floor((3 + 0 + 0 - 1*(2-1) - 1) / 1) + 1" in L["formulas"][0]
    assert L["dense_bytes"] == "288 B"  # 8 * 9 float32


@pytest.mark.parametrize("mode, row0", [("reflect", ["b", "a+c"]), ("replicate", ["a+b", "c"])])
def test_folded_taps_are_named_as_sums(mode, row0):
    # ISSUE-NOTES: Conv1d k=3, padding 1, n=10
    s = stack_of((1, 1, 3), (1, 10), dict(padding=1, padding_mode=mode))
    names = [e[2] for e in s.window(0, 0, 1, 0, 10)["entries"]]
    assert names == row0


@settings(max_examples=25)
@given(case=st.one_of(forward_convs(max_nd=2), transposed_convs(max_nd=2)), seed=st.integers(0, 2**16))
def test_neurons_and_windows_match_torch(case, seed):
    wshape, ishape, kw = case
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, wshape)  # positive: folded sums never cancel
    dense = dense_by_probing(w, ishape, **kw)
    s = stack_of(wshape, ishape, kw, weight=w)
    out_shape = s.maps[1][1]
    rows, cols = dense.shape
    win = s.window(0, 0, min(rows, 96), 0, min(cols, 128))
    got = np.zeros((min(rows, 96), min(cols, 128)))
    for r, c, _, v in win["entries"]:
        got[r, c] = v
    np.testing.assert_allclose(got, dense[:96, :128], rtol=1e-5)
    for r in rng.choice(rows, size=min(rows, 3), replace=False):
        ans = s.neuron(next(iter(ids("out", out_shape, [r]))))
        assert {i for i, _, _ in ans["reads"]} == ids("in", ishape, np.flatnonzero(dense[r]))
        np.testing.assert_allclose([v for *_, v in ans["reads"]], dense[r][dense[r] != 0], rtol=1e-5)
    for c in rng.choice(cols, size=min(cols, 3), replace=False):
        ans = s.neuron(next(iter(ids("in", ishape, [c]))))
        assert {i for i, _, _ in ans["feeds"]} == ids("out", out_shape, np.flatnonzero(dense[:, c]))
        np.testing.assert_allclose([v for *_, v in ans["feeds"]], dense[:, c][dense[:, c] != 0], rtol=1e-5)


def test_stack_fields_match_autograd(rng):
    layers = [((2, 1, 3, 3), dict(padding=1)), ((4, 1, 3, 3), dict(stride=2, groups=2)),
              ((2, 4, 2, 2), dict(dilation=1))]
    mods = [torch_module(rng.uniform(0.5, 1.5, w), **kw).double() for w, kw in layers]
    seq = torch.nn.Sequential(mods[0], torch.nn.ReLU(), mods[1], mods[2])
    ex = convmatrix.explore(seq, (1, 9, 9))
    s = ex.stack
    linear = torch.nn.Sequential(*mods)  # ReLU removed: the autograd support is then exact
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda t: linear(t).reshape(-1), x).reshape(-1, 81).numpy()
    for n in range(J.shape[0]):
        nid = next(iter(ids("out", s.maps[3][1], [n])))
        field = s.neuron(nid, fields=True)["field"]
        assert [f["prefix"] for f in field] == ["in", "h1", "h2"]
        assert set(field[0]["ids"]) == ids("in", (1, 9, 9), np.flatnonzero(J[n]))
        coords = np.array(np.unravel_index(np.flatnonzero(J[n]), (9, 9)))
        assert field[0]["box"] == {"lo": coords.min(1).tolist(), "hi": coords.max(1).tolist()}


def test_module_weights_and_bias_reach_the_formula():
    conv = torch.nn.Conv2d(1, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1.0, 9.0).reshape(2, 1, 2, 2) * 10)
        conv.bias.copy_(torch.tensor([0.5, -1.5]))
    ans = convmatrix.explore(conv, (1, 3, 3)).stack.neuron("out:1:0:0")
    assert ans["formula"] == "y[out:1:0:0] = e*x[in:0:0:0] + f*x[in:0:0:1] + g*x[in:0:1:0] + h*x[in:0:1:1] + bias[1]"
    assert ans["formula_values"] == "y[out:1:0:0] = 50*x[in:0:0:0] + 60*x[in:0:0:1] + 70*x[in:0:1:0] + 80*x[in:0:1:1] + -1.5"


@pytest.mark.parametrize("spec, field, match", [
    ({"input": "1x3x3", "layers": [layer_spec((2, 1, 5, 5))]}, "weight", "kernel larger than the padded input"),
    ({"input": "4x5x5", "layers": [layer_spec((4, 2, 3, 3), groups=3)]}, "groups", "groups=3 must divide"),
    ({"input": "1x5x5", "layers": [layer_spec((2, 1, 3, 3), stride=2, padding="same")]}, "padding", "strided"),
    ({"input": "1x5x5", "layers": [dict(layer_spec((2, 1, 3, 3)), stride="2,x")]}, "stride", "ints joined"),
    ({"input": "1x5", "layers": [layer_spec((2, 1, 3, 3))]}, "input", "input_shape must be"),
    ({"input": "3x5x5", "layers": [layer_spec((2, 1, 3, 3))]}, "input", "input_shape has 3 channel"),
])
def test_refused_specs_name_the_control(spec, field, match):
    with pytest.raises(SpecError, match=match) as info:
        build_stack(spec)
    assert info.value.field == field and info.value.layer == 0


def test_memory_budget_is_the_library_message():
    spec = {"input": "64x56x56", "layers": [layer_spec((64, 64, 3, 3), padding=1)]}
    with pytest.raises(SpecError, match="would need .* more than max_bytes=1000000"):
        build_stack(spec, budget=1_000_000)


@pytest.mark.parametrize("text, match", [
    ("out:0:2:0", "is not in map out of shape 2x2x2"), ("in:0:1", "is not in map in"),
    ("h1:0:0:0", "must start with one of"), ("out:a:0:0", "must be ints"),
])
def test_malformed_neurons(text, match):
    with pytest.raises(QueryError, match=match):
        build_stack(default_spec()).neuron(text)


# ------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def client():
    import warnings

    with warnings.catch_warnings():  # starlette's notice about its httpx client
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

        client = TestClient(convmatrix.explore().app(), raise_server_exceptions=False)
    with client as c:
        yield c


def test_server_answers(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="cm-boot"' in page.text and "connect-src 'self'" in page.text
    assert client.get("/api/summary").json()["layers"][0]["nnz"] == 32
    other = json.dumps({"input": "1x5", "layers": [layer_spec((1, 1, 3), padding=1, padding_mode="reflect")]})
    ans = client.get("/api/neuron", params={"spec": other, "neuron": "out:0:0"}).json()
    assert [n for _, n, _ in ans["reads"]] == ["b", "a+c"] and "field" not in ans
    ans = client.get("/api/neuron", params={"neuron": "out:1:1:1", "field": "1"}).json()
    assert ans["field"][0]["ids"] == ["in:0:1:1", "in:0:1:2", "in:0:2:1", "in:0:2:2"]
    win = client.get("/api/window", params=dict(layer=0, r0=0, r1=8, c0=0, c1=9)).json()
    assert len(win["entries"]) == 32
    sp = client.get("/api/sparsity", params=dict(layer=0, r0=0, r1=8, c0=0, c1=9)).json()
    assert (sp["h"], sp["w"]) == (8, 9)


@pytest.mark.parametrize("path, params, match", [
    ("/api/neuron", {"neuron": "out:9:0:0"}, "is not in map out"),
    ("/api/neuron", {}, "missing query parameter"),
    ("/api/neuron", {"neuron": "out:0:0:0", "spec": "{not json"}, "spec must be JSON"),
    ("/api/window", dict(layer=0, r0=0, r1=99, c0=0, c1=9), "window must satisfy"),
    ("/api/window", dict(layer=3, r0=0, r1=1, c0=0, c1=1), "layer must be from 0 to 0"),
    ("/api/window", dict(layer=0, r0="x", r1=1, c0=0, c1=1), "r0 must be an int"),
    ("/api/sparsity", dict(layer=0, r0=0, r1=8, c0=0, c1=9, h=0), "sparsity view must satisfy"),
    ("/api/summary", {"spec": json.dumps({"input": "1x3x3", "layers": [{"weight": "2x1x4x4"}]})},
     "kernel larger than the padded input"),
    ("/api/summary", {"spec": json.dumps({"input": "1x3x3", "layers": []})}, "non-empty list of layers"),
])
def test_server_rejects_malformed_queries_with_400(client, path, params, match):
    r = client.get(path, params=params)
    assert r.status_code == 400
    assert match in r.json()["error"] and "Traceback" not in r.text


def test_spec_error_carries_the_control(client):
    spec = json.dumps({"input": "4x5x5", "layers": [layer_spec((4, 2, 3, 3), groups=3)]})
    body = client.get("/api/summary", params={"spec": spec}).json()
    assert (body["layer"], body["field"]) == (0, "groups")


# ------------------------------------------------------------------ static page
def test_static_page_embeds_every_neuron():
    ex = convmatrix.explore((2, 1, 2, 2), (1, 3, 3))
    page = ex.html()
    boot = json.loads(page.split('id="cm-boot">')[1].split("</script>")[0])
    assert boot["mode"] == "static" and len(boot["answers"]["neurons"]) == 9 + 8
    assert "connect-src 'none'" in page and "<script src" not in page and "<link rel=\"stylesheet\"" not in page
    assert "iframe" in ex._repr_html_()


def test_static_page_refused_when_too_large():
    ex = convmatrix.explore((8, 8, 3, 3), (8, 32, 32), padding=1)
    with pytest.raises(ValueError, match=r"page would be about .* MB, more than the 8 MB .* without -o"):
        ex.html()
    assert "without -o" in ex._repr_html_()


# -------------------------------------------------------------------------- CLI
def cli(*args):
    return subprocess.run([sys.executable, "-m", "convmatrix", "explore", *args], capture_output=True,
                          text=True, env=os.environ, timeout=120)


def test_cli_writes_the_seed_page(tmp_path):
    out = tmp_path / "seed.html"
    r = cli("2x1x2x2", "1x3x3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert '"in:0:1:1"' in out.read_text()


def test_cli_stack_page(tmp_path):
    out = tmp_path / "stack.html"
    r = cli("1x6x6", "--layer", "2x1x3x3:padding=1", "--layer", "2x1x3x3:stride=2:groups=2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert '"h1:1:5:5"' in out.read_text()


@pytest.mark.parametrize("args, match", [
    (["8x8x3x3", "8x32x32", "--padding", "1", "-o", "x.html"], "page would be about"),
    (["2x1x9x9", "1x3x3", "-o", "x.html"], "kernel larger than the padded input"),
    (["2x1x2x2"], "give WEIGHT_SHAPE INPUT_SHAPE"),
    (["1x6x6", "--layer", "2x1x3x3:bogus=1"], "options are"),
    (["--stride", "2"], "conv options need WEIGHT_SHAPE INPUT_SHAPE"),
])
def test_cli_errors_are_one_line(tmp_path, args, match):
    r = subprocess.run([sys.executable, "-m", "convmatrix", "explore", *args], capture_output=True, text=True,
                       env=os.environ, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_help_has_examples():
    r = cli("--help")
    assert r.returncode == 0 and "convmatrix explore 2x1x2x2 1x3x3" in r.stdout


# ------------------------------------------------------------------ explore()
def test_explore_takes_shapes_weights_and_lists(rng):
    w = rng.standard_normal((3, 2, 2))
    ex = convmatrix.explore(w, (2, 6), stride=2)
    assert ex.stack.window(0, 0, 1, 0, 12)["entries"][0][3] == pytest.approx(w[0, 0, 0], rel=1e-5)
    stack = convmatrix.explore([(2, 1, 3), ((2, 2, 3), {"padding": 1})], (1, 7)).stack
    assert [p for p, _ in stack.maps] == ["in", "h1", "out"] and stack.maps[2][1] == (2, 5)


@pytest.mark.parametrize("call, match", [
    (lambda: convmatrix.explore((2, 1, 2, 2)), "input_shape is required"),
    (lambda: convmatrix.explore(None, (1, 3, 3)), "without a layer shows the 2x1x2x2 example"),
    (lambda: convmatrix.explore(torch.nn.Conv2d(1, 1, 2), (1, 3, 3), stride=2), "come from the module"),
    (lambda: convmatrix.explore(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 2), torch.nn.Upsample(scale_factor=2)),
                                (1, 4, 4)), r"'1' \(Upsample\) is not a convolution, pool"),
    (lambda: convmatrix.explore(torch.nn.Sequential(torch.nn.ReLU()), (1, 4, 4)), "holds no convolution"),
])
def test_explore_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_layer_spec_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown convolution argument 'strides'"):
        layer_spec((1, 1, 3), strides=2)


# ------------------------------------------------------------ values and bias
def test_neuron_values_are_torchs_outputs(rng):
    """The summary's values: the input's numbers, then each map computed by torch's modules."""
    layers = [((2, 1, 3, 3), dict(padding=1, padding_mode="reflect")), ((3, 2, 2, 2), dict(stride=2))]
    weights = [rng.integers(-3, 4, w).astype(np.float64) for w, _ in layers]
    biases = [rng.integers(-2, 3, w[0]).astype(np.float64) for w, _ in layers]
    x = rng.integers(-5, 6, (1, 6, 6)).astype(np.float64)
    spec = {"input": "1x6x6", "layers": [layer_spec(w, **kw) for w, kw in layers]}
    maps = build_stack(spec, weights, biases, x=x).summary()["maps"]
    v = torch.as_tensor(x)[None]
    assert maps[0]["values"] == x.ravel().tolist()
    for k, ((_, kw), w, b) in enumerate(zip(layers, weights, biases)):
        with torch.no_grad():
            v = torch_module(w, bias=b, **kw)(v)
        assert np.array_equal(maps[k + 1]["values"], v.numpy().ravel())
    # no input given: 1, 2, 3, ... as in the seed's answer, whose first neuron is 1a + 2b + 4c + 5d = 37
    seed = build_stack(default_spec()).summary()["maps"]
    assert seed[0]["values"] == list(range(1, 10)) and seed[1]["values"][:4] == [37, 47, 67, 77]


def test_formula_has_a_bias_term_only_with_a_bias():
    """As `convmatrix neuron` writes it: no `+ bias` without a bias."""
    plain = convmatrix.explore((2, 1, 2, 2), (1, 3, 3)).stack.neuron("out:0:0:0")
    cli = convmatrix.neuron((2, 1, 2, 2), (1, 3, 3), 0).formula
    assert plain["formula"] == "y[out:0:0:0] = a*x[in:0:0:0] + b*x[in:0:0:1] + c*x[in:0:1:0] + d*x[in:0:1:1]"
    assert "bias" not in cli and "bias" not in plain["formula"] and not plain["formula_values"].endswith("+ 0")
    with_bias = convmatrix.explore((2, 1, 2, 2), (1, 3, 3), bias=[0.5, -1]).stack.neuron("out:1:0:0")
    assert with_bias["formula"].endswith(" + bias[1]") and with_bias["formula_values"].endswith(" + -1")


@pytest.mark.parametrize("call, match", [
    (lambda: convmatrix.explore((2, 1, 2, 2), (1, 3, 3), bias=[1, 2, 3]), "bias needs one number or 2"),
    (lambda: convmatrix.explore([(2, 1, 3), (2, 2, 3)], (1, 7), bias=1), "bias is for a single weight"),
    (lambda: convmatrix.explore((2, 1, 2, 2), (1, 3, 3), x=np.ones(8)), "x must have the input's 9 numbers"),
    (lambda: convmatrix.explore(None, x=np.ones(9)), "without a layer shows the 2x1x2x2 example"),
])
def test_explore_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli_kernel_page_has_the_numbers(tmp_path, capsys):
    from convmatrix.cli import main

    out = tmp_path / "sharpen.html"
    assert main(["explore", "3x1x3x3", "1x5x5", "--kernel", "sharpen", "--bias", "1", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 1x5x5 -> 3x3x3")
    boot = json.loads(out.read_text().split('id="cm-boot">')[1].split("</script>")[0].replace("<\\/", "</"))
    layer = boot["answers"]["summary"]["layers"][0]
    assert layer["values_given"] and layer["kernel"]["values"][:9] == [0, -1, 0, -1, 5, -1, 0, -1, 0]
    assert boot["answers"]["neurons"]["out:2:0:0"]["formula_values"].endswith(" + 1")


@pytest.mark.parametrize("args, match", [
    (["1x6x6", "--layer", "2x1x3x3", "--kernel", "box"], "--weight, --kernel and --bias are for one layer"),
    (["--bias", "1"], "--weight, --kernel and --bias need WEIGHT_SHAPE INPUT_SHAPE"),
    (["3x1x3x3", "1x5x5", "--kernel", "1,2"], "WEIGHT_SHAPE's kernel is 3x3"),
    (["3x1x3x3", "1x5x5", "--bias", "1,2"], "--bias needs one number or 3"),
    (["1x6x6", "--layer", "2x1x3x3:stride=x"], "--layer '2x1x3x3:stride=x': stride:"),
])
def test_cli_value_errors_are_one_line(tmp_path, capsys, args, match):
    from convmatrix.cli import main

    assert main(["explore", *args, "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err


def test_cli_and_explorer_do_not_import_each_other():
    import pathlib
    import re

    src = pathlib.Path(convmatrix.__file__).parent
    for folder, other in (("cli", "explorer"), ("explorer", "cli")):
        for path in (src / folder).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(rf"^\s*(from|import)\s+(\.\.|convmatrix\.){other}\b", text, re.M), path
            assert not re.search(rf"^\s*from\s+(\.\.|convmatrix)\s+import\s+.*\b{other}\b", text, re.M), path
