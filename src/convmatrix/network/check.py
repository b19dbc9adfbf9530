"""How far a converted network is from its original: the figures every conversion reports."""

from __future__ import annotations

import numpy as np

__all__ = ["ConversionError", "compare", "check_close"]


class ConversionError(ValueError):
    """A converted network does not compute what the original computes (a bug: please report it)."""


def compare(reference, converted):
    """``(max_abs, max_rel)``: the largest absolute difference of two output arrays, and the
    same over the largest absolute value of the reference (the output's scale)."""
    reference, converted = np.asarray(reference, np.float64), np.asarray(converted, np.float64)
    if reference.shape != converted.shape:
        raise ConversionError(f"output shapes differ: original {reference.shape}, converted {converted.shape}")
    same = (reference == converted) | (np.isnan(reference) & np.isnan(converted))  # NaN = NaN, inf = inf
    with np.errstate(invalid="ignore"):  # inf - inf where one side is inf: not the same, counted below
        diff = np.where(same, 0.0, np.abs(reference - converted))
    max_abs = float(diff.max(initial=0.0))
    finite = np.abs(reference[np.isfinite(reference)])
    scale = float(finite.max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, max_rel


def check_close(reference, converted, what: str, rtol: float):
    """Raise ConversionError when ``converted`` differs from ``reference`` beyond ``rtol`` of its scale."""
    max_abs, max_rel = compare(reference, converted)
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    if not np.isfinite(max_abs) or max_abs > rtol * scale:
        raise ConversionError(f"{what}: the converted network differs from the original by {max_abs:.3g} "
                              f"(largest output {scale:.3g}); this is a bug in convmatrix")
    return max_abs, max_rel
