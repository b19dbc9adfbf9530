"""Smaller exact forms of a lowered chain: the same function with fewer dense bytes.

A verifier that reads a fully connected network walks every dense weight, zeros
included, so the product of consecutive layer widths decides whether it can read it.
:func:`simplify` rewrites a :class:`~convmatrix.network.passes.Chain` (ReLU and
linear layers; other activation layers are kept as they are) with three exact passes,
repeated until none applies:

``drop_dead``
    Neurons whose value is a constant (an empty row: ``relu(b)``, folded into the next
    layer's bias), identically zero (``relu`` of a row that is never positive: no
    positive weight on non-negative inputs and ``b <= 0``) or never read (a zero column
    of the next layer) are removed.
``carry_sources``
    Values a ReLU layer only passes through (a row that is never negative, so
    ``relu(v) = v``, or a pair ``relu(v), relu(-v)`` that the next layer reads as
    ``relu(v) - relu(-v) = v``) are linear in the layer's input. Where they read fewer
    input neurons than they take, the layer carries those input neurons instead (one
    neuron each when they are ReLU outputs, two when signed) and the next layer reads
    the values through them. This is the pass-through of max-pooling trees
    (``max(a, b) = b + relu(a - b)`` carries every ``b``): a 4x4 pool after a 2x2
    convolution carries 16 window values read from 25 input pixels.
``merge_linear``
    A layer without activation (or a ReLU layer whose rows are never negative) and the
    next one become one layer, their product, where that is smaller.

One pass works on the graph, before lowering: :func:`split_pools` computes a max pool
over ``k = inner * m`` ReLU outputs as ``relu`` of maxes over ``inner`` pre-activations,
then a max over ``m`` of those (``relu`` commutes with ``max``). The signed inner tree
carries its values cheaply from the layer's input; the outer tree works on non-negative
values, which cross a ReLU layer as one neuron each. The pipeline lowers every split
:func:`pool_splits` offers and keeps the smallest chain.

Every rewrite is exact algebra on the layers (float64 products); the first layer's
columns and the last layer's rows, the network's input and output, never change.

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> from convmatrix.network.passes import Chain, Layer
>>> E = np.eye(3)
>>> first = Layer(sp.csr_array(np.vstack([E, -E, [[0, 0, 0]]])), np.r_[0, 0, 0, 0, 0, 0, 2.0], "ReLU")
>>> last = Layer(sp.csr_array(np.hstack([E, -E, np.ones((3, 1))])), np.zeros(3))   # x + 2
>>> small = simplify(Chain([first, last], (3,), (3,), {}))
>>> [layer.M.shape for layer in small.layers], small.evaluate(np.array([[1.0, -2.0, 3.0]]))
([(3, 3)], array([[3., 0., 5.]]))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .ir import Act, Graph, Max, Node
from .passes import Chain, Layer, rebuild

__all__ = ["simplify", "drop_dead", "carry_sources", "merge_linear", "dense_size", "split_pools", "pool_splits"]


def dense_size(layers: list[Layer]) -> int:
    """Weights and biases of the layers stored densely, in entries."""
    return sum(layer.M.shape[0] * (layer.M.shape[1] + 1) for layer in layers)


def simplify(chain: Chain, *, max_rounds: int = 20) -> Chain:
    """``chain`` with :func:`drop_dead`, :func:`carry_sources` and :func:`merge_linear` applied
    until none changes it (at most ``max_rounds`` rounds); never more dense bytes."""
    layers = [Layer(sp.csr_array(layer.M, copy=True), np.array(layer.b, dtype=np.float64), layer.kind,
                    layer.params, layer.index) for layer in chain.layers]
    for layer in layers:
        layer.M.eliminate_zeros()
    for _ in range(max_rounds):
        before = dense_size(layers)
        changed = drop_dead(layers)
        changed = carry_sources(layers) or changed
        changed = merge_linear(layers) or changed
        if not changed or dense_size(layers) >= before:
            break
    return Chain(layers, chain.input_shape, chain.output_shape, dict(chain.meta))


def _plain(layer: Layer) -> bool:
    """A layer whose rows may be rewritten: ReLU on all neurons, or no activation."""
    return layer.kind in (None, "ReLU") and layer.index is None


def _nonneg_input(layers: list[Layer], i: int) -> bool:
    """Whether layer ``i`` reads only non-negative values (the outputs of a ReLU layer)."""
    return i > 0 and layers[i - 1].kind == "ReLU" and layers[i - 1].index is None


def row_signs(M: sp.csr_array, b: np.ndarray, nonneg_input: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(never_negative, never_positive)``: rows of ``M @ z + b`` that are >= 0 (<= 0) for every
    input ``z`` (every non-negative ``z`` with ``nonneg_input``).

    >>> row_signs(sp.csr_array(np.array([[1., 0.], [0., -1.], [1., -1.]])), np.zeros(3), True)
    (array([ True, False, False]), array([False,  True, False]))
    """
    n = M.shape[0]
    row = np.repeat(np.arange(n), np.diff(M.indptr))
    if nonneg_input:
        has_neg = np.bincount(row[M.data < 0], minlength=n) > 0
        has_pos = np.bincount(row[M.data > 0], minlength=n) > 0
    else:
        has_neg = has_pos = np.diff(M.indptr) > 0
    return ~has_neg & (b >= 0), ~has_pos & (b <= 0)


def _remove_rows(layers: list[Layer], i: int, drop: np.ndarray) -> None:
    """Remove the neurons ``drop`` (a bool mask) of layer ``i`` and the next layer's columns reading them."""
    keep = np.flatnonzero(~drop)
    layer, nxt = layers[i], layers[i + 1]
    layer.M, layer.b = sp.csr_array(layer.M[keep]), layer.b[keep]
    nxt.M = sp.csr_array(sp.csc_array(nxt.M)[:, keep])


def drop_dead(layers: list[Layer]) -> bool:
    """Remove constant, identically zero and unread neurons of every layer but the last (in place).

    A constant neuron's value goes into the next layer's bias. Returns whether anything changed.
    """
    changed = False
    for i in range(len(layers) - 1):
        layer, nxt = layers[i], layers[i + 1]
        if not _plain(layer):
            continue
        empty = np.diff(layer.M.indptr) == 0
        value = np.maximum(layer.b, 0) if layer.kind == "ReLU" else layer.b
        unread = np.diff(sp.csc_array(nxt.M).indptr) == 0
        zero = row_signs(layer.M, layer.b, _nonneg_input(layers, i))[1] if layer.kind == "ReLU" else \
            empty & (layer.b == 0)
        drop = empty | zero | unread
        if drop.all():  # keep one neuron: a layer of width 0 is not a layer
            drop[np.flatnonzero(drop)[0]] = False
        if not drop.any():
            continue
        const = drop & empty & (value != 0) & ~unread
        if const.any():
            nxt.b = nxt.b + sp.csc_array(nxt.M)[:, np.flatnonzero(const)] @ value[const]
        _remove_rows(layers, i, drop)
        changed = True
    return changed


def pass_through(layer: Layer, nxt: Layer, nonneg_input: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(values, rows)``: the rows of a ReLU ``layer`` whose pre-activations the next layer reads
    linearly (``values``: one row per value), and every row that carries them (``rows``, a bool mask).

    A row that is never negative carries its value alone; a pair of rows ``v``, ``-v``
    carries ``v`` where the next layer reads them with opposite columns.
    """
    M, b = layer.M, layer.b
    single = row_signs(M, b, nonneg_input)[0]
    rows, values = single.copy(), np.flatnonzero(single)
    P, Q = negated_rows(M, b, ~single)
    if len(P):
        cols = sp.csc_array(nxt.M)
        diff = sp.csc_array(cols[:, P] + cols[:, Q])
        diff.eliminate_zeros()
        ok = np.diff(diff.indptr) == 0  # the next layer reads relu(v) - relu(-v)
        rows[P[ok]] = rows[Q[ok]] = True
        values = np.concatenate([values, P[ok]])
    return np.sort(values).astype(np.int64), rows


def negated_rows(M: sp.csr_array, b: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(P, Q)``: pairs of rows (both in the bool mask ``among``) with ``M[q] == -M[p]`` and
    ``b[q] == -b[p]`` exactly, each row in at most one pair.

    Candidates come from a random linear hash (``h(-v) == -h(v)`` exactly in floating
    point, the terms being summed in the same order), then every pair is compared entry by entry.

    >>> negated_rows(sp.csr_array(np.array([[1., 2.], [3., 0.], [-1., -2.]])), np.zeros(3), np.ones(3, bool))
    (array([0]), array([2]))
    """
    w = np.random.default_rng(0).uniform(1, 2, M.shape[1] + 1)
    h = M @ w[:-1] + b * w[-1]
    order = np.flatnonzero(among)[np.argsort(h[among], kind="stable")]
    cand = np.flatnonzero(among & (h > 0))
    if not len(order) or not len(cand):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(h[order], -h[cand]), len(order) - 1)
    match = h[order[pos]] == -h[cand]
    P, Q = cand[match], order[pos[match]]
    Q, first = np.unique(Q, return_index=True)
    P = P[first]
    same = sp.csr_array(M[P] + M[Q])
    same.eliminate_zeros()
    ok = (np.diff(same.indptr) == 0) & (b[P] == -b[Q])
    return P[ok], Q[ok]


def carry_sources(layers: list[Layer]) -> bool:
    """In every ReLU layer but the last, carry the input neurons that its pass-through values
    read instead of the values, where that takes fewer neurons (in place; see the module
    docstring). Returns whether anything changed."""
    changed = False
    for i in range(len(layers) - 1):
        layer, nxt = layers[i], layers[i + 1]
        if layer.kind != "ReLU" or layer.index is not None:
            continue
        nonneg = _nonneg_input(layers, i)
        values, rows = pass_through(layer, nxt, nonneg)
        if not len(values):
            continue
        src = np.unique(layer.M[values].indices)
        width = len(src) * (1 if nonneg else 2)
        if width >= rows.sum() or width + (~rows).sum() == 0:  # not smaller, or a layer of no neurons
            continue
        K = sp.csc_array(nxt.M)[:, values]  # how the next layer reads the values
        KL = sp.csr_array(K @ sp.csc_array(layer.M[values])[:, src])
        bias = nxt.b + K @ layer.b[values]
        keep = np.flatnonzero(~rows)
        unit = sp.csr_array((np.ones(len(src)), (np.arange(len(src)), src)), shape=(len(src), layer.M.shape[1]))
        new_rows, new_cols = [layer.M[keep], unit], [sp.csc_array(nxt.M)[:, keep], KL]
        if not nonneg:  # x = relu(x) - relu(-x)
            new_rows.append(-unit)
            new_cols.append(-KL)
        layer.M = sp.csr_array(sp.vstack(new_rows, format="csr"))
        layer.b = np.concatenate([layer.b[keep], np.zeros(len(src) * (1 if nonneg else 2))])
        nxt.M, nxt.b = sp.csr_array(sp.hstack(new_cols, format="csr")), bias
        changed = True
    return changed


def merge_linear(layers: list[Layer]) -> bool:
    """Multiply out a layer that is linear (no activation, or a ReLU layer whose every row is a
    pass-through: never negative, or half of a ``v, -v`` pair) into the next one where the
    product takes fewer dense bytes (in place). Returns whether anything changed."""
    changed, i = False, 0
    while i < len(layers) - 1:
        layer, nxt = layers[i], layers[i + 1]
        values = np.arange(layer.M.shape[0])
        linear = layer.kind is None
        if layer.kind == "ReLU" and layer.index is None:
            values, rows = pass_through(layer, nxt, _nonneg_input(layers, i))
            linear = bool(rows.all())
        n_in, n_mid, n_out = layer.M.shape[1], layer.M.shape[0], nxt.M.shape[0]
        if linear and n_out * (n_in + 1) < n_mid * (n_in + 1) + n_out * (n_mid + 1):
            K = sp.csc_array(nxt.M)[:, values]  # how the next layer reads the values
            M = sp.csr_array(K @ sp.csr_array(layer.M[values]))
            layers[i:i + 2] = [Layer(M, K @ layer.b[values] + nxt.b, nxt.kind, nxt.params, nxt.index)]
            changed = True
            continue
        i += 1
    return changed


# -- max pools over ReLU outputs ------------------------------------------------------------

def _relu_pools(graph: Graph) -> dict[int, int]:
    """``{max node id: relu node id}`` for max pools whose input is a ReLU only they read."""
    consumers = graph.consumers()
    out = {}
    for j, node in enumerate(graph.nodes):
        x = node.inputs[0] if isinstance(node, Max) else None
        if x is not None and isinstance(graph.nodes[x], Act) and graph.nodes[x].kind == "ReLU" \
                and len(consumers[x]) == 1 and x != graph.output:
            out[j] = x
    return out


def pool_splits(graph: Graph) -> list[int]:
    """The ``inner`` sizes :func:`split_pools` can use: proper divisors (> 1) of the window sizes
    of max pools over ReLU outputs.

    >>> g = Graph((4,))
    >>> g.output = g.max(g.act(g.input, "ReLU"), np.arange(4).reshape(1, 4))
    >>> pool_splits(g)
    [2]
    """
    sizes = {graph.nodes[j].groups.shape[1] for j in _relu_pools(graph)}
    return sorted({d for k in sizes for d in range(2, k) if k % d == 0})


def split_pools(graph: Graph, inner: int) -> Graph:
    """Every max pool over ``k`` ReLU outputs, ``k`` a multiple of ``inner`` above it, as
    ``max_m relu(max_inner z)``: the max over each run of ``inner`` window entries of the
    pre-activations ``z``, a ReLU, then the max over the ``k / inner`` results.

    >>> g = Graph((4,))
    >>> g.output = g.max(g.act(g.input, "ReLU"), np.arange(4).reshape(1, 4))
    >>> h = split_pools(g, 2)
    >>> [node.op for node in h.nodes], h.evaluate(np.array([[-3., -1., -2., -5.]]))
    (['Input', 'Max', 'Act', 'Affine', 'Max'], array([[0.]]))
    """
    pools = {id(graph.nodes[j]): graph.nodes[x] for j, x in _relu_pools(graph).items()
             if graph.nodes[j].groups.shape[1] % inner == 0 and graph.nodes[j].groups.shape[1] > inner}
    relus = {id(node) for node in pools.values()}

    def rewrite(g: Graph, node: Node, ins: tuple[int, ...]) -> int | None:
        if id(node) in relus:
            return ins[0]  # the pool reads the pre-activations
        if id(node) not in pools:
            return None
        n, k = node.groups.shape
        m = k // inner
        groups = np.concatenate([node.groups[:, j * inner:(j + 1) * inner] for j in range(m)])
        r = g.act(g.max(ins[0], groups, name=f"{node.name} (inner)"), "ReLU", name=f"{node.name} relu")
        r = g.reshape(r, (n * m,), name=f"{node.name} (outer)")  # keeps the ReLU out of the outer tree
        return g.max(r, np.arange(n * m).reshape(m, n).T, shape=node.shape, name=node.name)

    return rebuild(graph, rewrite)
