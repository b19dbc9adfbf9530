"""``convmatrix.explore``: the explorer of a layer or a stack, for Python and Jupyter."""

from __future__ import annotations

import html
import os
import threading
from math import prod

import numpy as np

from .._optional import require
from .data import DEFAULT_BUDGET, build_stack, default_spec, layer_spec
from .page import MAX_PAGE_BYTES, render_page, static_answers

__all__ = ["Explorer", "explore", "Running"]

class Running:
    """A server running in a background thread: ``url``, ``stop()``."""

    def __init__(self, server, thread, url):
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"<convmatrix explorer at {self.url}>"


class Explorer:
    """The explorer of one layer or a stack of layers.

    ``html()`` is the self-contained page (``save(path)`` writes it, Jupyter shows it
    through ``_repr_html_``); ``serve()`` runs the local server for any geometry.

    >>> ex = explore((2, 1, 2, 2), (1, 3, 3))
    >>> ex.stack.summary()["layers"][0]["matrix_shape"]
    [8, 9]
    >>> "data-neuron" in ex.html()
    True
    """

    def __init__(self, spec: dict, weights=None, biases=None, *, x=None, budget: int = DEFAULT_BUDGET,
                 max_page_bytes: int = MAX_PAGE_BYTES):
        self.stack = build_stack(spec, weights, biases, budget=budget, x=x)
        if x is not None and self.stack.x is None:
            shape = self.stack.layers[0].geom.input_shape
            raise ValueError(f"x must have the input's {prod(shape)} numbers (shape {shape}), got shape {np.shape(x)}")
        self.spec = self.stack.spec
        self.weights, self.biases, self.budget, self.x = weights, biases, budget, x
        self.max_page_bytes = max_page_bytes

    def html(self) -> str:
        """The self-contained page (ValueError with its size when too large to carry)."""
        answers = static_answers(self.stack, self.max_page_bytes)
        return render_page({"mode": "static", "spec": self.spec, "answers": answers})

    def save(self, path) -> str:
        text = self.html()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return str(path)

    def app(self):
        """The Starlette app (for a server of your own, or Starlette's TestClient)."""
        from .server import create_app

        return create_app(self.spec, self.weights, self.biases, budget=self.budget, x=self.x)

    def serve(self, port: int = 0, *, open_browser: bool = True, block: bool = True):
        """Serve on 127.0.0.1:``port`` (0: a free one). Blocking, or in a thread (returns :class:`Running`)."""
        uvicorn = require("uvicorn", extra="web", feature="serving the explorer")

        from .server import bind

        sock = bind(port)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        for layer in self.stack.layers:  # build the tap patterns now, so the page opens at once
            layer.pattern
        server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning", lifespan="off"))
        if open_browser:
            import webbrowser

            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        if block:
            print(f"convmatrix explorer: {url}  (Ctrl+C stops it)", flush=True)
            server.run(sockets=[sock])
            return None
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            thread.join(0.02)
        return Running(server, thread, url)

    def _repr_html_(self) -> str:
        try:
            page = self.html()
        except ValueError as exc:
            return f"<p><b>convmatrix explorer:</b> {html.escape(str(exc))}</p>"
        return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:760px;'
                'border:1px solid #ccc" sandbox="allow-scripts"></iframe>')

    def shapes(self) -> str:
        """The feature maps' shapes from the input up, like ``1x3x3 -> 2x2x2``."""
        return " -> ".join("x".join(map(str, s)) for _, s in self.stack.maps)

    def __repr__(self) -> str:
        return f"<convmatrix.Explorer {self.shapes()}>"


def explore(layer=None, input_shape=None, *, bias=None, x=None, budget: int = DEFAULT_BUDGET,
            max_page_bytes: int = MAX_PAGE_BYTES, **conv_kwargs) -> Explorer:
    """The interactive explorer of a conv layer or a stack (shows itself in Jupyter).

    ``layer`` is a weight shape, a weight (NumPy array or torch tensor), a torch
    ``nn.ConvNd`` / ``nn.ConvTransposeNd``, an ``nn.Sequential`` of convolutions and pooling
    (element-wise activations, batch norm and dropout between them are skipped: they keep
    every input set; the stack stops at a Flatten or Linear head), the path of an ONNX
    file (the same, from its nodes; its input shape is the model's), or a list of weight
    shapes or ``(weight_shape, conv_kwargs)`` pairs; ``None`` is the 2x1x2x2 example
    2x1x2x2 kernel on 1x3x3. ``conv_kwargs`` apply to a single weight or shape, and so
    does ``bias`` (one number per output channel, or one for all; without it the
    formulas have no bias term). ``x``: the input's numbers (an array of ``input_shape``), which
    the page shows in the input's cells, with every later neuron's value computed from them
    (default 1, 2, 3, ..., the input of the classic worked example).
    See :mod:`convmatrix.explorer.models` for how a model becomes a stack.
    """
    if isinstance(layer, (str, os.PathLike)) or type(layer).__name__ == "ModelProto":
        if conv_kwargs:
            raise ValueError("conv options come from the ONNX model; do not pass them with a model")
        from .models import from_onnx

        model = from_onnx(layer, input_shape)
        return Explorer(model.spec, model.weights, model.biases, x=x, budget=budget, max_page_bytes=max_page_bytes)
    if layer is None:
        if input_shape is not None or conv_kwargs or bias is not None or x is not None:
            raise ValueError("explore() without a layer shows the 2x1x2x2 example; give a layer to set "
                             "input_shape or conv options")
        return Explorer(default_spec(), budget=budget, max_page_bytes=max_page_bytes)
    if input_shape is None:
        raise ValueError("input_shape is required: (channels, *spatial) of the layer's input")
    input_text = "x".join(str(int(s)) for s in input_shape)
    kinds, weights, biases = _layers_of(layer, input_shape, conv_kwargs)
    if bias is not None:
        if isinstance(kinds, dict) or len(kinds) != 1 or biases is not None:
            raise ValueError("bias is for a single weight or weight shape; a module or a list brings its own")
        biases = [_bias_of(bias, kinds[0])]
    spec = kinds if isinstance(kinds, dict) else {"input": input_text, "layers": kinds}
    return Explorer(spec, weights, biases, x=x, budget=budget, max_page_bytes=max_page_bytes)


def _layers_of(layer, input_shape, conv_kwargs):
    """(layer specs, weights, biases) of whatever ``explore`` was given (a whole spec for a module)."""
    if _is_module(layer):
        if conv_kwargs:
            raise ValueError("conv options come from the module; do not pass them with a module")
        from .models import from_torch

        model = from_torch(layer, input_shape)
        if not model.layers:
            raise ValueError("the module holds no convolution to explore")
        if type(layer).__name__ != "Sequential":  # one layer: no model notes to show
            return model.layers, model.weights, model.biases
        return model.spec, model.weights, model.biases
    if isinstance(layer, list) and layer and not isinstance(layer[0], (int, np.integer)):
        specs = []
        for item in layer:
            shape, kw = (item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)
                         else (item, {}))
            specs.append(layer_spec(shape, **kw))
        return specs, None, None
    if isinstance(layer, (tuple, list)):
        return [layer_spec(layer, **conv_kwargs)], None, None
    w = np.asarray(layer.detach().cpu().numpy() if hasattr(layer, "detach") else layer)
    return [layer_spec(w.shape, **conv_kwargs)], [w], None


def _bias_of(bias, spec: dict) -> np.ndarray:
    """One bias per output channel of the layer ``spec`` (a scalar is repeated)."""
    from .. import notation

    wshape = notation.shape(spec["weight"])
    channels = wshape[1] * int(spec["groups"]) if spec["transposed"] else wshape[0]
    b = np.asarray(bias.detach().cpu().numpy() if hasattr(bias, "detach") else bias, dtype=np.float64).reshape(-1)
    if b.size not in (1, channels):
        raise ValueError(f"bias needs one number or {channels} (one per output channel), got {b.size}")
    return np.broadcast_to(b, (channels,)).copy()


def _is_module(obj) -> bool:
    return any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in type(obj).__mro__)
