"""Hypothesis strategies for convolution geometries that torch accepts."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def forward_convs(draw, max_nd: int = 3, modes=MODES):
    """(weight_shape, input_shape, conv_kwargs) of a forward convolution torch accepts."""
    nd = draw(st.integers(1, max_nd))
    small = nd == 3
    groups = draw(st.integers(1, 2 if small else 3))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3 if small else 4)) for _ in range(nd))
    n = tuple(draw(st.integers(1, 4 if small else 8)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(nd))
    mode = draw(st.sampled_from(modes))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    s = (1,) * nd if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    if kind == "same":
        padding = "same"
        pads = [(dd * (kk - 1) // 2, dd * (kk - 1) - dd * (kk - 1) // 2) for kk, dd in zip(k, d)]
    elif kind == "valid":
        padding, pads = "valid", [(0, 0)] * nd
    else:
        p = tuple(draw(st.integers(0, 3)) for _ in range(nd))
        padding = p[0] if kind == "int" else p
        pads = [(p[0], p[0])] * nd if kind == "int" else [(v, v) for v in p]
    for nn, kk, dd, (lo, hi) in zip(n, k, d, pads):
        assume(nn + lo + hi >= dd * (kk - 1) + 1)
        if mode == "reflect":
            assume(lo < nn and hi < nn)
        if mode == "circular":
            assume(lo <= nn and hi <= nn)
    weight_shape = (cout_g * groups, cin_g, *k)
    input_shape = (cin_g * groups, *n)
    kwargs = dict(stride=s, padding=padding, dilation=d, groups=groups, padding_mode=mode)
    return weight_shape, input_shape, kwargs


@st.composite
def transposed_convs(draw, max_nd: int = 3):
    """(weight_shape, input_shape, conv_kwargs) of a transposed convolution torch accepts."""
    nd = draw(st.integers(1, max_nd))
    small = nd == 3
    groups = draw(st.integers(1, 2 if small else 3))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3 if small else 4)) for _ in range(nd))
    n = tuple(draw(st.integers(1, 3 if small else 6)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d))
    p = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    for nn, kk, ss, dd, pp, oo in zip(n, k, s, d, p, op):
        assume((nn - 1) * ss - 2 * pp + dd * (kk - 1) + oo + 1 >= 1)
    weight_shape = (cin_g * groups, cout_g, *k)
    input_shape = (cin_g * groups, *n)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=groups, transposed=True, output_padding=op)
    return weight_shape, input_shape, kwargs
