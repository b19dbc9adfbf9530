"""Upper bounds on the Lipschitz constant (in the 2-norm) of whole torch networks.

The bound composes per-layer constants along the network's graph: a layer
multiplies the bound of its input by its own constant, a sum of two tensors adds
their bounds. Two refinements make it much tighter than the naive product:

* batch norm (eval) is folded into the neighbouring convolution or linear layer
  first, so the norm is taken of the product, not of both factors;
* a residual ``x + f(x)`` whose branch is affine, ``f(x) = A x + c``, is bounded
  by ``||I + A||`` itself, computed exactly from the sparse matrix; a nonlinear
  branch gives ``1 + Lip(f)`` (``x - relu(x) = min(x, 0)`` has constant 1 although
  ``||I - I|| = 0``, so only affine branches may be merged).

The per-layer functions at the top take NumPy weights and geometry and know
nothing of torch, so other front ends (ONNX) can reuse them; :func:`lipschitz`
is the torch front end (``torch.fx``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..core.matrix import conv_matrix
from .spectral import spectral_norm

__all__ = [
    "lipschitz",
    "LipschitzReport",
    "ACTIVATION_LIPSCHITZ",
    "activation_lipschitz",
    "fold_batch_norm",
    "avg_pool_weight",
    "max_pool_bound",
    "matrix_norm",
]

# ------------------------------------------------------------ per-layer constants
#: Lipschitz constants of element-wise activations (sup of |derivative|), by torch class name.
ACTIVATION_LIPSCHITZ = {
    "ReLU": 1.0, "ReLU6": 1.0, "Tanh": 1.0, "Hardtanh": 1.0, "Softplus": 1.0, "Softsign": 1.0,
    "Sigmoid": 0.25, "Hardsigmoid": 1 / 6, "Hardswish": 1.5, "Identity": 1.0, "Dropout": 1.0,
    "Dropout1d": 1.0, "Dropout2d": 1.0, "Dropout3d": 1.0, "AlphaDropout": 1.0,
    # GELU: Phi(x) + x phi(x) peaks at x = sqrt(2) with 1.1289; tanh form peaks slightly lower.
    "GELU": 1.129,
    # SiLU: sigma(x)(1 + x(1 - sigma(x))) peaks near x = 2.40 at 1.0998.
    "SiLU": 1.1,
    # Mish peaks near x = 1.2 at 1.0886.
    "Mish": 1.089,
    # SELU: scale * alpha on the negative side.
    "SELU": 1.0507009873554805 * 1.6732632423543772,
    # softmax's Jacobian diag(p) - p p^T has norm at most 1/2; 1 is a safe round number.
    "Softmax": 1.0,
}


def activation_lipschitz(name: str, **params) -> float:
    """Lipschitz constant of an element-wise activation; parameters where they matter.

    >>> activation_lipschitz("LeakyReLU", negative_slope=0.2), activation_lipschitz("Sigmoid")
    (1.0, 0.25)
    """
    if name == "LeakyReLU":
        return max(1.0, abs(params.get("negative_slope", 0.01)))
    if name in ("ELU", "CELU"):
        return max(1.0, abs(params.get("alpha", 1.0)))
    if name == "PReLU":
        return max(1.0, float(np.max(np.abs(params["weight"]))))
    if name in ACTIVATION_LIPSCHITZ:
        return ACTIVATION_LIPSCHITZ[name]
    raise ValueError(f"activation {name!r} has no known Lipschitz constant; known: {sorted(ACTIVATION_LIPSCHITZ)}")


def fold_batch_norm(weight, bias, scale, shift, *, axis: int = 0):
    """Fold ``y -> scale*y + shift`` per channel into the preceding layer's ``(weight, bias)``.

    ``axis`` is the weight's output-channel axis (0 for conv and linear, 1 for a
    transposed conv, whose output channel is ``group*out_per_group + j``).

    >>> w, b = fold_batch_norm(np.ones((2, 1, 1)), None, np.array([2., 3.]), np.array([1., 0.]))
    >>> w.ravel().tolist(), b.tolist()
    ([2.0, 3.0], [1.0, 0.0])
    """
    weight = np.asarray(weight, dtype=np.float64)
    scale, shift = np.asarray(scale, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    if axis == 0:
        w = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    else:  # transposed: (C_in, C_out/groups, *k); output channel g*cog + j
        cin, cog = weight.shape[:2]
        groups = len(scale) // cog
        w = weight.reshape(groups, cin // groups, cog, -1) * scale.reshape(groups, 1, cog, 1)
        w = w.reshape(weight.shape)
    b = np.zeros(len(scale)) if bias is None else np.asarray(bias, dtype=np.float64)
    return w, scale * b + shift


def avg_pool_weight(kernel_size, ndim: int) -> np.ndarray:
    """The one-channel conv weight of an average pool (``1/prod(k)`` everywhere); apply it with
    ``groups=C`` (or on one channel: every channel has the same norm)."""
    k = tuple(kernel_size) if np.ndim(kernel_size) else (int(kernel_size),) * ndim
    return np.full((1, 1, *k), 1.0 / math.prod(k))


def max_pool_bound(kernel_size, stride, dilation=1, ndim: int = 2) -> float:
    """Lipschitz bound of max pooling: ``sqrt(max number of windows holding one input entry)``.

    ``|max(a) - max(b)| <= max|a - b|`` per window, and each entry lies in at most
    ``min(k, ceil(span/stride))`` windows per axis.

    >>> max_pool_bound(2, 2), max_pool_bound(3, 2), max_pool_bound(3, 2, ndim=1)
    (1.0, 2.0, 1.4142135623730951)
    """
    def tup(v):
        return tuple(v) if np.ndim(v) else (int(v),) * ndim

    count = 1
    for k, s, d in zip(tup(kernel_size), tup(stride), tup(dilation)):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return math.sqrt(count)


def matrix_norm(M) -> float:
    """``||M||_2`` of a sparse or dense matrix (dense Gram when one side is short, else ARPACK)."""
    M = sp.csr_array(M) if not sp.issparse(M) else M.tocsr()
    rows, cols = M.shape
    if min(rows, cols) <= 300:
        gram = (M @ M.T.conj()) if rows <= cols else (M.T.conj() @ M)
        return float(np.sqrt(max(np.linalg.eigvalsh(np.asarray(gram.toarray()))[-1], 0.0)))
    op = spla.aslinearoperator(M)
    gram = spla.LinearOperator((cols, cols), matvec=lambda x: op.rmatvec(op.matvec(x)), dtype=M.dtype)
    v0 = np.random.default_rng(0).standard_normal(cols)
    lam = spla.eigsh(gram, k=1, which="LA", tol=1e-10, v0=v0, ncv=min(cols, 32), maxiter=100_000,
                     return_eigenvectors=False)[0]
    return float(np.sqrt(max(lam, 0.0)))


# ------------------------------------------------------------------ the report
@dataclass
class LayerRow:
    name: str
    op: str
    output_shape: tuple
    factor: float  #: this layer's own constant (or NaN where the row is a combination)
    bound: float  #: bound from the network input to this layer's output
    how: str


@dataclass
class LipschitzReport:
    """``bound``: an upper bound on the network's Lipschitz constant; ``layers``: one row per step."""

    bound: float
    layers: list = field(default_factory=list)

    def __str__(self) -> str:
        head = ("layer", "op", "output", "factor", "bound so far", "how")
        rows = [head] + [
            (r.name, r.op, "x".join(map(str, r.output_shape)),
             "" if math.isnan(r.factor) else f"{r.factor:.6g}", f"{r.bound:.6g}", r.how)
            for r in self.layers
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"Lipschitz bound (2-norm): {self.bound:.6g}")
        return "\n".join(lines)


# ------------------------------------------------------------- torch front end
_CONV = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_RESHAPE = ("Flatten", "Unflatten")


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _bn_affine(m):
    scale = _np(m.weight) if m.weight is not None else np.ones(m.num_features)
    shift = _np(m.bias) if m.bias is not None else np.zeros(m.num_features)
    if m.running_var is None:
        raise ValueError(f"batch norm {m} without running statistics cannot be folded (eval mode needed)")
    scale = scale / np.sqrt(_np(m.running_var) + m.eps)
    return scale, shift - scale * _np(m.running_mean)


def _conv_kwargs(m) -> dict:
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    if type(m).__name__.startswith("ConvTranspose"):
        kw.update(transposed=True, output_padding=m.output_padding)
    else:
        kw["padding_mode"] = m.padding_mode
    return kw


class _Graph:
    """The traced graph with every node's output shape (batch axis dropped)."""

    def __init__(self, model, input_shape):
        import torch
        import torch.fx as fx
        from torch.fx.passes.shape_prop import ShapeProp

        self.torch = torch
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as exc:  # tracing errors come in many types
            raise ValueError(f"lipschitz: the model cannot be traced by torch.fx ({exc})") from None
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        try:
            ShapeProp(self.gm).propagate(torch.zeros((1, *input_shape), dtype=dtype))
        except Exception as exc:  # whatever the model raises on a wrong shape
            raise ValueError(
                f"lipschitz: running the model on an input of shape {(1, *input_shape)} failed: {exc}"
            ) from None
        self.modules = dict(self.gm.named_modules())

    def shape(self, node):
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None

    def users(self, node):
        return list(node.users)


def _is_tensor_arg(g, a) -> bool:
    return hasattr(a, "op") and g.shape(a) is not None


def _layer(g, node):
    """What a node is: (kind, data) with kind in conv, linear, bn, pool, maxpool, act, id, add, sub, scale, const."""
    tensor_args = [a for a in node.args if _is_tensor_arg(g, a)]
    if node.op == "call_module":
        m = g.modules[node.target]
        name = type(m).__name__
        if name in _CONV:
            return "conv", m
        if name == "Linear":
            return "linear", m
        if name in _BN:
            return "bn", m
        if name.startswith("AvgPool"):
            if m.ceil_mode or not m.count_include_pad or getattr(m, "divisor_override", None):
                raise ValueError(
                    f"lipschitz: layer {node.target!r} ({name}) with ceil_mode, count_include_pad=False or "
                    "divisor_override is not a convolution; only plain average pooling is supported"
                )
            return "pool", m
        if name.startswith("AdaptiveAvgPool"):
            return "adaptive", m
        if name.startswith("MaxPool"):
            return "maxpool", m
        if name in _RESHAPE or name in ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d"):
            return "id", m
        if name in ("LeakyReLU",):
            return "act", activation_lipschitz(name, negative_slope=m.negative_slope)
        if name in ("ELU", "CELU"):
            return "act", activation_lipschitz(name, alpha=m.alpha)
        if name == "PReLU":
            return "act", activation_lipschitz(name, weight=_np(m.weight))
        if name in ACTIVATION_LIPSCHITZ:
            return "act", ACTIVATION_LIPSCHITZ[name]
        raise ValueError(f"lipschitz: layer {node.target!r} ({name}) is not supported")
    if node.op in ("call_function", "call_method"):
        t = node.target
        fname = t if isinstance(t, str) else getattr(t, "__name__", str(t))
        if t in (operator.add, operator.sub) or fname in ("add", "sub", "iadd", "isub"):
            if len(tensor_args) == 2:
                return ("sub" if "sub" in fname else "add"), None
            return "id", None  # tensor plus a constant
        if t in (operator.mul, operator.truediv) or fname in ("mul", "div", "truediv"):
            consts = [a for a in node.args if isinstance(a, (int, float))]
            if len(tensor_args) == 1 and consts:
                c = float(consts[0])
                return "scale", (1.0 / abs(c) if fname in ("truediv", "div") else abs(c))
        if fname in ("flatten", "view", "reshape", "contiguous", "dropout", "squeeze", "unsqueeze", "clone"):
            return "id", None
        for act, lip in (("relu", 1.0), ("relu6", 1.0), ("tanh", 1.0), ("sigmoid", 0.25), ("gelu", 1.129),
                         ("silu", 1.1), ("hardtanh", 1.0), ("softplus", 1.0), ("elu", None),
                         ("leaky_relu", None)):
            if fname in (act, act + "_"):
                if lip is None:
                    kw = dict(node.kwargs)
                    if len(node.args) > 1:
                        kw.setdefault("negative_slope" if act == "leaky_relu" else "alpha", node.args[1])
                    lip = (max(1.0, abs(kw.get("negative_slope", 0.01))) if act == "leaky_relu"
                           else max(1.0, abs(kw.get("alpha", 1.0))))
                return "act", lip
        if not tensor_args or g.shape(node) is None:
            return "const", None
        raise ValueError(f"lipschitz: operation {fname!r} (node {node.name!r}) is not supported")
    return "const", None


def _node_matrix(g, node, kind, m, in_shape):
    """The sparse matrix of an affine node (bias dropped)."""
    if kind == "conv":
        return conv_matrix(_np(m.weight), in_shape, **_conv_kwargs(m))
    if kind in ("pool", "adaptive"):
        w, kw = _pool_conv(m, in_shape)
        block = conv_matrix(w, (1, *in_shape[1:]), **kw)
        return sp.kron(sp.identity(in_shape[0]), block, format="csr")
    if kind == "linear":
        W = sp.csr_array(_np(m.weight))
        n = math.prod(in_shape) // in_shape[-1]
        return sp.kron(sp.identity(n), W, format="csr") if n > 1 else W
    if kind == "bn":
        scale, _ = _bn_affine(m)
        per = math.prod(in_shape[1:])
        return sp.diags_array(np.repeat(scale, per)).tocsr()
    if kind == "scale":
        return sp.identity(math.prod(in_shape), format="csr") * m
    return sp.identity(math.prod(in_shape), format="csr")  # id


def _pool_conv(m, in_shape):
    nd = len(in_shape) - 1
    if type(m).__name__.startswith("Adaptive"):
        out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * nd
        out = tuple(n if o is None else o for o, n in zip(out, in_shape[1:]))
        if any(n % o for n, o in zip(in_shape[1:], out)):
            raise ValueError(f"lipschitz: adaptive average pooling from {in_shape[1:]} to {out} is not a "
                             "convolution (sizes must divide)")
        k = tuple(n // o for n, o in zip(in_shape[1:], out))
        return avg_pool_weight(k, nd), dict(stride=k)
    k = m.kernel_size
    return avg_pool_weight(k, nd), dict(stride=m.stride if m.stride else k, padding=m.padding)


def lipschitz(model, input_shape=None) -> LipschitzReport:
    """An upper bound on the Lipschitz constant (2-norm) of a torch network, with a per-layer table.

    An ONNX file (path or ``onnx.ModelProto``) is read with :func:`convmatrix.network.load`
    and bounded on its graph (:func:`convmatrix.analysis.lipschitz_graph.graph_lipschitz`).

    ``model``: an ``nn.Sequential`` or any module ``torch.fx`` can trace, built from
    convolutions (any padding mode, transposed), linear layers, batch norm (eval),
    average pooling (exact), max pooling (bounded), element-wise activations, reshapes,
    residual additions/subtractions and scaling by constants. ``input_shape`` is the
    input without the batch axis. Each conv's norm is exact (:func:`spectral_norm`),
    with batch norm folded into the neighbouring conv or linear layer; residual
    blocks with an affine branch use ``||I + A||``. ``str(report)`` prints the table.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Sigmoid())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(2 * torch.eye(3))
    >>> lipschitz(net, (3,)).bound
    0.5
    """
    import os

    if isinstance(model, (str, os.PathLike)) or type(model).__name__ == "ModelProto":
        from .lipschitz_graph import graph_lipschitz
        from ..network import load

        return graph_lipschitz(load(model, input_shape))
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or an ONNX file, got {type(model).__name__}")
    input_shape = tuple(int(v) for v in input_shape)
    was_training = model.training
    model.eval()
    try:
        g = _Graph(model, input_shape)
        return _bound(g)
    finally:
        model.train(was_training)


def _bound(g: _Graph) -> LipschitzReport:
    L: dict = {}  # node -> bound from the network input
    aff: dict = {}  # affine node -> (root node, [affine nodes from the root, in order])
    folded_into: dict = {}  # bn node -> the conv/linear node it folds into (or back)
    rows: dict = {}
    kinds = {}
    output = None
    nodes = list(g.gm.graph.nodes)
    for node in nodes:
        if node.op == "placeholder":
            L[node] = 1.0
            continue
        if node.op == "output":
            output = node
            continue
        kind, m = _layer(g, node)
        kinds[node] = (kind, m)
        # Only arguments that depend on the input count; parameters and buffers are constants.
        tensor_args = [a for a in node.args if a in L]
        shape = g.shape(node)
        if kind in ("add", "sub") and len(tensor_args) < 2:
            kind = "id"
        if kind == "const" or not tensor_args:
            continue
        label = node.target if node.op == "call_module" else node.name
        op = (type(g.modules[node.target]).__name__ if node.op == "call_module"
              else str(getattr(node.target, "__name__", node.target)))
        if kind in ("add", "sub"):
            a, b = tensor_args
            ra, ca = aff.get(a, (a, []))
            rb, cb = aff.get(b, (b, []))
            if ra is rb:
                A = _chain_matrix(g, ca, g.shape(ra))
                B = _chain_matrix(g, cb, g.shape(ra))
                factor = matrix_norm(A + B if kind == "add" else A - B)
                L[node] = factor * L[ra]
                how = "affine branches: exact ||A + B|| from the sparse matrices"
                # The sum is affine in the root as well.
                aff[node] = (ra, [("matrix", A + B if kind == "add" else A - B, shape)])
            else:
                factor = float("nan")
                L[node] = L[a] + L[b]
                how = "nonlinear branch: sum of the branches' bounds"
            rows[node] = LayerRow(label, op, shape, factor, L[node], how)
            continue
        p = tensor_args[0]
        in_shape = g.shape(p)
        if kind == "act":
            factor, how = m, "activation"
        elif kind == "maxpool":
            factor, how = max_pool_bound(m.kernel_size, m.stride, m.dilation, len(in_shape) - 1), "bound"
        elif kind == "id" or kind == "scale":
            factor, how = (1.0 if kind == "id" else m), "exact"
        elif kind == "bn" and p in kinds and kinds[p][0] in ("conv", "linear") and len(g.users(p)) == 1:
            # Fold into the preceding layer: its row becomes the product's.
            q = p.args[0]
            pre = kinds[q][1] if q in folded_into else None
            factor = _layer_norm(g, p, kinds[p][1], g.shape(q), post_bn=m, pre_bn=pre)
            how = "exact (BN folded in)"
            L[node] = factor * L[q]
            rows.pop(p, None)
            rows[node] = LayerRow(f"{rows_label(p)}+{label}", f"{kinds[p][1].__class__.__name__}+{op}", shape,
                                  factor, L[node], how)
            _extend_affine(aff, node, p)
            continue
        elif kind == "bn" and _bn_folds_forward(g, node, kinds):
            folded_into[node] = True
            factor, how = 1.0, "folded into the next layer"
        elif kind in ("conv", "linear", "bn", "pool", "adaptive"):
            bn_before = p if (p in folded_into) else None
            if bn_before is not None:
                factor = _layer_norm(g, node, m, in_shape, pre_bn=kinds[bn_before][1])
                how = "exact (BN before folded in)"
            else:
                factor = _layer_norm(g, node, m, in_shape, kind=kind)
                how = "exact"
        else:  # pragma: no cover - _layer covers every kind
            raise AssertionError(kind)
        L[node] = factor * L[p]
        rows[node] = LayerRow(label, op, shape, factor, L[node], how)
        if kind in ("conv", "linear", "bn", "pool", "adaptive", "id", "scale"):
            _extend_affine(aff, node, p)
    outs = [a for a in _flatten_args(output.args) if a in L]
    bound = max(L[a] for a in outs) if outs else 1.0
    return LipschitzReport(bound=float(bound), layers=list(rows.values()))


def rows_label(node) -> str:
    return node.target if node.op == "call_module" else node.name


def _flatten_args(args):
    for a in args:
        if isinstance(a, (tuple, list)):
            yield from _flatten_args(a)
        elif isinstance(a, dict):
            yield from _flatten_args(list(a.values()))
        else:
            yield a


def _extend_affine(aff, node, p):
    root, chain = aff.get(p, (p, []))
    aff[node] = (root, chain + [node])


def _bn_folds_forward(g, node, kinds) -> bool:
    """A batch norm that can fold into the single conv/linear layer that follows it."""
    users = g.users(node)
    if len(users) != 1 or users[0].op != "call_module":
        return False
    name = type(g.modules[users[0].target]).__name__
    return name in _CONV or name == "Linear"


def _layer_norm(g, node, m, in_shape, *, kind=None, post_bn=None, pre_bn=None) -> float:
    """Exact norm of a conv/linear (with a batch norm folded after or before), a BN or a pool."""
    name = type(m).__name__
    if name in _BN:
        return float(np.max(np.abs(_bn_affine(m)[0])))
    if name.startswith("AvgPool") or name.startswith("AdaptiveAvgPool"):
        w, kw = _pool_conv(m, in_shape)
        return spectral_norm(w, (1, *in_shape[1:]), **kw)
    w = _np(m.weight)
    transposed = name.startswith("ConvTranspose")
    if post_bn is not None:
        w, _ = fold_batch_norm(w, None, *_bn_affine(post_bn), axis=1 if transposed else 0)
    if pre_bn is not None:
        scale, _ = _bn_affine(pre_bn)
        if name == "Linear":
            per = w.shape[1] // len(scale) if w.shape[1] % len(scale) == 0 else None
            if per is None:
                raise ValueError(f"lipschitz: batch norm of {len(scale)} features before {node.target!r} "
                                 f"({w.shape[1]} inputs) does not match")
            w = w * np.repeat(scale, per)[None, :]
        elif transposed:  # input channels are axis 0
            w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        else:  # input channel of group gr, local i: gr*cig + i
            cig = w.shape[1]
            groups = len(scale) // cig
            w = (w.reshape(groups, -1, cig, *w.shape[2:])
                 * scale.reshape(groups, 1, cig, *([1] * (w.ndim - 2)))).reshape(w.shape)
    if name == "Linear":
        return float(np.linalg.norm(w, 2))
    return spectral_norm(w, in_shape, **_conv_kwargs(m))


def _chain_matrix(g, chain, root_shape):
    """The product of the sparse matrices of an affine chain (identity when empty)."""
    M = sp.identity(math.prod(root_shape), format="csr")
    shape = root_shape
    for item in chain:
        if isinstance(item, tuple):  # an already combined affine sum
            M, shape = item[1] @ M, item[2]
            continue
        kind, m = _layer(g, item)
        M = _node_matrix(g, item, kind, m, shape) @ M
        shape = g.shape(item)
    return M.tocsr()
