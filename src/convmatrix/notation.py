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
