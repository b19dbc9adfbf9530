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
    "available_memory",
    "MAX_INT",
    "as_int",
    "as_bool",
    "int_tuple",
    "as_shape",
    "as_range",
    "as_window",
    "as_index",
    "product_bytes",
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
        limit, source = as_int("max_bytes", max_bytes, minimum=0, maximum=None), f"max_bytes={max_bytes}"
    if needed > limit:
        raise ValueError(
            f"{what} would need {format_bytes(needed)}, more than {source} "
            f"({format_bytes(limit)}); {alternatives}"
        )


MAX_INT = 2**48
"""The largest size, stride, padding or dilation accepted: sums and products of a few
of them stay exact in NumPy's int64 (a larger one could never be a matrix index)."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def as_int(name: str, value, minimum: int | None = None, maximum: int | None = MAX_INT) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``; TypeError for a non-int.

    The one int validator of the package: bools, floats and strings are
    TypeErrors naming ``name``, out-of-range ints ValueErrors.

    >>> as_int("groups", np.int64(2), minimum=1)
    2
    >>> as_int("stride", "2")
    Traceback (most recent call last):
    ...
    TypeError: stride must be an int, got '2' (str)
    """
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,} (2**{maximum.bit_length() - 1}), got {value:,}")
    return value


def as_bool(name: str, value) -> bool:
    """``value`` as a bool; TypeError for anything else (``1``, ``"yes"``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _sequence(name: str, value, what: str) -> tuple:
    """The items of a list, tuple or 1-D array; TypeError for strings, scalars and 0-d arrays."""
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise TypeError(f"{name} must be {what}, got an array of shape {value.shape}")
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    return tuple(value)


def int_tuple(name: str, value, nd: int, minimum: int = 0) -> tuple[int, ...]:
    """An int or a sequence of ``nd`` ints (one per spatial dimension) -> a checked tuple.

    A single int, or a sequence of one, is repeated ``nd`` times (as torch does).

    >>> int_tuple("stride", 2, 3), int_tuple("padding", (1, 0), 2, minimum=0)
    ((2, 2, 2), (1, 0))
    """
    what = f"an int or a sequence of {nd} ints"
    if _is_int(value):
        return (as_int(name, value, minimum),) * nd
    values = _sequence(name, value, what)
    if len(values) == 1 and nd > 1:
        values = values * nd
    if len(values) != nd:
        raise ValueError(f"{name} must be {what} (one per spatial dimension), got {values!r}")
    for v in values:
        if not _is_int(v):
            raise TypeError(f"{name} must be {what}, got {values!r}")
    return tuple(as_int(name, v, minimum) for v in values)


def as_shape(name: str, value, minimum: int = 0, ndim: int | None = None) -> tuple[int, ...]:
    """A shape: a sequence (list, tuple, 1-D array) of ints ``>= minimum``, of ``ndim`` entries if given.

    >>> as_shape("input_shape", [3, 8, 8], minimum=1)
    (3, 8, 8)
    """
    dims = _sequence(name, value, "a sequence of ints")
    if ndim is not None and len(dims) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {dims!r}")
    return tuple(as_int(name, v, minimum) for v in dims)


def as_range(names: tuple[str, str], start, stop, limit: int, what: str) -> tuple[int, int]:
    """``(start, stop)`` as ints with ``0 <= start <= stop <= limit`` (``what`` names ``limit``).

    >>> as_range(("start", "stop"), 2, 5, 8, "rows of the matrix")
    (2, 5)
    """
    start, stop = (as_int(n, v, maximum=None) for n, v in zip(names, (start, stop)))
    if not 0 <= start <= stop <= limit:
        raise ValueError(
            f"{names[0]} and {names[1]} must satisfy 0 <= {names[0]} <= {names[1]} <= {limit} "
            f"(the {what}), got {names[0]}={start}, {names[1]}={stop}"
        )
    return start, stop


def as_window(name: str, value, n: int) -> range:
    """A non-empty window of ``range(n)``: None (all), ``(start, stop)``, a slice or a range of step 1.

    >>> as_window("rows", (2, 5), 8), as_window("cols", slice(None, 3), 8), as_window("rows", None, 4)
    (range(2, 5), range(0, 3), range(0, 4))
    """
    if value is None:
        return range(n)
    if isinstance(value, range) and value.step == 1:
        a, b = value.start, value.stop
    elif isinstance(value, slice) and value.step in (None, 1):
        a, b, _ = value.indices(n)
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str) and len(value) == 2:
        a, b = value
    else:
        raise TypeError(f"{name} must be None, (start, stop), a slice or a range with step 1, got {value!r}")
    if not (_is_int(a) and _is_int(b)):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    a, b = int(a), int(b)
    if not 0 <= a < b <= n:
        raise ValueError(f"{name} must satisfy 0 <= start < stop <= {n}, got ({a}, {b})")
    return range(a, b)


def as_index(name: str, value, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """A flat index or ``(channel, *position)`` -> ``(flat, coords)``, checked against ``shape``.

    >>> as_index("index", 5, (1, 3, 3)), as_index("index", (0, 1, 2), (1, 3, 3))
    ((5, (0, 1, 2)), (5, (0, 1, 2)))
    """
    n = prod(shape)
    if _is_int(value):
        flat = int(value)
        if not 0 <= flat < n:
            raise ValueError(f"{name} must be a flat index in [0, {n}) for shape {shape}, got {flat}")
        coords, rest = [], flat
        for size in reversed(shape):
            rest, c = divmod(rest, size)
            coords.append(c)
        return flat, tuple(reversed(coords))
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an int or a tuple (channel, *position), got {value!r}")
    coords = tuple(value)
    if len(coords) != len(shape) or not all(_is_int(v) for v in coords):
        raise ValueError(
            f"{name} must be a flat index or {len(shape)} ints (channel, *position) for shape {shape}, "
            f"got {value!r}"
        )
    coords = tuple(int(c) for c in coords)
    if not all(0 <= c < s for c, s in zip(coords, shape)):
        raise ValueError(f"{name} {coords} is outside the shape {shape}")
    flat = 0
    for c, size in zip(coords, shape):
        flat = flat * size + c
    return flat, coords


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
        weight_shape, input_shape = _check_shapes(weight_shape, input_shape)
        nd = len(weight_shape) - 2
        groups = as_int("groups", groups, minimum=1)
        transposed = as_bool("transposed", transposed)
        if not isinstance(padding_mode, str):
            raise TypeError(f"padding_mode must be a string, got {padding_mode!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        stride = int_tuple("stride", stride, nd, 1)
        dilation = int_tuple("dilation", dilation, nd, 1)
        output_padding = int_tuple("output_padding", output_padding, nd, 0)
        in_ch, out_ch = _check_channels(weight_shape, input_shape[0], groups, transposed)
        pads = cls._resolve_padding(padding, nd, weight_shape[2:], stride, dilation, transposed, padding_mode)
        _check_output_padding(output_padding, stride, dilation, transposed)
        geom = cls(
            in_channels=in_ch,
            out_channels=out_ch,
            groups=groups,
            kernel_size=weight_shape[2:],
            input_size=input_shape[1:],
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
        p = int_tuple("padding", padding, nd, 0)
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


def _check_shapes(weight_shape, input_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The weight's and the input's shapes as int tuples of matching dimensions, no size empty."""
    weight_shape = as_shape("weight.shape", weight_shape)
    if len(weight_shape) not in (3, 4, 5):
        raise ValueError(
            "weight must have 3, 4 or 5 dimensions (out_channels, in_channels/groups, *kernel) "
            f"for a 1-D, 2-D or 3-D convolution, got shape {weight_shape}"
        )
    if min(weight_shape) < 1:
        raise ValueError(f"weight must have no empty dimension, got shape {weight_shape}")
    nd = len(weight_shape) - 2
    input_shape = as_shape("input_shape", input_shape)
    if len(input_shape) != nd + 1:
        raise ValueError(
            f"input_shape must be (channels, *spatial) with {nd} spatial dimension(s) to match "
            f"the {nd}-D weight of shape {weight_shape}, got {input_shape}"
        )
    if min(input_shape) < 1:
        raise ValueError(f"input_shape must have positive sizes, got {input_shape}")
    return weight_shape, input_shape


def _check_channels(weight_shape, n_in: int, groups: int, transposed: bool) -> tuple[int, int]:
    """``(in_channels, out_channels)`` of the weight with ``groups``, checked against the input's channels."""
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
        rule = "weight.shape[0]" if transposed else f"weight.shape[1]*groups = {weight_shape[1]}*{groups}"
        raise ValueError(
            f"input_shape has {n_in} channel(s) but the weight {weight_shape} with groups={groups} "
            f"expects {in_ch} ({rule})"
        )
    return in_ch, out_ch


def _check_output_padding(output_padding, stride, dilation, transposed: bool) -> None:
    """torch's rules: only transposed layers, each smaller than its stride or its dilation."""
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


# ------------------------------------------------------------ size estimates
# Closed forms from the geometry alone: nothing here allocates more than O(kernel size).


def product_bytes(geom: ConvGeometry, itemsize: int) -> int:
    """An upper estimate of the memory one matrix-free product ``A @ x`` of the layer works in:
    the input, the output and the padded grid the convolution runs on (a few copies each)."""
    grid = geom.output_size if geom.transposed else geom.input_size
    padded = max(geom.in_channels, geom.out_channels) * prod(n + lo + hi for n, (lo, hi) in zip(grid, geom.padding))
    return 4 * (padded + sum(geom.matrix_shape)) * itemsize


