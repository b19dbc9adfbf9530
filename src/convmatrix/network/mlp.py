"""``to_mlp``: a torch CNN as the exactly equivalent stack of ``nn.Linear`` and activations.

The module built here holds only ``nn.Flatten``, ``nn.Linear``, element-wise
activations of ``torch.nn``, :class:`MaskedActivation` (only where a skip path
crosses a non-ReLU activation) and a final ``nn.Unflatten``.
"""

from __future__ import annotations

import copy

import numpy as np

from .._optional import require

torch = require("torch", extra="torch", feature="to_mlp")

from ..core.geometry import as_int, check_memory
from .activations import activation_module
from .check import ConversionError, check_close, compare  # noqa: F401 (re-exported)
from .passes import Chain, expand_max, lower
from .torch_frontend import check_input_shape, from_torch

__all__ = ["MaskedActivation", "to_mlp", "chain_to_torch", "ConversionError", "compare"]


class MaskedActivation(torch.nn.Module):
    """An element-wise activation on some neurons of the last axis, identity on the rest.

    ``to_mlp`` uses it only where a skip path crosses a non-ReLU activation: the
    carried values pass unchanged beside the activated neurons.

    Parameters
    ----------
    activation : torch.nn.Module
        The element-wise activation, e.g. ``torch.nn.Sigmoid()``.
    mask : bool array of the layer's width, or an array of neuron indices
        The neurons it applies to.

    Example
    -------
    >>> import torch, convmatrix
    >>> m = convmatrix.MaskedActivation(torch.nn.Sigmoid(), [True, False])
    >>> m(torch.tensor([[0.0, -3.0]]))
    tensor([[ 0.5000, -3.0000]])
    """

    def __init__(self, activation, mask):
        super().__init__()
        if not isinstance(activation, torch.nn.Module):
            raise TypeError(f"activation must be a torch.nn.Module, got {type(activation).__name__}")
        m = np.asarray(mask)
        if m.dtype == bool:
            m = np.flatnonzero(m)
        elif m.size and (m.dtype.kind not in "iu" or m.min() < 0):
            raise ValueError(f"mask must be booleans or non-negative neuron indices, got {m.reshape(-1)[:5]!r}")
        self.activation = activation
        self.register_buffer("index", torch.as_tensor(m.astype(np.int64).reshape(-1)))

    def forward(self, x):
        y = x.clone()
        y[..., self.index] = self.activation(x[..., self.index])
        return y

    def extra_repr(self) -> str:
        return f"on {self.index.numel()} neurons"


def chain_to_torch(chain: Chain, dtype=None, max_bytes: int | None = None):
    """The chain as ``nn.Sequential(Flatten, Linear, act, ..., Linear[, Unflatten])``."""
    dtype = dtype or torch.float32
    itemsize = torch.empty((), dtype=dtype).element_size()
    dense = sum(layer.M.shape[0] * (layer.M.shape[1] + 1) for layer in chain.layers) * itemsize
    check_memory(dense, max_bytes, f"the MLP's dense Linear weights ({len(chain.layers)} layers)",
                 "convert a smaller input shape, or use convmatrix.network.load(...) and keep the sparse layers")
    mods = [torch.nn.Flatten()]
    for layer in chain.layers:
        lin = torch.nn.Linear(layer.M.shape[1], layer.M.shape[0], dtype=dtype)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32  # no float64 copy of big layers
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.M.astype(np_dtype).toarray()))
            lin.bias.copy_(torch.from_numpy(layer.b.astype(np_dtype)))
        mods.append(lin)
        if layer.kind:
            params = dict(layer.params or {})
            if layer.kind == "PReLU" and layer.index is not None:
                params["slopes"] = np.asarray(params["slopes"])
            act = activation_module(layer.kind, params).to(dtype)
            mods.append(act if layer.index is None else MaskedActivation(act, layer.index))
    if len(chain.output_shape) != 1:
        mods.append(torch.nn.Unflatten(1, chain.output_shape))
    return torch.nn.Sequential(*mods)


def _activation_widths(model, input_shape) -> list[int]:
    """Neurons per sample at the output of each element-wise activation module, in execution order,
    then of the output: one forward pass on zeros, through hooks. [] when that cannot be done without
    side effects (a module in training mode) or the model does not run (the front end then says why,
    naming the layer)."""
    if any(m.training for m in model.modules()):
        return []
    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    check_memory(int(np.prod(input_shape)) * torch.empty((), dtype=dtype).element_size(), None,
                 f"an input of shape {tuple(input_shape)}", "convert a smaller input shape")
    widths, hooks = [], []
    for m in model.modules():
        if type(m).__module__ == "torch.nn.modules.activation" and not list(m.children()):
            hooks.append(m.register_forward_hook(lambda _m, _i, out: widths.append(out[0].numel())))
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, dtype=dtype))
    except Exception:  # noqa: BLE001 - reported by the front end, with the layer's name
        return []
    finally:
        for h in hooks:
            h.remove()
    return widths + [out[0].numel() if isinstance(out, torch.Tensor) else 0]


def dense_bytes_lower_bound(model, input_shape, itemsize: int = 4) -> int:
    """Bytes the dense Linear layers of ``to_mlp(model, input_shape)`` need at least, before building any.

    A sequential model's MLP has a Linear from every activation's neurons to the
    next one's (max pooling and skip paths only add neurons); of any other model
    only the last Linear, into the output, is counted.
    """
    widths = _activation_widths(model, input_shape)
    if not widths:
        return 0
    flat = isinstance(model, torch.nn.Sequential) and not any(
        isinstance(m, torch.nn.Sequential) or len(list(m.children())) for m in model.children())
    if flat:
        widths = [int(np.prod(input_shape))] + widths
        return sum(b * (a + 1) for a, b in zip(widths, widths[1:])) * itemsize
    return widths[-1] * ((widths[-2] if len(widths) > 1 else int(np.prod(input_shape))) + 1) * itemsize


def to_mlp(model, input_shape, *, check: int = 8, max_bytes: int | None = None, seed: int = 0):
    """The model as an exactly equivalent MLP: ``mlp(x) == model(x)`` for every batch ``x``.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; ``nn.Sequential`` or anything ``torch.fx`` can trace, built from
        the layers listed in :mod:`convmatrix.network.torch_frontend`.
    input_shape : tuple of int
        One input without the batch axis, e.g. ``(3, 32, 32)``.
    check : int
        Random inputs on which the result is compared with the model before it is
        returned: the sparse chain in float64 (to 1e-8 of the output scale) and the
        module built from it in the model's dtype; a disagreement raises
        :class:`ConversionError`.
    max_bytes : int, optional
        Refuse an MLP whose dense weights would exceed this (default: free memory).

    Returns
    -------
    torch.nn.Sequential
        ``Flatten, Linear, act, ..., Linear[, Unflatten]`` in the model's dtype; its
        ``conversion`` attribute holds the check's figures.

    Example
    -------
    >>> import torch, convmatrix
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    ...                           torch.nn.Flatten(), torch.nn.Linear(2, 3)).eval()
    >>> mlp = convmatrix.to_mlp(net, (1, 4, 4))
    >>> [type(m).__name__ for m in mlp]
    ['Flatten', 'Linear', 'ReLU', 'Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
    >>> x = torch.randn(5, 1, 4, 4)
    >>> bool(torch.allclose(mlp(x), net(x), atol=1e-5))
    True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = check_input_shape(input_shape)
    check = as_int("check", check, minimum=0, maximum=10**6)
    params = list(model.parameters()) + list(model.buffers())
    dtype = next((p.dtype for p in params if p.dtype.is_floating_point), torch.get_default_dtype())
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_memory(dense_bytes_lower_bound(model, input_shape, itemsize), max_bytes,
                 "the MLP's dense Linear weights", "convert a smaller input shape, or use "
                 "convmatrix.network.load(...) and keep the sparse layers")
    graph = from_torch(model, input_shape, seed=seed)
    chain = lower(expand_max(graph))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(max(int(check), 1), *input_shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        ref = copy.deepcopy(model).cpu().double()(x).numpy()
    # The chain itself, sparse and in float64: any difference beyond rounding is a bug.
    got = chain.evaluate(x.reshape(len(x), -1).numpy()).reshape(ref.shape)
    max_abs, max_rel = check_close(ref, got, f"to_mlp({type(model).__name__})", 1e-8)
    mlp = chain_to_torch(chain, dtype, max_bytes=max_bytes)
    with torch.no_grad():  # and the torch module built from it, at its own precision
        out = mlp(x.to(dtype)).double().numpy()
    check_close(ref, out.reshape(ref.shape), f"to_mlp({type(model).__name__}) in {dtype}",
                1e-8 if dtype == torch.float64 else 1e-3)
    mlp.conversion = {"max_abs": max_abs, "max_rel": max_rel, "inputs": int(check), "layers": chain.table()}
    return mlp
