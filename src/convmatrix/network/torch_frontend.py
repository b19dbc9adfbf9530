"""torch front end: an ``nn.Module`` (traced with ``torch.fx``) as an IR :class:`Graph`.

The model is traced symbolically, then run node by node on a concrete float64
batch, so every node's real output shape is known (shape arithmetic such as
``x.view(x.size(0), -1)`` just works). Each node touching the input becomes IR:

- convolutions (1-3-D, transposed, every option) -> an Affine node that keeps its ``ConvRecord``
  (geometry, weight, bias) and builds its matrix on first use; pooling and padding layers keep
  theirs too (a grouped convolution with a ones kernel, a 1x1 one with that padding)
- Linear, BatchNorm (eval, folded), AvgPool/AdaptiveAvgPool, +, -, * and / by constants,
  mean/sum over non-batch axes -> Affine
- MaxPool/AdaptiveMaxPool -> Max over windows (later a ReLU tree)
- activations -> Act; residual additions -> Add
- everything that only moves values (Flatten, Unflatten, view, reshape, permute,
  transpose, squeeze, cat, slicing, padding layers, nearest upsampling, Identity,
  Dropout in eval mode) -> a gather, read off by running the op on integer codes.

Anything else raises ValueError naming the node and its module.
"""

from __future__ import annotations

import copy
from math import prod

import numpy as np
import scipy.sparse as sp

from .._optional import require
from ..core.geometry import check_memory, conv_transpose_output_size
from .activations import ACTIVATIONS as ACTIVATION_TABLE
from .activations import FUNCTIONAL
from .ir import Graph
from .layers import (adaptive_windows, avg_pool_affine, batch_norm_affine, channel_affine, codes, conv_record,
                     gather_matrix, linear_affine, max_pool_groups, pad_record, pool_geometry, pool_record,
                     pool_windows)

__all__ = ["from_torch", "check_input_shape"]

# torch.nn activation modules and their functional forms: the one table of .activations.
ACTIVATIONS = {name: row.params for name, row in ACTIVATION_TABLE.items() if name != "PReLU"}
FUNCTIONAL_ACTS = {fn: (row.name, row.params if row.positional else ()) for fn, row in FUNCTIONAL.items()}
GATHER_MODULES = (
    "Flatten", "Unflatten", "Identity", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d",
    "ConstantPad2d", "ConstantPad3d", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d",
    "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "CircularPad1d", "CircularPad2d",
    "CircularPad3d", "PixelShuffle", "PixelUnshuffle", "ChannelShuffle",
)
GATHER_FUNCTIONS = {
    "flatten", "reshape", "view", "permute", "transpose", "swapaxes", "movedim", "squeeze", "unsqueeze",
    "cat", "concat", "concatenate", "stack", "pad", "getitem", "narrow", "flip", "roll", "contiguous",
    "clone", "unflatten", "expand", "expand_as", "repeat", "pixel_shuffle", "pixel_unshuffle",
    "detach", "dropout", "identity", "reshape_as", "view_as", "to", "type_as", "float", "double",
}
POOL_ARGS = {  # functional pooling: positional names after the input
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avg_pool": ("output_size",),
    "adaptive_max_pool": ("output_size", "return_indices"),
}


def _tuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


class _TorchLoader:
    def __init__(self, model, input_shape, batch=2, seed=0, eval_mode=False):
        require("torch", extra="torch", feature="reading a torch model")
        import torch
        import torch.fx

        self.torch = torch
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.input_shape = check_input_shape(input_shape)
        # The probe batch runs in float64: refuse it by its size before torch tries to allocate it.
        check_memory(batch * prod(self.input_shape) * 8, None,
                     f"input_shape={self.input_shape}: a probe batch of {batch} such inputs", "use a smaller input_shape")
        self.model = copy.deepcopy(model).cpu().double()
        if eval_mode:  # a copy: the caller's model keeps its modes
            self.model.eval()
        try:
            self.gm = torch.fx.symbolic_trace(self.model)
        except Exception as exc:  # fx raises many kinds; say which model and why, in one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {msg}") from None
        self.batch = batch
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, *self.input_shape, dtype=torch.float64, generator=gen)
        self.g = Graph(self.input_shape, "input")
        self.env, self.ir = {}, {}

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Graph:
        torch = self.torch
        placeholders = 0
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if placeholders == 0:
                    self.env[node], self.ir[node] = self.x, 0
                elif node.args:
                    self.env[node] = node.args[0]  # a default value
                else:
                    raise ValueError(f"the model's forward takes more than one input ({node.name!r})")
                placeholders += 1
                continue
            if node.op == "output":
                out = node.args[0]
                if not (hasattr(out, "op") and out in self.ir):
                    raise ValueError("the model must return one tensor that depends on its input")
                self.g.output = self.ir[out]
                return self.g
            args = self._map(node.args)
            kwargs = self._map(node.kwargs)
            try:
                value = self._concrete(node, args, kwargs)
            except Exception as exc:  # torch's own error for this layer on this input, in one line
                msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ValueError(f"{self._where(node)} fails on an input of shape (N, *{self.input_shape}): "
                                 f"{msg}") from None
            self.env[node] = value
            traced = [n for n in node.all_input_nodes if n in self.ir]
            if not traced or not isinstance(value, torch.Tensor):
                continue  # constants, and shape arithmetic such as x.size(0)
            if not (isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == self.batch):
                raise ValueError(f"{self._where(node)} does not keep the batch axis first "
                                 f"(output {type(value).__name__} {tuple(getattr(value, 'shape', ()))})")
            first = len(self.g.nodes)
            try:
                self.ir[node] = self._convert(node, args, kwargs, traced, value)
            except ValueError as exc:
                if str(exc).startswith(self._where(node)):
                    raise
                raise ValueError(f"{self._where(node)}: {exc}") from None
            for made in self.g.nodes[first:]:
                made.origin = self._origin(node)
        raise ValueError("the traced model has no output")

    def _map(self, a):
        import torch.fx

        return torch.fx.node.map_arg(a, lambda n: self.env[n])

    def _concrete(self, node, args, kwargs):
        with self.torch.no_grad():
            if node.op == "get_attr":
                obj = self.gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                return obj
            if node.op == "call_module":
                return self.gm.get_submodule(node.target)(*args, **kwargs)
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _where(self, node) -> str:
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            return f"module {node.target!r} ({type(mod).__name__})"
        what = getattr(node.target, "__name__", str(node.target))
        return f"node {node.name!r} ({node.op} {what})"

    def _origin(self, node) -> str:
        if node.op == "call_module":
            return type(self.gm.get_submodule(node.target)).__name__
        return str(getattr(node.target, "__name__", node.target)).strip("_")

    def _shape(self, n):
        return tuple(self.env[n].shape[1:])

    # -- dispatch --------------------------------------------------------------------------
    def _convert(self, node, args, kwargs, traced, value):
        out_shape = tuple(value.shape[1:])
        name = node.target if node.op == "call_module" else node.name
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            cls = type(mod).__name__
            src = node.args[0]
            if len(traced) != 1 or src not in self.ir:
                raise ValueError("a module must take the traced tensor as its first argument")
            return self._module(mod, cls, src, out_shape, str(name), args, kwargs, node)
        fname = getattr(node.target, "__name__", node.target) if node.op == "call_function" else node.target
        fname = fname.strip("_")  # __add__ -> add, relu_ -> relu (in-place forms compute the same)
        fname = {"iadd": "add", "radd": "add", "isub": "sub", "imul": "mul", "rmul": "mul",
                 "itruediv": "truediv", "div": "truediv"}.get(fname, fname)
        if fname in GATHER_FUNCTIONS:
            return self._gather(node, traced, out_shape, name)
        if fname in FUNCTIONAL_ACTS:
            kind, names = FUNCTIONAL_ACTS[fname]
            params = dict(zip(names, args[1:]))
            params.update({k: v for k, v in kwargs.items() if k != "inplace" and k != "input"})
            if fname == "gelu":
                params = {"approximate": kwargs.get("approximate", "none")}
            return self.g.act(self.ir[traced[0]], kind, params, name=name)
        if fname in ("add", "sub", "mul", "truediv", "neg", "rsub"):
            return self._arith(fname, node, args, out_shape, name)
        if fname in ("mean", "sum"):
            return self._reduce(fname, node, args, kwargs, out_shape, name)
        for prefix, names in POOL_ARGS.items():
            if fname.startswith(prefix) and fname[len(prefix):] in ("1d", "2d", "3d"):
                cls = {"max_pool": "MaxPool", "avg_pool": "AvgPool", "adaptive_avg_pool": "AdaptiveAvgPool",
                       "adaptive_max_pool": "AdaptiveMaxPool"}[prefix] + fname[-2:].upper().replace("D", "d")
                opts = dict(zip(names, args[1:]))
                opts.update({k: v for k, v in kwargs.items() if k != "input"})
                mod = getattr(self.torch.nn, cls)(**opts)
                return self._module(mod, cls, traced[0], out_shape, name, args, kwargs, node)
        if fname in ("conv1d", "conv2d", "conv3d", "linear", "batch_norm"):
            return self._functional_affine(fname, node, args, kwargs, out_shape, name)
        raise ValueError(f"unsupported operation {fname!r}")

    def _module(self, mod, cls, src, out_shape, name, args, kwargs, node):
        g, x, in_shape = self.g, self.ir[src], self._shape(src)
        nd = len(in_shape) - 1
        if cls in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
            from .modules import module_conv_kwargs

            kw = module_conv_kwargs(mod)
            if len(args) > 1 or kwargs:  # ConvTranspose(x, output_size=...): the output padding the output shows
                base = [conv_transpose_output_size(n, k, s, d, p, 0) for n, s, p, d, k in
                        zip(in_shape[1:], mod.stride, mod.padding, mod.dilation, mod.kernel_size)]
                kw["output_padding"] = tuple(o - b for o, b in zip(out_shape[1:], base))
            rec = conv_record(mod.weight.detach(), None if mod.bias is None else mod.bias.detach(), in_shape, **kw)
            return g.conv(x, rec, name=name)
        if cls == "Linear":
            M, b, shape = linear_affine(mod.weight.detach(), None if mod.bias is None else mod.bias.detach(), in_shape)
            return g.affine([x], M, b, shape=shape, name=name)
        if cls.startswith("BatchNorm"):
            if mod.training or mod.running_mean is None:
                raise ValueError("batch norm must be in eval mode with running statistics (call model.eval())")
            return self._batch_norm(x, in_shape, mod.running_mean, mod.running_var, mod.weight, mod.bias,
                                    mod.eps, name)
        if cls in GATHER_MODULES and cls.endswith(("Pad1d", "Pad2d", "Pad3d")):
            return self._padding(mod, cls, node, src, in_shape, out_shape, name)
        if cls.startswith("Dropout") or cls.startswith("AlphaDropout") or cls.startswith("FeatureAlphaDropout"):
            if mod.training:
                raise ValueError("dropout must be in eval mode (call model.eval())")
            return g.reshape(x, out_shape, name=name)
        if cls in GATHER_MODULES or (cls == "Upsample" and mod.mode == "nearest"):
            return self._gather(node, [src], out_shape, name)
        if cls in ACTIVATIONS:
            params = {k: getattr(mod, k) for k in ACTIVATIONS[cls]}
            if cls == "ReLU6":
                params = {}
            return g.act(x, cls, params, name=name)
        if cls == "PReLU":
            w = mod.weight.detach().numpy().astype(np.float64)
            per = prod(in_shape[1:]) if len(in_shape) > 1 else 1
            slopes = np.full(prod(in_shape), w[0]) if w.size == 1 else np.repeat(w, per)
            return g.act(x, "PReLU", {"slopes": slopes}, name=name)
        if cls.startswith(("MaxPool", "AvgPool")) and cls[-2:] in ("1d", "2d", "3d"):
            return self._pool(mod, cls, x, in_shape, out_shape, nd, name)
        if cls.startswith(("AdaptiveAvgPool", "AdaptiveMaxPool")):
            W, cnt = adaptive_windows(in_shape, out_shape[1:])
            rec = None
            if not any(n % o for n, o in zip(in_shape[1:], out_shape[1:])):  # integer ratios: a pooling layer
                k = tuple(n // o for n, o in zip(in_shape[1:], out_shape[1:]))
                geom = pool_geometry(in_shape, k, k, (1,) * nd, (0,) * nd, (0,) * nd, out_shape[1:])
                rec = pool_record("avg_pool" if cls.startswith("AdaptiveAvg") else "max_pool", geom)
            if cls.startswith("AdaptiveAvg"):
                return g.affine([x], avg_pool_affine(W, cnt), shape=out_shape, name=name, conv=rec)
            if mod.return_indices:
                raise ValueError("return_indices=True is not supported")
            return g.max(x, max_pool_groups(W), shape=out_shape, name=name, conv=rec)
        raise ValueError("unsupported module")

    def _pool(self, mod, cls, x, in_shape, out_shape, nd, name):
        k = _tuple(mod.kernel_size, nd)
        s = _tuple(mod.stride if mod.stride is not None else mod.kernel_size, nd) or k
        p = _tuple(mod.padding, nd)
        d = _tuple(getattr(mod, "dilation", 1), nd)
        geom = pool_geometry(in_shape, k, s, d, p, p, out_shape[1:])
        if cls.startswith("MaxPool"):
            if mod.return_indices:
                raise ValueError("return_indices=True is not supported")
            W, _ = pool_windows(in_shape, k, s, d, p, p, out_shape[1:])
            return self.g.max(x, max_pool_groups(W), shape=out_shape, name=name, conv=pool_record("max_pool", geom))
        W, cnt_padded = pool_windows(in_shape, k, s, d, p, p, out_shape[1:])
        divisor = getattr(mod, "divisor_override", None)
        if divisor:
            div = np.full(W.shape[0], float(divisor))
        elif mod.count_include_pad:
            div = cnt_padded
        else:
            div = np.diff(W.indptr).astype(np.float64)
        return self.g.affine([x], avg_pool_affine(W, div), shape=out_shape, name=name,
                             conv=pool_record("avg_pool", geom, divisor))

    def _batch_norm(self, x, in_shape, mean, var, weight, bias, eps, name):
        M, t = channel_affine(*batch_norm_affine(mean, var, weight, bias, eps), in_shape)
        return self.g.affine([x], M, t, shape=in_shape, name=name)

    def _padding(self, mod, cls, node, src, in_shape, out_shape, name):
        """A padding layer: its gather, with its record (a 1x1 grouped convolution with that padding)."""
        j = self._gather(node, [src], out_shape, name)
        nd = len(in_shape) - 1
        pads = tuple(mod.padding) if isinstance(mod.padding, (tuple, list)) else (mod.padding,) * (2 * nd)
        lohi = [(pads[2 * (nd - 1 - ax)], pads[2 * (nd - 1 - ax) + 1]) for ax in range(nd)]  # last axis first
        mode = next((m for key, m in (("Reflection", "reflect"), ("Replication", "replicate"),
                                      ("Circular", "circular")) if cls.startswith(key)), "zeros")
        if getattr(mod, "value", 0) == 0 and min(min(p) for p in lohi) >= 0:
            try:
                self.g.nodes[j].conv = pad_record(in_shape, lohi, mode)
            except ValueError:  # no convolution pads this way (the gather is still exact)
                pass
        return j

    def _functional_affine(self, fname, node, args, kwargs, out_shape, name):
        src = node.args[0]
        if src not in self.ir or any(a in self.ir for a in node.all_input_nodes if a is not src):
            raise ValueError(f"{fname} with weights that depend on the input is not affine")
        x, in_shape = self.ir[src], self._shape(src)
        if fname == "linear":
            opts = dict(zip(("weight", "bias"), args[1:]), **kwargs)
            M, b, shape = linear_affine(opts["weight"], opts.get("bias"), in_shape)
        elif fname == "batch_norm":
            opts = dict(zip(("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                            args[1:]), **kwargs)
            if opts.get("training", False):
                raise ValueError("batch_norm with training=True is not affine")
            return self._batch_norm(x, in_shape, opts["running_mean"], opts["running_var"], opts.get("weight"),
                                    opts.get("bias"), opts.get("eps", 1e-5), name)
        else:
            opts = dict(zip(("weight", "bias", "stride", "padding", "dilation", "groups"), args[1:]), **kwargs)
            conv_kw = {k: opts[k] for k in ("stride", "padding", "dilation", "groups") if k in opts}
            rec = conv_record(opts["weight"], opts.get("bias"), in_shape, **conv_kw)
            return self.g.conv(x, rec, name=name)
        return self.g.affine([x], M, b, shape=shape, name=name)

    # -- generic pieces --------------------------------------------------------------------
    def _gather(self, node, traced, out_shape, name):
        """Run the op on integer codes: each output neuron shows which input neuron it copies."""
        torch = self.torch
        sizes = [prod(self._shape(n)) for n in traced]
        total = sum(sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)])[:-1]

        def run(fill):
            env = dict(self.env)
            for n, off, size in zip(traced, offsets, sizes):
                env[n] = fill(n, off, size)
            import torch.fx

            args = torch.fx.node.map_arg(node.args, lambda a: env[a])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: env[a])
            return self._concrete(node, args, kwargs)

        def coded(n, off, size):
            rows = torch.arange(self.batch, dtype=torch.float64)[:, None] * total
            flat = rows + torch.arange(off + 1, off + size + 1, dtype=torch.float64)[None, :]
            return flat.reshape(self.batch, *self._shape(n))

        zeros = run(lambda n, off, size: torch.zeros(self.batch, *self._shape(n), dtype=torch.float64))
        got = (run(coded) - zeros).reshape(self.batch, -1).numpy()
        first = got[0]
        expect = np.where(first > 0, first[None, :] + np.arange(self.batch)[:, None] * total, 0)
        if not np.array_equal(got, expect):
            raise ValueError("the operation mixes samples of the batch or changes values (not a gather)")
        bias = zeros.reshape(self.batch, -1)[0].numpy()
        M = gather_matrix(first, total)
        ids = [self.ir[n] for n in traced]
        return self.g.affine(ids, M, bias, shape=out_shape, name=name)

    def _broadcast(self, n, out_shape, name):
        """A traced value broadcast to ``out_shape`` (a gather) where its shape differs."""
        x, shape = self.ir[n], self._shape(n)
        if shape == out_shape:
            return x
        src = np.broadcast_to(codes((1,) * (len(out_shape) - len(shape)) + shape), out_shape)
        return self.g.affine([x], gather_matrix(src, prod(shape)), shape=out_shape, name=f"{name} (broadcast)")

    def _constant(self, c, out_shape):
        t = self.torch.as_tensor(c, dtype=self.torch.float64)
        full = self.torch.broadcast_to(t, (self.batch, *out_shape)).reshape(self.batch, -1)
        if not bool((full == full[0:1]).all()):
            raise ValueError("a constant that differs across the batch")
        return full[0].numpy().copy()

    def _arith(self, op, node, args, out_shape, name):
        n = prod(out_shape)
        a, b = (node.args + (None,))[:2]
        a_traced = hasattr(a, "op") and a in self.ir
        b_traced = hasattr(b, "op") and b in self.ir
        eye = sp.identity(n, format="csr")
        if op == "neg":
            return self.g.affine([self._broadcast(a, out_shape, name)], -eye, shape=out_shape, name=name)
        if op == "rsub":
            op, a, b, a_traced, b_traced = "sub", b, a, b_traced, a_traced
            args = (args[1], args[0])
        alpha = node.kwargs.get("alpha", 1)
        if a_traced and b_traced:
            if op not in ("add", "sub"):
                raise ValueError(f"{op} of two values that both depend on the input is not affine")
            ids = [self._broadcast(a, out_shape, name), self._broadcast(b, out_shape, name)]
            sign = alpha if op == "add" else -alpha
            if sign == 1 and op == "add":
                return self.g.add(ids, name=name)
            return self.g.affine(ids, sp.hstack([eye, sign * eye], format="csr"), shape=out_shape, name=name)
        x = self._broadcast(a if a_traced else b, out_shape, name)
        c = self._constant(args[1] if a_traced else args[0], out_shape)
        if op == "add":
            return self.g.affine([x], eye, alpha * c if a_traced else c, shape=out_shape, name=name)
        if op == "sub":
            return self.g.affine([x], eye if a_traced else -alpha * eye, -alpha * c if a_traced else c,
                                 shape=out_shape, name=name)
        if op == "mul":
            return self.g.affine([x], sp.diags_array(c, format="csr"), shape=out_shape, name=name)
        if not a_traced:
            raise ValueError("division by a value that depends on the input is not affine")
        return self.g.affine([x], sp.diags_array(1.0 / c, format="csr"), shape=out_shape, name=name)

    def _reduce(self, op, node, args, kwargs, out_shape, name):
        src = node.args[0]
        in_shape = self._shape(src)
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        full = len(in_shape) + 1
        dims = tuple(range(full)) if dims is None else (dims if isinstance(dims, (tuple, list)) else (dims,))
        dims = sorted(d % full for d in dims)
        if 0 in dims:
            raise ValueError(f"{op} over the batch axis")
        kept = tuple(1 if d + 1 in dims else s for d, s in enumerate(in_shape))
        out_idx = np.broadcast_to(np.arange(prod(kept)).reshape(kept), in_shape).reshape(-1)
        count = prod(in_shape) // prod(kept)
        w = 1.0 / count if op == "mean" else 1.0
        M = sp.csr_array((np.full(len(out_idx), w), (out_idx, np.arange(len(out_idx)))),
                         shape=(prod(kept), len(out_idx)))
        return self.g.affine([self.ir[src]], M, shape=out_shape, name=name)


def check_input_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
        input_shape = (int(input_shape),)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__"):
        raise TypeError(f"input_shape must be a tuple of ints (without the batch axis), got {input_shape!r}")
    dims = tuple(input_shape)
    if not dims or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"input_shape must be positive ints (without the batch axis), got {tuple(input_shape)!r}")
    return tuple(int(d) for d in dims)


def from_torch(model, input_shape, *, batch: int = 2, seed: int = 0, eval_mode: bool = False) -> Graph:
    """The IR graph of a torch module for inputs of shape ``(N, *input_shape)``.

    ``eval_mode=True`` reads a copy of the model in eval mode (batch norm with its
    running statistics, no dropout); otherwise a module in training mode is refused.

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
    >>> g = from_torch(net.eval(), (1, 5))
    >>> [node.op for node in g.nodes], g.output_shape
    (['Input', 'Affine', 'Act', 'Affine'], (6,))
    """
    graph = _TorchLoader(_as_module(model), input_shape, batch, seed, eval_mode).run()
    graph.meta.update(source="torch", model=type(model).__name__)
    return graph


def _as_module(model):
    """A list of layers, or one ``torch.nn`` layer, as an ``nn.Sequential`` (so fx sees the layer itself)."""
    import torch

    if isinstance(model, (list, tuple)) and all(isinstance(m, torch.nn.Module) for m in model):
        return torch.nn.Sequential(*model)
    if (isinstance(model, torch.nn.Module) and type(model).__module__.startswith("torch.nn.modules")
            and not isinstance(model, torch.nn.Sequential)):
        return torch.nn.Sequential(model)
    return model
