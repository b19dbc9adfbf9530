"""Whole networks: torch modules and ONNX files as exactly equivalent fully connected networks.

Pipeline: a front end reads the model into the IR (:mod:`.ir`, a DAG of ``Affine``,
``Act``, ``Add``, ``Concat`` and ``Max`` nodes over flat vectors); passes
(:mod:`.passes`) rewrite max pooling as ReLU trees and lower the DAG to one chain of
Linear layers and activations; writers turn the chain into a torch module
(:func:`to_mlp`), an ONNX Gemm+Relu chain, a ``pt`` state dict, an NNet file or an
``npz`` of sparse layers (:mod:`.export`).

Stable entry point for other tools (spectral analysis, explorer):

``load(model_or_onnx_path, input_shape=None) -> Graph``
    The DAG *before* lowering: Affine nodes hold the exact sparse matrix of each
    linear layer (``node.M`` csr_array, ``node.b``), activations and pooling keep
    their identity (``Act.kind``, ``Max.groups``), conv, pooling and padding nodes
    keep their geometry and weight (``node.conv``, a ``ConvRecord``), every node has
    ``name`` (the layer or ONNX node it came from), ``origin`` (its ``torch.nn`` class,
    function or ONNX op type) and ``shape`` (its tensor shape; ONNX values keep the
    file's batch axis as 1). ``graph.evaluate(x)`` runs it on a ``(N, input size)`` batch.

This is the only code that reads a torch module or an ONNX file: receptive fields,
Lipschitz bounds, network neurons, the explorer's model stacks, ``to_mlp`` and
``convert`` all read models through :func:`load`.
"""

from __future__ import annotations

import os

from .ir import Act, Add, Affine, Concat, ConvRecord, Graph, Input, Max, Node
from .passes import Chain, Layer, expand_max, fuse_affine, lower, relu_only

__all__ = ["load", "Graph", "Node", "Input", "Affine", "Act", "Add", "Concat", "Max", "ConvRecord", "Chain", "Layer",
           "expand_max", "relu_only", "fuse_affine", "lower", "to_mlp", "MaskedActivation"]


def load(model_or_path, input_shape=None, *, eval_mode: bool = False, **onnx_options) -> Graph:
    """A torch module or an ONNX file (path or ``onnx.ModelProto``) as an IR :class:`Graph`.

    Parameters
    ----------
    model_or_path : torch.nn.Module, str, os.PathLike or onnx.ModelProto
    input_shape : tuple of int, optional
        Required for torch modules: one input without the batch axis. ONNX files
        declare their own (a given shape must fit the file's, batch axis left out, and
        fills its dynamic sizes).
    eval_mode : bool
        Read a torch module as in eval mode (a copy; the module keeps its modes).
        Without it a module in training mode is refused where that matters
        (batch norm, dropout).
    **onnx_options
        For ONNX files, :func:`~convmatrix.network.onnx_frontend.from_onnx`'s keywords
        (``batch_axis``, ``drop_final``, ``validate``).

    Example
    -------
    >>> import torch, convmatrix.network as net
    >>> g = net.load(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).eval(), (3,))
    >>> [(node.op, node.shape) for node in g.nodes]
    [('Input', (3,)), ('Affine', (2,)), ('Act', (2,))]
    """
    if isinstance(model_or_path, (str, bytes, os.PathLike)) or type(model_or_path).__name__ == "ModelProto":
        from .onnx_frontend import from_onnx

        return from_onnx(model_or_path, input_shape=input_shape, **onnx_options)
    if input_shape is None:
        raise ValueError("input_shape is required for a torch module: one input without the batch axis, "
                         "e.g. (3, 32, 32)")
    from .torch_frontend import from_torch

    return from_torch(model_or_path, input_shape, eval_mode=eval_mode)


def __getattr__(name):
    if name in ("to_mlp", "MaskedActivation", "ConversionError", "chain_to_torch"):
        from . import mlp

        return getattr(mlp, name)
    raise AttributeError(f"module 'convmatrix.network' has no attribute {name!r}")
