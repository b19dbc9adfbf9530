"""The explorer page: one HTML file with its script and style inlined.

Both modes use the same page. Served, it asks the server's JSON API for each
view; static (``-o PAGE.html``, Jupyter), it carries the answers to every query
its one geometry can ask, so it works offline and sends no request.
"""

from __future__ import annotations

import json
from importlib import resources
from math import prod

from ..core.geometry import format_bytes
from ..core.pattern import axis_nnz
from .data import Stack

__all__ = ["render_page", "static_answers", "estimate_static_bytes", "MAX_PAGE_BYTES"]

#: The largest self-contained page we write; beyond it a browser struggles to open it.
MAX_PAGE_BYTES = 8_000_000


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def render_page(boot: dict, title: str = "convmatrix explorer") -> str:
    """The page with its script, style and boot data (``mode``, ``spec``, answers) inlined."""
    # "</" inside a <script> would end it early; JSON allows "<\/" for it.
    data = json.dumps(boot, separators=(",", ":")).replace("</", "<\\/")
    # The static page may not connect anywhere (its CSP says so); the served one only to its server.
    connect = "'self'" if boot.get("mode") == "server" else "'none'"
    return (_asset("explorer.html").replace("{{TITLE}}", title).replace("{{CONNECT}}", connect)
            .replace("/*{{CSS}}*/", _asset("explorer.css"))
            .replace("/*{{JS}}*/", _asset("explorer.js"))
            .replace("{{BOOT}}", data))


def estimate_static_bytes(stack: Stack) -> int:
    """A cheap upper estimate of a static page's size: every stored entry appears in the
    window, one reader's list, one feeder's list and one formula; every neuron in the
    fields of the maps after it."""
    entries = sum(axis_nnz(lay.geom) for lay in stack.layers)
    neurons = [prod(shape) for _, shape in stack.maps]
    fields = sum(n * sum(neurons[:k]) for k, n in enumerate(neurons)) if len(stack.layers) > 1 else 0
    return 200_000 + 160 * entries + 120 * sum(neurons) + 16 * fields


def static_answers(stack: Stack, max_bytes: int = MAX_PAGE_BYTES) -> dict:
    """Every answer the page of this stack can ask for (refused when the page would be too large)."""
    estimate = estimate_static_bytes(stack)
    hint = ("run `convmatrix explore` without -o (or Explorer.serve() in Python) to serve it, "
            "which answers each view on demand")
    if estimate > max_bytes:
        raise ValueError(f"the self-contained page would be about {format_bytes(estimate)}, more than the "
                         f"{format_bytes(max_bytes)} a page can carry and still open quickly; {hint}")
    answers = {"summary": stack.summary(), "windows": [], "neurons": {}}
    for i, lay in enumerate(stack.layers):
        rows, cols = lay.geom.matrix_shape
        answers["windows"].append(stack.window(i, 0, rows, 0, cols, limit=None))
    for k, (prefix, shape) in enumerate(stack.maps):
        for nid in stack.neuron_id(k, range(prod(shape))):
            answers["neurons"][nid] = stack.neuron(nid, fields=True)
    size = len(json.dumps(answers, separators=(",", ":")))
    if size > max_bytes:
        raise ValueError(f"the self-contained page would be {format_bytes(size)}, more than the "
                         f"{format_bytes(max_bytes)} a page can carry and still open quickly; {hint}")
    return answers
