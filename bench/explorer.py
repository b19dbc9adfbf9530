"""How responsive is the explorer on a big layer? (issue: "open and answer a hover within a second")

The layer: 64 -> 64 channels, 3x3 kernel, padding 1, on a 64x56x56 input: M is
200,704 x 200,704 with 112,869,376 stored entries. The server runs in a thread on
127.0.0.1 (uvicorn, as `convmatrix explore` runs it) and is asked over HTTP:

- open: the page, then the summary (this builds the tap pattern), the sparsity image
  and the first window of cells, as the page asks them on load;
- hover: an output neuron (its row) and input neurons (their columns; the first one of
  a group also builds that group's column index).

With Debian's chromium present it also times the real page on a fresh server, started
(empty caches) as `convmatrix explore` starts it, building the layer's pattern before it
listens: load until the first view is drawn, and a mouse hover until the highlight is
applied, each also as the page itself measures it (without Playwright's own overhead).

    python bench/explorer.py            # prints a table; --no-browser skips chromium
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import convmatrix  # noqa: E402
from convmatrix.explorer.data import layer_spec  # noqa: E402
from convmatrix.explorer import Explorer  # noqa: E402
from convmatrix.core.pattern import tap_pattern  # noqa: E402

SPEC = {"input": "64x56x56", "layers": [layer_spec((64, 64, 3, 3), padding=1)]}
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def get(url: str, kind: str, **params) -> tuple[float, dict]:
    q = urllib.parse.urlencode({"spec": json.dumps(SPEC), **params})
    t = time.perf_counter()
    with urllib.request.urlopen(f"{url}api/{kind}?{q}", timeout=120) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t, body


def http_timings(url: str) -> list[tuple[str, float]]:
    rows = []
    t_sum, summary = get(url, "summary")
    R, C = summary["layers"][0]["matrix_shape"]
    t_sp, _ = get(url, "sparsity", layer=0, r0=0, r1=R, c0=0, c1=C, h=256, w=256)
    t_win, _ = get(url, "window", layer=0, r0=0, r1=32, c0=0, c1=48)
    rows += [("open: summary", t_sum), ("open: sparsity image 256x256 (builds the pattern)", t_sp),
             ("open: window of 32x48 cells", t_win), ("open: total", t_sum + t_sp + t_win)]
    for nid in ("out:17:20:33", "in:40:11:7", "in:41:30:30"):
        t, ans = get(url, "neuron", neuron=nid)
        n = len(ans.get("reads", ans.get("feeds", [])))
        rows.append((f"hover {nid} ({n} neurons)", t))
    return rows


def browser_timings(url: str) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        page.goto(url + "?spec=" + urllib.parse.quote(json.dumps(SPEC)))
        page.wait_for_selector("body[data-ready]", state="attached", timeout=120_000)
        rows.append(("browser: page open until drawn", time.perf_counter() - t))
        rows.append(("  of which in the page (navigation to drawn)", float(page.evaluate(
            "document.body.dataset.readyMs")) / 1000))
        for nid in ("out:0:20:20", "in:0:30:31", "in:0:5:6"):  # channel 0: drawn on open
            t = time.perf_counter()
            page.hover(f'[data-neuron="{nid}"]')
            page.wait_for_selector(f'body[data-hovered="{nid}"]', state="attached")
            rows.append((f"browser: hover {nid} until highlighted", time.perf_counter() - t))
            rows.append(("  of which in the page (pointer to highlight)", float(page.evaluate(
                "document.body.dataset.hoverMs")) / 1000))
        b.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    running = convmatrix.explore().serve(open_browser=False, block=False)
    try:
        rows = http_timings(running.url)
    finally:
        running.stop()
    if not args.no_browser and os.path.exists(CHROMIUM):
        # a fresh server with empty caches, started as `convmatrix explore` starts it
        tap_pattern.cache_clear()  # the patterns hold their own block caches
        ex = Explorer(SPEC)
        t = time.perf_counter()
        running = ex.serve(open_browser=False, block=False)
        rows.append(("server start (builds the pattern)", time.perf_counter() - t))
        try:
            rows += browser_timings(running.url)
        finally:
            running.stop()
    print(f"explorer on 64->64 3x3, 64x56x56, padding 1 (112,869,376 stored entries); {os.cpu_count()} CPUs")
    for name, t in rows:
        print(f"  {name:<52} {t * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
