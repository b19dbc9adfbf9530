"""The tiny intermediate form of whole networks: a DAG of nodes over flat vectors.

Every value in a :class:`Graph` is a flat float vector: the tensor of one sample
(without the batch axis) flattened in C order, as the rest of convmatrix flattens
tensors. Its tensor ``shape`` is kept for reporting and for the front ends. A node
reads the values of earlier nodes (``inputs``, their ids) and produces one value of
``size`` neurons:

========== ================================================================
node       value
========== ================================================================
Input      the network input (always node 0)
Affine     ``M @ concat(inputs) + b``; ``M`` a ``scipy.sparse.csr_array``
Act        an element-wise activation of its one input (``kind``, ``params``)
Add        the sum of its inputs (all of the same size)
Concat     the concatenation of its inputs, in order
Max        ``y[i] = max(x[groups[i, j]] for j)``: max pooling over index groups
========== ================================================================

Convolutions, pooling and padding layers keep what they were besides their matrix:
``node.conv``, a :class:`ConvRecord` with the layer's :class:`~convmatrix.ConvGeometry`
(pooling: a grouped convolution with a ones kernel; a padding layer: a 1x1 one
with that padding) and its weight, so spectral fast paths and receptive-field
arithmetic still see a convolution. ``node.origin`` names the operation the node
came from (the ``torch.nn`` class, the function, or the ONNX op type).

``Act.kind`` is the name of the ``torch.nn`` module class (``"ReLU"``,
``"LeakyReLU"``, ``"Sigmoid"``, ...) and ``params`` its constructor keywords
(``{"negative_slope": 0.1}``); ``"PReLU"`` keeps one slope per neuron in
``params["slopes"]``.

Every node carries ``name``, the layer or ONNX node it came from, so reports and
errors can point at the original model. Nodes are stored in topological order and
a node's id is its position in ``graph.nodes``.

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> g = Graph((2,))
>>> h = g.affine([g.input], sp.csr_array(np.array([[1., -1.], [2., 0.]])), np.zeros(2), name="fc")
>>> r = g.act(h, "ReLU", name="relu")
>>> g.output = g.add([r, g.input], name="skip")
>>> g.evaluate(np.array([[3., 1.]]))
array([[5., 7.]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.geometry import ConvGeometry
from .activations import apply_activation

__all__ = ["Node", "Input", "Affine", "Act", "Add", "Concat", "Max", "Graph", "ConvRecord", "RELU_LIKE"]

# Activations that a ReLU network can express exactly (used by the ONNX/NNet writers).
RELU_LIKE = ("ReLU", "LeakyReLU", "PReLU")


@dataclass(frozen=True, eq=False)
class ConvRecord:
    """A conv, pooling or padding node as the convolution it is (besides its matrix).

    ``kind``: ``"conv"``, ``"avg_pool"``, ``"max_pool"`` or ``"pad"``; ``geometry``:
    its :class:`ConvGeometry` on the node's input (one sample, no batch axis);
    ``weight`` (float64, ``geometry.weight_shape``): the conv's weight, the pooling
    kernel (ones; ``1/divisor`` for average pooling) or the padding layer's 1x1 ones;
    ``bias``: one per output channel, or None.
    """

    kind: str
    geometry: ConvGeometry
    weight: np.ndarray
    bias: np.ndarray | None = None

    def matrix(self) -> sp.csr_array:
        """The convolution's matrix (refused, before allocating, when it would not fit in memory)."""
        from ..core.matrix import build_csr, check_matrix_memory

        check_matrix_memory(self.geometry, 8, "csr")
        return build_csr(self.weight, self.geometry)

    def neuron_bias(self) -> np.ndarray:
        """The bias of every output neuron (zeros without one)."""
        n = self.geometry.matrix_shape[0]
        return np.zeros(n) if self.bias is None else np.repeat(self.bias, n // len(self.bias))


@dataclass(eq=False)
class Node:
    """One node of a :class:`Graph`: ids of the nodes it reads, its value's shape and its origin."""

    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    name: str = ""
    origin: str = field(default="", kw_only=True)

    @property
    def size(self) -> int:
        """Number of neurons of this node's value."""
        return int(prod(self.shape))

    @property
    def op(self) -> str:
        return type(self).__name__


@dataclass(eq=False)
class Input(Node):
    """The network input."""


@dataclass(eq=False)
class Affine(Node):
    """``M @ concat(inputs) + b`` with ``M`` a csr_array of shape ``(size, sum of input sizes)``."""

    M: sp.csr_array = None
    b: np.ndarray = None
    conv: ConvRecord | None = field(default=None, kw_only=True)


class ConvAffine(Affine):
    """An Affine node of a convolution whose matrix ``M`` is built on first use, from ``conv``.

    Geometry questions (receptive fields, spectral norms, the explorer) never need
    the matrix, so a large network's convolutions are not built for them.
    """

    op = "Affine"

    @property
    def M(self) -> sp.csr_array:
        if self.__dict__.get("M") is None:
            self.__dict__["M"] = self.conv.matrix()
        return self.__dict__["M"]

    @M.setter
    def M(self, value) -> None:
        self.__dict__["M"] = value


@dataclass(eq=False)
class Act(Node):
    """Element-wise activation ``kind`` (a ``torch.nn`` class name) with constructor ``params``."""

    kind: str = "ReLU"
    params: dict = field(default_factory=dict)


@dataclass(eq=False)
class Add(Node):
    """Sum of the inputs (equal sizes)."""


@dataclass(eq=False)
class Concat(Node):
    """Concatenation of the inputs' flat values, in order."""


@dataclass(eq=False)
class Max(Node):
    """``y[i] = max_j x[groups[i, j]]``; ``groups`` is an int array ``(size, k)``."""

    groups: np.ndarray = None
    conv: ConvRecord | None = field(default=None, kw_only=True)


class Graph:
    """A DAG of :class:`Node` over flat vectors, input node 0, one output node.

    Build it with the helper methods (each returns the new node's id), evaluate it
    with :meth:`evaluate`. ``meta`` holds front-end facts (ONNX input/output names
    and declared shapes, the source) that writers use.
    """

    def __init__(self, input_shape: tuple[int, ...], name: str = "input"):
        self.nodes: list[Node] = [Input((), tuple(int(d) for d in input_shape), name)]
        self.output: int = 0
        self.meta: dict[str, Any] = {}

    # -- building -------------------------------------------------------------------------
    input = 0

    def append(self, node: Node) -> int:
        """Add a node (its inputs must exist already) and return its id."""
        for i in node.inputs:
            if not 0 <= i < len(self.nodes):
                raise ValueError(f"node {node.name!r} reads node {i}, which does not exist yet")
        self.nodes.append(node)
        return len(self.nodes) - 1

    def affine(self, inputs, M, b=None, *, shape=None, name: str = "", conv: ConvRecord | None = None) -> int:
        """``M @ concat(inputs) + b``; ``shape`` defaults to ``(M.shape[0],)``."""
        inputs = tuple(inputs)
        M = sp.csr_array(M)
        n_in = sum(self.nodes[i].size for i in inputs)
        if M.shape[1] != n_in:
            raise ValueError(f"node {name!r}: matrix has {M.shape[1]} columns for {n_in} input neurons")
        b = np.zeros(M.shape[0]) if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
        shape = (M.shape[0],) if shape is None else tuple(int(d) for d in shape)
        if prod(shape) != M.shape[0] or b.shape != (M.shape[0],):
            raise ValueError(f"node {name!r}: shape {shape}, matrix rows {M.shape[0]}, bias {b.shape} disagree")
        return self.append(Affine(inputs, shape, name, M, b, conv=conv))

    def conv(self, x: int, rec: ConvRecord, *, shape=None, name: str = "") -> int:
        """A convolution of node ``x`` from its record; its matrix is built when first used."""
        geom = rec.geometry
        if geom.matrix_shape[1] != self.nodes[x].size:
            raise ValueError(f"node {name!r}: the convolution reads {geom.matrix_shape[1]} input neurons, "
                             f"its input has {self.nodes[x].size}")
        shape = geom.output_shape if shape is None else tuple(int(d) for d in shape)
        return self.append(ConvAffine((x,), shape, name, None, rec.neuron_bias(), conv=rec))

    def act(self, x: int, kind: str, params: dict | None = None, *, name: str = "") -> int:
        return self.append(Act((x,), self.nodes[x].shape, name, kind, dict(params or {})))

    def add(self, inputs, *, name: str = "") -> int:
        inputs = tuple(inputs)
        sizes = {self.nodes[i].size for i in inputs}
        if len(sizes) != 1:
            raise ValueError(f"node {name!r}: Add of values of different sizes {sorted(sizes)}")
        return self.append(Add(inputs, self.nodes[inputs[0]].shape, name))

    def concat(self, inputs, *, shape=None, name: str = "") -> int:
        inputs = tuple(inputs)
        n = sum(self.nodes[i].size for i in inputs)
        return self.append(Concat(inputs, (n,) if shape is None else tuple(shape), name))

    def max(self, x: int, groups, *, shape=None, name: str = "", conv: ConvRecord | None = None) -> int:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.ndim != 2 or groups.shape[1] < 1:
            raise ValueError(f"node {name!r}: groups must be a (neurons, k) int array, got shape {groups.shape}")
        shape = (groups.shape[0],) if shape is None else tuple(shape)
        return self.append(Max((x,), shape, name, groups, conv=conv))

    def reshape(self, x: int, shape, *, name: str = "") -> int:
        """The same neurons under another tensor shape (C order is kept: an identity map)."""
        shape = tuple(int(d) for d in shape)
        if prod(shape) != self.nodes[x].size:
            raise ValueError(f"node {name!r}: cannot reshape {self.nodes[x].shape} to {shape}")
        n = self.nodes[x].size
        return self.affine([x], sp.identity(n, format="csr"), np.zeros(n), shape=shape, name=name)

    # -- reading --------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[self.output].shape

    def consumers(self) -> list[list[int]]:
        """For every node, the ids of the nodes that read it."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for j, node in enumerate(self.nodes):
            for i in node.inputs:
                out[i].append(j)
        return out

    def __repr__(self) -> str:
        lines = [f"Graph: input {self.input_shape} -> output {self.output_shape} (node {self.output})"]
        for j, node in enumerate(self.nodes):
            extra = ""
            if isinstance(node, Affine):
                extra = f" M {node.M.shape[0]}x{node.M.shape[1]} nnz={node.M.nnz}"
            elif isinstance(node, Act):
                extra = f" {node.kind}"
            elif isinstance(node, Max):
                extra = f" over {node.groups.shape[1]}"
            lines.append(f"  {j}: {node.op}{list(node.inputs)} {node.shape}{extra}  [{node.name}]")
        return "\n".join(lines)

    def evaluate(self, x: np.ndarray, node: int | None = None) -> np.ndarray:
        """Values of the output (or of node ``node``) for a batch ``x`` of shape ``(N, input size)``.

        Every node is computed exactly as defined above (float64; activations
        through the table of :mod:`.activations`), one batch at a time.
        """
        target = self.output if node is None else int(node)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.nodes[0].size:
            raise ValueError(f"x must have shape (N, {self.nodes[0].size}), got {x.shape}")
        vals: list[np.ndarray | None] = [None] * len(self.nodes)
        vals[0] = x
        last_use = {i: j for j, node in enumerate(self.nodes) for i in node.inputs}
        for j, step in enumerate(self.nodes[1 : target + 1], 1):
            vals[j] = _evaluate_node(step, [vals[i] for i in step.inputs])
            for i in step.inputs:  # free values nobody reads any more
                if last_use.get(i) == j and i != target:
                    vals[i] = None
        return vals[target]

    def label(self, j: int) -> str:
        """``'name' (origin)`` of node ``j``, as messages name it."""
        node = self.nodes[j]
        return f"{node.name!r} ({node.origin or node.op})"

    @property
    def sample_shapes(self) -> list[tuple[int, ...]]:
        """Every node's shape without a batch axis (ONNX values keep a leading 1)."""
        if not self.meta.get("batched"):
            return [n.shape for n in self.nodes]
        return [n.shape[1:] if len(n.shape) > 1 and n.shape[0] == 1 else n.shape for n in self.nodes]


def _evaluate_node(node: Node, ins: list[np.ndarray]) -> np.ndarray:
    if isinstance(node, Affine):
        z = np.concatenate(ins, axis=1) if len(ins) > 1 else ins[0]
        return np.asarray((node.M @ z.T).T) + node.b
    if isinstance(node, Add):
        return sum(ins[1:], ins[0].copy())
    if isinstance(node, Concat):
        return np.concatenate(ins, axis=1)
    if isinstance(node, Max):
        return ins[0][:, node.groups].max(axis=2)
    if isinstance(node, Act):
        return apply_activation(node.kind, node.params, ins[0])
    raise TypeError(f"cannot evaluate node of type {node.op}")


