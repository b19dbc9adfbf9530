"""Conv geometry: argument normalisation, validation and shape arithmetic.

Everything downstream of :class:`ConvGeometry` sees tuples of ints of length
``ndim`` and padding as ``(low, high)`` pairs: bare ints, ``"same"`` and
``"valid"`` are resolved here, once, with PyTorch's rules and error messages
that name the argument, the rule and the offending value.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from math import prod
from typing import Sequence, Union

import numpy as np

__all__ = [
    "ConvGeometry",
    "PADDING_MODES",
    "conv_output_size",
    "conv_transpose_output_size",
    "format_bytes",
    "parse_bytes",
    "check_memory",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

IntOrTuple = Union[int, Sequence[int]]


def conv_output_size(n: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """Output length of a forward convolution along one axis.

    ``floor((n + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1``
    """
    return (n + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def conv_transpose_output_size(
    n: int, k: int, stride: int, dilation: int, pad: int, output_padding: int
) -> int:
    """Output length of a transposed convolution along one axis.

    ``(n - 1)*stride - 2*pad + dilation*(k-1) + output_padding + 1``
    """
    return (n - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1


def format_bytes(n: float) -> str:
    """``1234567`` -> ``'1.23 MB'`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_bytes(value: int | float | str, name: str = "size") -> int:
    """A byte count from an int or a string such as ``"512MB"``, ``"1.5 GB"`` or ``"64KiB"``.

    Units as :func:`format_bytes` writes them (decimal: kB, MB, GB, TB), their
    binary forms (KiB, MiB, GiB, TiB) and plain ``B``; case does not matter.

    >>> parse_bytes("512MB"), parse_bytes("1GiB"), parse_bytes(4096), parse_bytes("1.5 kB")
    (512000000, 1073741824, 4096, 1500)
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number of bytes or a string like '512MB', got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):]
        try:
            amount = float(number)
        except ValueError:
            amount = None
        if amount is None or unit not in _UNITS:
            raise ValueError(
                f"{name} must be a number of bytes or a size like '512MB', '1GB' or '64KiB', got {value!r}"
            )
        value = amount * _UNITS[unit]
    elif not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of bytes or a string like '512MB', got {value!r}")
    if not np.isfinite(value) or value < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return int(value)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**63


def check_memory(needed: int, max_bytes: int | None, what: str, alternatives: str) -> None:
    """Refuse (ValueError) a build of ``needed`` bytes above ``max_bytes`` or the free memory."""
    if max_bytes is None:
        limit, source = available_memory(), "the available memory"
    else:
        limit, source = _as_int("max_bytes", max_bytes, minimum=0), f"max_bytes={max_bytes}"
    if needed > limit:
        raise ValueError(
            f"{what} would need {format_bytes(needed)}, more than {source} "
            f"({format_bytes(limit)}); {alternatives}"
        )


def _as_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _ntuple(name: str, value, nd: int, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``nd`` ints -> a checked tuple of ``nd`` ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Integral, Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an int or a sequence of {nd} ints, got {value!r}")
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        values = (value,) * nd
    elif isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a sequence of {nd} ints, got {value!r}")
    else:
        values = tuple(value)
        if len(values) == 1 and nd > 1:
            values = values * nd
        if len(values) != nd:
            raise ValueError(
                f"{name} must be an int or a sequence of {nd} ints (one per spatial dimension), "
                f"got {tuple(value)!r}"
            )
    return tuple(_as_int(name, v, minimum) for v in values)


def _shape(name: str, value) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    return tuple(_as_int(name, v) for v in value)


@dataclass(frozen=True)
class ConvGeometry:
    """The full, validated geometry of one convolution layer (no weight values).

    The matrix of the layer has one row per output neuron and one column per
    input neuron, both in C order of ``(C, *spatial)``.

    Attributes
    ----------
    in_channels, out_channels, groups : int
        Channels of the layer's input and output (as the layer maps them).
    kernel_size, input_size, output_size : tuple of int
        Spatial sizes, one per dimension.
    stride, dilation, output_padding : tuple of int
    padding : tuple of (int, int)
        ``(low, high)`` padding per dimension (PyTorch's ``'same'`` puts the odd
        pad on the high side).
    padding_mode : str
    transposed : bool
        ``True`` for ``conv_transpose``: then the weight layout is
        ``(in_channels, out_channels/groups, *k)``.
    """

    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    # ----------------------------------------------------------------- building
    @classmethod
    def from_args(
        cls,
        weight_shape: Sequence[int],
        input_shape: Sequence[int],
        *,
        stride: IntOrTuple = 1,
        padding: IntOrTuple | str = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        transposed: bool = False,
        output_padding: IntOrTuple = 0,
    ) -> "ConvGeometry":
        """Validate PyTorch-style conv arguments and return the geometry.

        >>> g = ConvGeometry.from_args((2, 1, 2, 2), (1, 3, 3))
        >>> g.output_shape, g.matrix_shape
        ((2, 2, 2), (8, 9))
        """
        weight_shape = _shape("weight.shape", weight_shape)
        if len(weight_shape) not in (3, 4, 5):
            raise ValueError(
                "weight must have 3, 4 or 5 dimensions (out_channels, in_channels/groups, *kernel) "
                f"for a 1-D, 2-D or 3-D convolution, got shape {weight_shape}"
            )
        if min(weight_shape) < 1:
            raise ValueError(f"weight must have no empty dimension, got shape {weight_shape}")
        nd = len(weight_shape) - 2
        input_shape = _shape("input_shape", input_shape)
        if len(input_shape) != nd + 1:
            raise ValueError(
                f"input_shape must be (channels, *spatial) with {nd} spatial dimension(s) to match "
                f"the {nd}-D weight of shape {weight_shape}, got {input_shape}"
            )
        if min(input_shape) < 1:
            raise ValueError(f"input_shape must have positive sizes, got {input_shape}")
        groups = _as_int("groups", groups, minimum=1)
        if not isinstance(transposed, (bool, np.bool_)):
            raise TypeError(f"transposed must be a bool, got {transposed!r}")
        if not isinstance(padding_mode, str):
            raise TypeError(f"padding_mode must be a string, got {padding_mode!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        stride = _ntuple("stride", stride, nd, 1)
        dilation = _ntuple("dilation", dilation, nd, 1)
        output_padding = _ntuple("output_padding", output_padding, nd, 0)
        kernel = weight_shape[2:]
        n_in, spatial = input_shape[0], input_shape[1:]

        if transposed:
            in_ch, out_ch = weight_shape[0], weight_shape[1] * groups
            if weight_shape[0] % groups:
                raise ValueError(
                    f"groups={groups} must divide the weight's first dimension (in_channels of a "
                    f"transposed convolution), got weight shape {weight_shape}"
                )
        else:
            in_ch, out_ch = weight_shape[1] * groups, weight_shape[0]
            if weight_shape[0] % groups:
                raise ValueError(
                    f"groups={groups} must divide out_channels (the weight's first dimension), "
                    f"got weight shape {weight_shape}"
                )
        if n_in != in_ch:
            rule = (
                "weight.shape[0]" if transposed else f"weight.shape[1]*groups = {weight_shape[1]}*{groups}"
            )
            raise ValueError(
                f"input_shape has {n_in} channel(s) but the weight {weight_shape} with groups={groups} "
                f"expects {in_ch} ({rule})"
            )
        pads = cls._resolve_padding(padding, nd, kernel, stride, dilation, transposed, padding_mode)
        if not transposed and any(output_padding):
            raise ValueError(
                f"output_padding is only for transposed convolutions, got {output_padding} with transposed=False"
            )
        if transposed:
            for op, s, d in zip(output_padding, stride, dilation):
                if not (op < s or op < d):
                    raise ValueError(
                        f"output_padding must be smaller than either stride or dilation, got "
                        f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
                    )
        geom = cls(
            in_channels=in_ch,
            out_channels=out_ch,
            groups=groups,
            kernel_size=kernel,
            input_size=spatial,
            stride=stride,
            dilation=dilation,
            padding=pads,
            padding_mode=padding_mode,
            transposed=bool(transposed),
            output_padding=output_padding,
        )
        geom._check_sizes()
        return geom

    @staticmethod
    def _resolve_padding(padding, nd, kernel, stride, dilation, transposed, mode):
        if isinstance(padding, str):
            if transposed:
                raise ValueError(
                    f"padding={padding!r} is not supported for transposed convolutions (as in torch); "
                    "give an int or one int per dimension"
                )
            if padding == "valid":
                return ((0, 0),) * nd
            if padding == "same":
                if any(s != 1 for s in stride):
                    raise ValueError(
                        f"padding='same' is not supported for strided convolutions, got stride={stride}"
                    )
                pads = []
                for k, d in zip(kernel, dilation):
                    total = d * (k - 1)
                    pads.append((total // 2, total - total // 2))
                return tuple(pads)
            raise ValueError(f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
        if transposed and mode != "zeros":
            raise ValueError(
                f"transposed convolutions support only padding_mode='zeros' (as in torch), got {mode!r}"
            )
        p = _ntuple("padding", padding, nd, 0)
        return tuple((v, v) for v in p)

    def _check_sizes(self) -> None:
        for ax, (n, k, d, (lo, hi)) in enumerate(
            zip(self.input_size, self.kernel_size, self.dilation, self.padding)
        ):
            if self.padding_mode == "reflect" and (lo >= n or hi >= n):
                raise ValueError(
                    f"reflect padding must be smaller than the input: padding ({lo}, {hi}) on spatial "
                    f"dimension {ax} of size {n}"
                )
            if self.padding_mode == "circular" and (lo > n or hi > n):
                raise ValueError(
                    f"circular padding must be at most the input size: padding ({lo}, {hi}) on spatial "
                    f"dimension {ax} of size {n}"
                )
            if not self.transposed and n + lo + hi < d * (k - 1) + 1:
                raise ValueError(
                    f"kernel larger than the padded input on spatial dimension {ax}: kernel span "
                    f"dilation*(k-1)+1 = {d * (k - 1) + 1} > input {n} + padding {lo + hi}"
                )
        if self.transposed and min(self.output_size) < 1:
            raise ValueError(
                f"transposed convolution output would be empty: output size {self.output_size} for "
                f"input {self.input_size}, padding {[p[0] for p in self.padding]}"
            )

    # --------------------------------------------------------------- properties
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (1, 2 or 3)."""
        return len(self.kernel_size)

    @property
    def output_size(self) -> tuple[int, ...]:
        """Spatial size of the output (the formulas of torch.nn.ConvNd / ConvTransposeNd)."""
        if self.transposed:
            return tuple(
                conv_transpose_output_size(n, k, s, d, lo, op)
                for n, k, s, d, (lo, _), op in zip(
                    self.input_size, self.kernel_size, self.stride, self.dilation, self.padding,
                    self.output_padding,
                )
            )
        return tuple(
            conv_output_size(n, k, s, d, lo, hi)
            for n, k, s, d, (lo, hi) in zip(
                self.input_size, self.kernel_size, self.stride, self.dilation, self.padding
            )
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, *self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.out_channels, *self.output_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(prod(output_shape), prod(input_shape))``."""
        return (prod(self.output_shape), prod(self.input_shape))

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def kernel_numel(self) -> int:
        return prod(self.kernel_size)

    def conv_kwargs(self) -> dict:
        """Keyword arguments that rebuild this geometry with ``from_args`` (explicit padding)."""
        # Only padding='same' makes (low, high) differ, so that is the keyword form then.
        symmetric = all(lo == hi for lo, hi in self.padding)
        kw = dict(
            stride=self.stride,
            padding=tuple(lo for lo, _ in self.padding) if symmetric else "same",
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
        )
        if self.transposed:
            kw.update(transposed=True, output_padding=self.output_padding)
        return kw
