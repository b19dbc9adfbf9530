"""Upper bounds on the Lipschitz constant (2-norm) of whole networks, torch and ONNX alike.

A model is read by :func:`convmatrix.network.load` into its IR graph (in eval mode);
the bound walks the DAG in order, carrying ``L[node]``, an upper bound from the
network input to that node's value:

* ``Affine``: its norm ``||M||`` times the bound of its input (several inputs: their
  concatenation, bounded by ``sqrt(sum L_i^2)``). A convolution's norm is exact and
  fast (:func:`~convmatrix.analysis.spectral.spectral_norm` on its ``ConvRecord``).
  A chain of affine layers with nothing between them (conv, batch norm, pooling,
  reshape, linear) is also bounded by the exact norm of its product, whichever is
  smaller: batch norm folded into its convolution (the product's weight), or the
  product of the sparse matrices;
* ``Act``: the activation's constant (the table of :mod:`convmatrix.network.activations`);
* ``Max`` (max pooling over index groups): ``|max(a) - max(b)| <= ||(a - b)_group||``,
  and summing the squares over groups counts every input at most ``m`` times, where
  ``m`` is the most windows one input lies in, so the constant is ``sqrt(m)``;
* ``Add`` (and a subtraction of two values): where the terms are affine maps of one
  common node ``r`` (a residual ``x + A x``), the exact ``||A + B||`` times ``L[r]``;
  otherwise the sum of the bounds (``1 + Lip(f)`` for a nonlinear branch:
  ``x - relu(x) = min(x, 0)`` has constant 1 although ``||I - I|| = 0``, so only
  affine branches are merged).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..network.activations import ACTIVATIONS, lipschitz_constant
from ..network.layers import fold_channel_affine
from .spectral import spectral_norm

__all__ = ["lipschitz", "graph_lipschitz", "LipschitzReport", "LayerRow", "ACTIVATION_LIPSCHITZ",
           "activation_lipschitz", "fold_batch_norm", "max_pool_bound", "matrix_norm"]

#: Lipschitz constants of the activations that have a fixed one, by torch class name.
ACTIVATION_LIPSCHITZ = {k: a.lipschitz for k, a in ACTIVATIONS.items() if isinstance(a.lipschitz, float)}
# Products of affine maps are kept for exact norms only while they stay this sparse.
_MAX_PRODUCT_NNZ = 20_000_000


def activation_lipschitz(name: str, **params) -> float:
    """Lipschitz constant of an element-wise activation; parameters where they matter.

    >>> activation_lipschitz("LeakyReLU", negative_slope=0.2), activation_lipschitz("Sigmoid")
    (1.0, 0.25)
    """
    if name == "PReLU" and "weight" in params:
        params = {"slopes": params["weight"]}
    return lipschitz_constant(name, params)


def fold_batch_norm(weight, bias, scale, shift, *, axis: int = 0):
    """Fold ``y -> scale*y + shift`` per output channel into the layer's ``(weight, bias)``.

    ``axis`` is the weight's output-channel axis (0 for conv and linear, 1 for a
    transposed conv, whose output channel is ``group*out_per_group + j``).

    >>> w, b = fold_batch_norm(np.ones((2, 1, 1)), None, np.array([2., 3.]), np.array([1., 0.]))
    >>> w.ravel().tolist(), b.tolist()
    ([2.0, 3.0], [1.0, 0.0])
    """
    groups = 1 if axis == 0 else len(scale) // np.shape(weight)[1]
    return fold_channel_affine(weight, bias, scale, shift, transposed=axis == 1, groups=groups)


def max_pool_bound(kernel_size, stride, dilation=1, ndim: int = 2) -> float:
    """Lipschitz bound of max pooling: ``sqrt(max number of windows holding one input entry)``.

    Each entry lies in at most ``min(k, ceil(span/stride))`` windows per axis.

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
    if M.nnz == 0:
        return 0.0
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
    """``bound``: an upper bound on the network's Lipschitz constant; ``layers``: one row per node."""

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


# ------------------------------------------------------------------ norms of nodes
def _is_identity(M) -> bool:
    return M.shape[0] == M.shape[1] == M.nnz and np.array_equal(M.indices, np.arange(M.shape[0])) \
        and bool(np.all(M.data == 1))


def _diagonal(M):
    """The diagonal of ``M`` if ``M`` is diagonal (every stored entry on it), else None."""
    n = M.shape[0]
    if M.shape[1] != n or M.nnz != n or not np.array_equal(M.indices, np.arange(n)):
        return None
    return M.data


def _conv_norm(rec, weight=None) -> float | None:
    """Exact ``||M||`` of a convolution record (with a folded weight), None where its padding has no keywords."""
    from ..core.matrix import conv_geometry

    geom = rec.geometry
    kw = geom.conv_kwargs()
    w = rec.weight if weight is None else weight
    if conv_geometry(w.shape, geom.input_shape, **kw) != geom:
        return None  # asymmetric pads that are no padding='same'
    return spectral_norm(w, geom.input_shape, **kw)


def affine_norm(M, rec=None) -> float:
    """``||M||`` of an Affine node's matrix (``rec``: its ``ConvRecord``): the conv's fast path for a
    convolution, cheap for identities, diagonals and selections, exact always. ``M`` may be a
    callable that gives the matrix (it is not built for a convolution's fast path)."""
    if rec is not None and rec.kind == "conv":
        norm = _conv_norm(rec)
        if norm is not None:
            return norm
    M = M() if callable(M) else M
    diag = _diagonal(M)
    if diag is not None:
        return float(np.max(np.abs(diag)))
    if M.nnz and np.all(np.diff(M.indptr) <= 1) and np.all(np.abs(M.data) == 1) \
            and np.unique(M.indices).size == M.nnz:
        return 1.0  # a selection: distinct unit entries, one per row at most
    return matrix_norm(M)


def _channel_scale(M, shape):
    """Per-channel scales of a diagonal map constant on each channel of ``shape``, else None."""
    diag = _diagonal(M)
    if diag is None or len(shape) < 2:
        return None
    per = diag.reshape(shape[0], -1)
    return per[:, 0] if np.all(per == per[:, :1]) else None


def _folded_norm(graph, shapes, chain) -> float | None:
    """Exact norm of a chain ``[conv record node] + channel-diagonal nodes`` (batch norm), folded."""
    convs = [j for j in chain if getattr(graph.nodes[j], "conv", None) is not None]
    if len(convs) != 1 or graph.nodes[convs[0]].conv.kind != "conv":
        return None
    rec = graph.nodes[convs[0]].conv
    w = rec.weight
    for j in chain:
        if j == convs[0] or _is_identity(graph.nodes[j].M):
            continue
        scale = _channel_scale(graph.nodes[j].M, shapes[j])
        if scale is None:
            return None
        w, _ = fold_channel_affine(w, None, scale, transposed=rec.geometry.transposed, before=j < convs[0],
                                   groups=rec.geometry.groups)
    return _conv_norm(rec, w)


def _chain_norm(graph, shapes, chain) -> tuple[float, str] | None:
    """Exact norm of the product of an affine chain, and how it was found; None when too large."""
    folded = _folded_norm(graph, shapes, chain)
    if folded is not None:
        return folded, "exact (BN folded in)"
    product = None
    for j in chain:
        M = graph.nodes[j].M
        product = M if product is None else sp.csr_array(M @ product)
        if product.nnz > _MAX_PRODUCT_NNZ:
            return None
    return matrix_norm(product), "exact norm of the affine chain"


# ------------------------------------------------------------------ the walk
class _Walk:
    """The state of one bound: ``L`` per node, affine maps of a common root, affine chains."""

    def __init__(self, graph):
        self.g, self.shapes, self.consumers = graph, graph.sample_shapes, graph.consumers()
        self.L = {0: 1.0}
        self.affine_of: dict[int, tuple[int, sp.csr_array | None]] = {}  # node -> (root, A): value = A root + c
        self.chain_of: dict[int, tuple[int, list[int]]] = {}  # affine node -> (root, affine chain from it)

    def _is_link(self, j) -> bool:
        node = self.g.nodes[j]
        return node.op == "Affine" and len(node.inputs) == 1

    def _root_map(self, inputs):
        """``(root, [A_i])`` when every input is an affine map of one node, else None."""
        pairs = [self.affine_of.get(i, (i, None)) for i in inputs]
        roots = {r for r, _ in pairs}
        return (roots.pop(), [A for _, A in pairs]) if len(roots) == 1 else None

    def _combine(self, j, blocks):
        """The map ``sum_k blocks[k] @ A_k`` of node ``j``'s inputs from their common root, if sparse enough."""
        common = self._root_map(self.g.nodes[j].inputs)
        if common is None:
            return None
        root, maps = common
        n = self.g.nodes[root].size
        total = None
        for B, A in zip(blocks, maps):
            part = B if A is None else sp.csr_array(B @ A)
            total = part if total is None else sp.csr_array(total + part)
            if total.nnz > _MAX_PRODUCT_NNZ:
                return None
        if total.shape != (total.shape[0], n):
            return None
        self.affine_of[j] = (root, total)
        return root, total

    def affine(self, j):
        node = self.g.nodes[j]
        factor = affine_norm(lambda: node.M, node.conv)
        bound = factor * math.sqrt(sum(self.L[i] ** 2 for i in node.inputs))
        how = "exact"
        starts = np.cumsum([0] + [self.g.nodes[i].size for i in node.inputs])
        blocks = [sp.csr_array(node.M[:, a:b]) for a, b in zip(starts[:-1], starts[1:])]
        if len(blocks) > 1:  # ||sum B_k x_k|| <= sum ||B_k|| L_k, tighter for x - f(x)
            bound = min(bound, sum(affine_norm(B) * self.L[i] for B, i in zip(blocks, node.inputs)))
        combined = self._combine(j, blocks)
        if len(node.inputs) > 1 and combined is not None:  # x - A x and the like: the exact norm
            exact = matrix_norm(combined[1])
            if exact * self.L[combined[0]] < bound:
                bound, how = exact * self.L[combined[0]], "affine terms: exact norm of their sum"
        if len(node.inputs) == 1:
            bound, how = self._chain(j, bound, how)
        return factor, bound, how

    def _chain(self, j, bound, how):
        """Extend the affine chain through ``j``; at its end, the exact norm of the whole chain."""
        prev = self.g.nodes[j].inputs[0]
        if self._is_link(prev) and self.consumers[prev] == [j]:
            root, chain = self.chain_of[prev]
            chain = chain + [j]
        else:
            root, chain = prev, [j]
        self.chain_of[j] = (root, chain)
        nexts = self.consumers[j]
        if len(nexts) == 1 and self._is_link(nexts[0]):
            return bound, how  # the chain goes on
        moving = [k for k in chain if not _is_identity(self.g.nodes[k].M)]
        if len(moving) < 2:
            return bound, how
        found = _chain_norm(self.g, self.shapes, chain)
        if found is not None and found[0] * self.L[root] <= bound:
            names = "+".join(self.g.nodes[k].name for k in chain)
            return found[0] * self.L[root], f"{found[1]} {names}"
        return bound, how

    def add(self, j):
        node = self.g.nodes[j]
        eye = sp.identity(node.size, format="csr")
        combined = self._combine(j, [eye] * len(node.inputs))
        if combined is not None:
            factor = matrix_norm(combined[1])
            return factor, factor * self.L[combined[0]], "affine branches: exact ||A + B||"
        return float("nan"), sum(self.L[i] for i in node.inputs), "nonlinear branch: sum of the bounds"

    def bound(self, j):
        """``(factor, bound, how)`` of node ``j``."""
        node = self.g.nodes[j]
        ins = node.inputs
        if node.op == "Affine":
            return self.affine(j)
        if node.op == "Act":
            factor = lipschitz_constant(node.kind, node.params)
            return factor, factor * self.L[ins[0]], "activation"
        if node.op == "Max":
            factor = math.sqrt(int(np.bincount(np.asarray(node.groups).ravel()).max()))
            return factor, factor * self.L[ins[0]], "max pooling: sqrt(windows per input)"
        if node.op == "Concat":
            return float("nan"), math.sqrt(sum(self.L[i] ** 2 for i in ins)), "concatenation: sqrt(sum of squares)"
        if node.op == "Add":
            return self.add(j)
        raise ValueError(f"node {node.name!r} of type {node.op} has no Lipschitz rule")


def graph_lipschitz(graph) -> LipschitzReport:
    """An upper bound on the Lipschitz constant of an IR :class:`~convmatrix.network.Graph`.

    Example
    -------
    >>> import numpy as np, scipy.sparse as sp
    >>> from convmatrix.network import Graph
    >>> g = Graph((2,))
    >>> h = g.affine([g.input], sp.csr_array(np.diag([3., -1.])), name="fc")
    >>> g.output = g.add([h, g.input], name="skip")       # x + A x: exactly ||I + A|| = 4
    >>> round(graph_lipschitz(g).bound, 12)
    4.0
    """
    walk = _Walk(graph)
    rows = []
    for j, node in enumerate(graph.nodes[1 : graph.output + 1], 1):
        factor, walk.L[j], how = walk.bound(j)
        rows.append(LayerRow(node.name or f"node {j}", node.origin or node.op, tuple(walk.shapes[j]), factor,
                             walk.L[j], how))
    return LipschitzReport(bound=float(walk.L[graph.output]), layers=rows)


def lipschitz(model, input_shape=None) -> LipschitzReport:
    """An upper bound on the Lipschitz constant (2-norm) of a network, with a per-layer table.

    ``model``: anything :func:`convmatrix.network.load` reads (a torch module, read
    in eval mode, or an ONNX file): convolutions (any padding mode, transposed),
    linear layers, batch norm, pooling (average: exact; max: bounded), element-wise
    activations, reshapes, residual additions/subtractions and scaling by
    constants. ``input_shape`` is the input without the batch axis (ONNX files
    declare their own). Each conv's norm is exact (:func:`spectral_norm`); affine
    chains (batch norm folded into its conv) use the exact norm of their product;
    residual blocks with an affine branch ``||I + A||``. ``str(report)`` prints the table.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Sigmoid())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(2 * torch.eye(3))
    >>> lipschitz(net, (3,)).bound
    0.5
    """
    from ..network import load

    is_onnx = isinstance(model, (str, bytes, os.PathLike)) or type(model).__name__ == "ModelProto"
    return graph_lipschitz(load(model, None if is_onnx else input_shape, eval_mode=True))
