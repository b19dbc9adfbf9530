"""The explorer in a real browser: Debian's headless chromium driven by Playwright.

Every highlight is checked against torch autograd: the Jacobian of the layer (or of a
linear stack) is non-zero exactly where an output neuron reads an input neuron, with
positive weights so that no folded sum cancels. Skips cleanly without chromium.

Set CONVMATRIX_UPDATE_DOCS=1 to write the seed example's screenshot to docs/explorer.png.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse

import numpy as np
import pytest
import torch
from oracles import dense_by_probing, torch_module

import convmatrix
from convmatrix.explorer.data import layer_spec

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")

# (weight shape, input shape, conv options): strides, padding modes, dilation, groups, 1-D, 3-D, transposed
GEOMETRIES = [
    ((4, 2, 3, 3), (4, 7, 6), dict(stride=2, padding=1, groups=2, padding_mode="reflect")),
    ((3, 1, 3, 2), (1, 6, 7), dict(dilation=(2, 1), padding=(2, 1), padding_mode="replicate")),
    ((2, 3, 3, 3), (3, 5, 5), dict(padding="same", dilation=2, padding_mode="circular")),
    ((2, 2, 4), (2, 11), dict(stride=3, padding=2, dilation=2)),
    ((2, 3, 3, 3), (2, 4, 4), dict(stride=2, padding=1, output_padding=1, transposed=True)),
    ((2, 1, 2, 2, 2), (1, 3, 3, 3), dict(padding=1, stride=2)),
]


def ids(prefix, shape, flat):
    """Neuron ids of flat indices, written by the test (C order, as CONTRACT.md states)."""
    return {":".join([prefix, *map(str, c)]) for c in zip(*np.unravel_index(np.asarray(flat, int), shape))}


def jacobian(modules, input_shape):
    """d flatten(out) / d flatten(x) of the modules applied in turn, by torch autograd."""
    x = torch.zeros(1, *input_shape, dtype=torch.float64)
    f = torch.nn.Sequential(*modules)
    J = torch.autograd.functional.jacobian(lambda t: f(t).reshape(-1), x)
    return J.reshape(J.shape[0], -1).numpy()


def random_geometry(rng):
    """A random 2-D forward geometry torch accepts (torch is asked, not our geometry code)."""
    while True:
        g = int(rng.integers(1, 3))
        w = (g * int(rng.integers(1, 3)), int(rng.integers(1, 3)), *rng.integers(1, 4, 2).tolist())
        x = (w[1] * g, *rng.integers(3, 8, 2).tolist())
        kw = dict(stride=tuple(rng.integers(1, 3, 2).tolist()), padding=tuple(rng.integers(0, 3, 2).tolist()),
                  dilation=tuple(rng.integers(1, 3, 2).tolist()), groups=g,
                  padding_mode=str(rng.choice(["zeros", "reflect", "replicate", "circular"])))
        try:
            torch_module(np.ones(w), **kw)(torch.zeros(1, *x, dtype=torch.float64))
        except RuntimeError:
            continue
        return w, x, kw


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed at /usr/bin/chromium (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    running = convmatrix.explore().serve(open_browser=False, block=False)
    yield running
    running.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.errors, pg.requests = [], []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    ctx.close()


def open_spec(page, url, spec):
    page.goto(url + "?spec=" + urllib.parse.quote(json.dumps(spec)))
    page.wait_for_selector("body[data-ready]", state="attached")


def hover(page, selector, key):
    page.evaluate("delete document.body.dataset.hovered")
    page.hover(selector)
    page.wait_for_selector(f'body[data-hovered="{key}"]', state="attached")
    cells = page.eval_on_selector_all(".cell.active", "es => es.map(e => e.dataset.neuron)")
    entries = page.eval_on_selector_all("#matrix td.active", "es => es.map(e => [+e.dataset.row, +e.dataset.col])")
    assert len(cells) == len(set(cells))
    return set(cells), [tuple(e) for e in entries]


def check_layer(page, spec, modules, in_shape, out_shape, rng, n=3):
    """Hover output neurons, input neurons and matrix entries; compare with the Jacobian."""
    J = jacobian(modules, in_shape)
    drawn = set(page.eval_on_selector_all("[data-neuron]", "es => es.map(e => e.dataset.neuron)"))
    shown = page.eval_on_selector_all("#matrix td[data-row]", "es => es.map(e => [+e.dataset.row, +e.dataset.col])")
    for r in rng.choice(J.shape[0], size=min(n, J.shape[0]), replace=False):
        nid = next(iter(ids("out", out_shape, [r])))
        if nid not in drawn:
            continue
        cells, entries = hover(page, f'[data-neuron="{nid}"]', nid)
        assert cells == ({nid} | ids("in", in_shape, np.flatnonzero(J[r]))) & drawn, (spec, nid)
        assert sorted(entries) == sorted(tuple(e) for e in shown if e[0] == r), (spec, nid)
    for c in rng.choice(J.shape[1], size=min(n, J.shape[1]), replace=False):
        nid = next(iter(ids("in", in_shape, [c])))
        if nid not in drawn:
            continue
        cells, _ = hover(page, f'[data-neuron="{nid}"]', nid)
        assert cells == ({nid} | ids("out", out_shape, np.flatnonzero(J[:, c]))) & drawn, (spec, nid)
    for k in rng.choice(len(shown), size=min(2, len(shown)), replace=False):
        r, c = shown[k]
        assert J[r, c] != 0  # a shown entry is a stored entry of M
        cells, entries = hover(page, f'#matrix td[data-row="{r}"][data-col="{c}"]', f"M:{r}:{c}")
        expect = ids("out", out_shape, [r]) | ids("in", in_shape, [c])
        assert entries == [(r, c)] and cells == expect & drawn


@pytest.mark.parametrize("case", range(len(GEOMETRIES) + 2))
def test_served_highlights_match_autograd(page, server, case):
    rng = np.random.default_rng(case)
    wshape, in_shape, kw = GEOMETRIES[case] if case < len(GEOMETRIES) else random_geometry(rng)
    spec = {"input": "x".join(map(str, in_shape)), "layers": [layer_spec(wshape, **kw)]}
    open_spec(page, server.url, spec)
    module = torch_module(rng.uniform(0.5, 1.5, wshape), **kw)
    out_shape = tuple(module(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1:])
    assert page.eval_on_selector_all("[data-neuron^='out:']", "es => es.length") > 0
    check_layer(page, spec, [module], in_shape, out_shape, rng)
    if len(in_shape) == 4:  # 3-D: another depth slice of the input, through its slider
        page.fill('input[data-depth="in"]', str(in_shape[1] - 1))
        page.wait_for_selector(f'[data-neuron="in:0:{in_shape[1] - 1}:0:0"]', state="attached")
        check_layer(page, spec, [module], in_shape, out_shape, rng)
    assert page.errors == []


def test_stack_fields_and_hidden_maps(page, server):
    rng = np.random.default_rng(7)
    layers = [((2, 1, 3, 3), dict(padding=1)), ((2, 1, 3, 3), dict(stride=2, groups=2)),
              ((1, 2, 2, 2), dict(dilation=2))]
    spec = {"input": "1x9x9", "layers": [layer_spec(w, **kw) for w, kw in layers]}
    mods = [torch_module(rng.uniform(0.5, 1.5, w), **kw) for w, kw in layers]
    shapes = [(1, 9, 9), (2, 9, 9), (2, 4, 4), (1, 2, 2)]
    prefixes = ["in", "h1", "h2", "out"]
    open_spec(page, server.url, spec)
    # a deep neuron: its exact input set in every earlier map
    page.click('[data-neuron="out:0:1:0"]')
    page.wait_for_selector('body[data-field="out:0:1:0"]', state="attached")
    rf = set(page.eval_on_selector_all(".cell.rf", "es => es.map(e => e.dataset.neuron)"))
    r = int(np.ravel_multi_index((0, 1, 0), shapes[3]))
    expect = set()
    for j in range(3):
        J = jacobian(mods[j:], shapes[j])
        expect |= ids(prefixes[j], shapes[j], np.flatnonzero(J[r]))
    assert rf == expect
    assert page.locator(".box").evaluate_all("bs => bs.filter(b => b.style.display === 'block').length") >= 3
    # a neuron between layers: what it reads (layer 1) and what it feeds (layer 2)
    nid = "h1:1:4:3"
    n = int(np.ravel_multi_index((1, 4, 3), shapes[1]))
    cells, _ = hover(page, f'[data-neuron="{nid}"]', nid)
    J1, J2 = jacobian(mods[:1], shapes[0]), jacobian(mods[1:2], shapes[1])
    assert cells == {nid} | ids("in", shapes[0], np.flatnonzero(J1[n])) | ids("h2", shapes[2], np.flatnonzero(J2[:, n]))
    assert page.errors == []


def test_bad_input_shows_the_library_message_and_keeps_the_view(page, server):
    open_spec(page, server.url, convmatrix.explore().spec)
    page.fill('input[name="0:groups"]', "3")
    page.press('input[name="0:groups"]', "Enter")
    page.wait_for_selector('[data-err="0:groups"]:not(:empty)', state="attached")
    with pytest.raises(ValueError) as lib:
        convmatrix.conv_matrix(np.ones((2, 1, 2, 2)), (1, 3, 3), groups=3)
    assert page.text_content('[data-err="0:groups"]') == str(lib.value)
    assert page.eval_on_selector_all("[data-neuron^='out:']", "es => es.length") == 8  # last good view
    page.fill('input[name="0:groups"]', "1")
    page.fill('input[name="0:weight"]', "2x1x5x5")
    page.press('input[name="0:weight"]', "Enter")
    page.wait_for_selector('[data-err="0:weight"]:not(:empty)', state="attached")
    assert "kernel larger than the padded input" in page.text_content('[data-err="0:weight"]')
    cells, _ = hover(page, '[data-neuron="out:0:0:0"]', "out:0:0:0")  # still answers
    assert cells == {"out:0:0:0", "in:0:0:0", "in:0:0:1", "in:0:1:0", "in:0:1:1"}
    assert all("400" in e for e in page.errors)  # only the refusals, no script error


def test_static_page_offline(page, tmp_path):
    from PIL import Image

    path = tmp_path / "seed.html"
    convmatrix.explore((2, 1, 2, 2), (1, 3, 3)).save(path)
    url = path.as_uri()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached")
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.5, (2, 1, 2, 2))
    check_layer(page, "seed", [torch_module(w)], (1, 3, 3), (2, 2, 2), rng, n=9)
    # the seed's matrix, letters as CONTRACT.md prints them
    row0 = page.eval_on_selector_all("#matrix tr:nth-child(2) td", "es => es.map(e => e.textContent)")
    assert row0 == "a b 0 c d 0 0 0 0".split()
    page.set_viewport_size({"width": 1180, "height": 720})  # the README's screenshot size
    hover(page, '[data-neuron="out:0:1:1"]', "out:0:1:1")
    assert "y[out:0:1:1] = a*x[in:0:1:1] + b*x[in:0:1:2] + c*x[in:0:2:1] + d*x[in:0:2:2]" in page.text_content("#formula")
    assert page.requests == [url] and page.errors == []
    png = page.screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # not blank
    if os.environ.get("CONVMATRIX_UPDATE_DOCS"):
        with open(os.path.join(DOCS, "explorer.png"), "wb") as f:
            f.write(png)


def test_onnx_model_static_page(page, tmp_path):
    """An ONNX model exported by torch, as one static page: a deep neuron's input set in every
    map, and what it reads, against autograd of the torch model's linear conv part."""
    import copy

    from test_network_onnx import export

    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Sigmoid(), nn.Flatten(), nn.Linear(32, 3)).eval()
    export(net, (1, 8, 8), tmp_path / "m.onnx", dynamic=False)
    path = tmp_path / "m.html"
    convmatrix.explore(str(tmp_path / "m.onnx")).save(path)
    url = path.as_uri()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached")
    # the linear oracle: activations removed, max pooling as torch's average pooling of the same windows
    lin = copy.deepcopy(net).double()
    mods = [lin[0], nn.AvgPool2d(2), lin[3]]
    shapes, prefixes = [(1, 8, 8), (2, 8, 8), (2, 4, 4), (2, 4, 4)], ["in", "h1", "h2", "out"]
    nid = "out:1:2:1"
    r = int(np.ravel_multi_index((1, 2, 1), shapes[3]))
    page.click(f'[data-neuron="{nid}"]')
    page.wait_for_selector(f'body[data-field="{nid}"]', state="attached")
    rf = set(page.eval_on_selector_all(".cell.rf", "es => es.map(e => e.dataset.neuron)"))
    expect = set()
    for j in range(3):
        expect |= ids(prefixes[j], shapes[j], np.flatnonzero(jacobian(mods[j:], shapes[j])[r]))
    assert rf == expect and len(rf) > 20
    page.mouse.move(0, 0)  # the pointer rests on the clicked neuron: leave it, then point again
    cells, _ = hover(page, f'[data-neuron="{nid}"]', nid)
    assert cells == {nid} | ids("h2", shapes[2], np.flatnonzero(jacobian(mods[2:], shapes[2])[r]))
    summary = page.text_content("#summary")
    assert "Left out" in summary and "(Gemm)" in summary and "(Relu)" in summary and "window pattern" in summary
    assert page.requests == [url] and page.errors == []


def test_static_page_numbers_in_cells(page, tmp_path):
    """The asker's follow-up layer (three sharpen filters, 27 kernel entries) with an input given:
    the matrix cells carry M's numbers (names in tooltips), every column is drawn, the neuron
    cells carry the input's numbers and torch's outputs (or their indices, on demand), and a
    static page shows no control it cannot honour."""
    sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
    K = np.broadcast_to(sharpen, (3, 1, 3, 3)).copy()
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5) % 7
    path = tmp_path / "sharpen.html"
    convmatrix.explore(K, (1, 5, 5), bias=[0, 1, 2], x=x).save(path)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.eval_on_selector_all("#controls input, #controls select", "es => es.filter(e => e.offsetParent).length") == 0
    assert page.is_hidden("#sparsity") and page.is_hidden("#labels-toggle")  # all of M fits; no letters past 26
    D = dense_by_probing(K, (1, 5, 5))
    cells = page.eval_on_selector_all(
        "#matrix td[data-row]", "es => es.map(e => [+e.dataset.row, +e.dataset.col, e.textContent, e.title])")
    assert len(cells) == 27 * 9 and len({c for _, c, _, _ in cells}) == 25
    for r, c, text, title in cells:
        assert float(text) == D[r, c] and "K[" in title
    with torch.no_grad():
        y = torch_module(K, bias=np.array([0.0, 1, 2]))(torch.as_tensor(x)[None])[0].numpy()
    shown = dict(page.eval_on_selector_all("[data-neuron]", "es => es.map(e => [e.dataset.neuron, e.textContent])"))
    for flat in range(25):
        assert float(shown[next(iter(ids("in", (1, 5, 5), [flat])))]) == x.ravel()[flat]
    for flat in range(27):
        nid = next(iter(ids("out", (3, 3, 3), [flat])))
        assert float(shown[nid]) == y.ravel()[flat]
    page.click("#cells-toggle")
    assert page.text_content('[data-neuron="out:1:2:0"]') == str(np.ravel_multi_index((1, 2, 0), (3, 3, 3)))
    hover(page, '[data-neuron="out:1:0:0"]', "out:1:0:0")
    formula = page.text_content("#formula")
    assert " + bias[1]\n" in formula and f" + 1 = {y[1, 0, 0]:g}\n" in formula
    assert page.errors == []
