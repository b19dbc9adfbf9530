"""The explorer's web server: the page and a small JSON API over :mod:`.data`.

Starlette (with uvicorn) rather than ``http.server``: routing, query parsing,
JSON responses, a thread pool for the NumPy work, and a test client come with it,
in a few lines, from a small, well-kept library (the ``web`` extra).

Every query carries the page's spec (JSON) and is answered by the library; a spec
the library refuses, or a malformed query, gets HTTP 400 with the message.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import OrderedDict

from .._optional import require
from .data import DEFAULT_BUDGET, QueryError, SpecError, Stack, build_stack
from .page import render_page

__all__ = ["create_app", "bind", "MAX_SPEC_CHARS"]

#: The longest spec a query may carry (a page's spec is a few hundred characters per layer).
MAX_SPEC_CHARS = 50_000


class _Stacks:
    """Built stacks by spec (a few, most recent kept): a hover must not rebuild the pattern."""

    def __init__(self, weights, biases, budget, x=None, size=8):
        self.weights, self.biases, self.budget, self.x, self.size = weights, biases, budget, x, size
        self.cache: OrderedDict[str, Stack] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, spec: dict) -> Stack:
        key = json.dumps(spec, sort_keys=True)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        stack = build_stack(spec, self.weights, self.biases, budget=self.budget, x=self.x)
        with self.lock:
            self.cache[key] = stack
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return stack


def create_app(spec: dict, weights=None, biases=None, *, budget: int = DEFAULT_BUDGET, x=None):
    """The Starlette app serving the explorer of ``spec`` (weights/biases: the given layers' values;
    ``x``: the input's numbers)."""
    require("starlette", extra="web", feature="serving the explorer")
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    stacks = _Stacks(weights, biases, budget, x)
    initial = build_stack(spec, weights, biases, budget=budget).spec  # refuse a bad spec up front

    def page(request):
        return HTMLResponse(render_page({"mode": "server", "spec": initial}))

    def answer(fn):
        def endpoint(request):
            q = dict(request.query_params)
            try:
                spec_text = q.pop("spec", None)
                if spec_text and len(spec_text) > MAX_SPEC_CHARS:
                    raise QueryError(f"spec must be at most {MAX_SPEC_CHARS:,} characters, got {len(spec_text):,}")
                try:
                    s = json.loads(spec_text) if spec_text else initial
                except json.JSONDecodeError as exc:
                    raise QueryError(f"spec must be JSON: {exc}") from None
                return JSONResponse(fn(stacks.get(s), q))
            except SpecError as exc:
                return JSONResponse(exc.as_json(), status_code=400)
            except (QueryError, ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except RecursionError:
                return JSONResponse({"error": "spec is nested too deeply"}, status_code=400)
            except (MemoryError, OverflowError) as exc:
                return JSONResponse({"error": f"too large for this machine: {exc}"}, status_code=413)
        return endpoint

    def need(q, *names):
        missing = [n for n in names if n not in q]
        if missing:
            raise QueryError(f"missing query parameter(s): {', '.join(missing)}")
        return [q[n] for n in names]

    routes = [
        Route("/", page),
        Route("/api/summary", answer(lambda s, q: s.summary())),
        Route("/api/window", answer(lambda s, q: s.window(*need(q, "layer", "r0", "r1", "c0", "c1")))),
        Route("/api/sparsity", answer(lambda s, q: s.sparsity(
            *need(q, "layer", "r0", "r1", "c0", "c1"), q.get("h", 256), q.get("w", 256)))),
        Route("/api/neuron", answer(lambda s, q: s.neuron(*need(q, "neuron"), fields=q.get("field") == "1"))),
    ]
    return Starlette(routes=routes)


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock
