"""The text notation of layers, shared by the command line and the explorer's specs.

Shapes are ints joined by ``x`` (``2x1x2x2``), per-dimension values ints joined by commas
(``2,1``), padding an int, ints or ``same``/``valid``, windows ``START:STOP`` and neurons a flat
index or ``channel,*position``. Every parser raises ValueError with the rule and the text.
"""

from __future__ import annotations


def shape(text: str) -> tuple[int, ...]:
    """``"2x1x2x2"`` -> ``(2, 1, 2, 2)``."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a shape is positive ints joined by 'x' (like 2x1x2x2), got {text!r}") from None
    if not dims or min(dims) < 1:
        raise ValueError(f"a shape is positive ints joined by 'x' (like 2x1x2x2), got {text!r}") from None
    return dims


def int_or_tuple(text: str) -> int | tuple[int, ...]:
    """``"2"`` -> ``2``; ``"2,1"`` -> ``(2, 1)``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected an int or ints joined by commas (like 2,1), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def padding(text: str):
    """An int, ints joined by commas, ``same`` or ``valid``."""
    if text in ("same", "valid"):
        return text
    try:
        return int_or_tuple(text)
    except ValueError:
        raise ValueError(f"padding is an int, ints joined by commas, 'same' or 'valid', got {text!r}") from None


def window(text: str) -> tuple[int, int]:
    """``"2:5"`` -> ``(2, 5)``: rows or columns 2, 3 and 4."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"a window is START:STOP with ints (like 0:10), got {text!r}") from None
    return a, b


def index(text: str) -> int | tuple[int, ...]:
    """A neuron: ``"7"`` (flat) or ``"1,1,1"`` (channel, *position)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"a neuron is a flat index or channel,*position ints joined by commas (like 0,1,1), got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


# ----------------------------------------------------------------------------- kernels
# The classic kernels by name: each a function of the kernel size, so that sizes a name
# cannot honour are refused with the sizes it takes.
_KERNEL_TEXT = {
    "sharpen": "0,-1,0;-1,5,-1;0,-1,0",
    "laplace": "0,1,0;1,-4,1;0,1,0",
    "sobel-x": "-1,0,1;-2,0,2;-1,0,1",
    "sobel-y": "-1,-2,-1;0,0,0;1,2,1",
    "gauss": "1,2,1;2,4,2;1,2,1",
}
KERNEL_NAMES = ("sharpen", "box", "identity", "laplace", "sobel-x", "sobel-y", "gauss")


def _kernel_numbers(text: str):
    """``"1,2;3,4"`` -> a 2-D array; ``/`` separates 3-D slices, a single row is 1-D."""
    import numpy as np

    def row(part: str) -> list[float]:
        try:
            return [_finite(v) for v in part.split(",")]
        except ValueError:
            raise ValueError(f"--kernel: entries are finite numbers joined by ',' (rows by ';', 3-D slices by '/'), "
                             f"got {part.strip()!r} in {text!r}") from None

    slices = [[row(r) for r in s.split(";")] for s in text.split("/")]
    try:
        values = np.array(slices, dtype=np.float64)
    except ValueError:
        raise ValueError(f"--kernel: every row needs the same number of entries and every slice the same number "
                         f"of rows, got {text!r}") from None
    if "/" in text:
        return values
    return values[0, 0] if ";" not in text else values[0]


def kernel(spec: str, kernel_size: tuple[int, ...]):
    """One kernel from its text (numbers or a classic's name), checked against ``kernel_size``.

    ``;`` separates rows and ``/`` 3-D slices; names: ``sharpen``, ``box`` (all ones), ``identity``
    (one 1 at the centre), ``laplace``, ``sobel-x``, ``sobel-y`` (its transpose) and ``gauss``
    (``1,2,1;2,4,2;1,2,1`` / 16). ``box`` and ``identity`` take any size; the others are 3x3.

    >>> kernel("sharpen", (3, 3)).tolist()
    [[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]
    >>> kernel("1,2,3", (3,)).tolist()
    [1.0, 2.0, 3.0]
    >>> kernel("1,2;3,4", (3, 3))
    Traceback (most recent call last):
    ...
    ValueError: --kernel '1,2;3,4' is 2x2 but WEIGHT_SHAPE's kernel is 3x3
    """
    import numpy as np

    size = "x".join(map(str, kernel_size))
    name = spec.strip().lower()
    if name == "box":
        return np.ones(kernel_size)
    if name == "identity":
        values = np.zeros(kernel_size)
        values[tuple(k // 2 for k in kernel_size)] = 1.0
        return values
    if name in _KERNEL_TEXT:
        if tuple(kernel_size) != (3, 3):
            raise ValueError(f"--kernel {name} is a 3x3 kernel but WEIGHT_SHAPE's kernel is {size} "
                             f"(box and identity take any size)")
        values = _kernel_numbers(_KERNEL_TEXT[name])
        return values / 16 if name == "gauss" else values
    if not any(c.isdigit() for c in name):
        raise ValueError(f"--kernel is numbers like '0,-1,0;-1,5,-1;0,-1,0' or one of {', '.join(KERNEL_NAMES)}; "
                         f"got {spec!r}")
    values = _kernel_numbers(spec)
    if values.shape != tuple(kernel_size):
        got = "x".join(map(str, values.shape)) or "a single number"
        raise ValueError(f"--kernel {spec!r} is {got} but WEIGHT_SHAPE's kernel is {size}")
    return values


def numbers(text: str, name: str) -> tuple[float, ...]:
    """``"0.5"`` or ``"1,-2,0.5"`` -> floats; the error names the option ``name``.

    >>> numbers("1,-2.5", "--bias")
    (1.0, -2.5)
    """
    try:
        return tuple(_finite(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} is a finite number or numbers joined by ',' (like 0.5 or 1,-2), "
                         f"got {text!r}") from None


def _finite(text: str) -> float:
    """A finite float from its text (ValueError for 'nan', 'inf', '1e400' or anything not a number)."""
    value = float(text)
    if value - value != 0:  # inf - inf and nan - nan are nan
        raise ValueError(f"not a finite number: {text!r}")
    return value


# ------------------------------------------------------------------------------ layers
#: The convolution options a layer text may carry after its weight shape.
CONV_FIELDS = ("stride", "padding", "dilation", "groups", "padding_mode", "transposed", "output_padding")


def layer(text: str) -> tuple[tuple[int, ...], dict]:
    """One layer of a stack: ``WEIGHT_SHAPE[:option=value...]`` -> (weight shape, conv keywords).

    Options are the conv options (``stride``, ``padding``, ``dilation``, ``groups``,
    ``padding_mode``, ``output_padding``; ``-`` may stand for ``_``) as ``option=value``, and
    ``transposed`` alone; a value for several dimensions joins ints with commas.

    >>> layer("4x1x3x3:stride=2,1:padding=same:transposed")
    ((4, 1, 3, 3), {'stride': (2, 1), 'padding': 'same', 'transposed': True})
    >>> layer("4x1x3x3:strides=2")
    Traceback (most recent call last):
    ...
    ValueError: options are stride, padding, dilation, groups, padding_mode, transposed, output_padding as option=value ('transposed' alone), got 'strides=2'
    """
    head, *opts = text.split(":")
    kinds = {"stride": int_or_tuple, "padding": padding, "dilation": int_or_tuple, "output_padding": int_or_tuple,
             "groups": _int, "padding_mode": str}
    weight_shape, kwargs = shape(head), {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        key = key.strip().replace("-", "_")
        if key == "transposed" and not eq:
            kwargs["transposed"] = True
        elif key in kinds and eq:
            try:
                kwargs[key] = kinds[key](value.strip())
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        else:
            raise ValueError(f"options are {', '.join(CONV_FIELDS)} as option=value ('transposed' alone), "
                             f"got {opt!r}")
    return weight_shape, kwargs


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an int, got {text!r}") from None
