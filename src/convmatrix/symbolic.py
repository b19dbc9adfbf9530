"""Symbolic matrices: every entry of M written as the name of the kernel entry that fills it."""

from __future__ import annotations

import string
from math import prod

import numpy as np

__all__ = ["kernel_names"]


def kernel_names(weight_shape) -> list[str]:
    """Names of the kernel entries in C order of the weight.

    ``a, b, c, ...`` with at most 26 entries, otherwise ``K[u,i,p,q]`` by index.

    >>> kernel_names((2, 1, 2, 2))
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
    >>> kernel_names((1, 1, 3, 3, 3))[:2]
    ['K[0,0,0,0,0]', 'K[0,0,0,0,1]']
    """
    shape = tuple(int(s) for s in weight_shape)
    n = prod(shape)
    if n <= 26:
        return list(string.ascii_lowercase[:n])
    return ["K[" + ",".join(map(str, idx)) + "]" for idx in np.ndindex(*shape)]
