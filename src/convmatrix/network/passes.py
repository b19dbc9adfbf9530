"""Passes over the IR: fused affine maps, max pooling to ReLU trees, the ReLU family to ReLU,
DAG to one chain.

The end product is a :class:`Chain`: ``Linear -> activation -> Linear -> ... -> Linear``,
where every activation applies to all of its layer's neurons or, only where a skip
path crosses a non-ReLU activation, to a subset of them (``Layer.index``). The chain
keeps the input and output neurons in the graph's order.

How a DAG becomes a chain (:func:`lower`): every value is tracked as an affine
function ``A @ s + c`` of the current *state* ``s`` (the neurons after the last
activation layer). Linear nodes only compose these functions (sparse products), so
consecutive affine maps fuse. At an activation, a new layer is cut: its neurons are
the activation's inputs plus every value still needed later (a skip path). Through a
ReLU layer such a value is carried exactly as ``x = relu(x) - relu(-x)``, with one
neuron instead of two where it is already non-negative (a ReLU output: relu(x) = x).
Through any other activation it is carried by an identity neuron (a masked layer).

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> from convmatrix.network.ir import Graph
>>> g = Graph((2,))
>>> r = g.act(g.affine([0], sp.csr_array(np.eye(2))), "ReLU")
>>> g.output = g.add([r, 0])                  # relu(x) + x: a residual
>>> chain = lower(g)
>>> [layer.M.shape for layer in chain.layers]   # 2 ReLU neurons + 2x2 carried neurons
[(6, 2), (2, 6)]
>>> chain.evaluate(np.array([[1., -2.]]))
array([[ 2., -2.]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .activations import apply_activation
from .ir import Act, Add, Affine, Graph, Input, Max, Node

__all__ = ["Layer", "Chain", "expand_max", "relu_only", "fuse_affine", "lower", "prune", "rebuild",
           "piecewise_linear", "clip"]


@dataclass(eq=False)
class Layer:
    """``z -> act(M @ z + b)``; ``kind`` None for no activation; ``index``: the neurons it
    applies to (None: all)."""

    M: sp.csr_array
    b: np.ndarray
    kind: str | None = None
    params: dict | None = None
    index: np.ndarray | None = None

    def apply(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray((self.M @ z.T).T) + self.b
        if self.kind is None:
            return z
        if self.index is None:
            return apply_activation(self.kind, self.params or {}, z)
        z = z.copy()
        z[:, self.index] = apply_activation(self.kind, self.params or {}, z[:, self.index])
        return z


@dataclass(eq=False)
class Chain:
    """A sequential network: ``layers`` applied in order to a flat input.

    ``input_shape`` and ``output_shape`` are the tensor shapes (without batch) of
    the graph it came from; ``meta`` is the graph's.
    """

    layers: list[Layer]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    meta: dict

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64)
        for layer in self.layers:
            z = layer.apply(z)
        return z

    @property
    def kinds(self) -> list[str]:
        return sorted({layer.kind for layer in self.layers if layer.kind})

    def table(self) -> list[tuple[str, int, int, int, int]]:
        """One row per layer: (activation, inputs, neurons, stored entries, dense float32 bytes)."""
        rows = []
        for layer in self.layers:
            act = layer.kind or "-"
            if layer.kind and layer.index is not None:
                act += f" on {len(layer.index)}"
            n_out, n_in = layer.M.shape
            rows.append((act, n_in, n_out, int(layer.M.nnz), 4 * (n_out * n_in + n_out)))
        return rows


# -- rebuilding graphs ------------------------------------------------------------------

def rebuild(graph: Graph, rewrite: Callable[[Graph, Node, tuple[int, ...]], int | None]) -> Graph:
    """A copy of ``graph`` where ``rewrite(new, node, new_inputs)`` may replace a node.

    ``rewrite`` returns the id of the node's replacement in ``new`` or None to copy it.
    """
    new = Graph(graph.input_shape, graph.nodes[0].name)
    new.meta = dict(graph.meta)
    ids = {0: 0}
    for j, node in enumerate(graph.nodes[1:], 1):
        ins = tuple(ids[i] for i in node.inputs)
        got = rewrite(new, node, ins)
        if got is None:
            copy = type(node)(**{**node.__dict__, "inputs": ins})
            got = new.append(copy)
        ids[j] = got
    new.output = ids[graph.output]
    return new


def fuse_affine(graph: Graph) -> Graph:
    """Consecutive Affine nodes as one (a sparse product) where the first has no other reader.

    Conv + BatchNorm + Flatten, or a Linear after an average pool, become one Affine
    node named ``"conv+bn+flatten"``; activations, additions and the output stay.
    """
    consumers = graph.consumers()

    def rewrite(g: Graph, node: Node, ins: tuple[int, ...]) -> int | None:
        if not (isinstance(node, Affine) and len(ins) == 1):
            return None
        old = node.inputs[0]
        prev = g.nodes[ins[0]]
        if not isinstance(prev, Affine) or len(consumers[old]) != 1 or old == graph.output:
            return None
        prev.M, prev.b = sp.csr_array(node.M @ prev.M), node.M @ prev.b + node.b
        prev.shape, prev.name = node.shape, f"{prev.name}+{node.name}"
        return ins[0]

    return rebuild(graph, rewrite)


def _select(index_lists, n_cols) -> sp.csr_array:
    """Rows that pick ``x[i]`` for every i of the concatenated index lists."""
    idx = np.concatenate(index_lists)
    return sp.csr_array((np.ones(len(idx)), (np.arange(len(idx)), idx)), shape=(len(idx), n_cols))


def _max_tree(g: Graph, node: Max, x: int, pre_relu: bool = False) -> int:
    """``max`` over index groups as a tree of ``max(a, b) = b + relu(a - b)``.

    With ``pre_relu``, ``x`` holds pre-activations and the result is the max of their
    ReLUs: ``relu`` commutes with ``max``, so the first level computes
    ``relu(max(a, b))`` straight from the pre-activations and the ReLU layer in front
    of the pool disappears (a network of the same depth, with narrower layers).
    """
    n = node.groups.shape[0]
    cols = [node.groups[:, j] for j in range(node.groups.shape[1])]
    cur, width = x, g.nodes[x].size
    if pre_relu and len(cols) == 1:
        return g.act(g.affine([cur], _select(cols, width), shape=node.shape), "ReLU", name=node.name)
    while len(cols) > 1:
        m = len(cols) // 2
        a, b, rest = cols[0:2 * m:2], cols[1:2 * m:2], cols[2 * m:]
        diff = _select(a, width) - _select(b, width)
        d = g.affine([cur], diff, name=f"{node.name} (a-b)")
        keep = g.affine([cur], _select(b + rest, width), name=f"{node.name} (b)")
        r = g.act(d, "ReLU", name=f"{node.name} relu(a-b)")
        n_keep, n_r = n * (m + len(rest)), n * m
        add_r = sp.vstack([sp.identity(n_r), sp.csr_array((n_keep - n_r, n_r))])
        cur = g.affine([keep, r], sp.hstack([sp.identity(n_keep), add_r]), name=f"{node.name} max")
        if pre_relu:  # relu(max(a, b)) for every pair (and relu of the one left over)
            cur, pre_relu = g.act(cur, "ReLU", name=f"{node.name} relu"), False
        cols, width = [np.arange(n) + j * n for j in range(m + len(rest))], n_keep
    return g.affine([cur], _select(cols, width), shape=node.shape, name=node.name)


def expand_max(graph: Graph) -> Graph:
    """Every :class:`Max` node as a tree of ReLUs (exact: ``max(a, b) = b + relu(a - b)``).

    A ReLU whose only reader is the max pooling is folded into the tree's first level.
    """
    consumers = graph.consumers()
    folded = {i for i, node in enumerate(graph.nodes)
              if isinstance(node, Act) and node.kind == "ReLU" and i != graph.output
              and len(consumers[i]) == 1 and isinstance(graph.nodes[consumers[i][0]], Max)}
    folded_nodes = {id(graph.nodes[i]) for i in folded}

    def rewrite(g: Graph, node: Node, ins: tuple[int, ...]) -> int | None:
        if id(node) in folded_nodes:
            return ins[0]  # the pooling reads the pre-activations
        if isinstance(node, Max):
            return _max_tree(g, node, ins[0], pre_relu=node.inputs[0] in folded)
        return None

    return rebuild(graph, rewrite)


def _relu_pair(g: Graph, node: Act, x: int) -> int | None:
    """``LeakyReLU``/``PReLU`` as ``relu(x) - a * relu(-x)``."""
    if node.kind == "LeakyReLU":
        slopes = np.full(node.size, float(node.params.get("negative_slope", 0.01)))
    elif node.kind == "PReLU":
        slopes = np.asarray(node.params["slopes"], dtype=np.float64).reshape(-1)
    else:
        return None
    n = node.size
    eye = sp.identity(n, format="csr")
    both = g.affine([x], sp.vstack([eye, -eye]), name=f"{node.name} (x, -x)")
    r = g.act(both, "ReLU", name=f"{node.name} relu")
    return g.affine([r], sp.hstack([eye, sp.diags_array(-slopes)]), shape=node.shape, name=node.name)


def piecewise_linear(g: Graph, x: int, slope, const, knots, coefs, *, name: str = "") -> int:
    """The element-wise ``f(x) = slope*x + const + sum_j coefs[:, j] * relu(x - knots[:, j])``.

    Every continuous piecewise-linear function of one variable has this form (one
    knot per breakpoint, ``coefs`` the change of slope there); ``slope`` and ``const``
    broadcast to ``(n,)``, the 2-D ``knots`` and ``coefs`` to ``(n, J)``, for the ``n``
    neurons of ``x``. Built as an Affine node
    (``x - knots``), a ReLU, and an Affine node reading ``x`` and the ReLUs.

    >>> import numpy as np
    >>> g = Graph((3,))
    >>> g.output = piecewise_linear(g, 0, -1.0, 0.0, [[0.0]], [[2.0]])   # |x| = -x + 2 relu(x)
    >>> g.evaluate(np.array([[-2., 0., 3.]]))
    array([[2., 0., 3.]])
    """
    node = g.nodes[x]
    n = node.size
    knots = np.atleast_2d(np.asarray(knots, dtype=np.float64))
    knots = np.broadcast_to(knots, (n, knots.shape[1]))
    coefs = np.broadcast_to(np.atleast_2d(np.asarray(coefs, dtype=np.float64)), knots.shape)
    J = knots.shape[1]
    eye = sp.identity(n, format="csr")
    pre = g.affine([x], sp.vstack([eye] * J, format="csr"), -knots.T.reshape(-1), name=f"{name} (x - knots)")
    r = g.act(pre, "ReLU", name=f"{name} relu")
    diag = lambda v: sp.diags_array(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)), format="csr")
    M = sp.hstack([diag(slope)] + [diag(coefs[:, j]) for j in range(J)], format="csr")
    return g.affine([x, r], M, np.broadcast_to(np.asarray(const, dtype=np.float64), (n,)), shape=node.shape,
                    name=name)


def clip(g: Graph, x: int, lo: float, hi: float, *, name: str = "") -> int:
    """``min(max(x, lo), hi)`` with ReLUs (either bound may be infinite)."""
    lo, hi = float(lo), float(hi)
    if lo > hi:  # as numpy.clip and ONNX Clip: everything becomes hi
        n = g.nodes[x].size
        return g.affine([x], sp.csr_array((n, n)), np.full(n, hi), shape=g.nodes[x].shape, name=name)
    if np.isinf(lo) and np.isinf(hi):
        return g.reshape(x, g.nodes[x].shape, name=name)
    if np.isinf(lo):  # x - relu(x - hi)
        return piecewise_linear(g, x, 1.0, 0.0, [[hi]], [[-1.0]], name=name)
    if np.isinf(hi):  # lo + relu(x - lo)
        return piecewise_linear(g, x, 0.0, lo, [[lo]], [[1.0]], name=name)
    return piecewise_linear(g, x, 0.0, lo, [[lo, hi]], [[1.0, -1.0]], name=name)


CLIPS = {"Hardtanh": lambda p: (p.get("min_val", -1.0), p.get("max_val", 1.0)), "ReLU6": lambda p: (0.0, 6.0)}


def _relu_rewrite(g: Graph, node: Node, x: int, kinds) -> int | None:
    if not (isinstance(node, Act) and node.kind in kinds):
        return None
    if node.kind in CLIPS:
        return clip(g, x, *CLIPS[node.kind](node.params), name=node.name)
    return _relu_pair(g, node, x)


def relu_only(graph: Graph, kinds=("LeakyReLU", "PReLU", "Hardtanh", "ReLU6")) -> Graph:
    """``LeakyReLU``, ``PReLU``, ``Hardtanh`` and ``ReLU6`` nodes (those in ``kinds``) rewritten with ReLUs."""
    return rebuild(graph, lambda g, node, ins: _relu_rewrite(g, node, ins[0], kinds))


# -- DAG -> chain -------------------------------------------------------------------------

def _nonneg_rows(A: sp.csr_array, c: np.ndarray, nonneg: np.ndarray) -> np.ndarray:
    """Rows of ``A @ s + c`` that are >= 0 for every state (non-negative terms of non-negative neurons)."""
    bad = (A.data < 0) | ~nonneg[A.indices]
    row = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    ok = np.ones(A.shape[0], dtype=bool)
    ok[row[bad]] = False
    return ok & (c >= 0)


def _same_act(a: Act, b: Act) -> bool:
    return a.kind == b.kind and a.kind != "PReLU" and a.params == b.params


class _Lowering:
    """The walk of :func:`lower`: values as affine functions ``(A, c)`` of the current state."""

    def __init__(self, graph: Graph, progress=None):
        self.g = graph
        self.consumers = graph.consumers()
        self.uses = [len(c) for c in self.consumers]
        self.uses[graph.output] += 1
        n = graph.nodes[0].size
        self.expr = {0: (sp.identity(n, format="csr"), np.zeros(n))}
        self.nonneg = np.zeros(n, dtype=bool)
        self.done = {0}
        self.layers: list[Layer] = []
        self.progress = progress

    def _finish(self, j, A, c):
        self.expr[j] = (sp.csr_array(A), np.asarray(c, dtype=np.float64))
        self.done.add(j)
        for i in self.g.nodes[j].inputs:
            self.uses[i] -= 1
            if self.uses[i] == 0:
                del self.expr[i]
        if self.progress is not None:
            self.progress.update(1)

    def _linear(self, j, node):
        ins = [self.expr[i] for i in node.inputs]
        A = sp.vstack([a for a, _ in ins], format="csr") if len(ins) > 1 else ins[0][0]
        c = np.concatenate([c for _, c in ins])
        if isinstance(node, Affine):
            self._finish(j, node.M @ A, node.M @ c + node.b)
        elif isinstance(node, Add):
            k = node.size
            S = sp.hstack([sp.identity(k)] * len(ins), format="csr")
            self._finish(j, S @ A, S @ c)
        else:  # Concat
            self._finish(j, A, c)

    def run(self) -> list[Layer]:
        nodes = self.g.nodes
        while self.g.output not in self.done:
            for j, node in enumerate(nodes):  # everything linear that can be computed now
                if j not in self.done and not isinstance(node, (Act, Input, Max)) and \
                        all(i in self.done for i in node.inputs):
                    self._linear(j, node)
            if self.g.output in self.done:
                break
            ready = [j for j, node in enumerate(nodes) if j not in self.done and isinstance(node, Act)
                     and all(i in self.done for i in node.inputs)]
            dead = [j for j in ready if self.uses[j] == 0]
            for j in dead:  # an activation nobody reads: no layer for it
                self._finish(j, *self.expr[nodes[j].inputs[0]])
            ready = [j for j in ready if self.uses[j] > 0]
            if dead and not ready:
                continue
            if not ready:
                bad = next(node for j, node in enumerate(nodes) if j not in self.done and isinstance(node, Max))
                raise ValueError(f"node {bad.name!r}: run expand_max before lowering")
            first = nodes[ready[0]]
            group = [j for j in ready if _same_act(nodes[j], first)] or ready[:1]
            self._cut(group)
        A, c = self.expr[self.g.output]
        self.layers.append(Layer(sp.csr_array(A), c))
        return self.layers

    def _cut(self, group: list[int]):
        """A new activation layer for the Act nodes in ``group``, carrying every live value."""
        nodes = self.g.nodes
        kind, params = nodes[group[0]].kind, nodes[group[0]].params
        relu = kind == "ReLU"
        if relu:  # relu of a non-negative value is the value: no layer needed
            skip = [j for j in group if _nonneg_rows(*self.expr[nodes[j].inputs[0]], self.nonneg).all()]
            for j in skip:
                self._finish(j, *self.expr[nodes[j].inputs[0]])
            group = [j for j in group if j not in skip]
            if not group:
                return
        inputs = [self.expr[nodes[j].inputs[0]] for j in group]
        for j in group:  # the activations consume their inputs now
            self.done.add(j)
            self.uses[nodes[j].inputs[0]] -= 1
            if self.progress is not None:
                self.progress.update(1)
        rows, bias, new_nonneg, plan = [], [], [], []
        offset = 0
        for j, (A, c) in zip(group, inputs):
            rows.append(A), bias.append(c)
            new_nonneg.append(np.full(A.shape[0], relu))
            plan.append((j, offset, None, A.shape[0]))
            offset += A.shape[0]
        n_act = offset
        for v in sorted(self.expr):
            if self.uses[v] == 0:
                continue
            A, c = self.expr[v]  # a skip path: carry it through this layer
            pos = _nonneg_rows(A, c, self.nonneg)
            rows.append(A), bias.append(c)
            new_nonneg.append(np.ones(A.shape[0], bool) if relu else pos)
            neg = None
            if relu and not pos.all():  # x = relu(x) - relu(-x)
                neg = np.flatnonzero(~pos)
                rows.append(-A[neg]), bias.append(-c[neg])
                new_nonneg.append(np.ones(len(neg), bool))
            plan.append((v, offset, neg, A.shape[0]))
            offset += A.shape[0] + (0 if neg is None else len(neg))
        M = sp.vstack(rows, format="csr")
        index = None if (relu or offset == n_act) else np.arange(n_act)
        self.layers.append(Layer(M, np.concatenate(bias), kind, dict(params), index))
        self.nonneg = np.concatenate(new_nonneg)
        self.expr = {}
        for v, off, neg, size in plan:  # every value: its neurons in the new state
            A = _select([np.arange(off, off + size)], offset)
            if neg is not None:
                A = A - sp.csr_array((np.ones(len(neg)), (neg, off + size + np.arange(len(neg)))),
                                     shape=(size, offset))
            self.expr[v] = (sp.csr_array(A), np.zeros(size))


def prune(layers: list[Layer]) -> list[Layer]:
    """Drop neurons no later layer reads (dead ends such as conv outputs no pooling window covers)."""
    for i in range(len(layers) - 1, 0, -1):
        keep = np.unique(layers[i].M.indices)
        prev = layers[i - 1]
        if len(keep) == prev.M.shape[0]:
            continue
        if prev.index is not None:
            alive = np.isin(prev.index, keep)
            if prev.params and "slopes" in prev.params:
                prev.params = dict(prev.params, slopes=np.asarray(prev.params["slopes"])[alive])
            prev.index = np.flatnonzero(np.isin(keep, prev.index))
        elif prev.params and "slopes" in prev.params:
            prev.params = dict(prev.params, slopes=np.asarray(prev.params["slopes"])[keep])
        prev.M, prev.b = sp.csr_array(prev.M[keep]), prev.b[keep]
        layers[i].M = sp.csr_array(layers[i].M[:, keep])
    return layers


def lower(graph: Graph, *, progress=None) -> Chain:
    """The graph (after :func:`expand_max`) as one sequential :class:`Chain`.

    Linear nodes fuse into the Linear layers (sparse products); every activation
    node becomes an activation layer, and parallel activations of the same kind
    share one layer. Neurons that nothing reads are dropped. The chain's input and
    output neurons are the graph's, in order.
    """
    if any(isinstance(n, Max) for n in graph.nodes):
        graph = expand_max(graph)
    layers = _Lowering(graph, progress).run()
    last = layers[-1]
    n = last.M.shape[0]
    if len(layers) > 1 and last.M.shape[1] == n and not last.b.any() and \
            (last.M != sp.identity(n, format="csr")).nnz == 0:
        layers.pop()  # the output is an activation layer's own neurons, in order
    prune(layers)
    return Chain(layers, graph.input_shape, graph.output_shape, dict(graph.meta))
