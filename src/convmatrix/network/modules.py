"""torch convolution modules as fully connected layers.

:func:`from_module` gives the exact ``(M, b)`` of a ``torch.nn.Conv1d/2d/3d`` or
``ConvTranspose1d/2d/3d`` with all its options, and :func:`to_linear` the torch
module that computes the same layer as one linear map: a dense ``nn.Linear``, or
a :class:`SparseConvLinear` whose sparse CSR weight stays differentiable in the
original kernel. This module imports torch; ``convmatrix`` reaches it lazily.
"""

from __future__ import annotations

import numpy as np

from .._optional import require

torch = require("torch", extra="torch", feature="converting torch layers (from_module, to_linear)")
nn = torch.nn

from ..core.geometry import ConvGeometry
from ..core.matrix import (
    as_bias, as_torch_weight, check_matrix_memory, conv_geometry, conv_matrix, torch_csr,
    torch_csr_structure, torch_csr_transpose, torch_csr_values, weight_slabs,
)

__all__ = ["from_module", "to_linear", "module_conv_kwargs", "check_module", "SparseConvLinear", "csr_linear"]

_FORWARD = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def module_conv_kwargs(module: nn.Module) -> dict:
    """The :func:`convmatrix.conv_matrix` keyword arguments of a torch conv module.

    >>> module_conv_kwargs(nn.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1))
    {'stride': (2,), 'padding': (0,), 'dilation': (1,), 'groups': 1, 'padding_mode': 'zeros',
     'transposed': True, 'output_padding': (1,)}
    """
    if not isinstance(module, _FORWARD + _TRANSPOSED):
        raise TypeError(
            "module must be a torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d, "
            f"got {type(module).__module__}.{type(module).__qualname__}"
        )
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"module {type(module).__name__} has uninitialized (lazy) parameters; "
            "run one forward pass to set its shapes first"
        )
    check_module(module)
    kw = dict(
        stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
        padding_mode=module.padding_mode,
    )
    if isinstance(module, _TRANSPOSED):
        kw.update(transposed=True, output_padding=module.output_padding)
    return kw


def check_module(module: nn.Module) -> None:
    """ValueError unless the module's weight and bias agree with its channels and kernel size.

    A weight or bias replaced after construction (``conv.bias = nn.Parameter(...)``) must
    keep the shapes the module's own forward pass would accept.

    >>> c = nn.Conv2d(1, 4, 3); c.bias = nn.Parameter(torch.zeros(3))
    >>> check_module(c)
    Traceback (most recent call last):
    ...
    ValueError: module.bias must have shape (4,) (one per output channel of Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))), got (3,)
    """
    c_in, c_out, g = module.in_channels, module.out_channels, module.groups
    first, second = (c_in, c_out // g) if isinstance(module, _TRANSPOSED) else (c_out, c_in // g)
    expected = (first, second, *module.kernel_size)
    if not isinstance(module.weight, torch.Tensor) or tuple(module.weight.shape) != expected:
        got = tuple(module.weight.shape) if isinstance(module.weight, torch.Tensor) else type(module.weight).__name__
        raise ValueError(
            f"module.weight must have shape {expected} (channels {c_in} -> {c_out}, groups={g}, kernel "
            f"{tuple(module.kernel_size)}) for {module!r}, got {got}"
        )
    bias = module.bias
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c_out,)):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"module.bias must have shape ({c_out},) (one per output channel of {module!r}), got {got}")


def _in_context(module, input_shape, build, *args, **kwargs):
    """``build(*args, **kwargs)``; a ValueError/TypeError also names the module and the input shape."""
    try:
        return build(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"input_shape={input_shape!r} for {module!r}: {exc}") from None


def _matrix(module: nn.Module, input_shape, **fmt):
    kw = module_conv_kwargs(module)
    return _in_context(module, input_shape, conv_matrix, module.weight, input_shape, **kw, **fmt)


def _geometry(module: nn.Module, input_shape) -> ConvGeometry:
    kw = module_conv_kwargs(module)
    return _in_context(module, input_shape, conv_geometry, tuple(module.weight.shape), input_shape, **kw)


def from_module(module: nn.Module, input_shape) -> tuple:
    """The matrix and bias of a torch conv module: ``flatten(module(x)) == M @ flatten(x) + b``.

    Parameters
    ----------
    module : torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d
        Any options: stride, padding (int, tuple, ``"same"``, ``"valid"``),
        dilation, groups, padding_mode, output_padding, with or without bias.
    input_shape : tuple of int
        ``(C_in, *spatial)``, without the batch axis.

    Returns
    -------
    M : scipy.sparse.csr_array, shape ``(prod(output_shape), prod(input_shape))``
    b : numpy.ndarray, shape ``(M.shape[0],)``
        The bias of every output neuron (its channel's bias), zeros without bias.

    Example
    -------
    >>> import torch
    >>> conv = torch.nn.Conv2d(1, 2, 2).double()
    >>> M, b = from_module(conv, (1, 3, 3))
    >>> M.shape, b.shape
    ((8, 9), (8,))
    >>> x = torch.randn(1, 3, 3, dtype=torch.float64)
    >>> bool(np.allclose(M @ x.numpy().ravel() + b, conv(x).detach().numpy().ravel()))
    True
    """
    M = _matrix(module, input_shape)
    if module.bias is None:
        return M, np.zeros(M.shape[0], dtype=M.dtype)
    bias = as_bias(module.bias, module.out_channels, "module.bias")
    return M, np.repeat(bias, M.shape[0] // len(bias))


class _CSRLinear(torch.autograd.Function):
    """``y = x @ M.T`` for a CSR matrix ``M`` of fixed structure and differentiable values.

    torch's own backward of a sparse CSR matmul materialises the gradient of
    ``M`` as a dense ``rows x cols`` matrix; here it stays one number per
    stored entry, so backward needs O(nnz + batch * (rows + cols)) memory.
    """

    @staticmethod
    def forward(ctx, x, values, crow, col, shape, transpose):
        ctx.save_for_backward(x, values, crow, col)
        ctx.shape, ctx.transpose = shape, transpose
        return (torch_csr(crow, col, values, shape) @ x.T).T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, values, crow, col = ctx.saved_tensors
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            # dL/dx = grad_y @ conj(M): M.T as its own CSR, a sparse matmul like the forward one.
            crow_t, col_t, perm = ctx.transpose
            m_t = torch_csr(crow_t, col_t, values.index_select(0, perm).conj(), ctx.shape[::-1])
            grad_x = (m_t @ grad_y.T).T
        if ctx.needs_input_grad[1]:
            # dL/dvalues[e] = (grad_y.T @ conj(x))[row_e, col_e]: torch's sampled matmul computes
            # just these nnz dot products over the batch, never the dense rows x cols product.
            pattern = torch_csr(crow, col, values, ctx.shape)
            grad_values = torch.sparse.sampled_addmm(pattern, grad_y.T, x.conj(), beta=0.0).values()
        return grad_x, grad_values, None, None, None, None


def csr_linear(x, values, crow, col, shape, transpose=None):
    """``x @ M.T`` for the CSR matrix ``M = (crow, col, values)`` of ``shape``, differentiable in ``values``.

    ``x`` is ``(batch, shape[1])``. ``transpose`` is :func:`convmatrix.core.matrix.torch_csr_transpose`
    of the structure, needed only for the gradient with respect to ``x``. The
    backward never forms a dense ``shape`` matrix (as torch's sparse matmul does).

    Example
    -------
    >>> from convmatrix.core.matrix import torch_csr_transpose
    >>> crow, col = torch.tensor([0, 2, 3]), torch.tensor([0, 2, 1])   # M = [[a, 0, b], [0, c, 0]]
    >>> values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> x = torch.tensor([[1.0, 10.0, 100.0]], requires_grad=True)
    >>> y = csr_linear(x, values, crow, col, (2, 3), torch_csr_transpose(crow, col, 3))
    >>> y.detach().tolist()
    [[201.0, 30.0]]
    >>> y.sum().backward()
    >>> values.grad.tolist(), x.grad.tolist()
    ([1.0, 100.0, 10.0], [[1.0, 3.0, 2.0]])
    """
    if transpose is None and x.requires_grad and torch.is_grad_enabled():
        raise ValueError("csr_linear: x requires grad, so transpose (torch_csr_transpose) must be given")
    return _CSRLinear.apply(x, values, crow, col, tuple(shape), transpose)


class SparseConvLinear(nn.Module):
    """A conv layer as a linear map with a torch sparse CSR weight.

    Holds the kernel (and channel bias) as parameters. The matrix structure
    (row pointers, columns, and which kernel taps fill every stored entry) is
    built once, at construction, as non-persistent buffers; each call only
    gathers the values from the current kernel (:meth:`matrix`, a gather that
    autograd follows), so training it trains the kernel and an in-place change
    of the kernel shows at the next call. The product goes through
    :func:`csr_linear`, whose backward keeps one gradient number per stored
    entry (torch's sparse matmul would form a dense ``out x in`` gradient), so
    large layers train in O(nnz) memory. Input ``(*, in_features)``, output
    ``(*, out_features)``, as ``nn.Linear``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, input_shape, conv_kwargs: dict):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.input_shape = tuple(int(n) for n in input_shape)
        self.conv_kwargs = dict(conv_kwargs)
        self.geometry = conv_geometry(tuple(self.weight.shape), self.input_shape, **self.conv_kwargs)
        check_matrix_memory(self.geometry, as_torch_weight(self.weight).element_size(), "torch")
        crow, col, taps, segments = torch_csr_structure(self.geometry)
        device = self.weight.device
        # Non-persistent: derived from the geometry, so not in state_dict; they follow .to(device).
        self.register_buffer("crow_indices", crow.to(device), persistent=False)
        self.register_buffer("col_indices", col.to(device), persistent=False)
        self.register_buffer("taps", taps.to(device), persistent=False)
        self.register_buffer("segments", None if segments is None else segments.to(device), persistent=False)
        # The structure of M.T, for gradients w.r.t. the input: built at the first call that needs it.
        for name in ("crow_t", "col_t", "perm_t"):
            self.register_buffer(name, None, persistent=False)
        self.out_features, self.in_features = self.geometry.matrix_shape

    def values(self) -> torch.Tensor:
        """The stored values of the current CSR weight, a gather from :attr:`weight` that autograd follows."""
        slabs = weight_slabs(as_torch_weight(self.weight), self.geometry)
        return torch_csr_values(slabs, self.taps, self.segments, self.col_indices.numel())

    def matrix(self) -> torch.Tensor:
        """The current sparse CSR weight, differentiable in :attr:`weight`."""
        return torch_csr(self.crow_indices, self.col_indices, self.values(), self.geometry.matrix_shape)

    def _transpose(self, x: torch.Tensor):
        """The structure of ``M.T`` when the input's gradient will be needed, else None."""
        if not (x.requires_grad and torch.is_grad_enabled()):
            return None
        if self.crow_t is None:
            self.crow_t, self.col_t, self.perm_t = torch_csr_transpose(
                self.crow_indices, self.col_indices, self.in_features
            )
        return self.crow_t, self.col_t, self.perm_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        # csr_linear, not matrix() @ x: torch's backward of that would form a dense rows x cols gradient.
        y = csr_linear(x.reshape(-1, self.in_features), self.values(), self.crow_indices, self.col_indices,
                       self.geometry.matrix_shape, self._transpose(x))
        if self.bias is not None:
            y = y + self.bias.repeat_interleave(self.out_features // len(self.bias))
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"kernel={tuple(self.weight.shape)}, bias={self.bias is not None}"


def to_linear(module: nn.Module, input_shape, *, sparse: bool = False, keep_shape: bool = False) -> nn.Module:
    """A torch module computing the conv ``module`` as one linear map.

    Parameters
    ----------
    module : torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d
    input_shape : tuple of int
        ``(C_in, *spatial)``, without the batch axis.
    sparse : bool
        ``False`` (default): a dense ``nn.Linear`` with weight ``M`` and bias ``b``
        of :func:`from_module`. ``True``: a :class:`SparseConvLinear` (sparse CSR
        weight, for layers whose dense matrix is too large; gradients flow to its
        kernel).
    keep_shape : bool
        ``True``: ``nn.Sequential(Flatten, linear, Unflatten)``, a drop-in
        replacement taking and returning the module's own shapes (with or
        without a batch axis). ``False``: the linear map on flattened inputs.

    Example
    -------
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    >>> fc = to_linear(conv, (3, 8, 8))
    >>> fc
    Linear(in_features=192, out_features=512, bias=True)
    >>> x = torch.randn(5, 3, 8, 8)
    >>> torch.allclose(fc(x.flatten(1)), conv(x).flatten(1), atol=1e-5)
    True
    """
    for name, value in (("sparse", sparse), ("keep_shape", keep_shape)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    kw = module_conv_kwargs(module)
    out_shape = _geometry(module, input_shape).output_shape
    w, b = module.weight, module.bias
    if sparse:
        linear = SparseConvLinear(w, b, input_shape, kw)
    else:
        M = _matrix(module, input_shape, format="dense")
        # skip_init: no random initialisation of a weight that is overwritten at once.
        linear = torch.nn.utils.skip_init(
            nn.Linear, M.shape[1], M.shape[0], bias=b is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(M))
            if b is not None:
                linear.bias.copy_(b.repeat_interleave(M.shape[0] // len(b)))
    if not keep_shape:
        return linear
    return nn.Sequential(nn.Flatten(-len(input_shape)), linear, nn.Unflatten(-1, out_shape))
