"""Lipschitz bounds of networks given as IR graphs (:mod:`convmatrix.network`), e.g. ONNX files.

The bound walks the DAG in order, carrying ``L[node]``, an upper bound on the
Lipschitz constant (2-norm) from the network input to that node's value:

* ``Affine`` (after :func:`~convmatrix.network.fuse_affine`, so batch norm and
  reshapes are already folded into the neighbouring linear map): ``||M||`` times
  the bound of its input; with several inputs the input is their concatenation,
  whose bound is ``sqrt(sum L_i^2)``;
* ``Act``: the activation's constant (:func:`~convmatrix.analysis.lipschitz_net.activation_lipschitz`);
* ``Max`` (max pooling over index groups): ``|max(a) - max(b)| <= ||(a - b)_group||``,
  and summing the squares over groups counts every input at most ``m`` times, where
  ``m`` is the most groups one input belongs to, so the constant is ``sqrt(m)``;
* ``Add``: where both addends are affine maps of one common node ``r`` (a residual
  ``x + A x``), the exact ``||A + B||`` times ``L[r]``; otherwise the sum of the bounds
  (``1 + Lip(f)`` for a nonlinear branch; ISSUE-NOTES: ``x - relu(x)`` has constant 1
  although ``||I - I|| = 0``, so only affine branches are merged).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .lipschitz_net import LayerRow, LipschitzReport, activation_lipschitz, matrix_norm

__all__ = ["graph_lipschitz"]

# Products of affine maps are kept for the exact residual norm only while they stay this sparse.
_MAX_PRODUCT_NNZ = 20_000_000


def _act_constant(node) -> float:
    params = dict(node.params)
    if node.kind == "PReLU":
        params = {"weight": np.asarray(params.get("slopes", [0.25]))}
    return activation_lipschitz(node.kind, **params)


def _max_constant(groups: np.ndarray) -> float:
    return math.sqrt(int(np.bincount(np.asarray(groups).ravel()).max()))


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
    from ..network import Act, Add, Affine, Concat, Input, Max, fuse_affine

    graph = fuse_affine(graph)
    L: dict[int, float] = {}
    affine_of: dict[int, tuple[int, sp.csr_array]] = {}  # node -> (root, A) with value = A @ root + c
    rows = []
    for i, node in enumerate(graph.nodes):
        how = "exact"
        if isinstance(node, Input):
            L[i] = 1.0
            continue
        ins = list(node.inputs)
        if isinstance(node, Affine):
            factor = matrix_norm(node.M)
            L[i] = factor * math.sqrt(sum(L[j] ** 2 for j in ins))
            if len(ins) == 1:
                root, A = affine_of.get(ins[0], (ins[0], None))
                product = node.M if A is None else node.M @ A
                if product.nnz <= _MAX_PRODUCT_NNZ:
                    affine_of[i] = (root, sp.csr_array(product))
        elif isinstance(node, Act):
            factor, how = _act_constant(node), "activation"
            L[i] = factor * L[ins[0]]
        elif isinstance(node, Max):
            factor, how = _max_constant(node.groups), "max pooling: sqrt(windows per input)"
            L[i] = factor * L[ins[0]]
        elif isinstance(node, Concat):
            factor, how = float("nan"), "concatenation: sqrt(sum of squares)"
            L[i] = math.sqrt(sum(L[j] ** 2 for j in ins))
        elif isinstance(node, Add):
            factor, L[i], how = _add_bound(ins, L, affine_of, graph, i)
        else:  # pragma: no cover - the IR has no other node types
            raise ValueError(f"node {node.name!r} of type {node.op} has no Lipschitz rule")
        rows.append(LayerRow(node.name or f"node {i}", node.op, tuple(node.shape), factor, L[i], how))
    return LipschitzReport(bound=float(L[graph.output]), layers=rows)


def _add_bound(ins, L, affine_of, graph, i):
    """(factor, bound, how) of a sum; exact ``||A + B||`` where both addends are affine in one root."""
    if len(ins) == 2:
        (ra, A), (rb, B) = (affine_of.get(j, (j, None)) for j in ins)
        if ra == rb:
            n = graph.nodes[ra].size
            eye = sp.identity(n, format="csr")
            total = (eye if A is None else A) + (eye if B is None else B)
            factor = matrix_norm(total)
            affine_of[i] = (ra, sp.csr_array(total))
            return factor, factor * L[ra], "affine branches: exact ||A + B||"
    return float("nan"), sum(L[j] for j in ins), "nonlinear branch: sum of the bounds"
