"""Hypothesis strategies for small conv layers that torch accepts (shapes and keyword arguments).

The validity rules are written out here from torch's documentation (output-size formulas, padding
limits), independently of convmatrix's own validation.
"""

from __future__ import annotations

from hypothesis import strategies as st

MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def forward_layers(draw, nd=None, modes=MODES, max_channels=2):
    """(weight_shape, input_shape, conv_kwargs) of a forward ConvNd that torch accepts."""
    nd = draw(st.integers(1, 3)) if nd is None else nd
    groups = draw(st.integers(1, 3))
    cig, cog = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kmax = 3 if nd < 3 else 2
    k = [draw(st.integers(1, kmax)) for _ in range(nd)]
    d = [draw(st.integers(1, 2)) for _ in range(nd)]
    mode = draw(st.sampled_from(modes))
    pad_kind = draw(st.sampled_from(["int", "same", "valid"]))
    if pad_kind == "same":
        s = [1] * nd
        totals = [di * (ki - 1) for di, ki in zip(d, k)]
        pads = [(t // 2, t - t // 2) for t in totals]
        padding = "same"
    else:
        s = [draw(st.integers(1, 3)) for _ in range(nd)]
        p = [0] * nd if pad_kind == "valid" else [draw(st.integers(0, 2)) for _ in range(nd)]
        pads = [(v, v) for v in p]
        padding = "valid" if pad_kind == "valid" else tuple(p)
    n = []
    for ki, di, (lo, hi) in zip(k, d, pads):
        least = max(1, di * (ki - 1) + 1 - lo - hi)  # the kernel fits in the padded input
        if mode == "reflect":
            least = max(least, lo + 1, hi + 1)  # reflect padding < input
        elif mode == "circular":
            least = max(least, lo, hi)  # circular padding <= input
        n.append(draw(st.integers(least, least + (3 if nd < 3 else 2))))
    kwargs = dict(stride=tuple(s), padding=padding, dilation=tuple(d), groups=groups, padding_mode=mode)
    return (cog * groups, cig, *k), (cig * groups, *n), kwargs


@st.composite
def transposed_layers(draw, nd=None, max_channels=2):
    """(weight_shape, input_shape, conv_kwargs) of a ConvTransposeNd that torch accepts.

    output_padding < max(stride, dilation) per dimension (torch's rule: smaller than either).
    """
    nd = draw(st.integers(1, 3)) if nd is None else nd
    groups = draw(st.integers(1, 3))
    cig, cog = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kmax = 3 if nd < 3 else 2
    k, s, d, p, op, n = [], [], [], [], [], []
    for _ in range(nd):
        ki, si, di = draw(st.integers(1, kmax)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        oi = draw(st.integers(0, max(si, di) - 1))
        ni = draw(st.integers(1, 4 if nd < 3 else 3))
        full = (ni - 1) * si + di * (ki - 1) + oi + 1  # output size before padding is removed
        pi = draw(st.integers(0, min(2, (full - 1) // 2)))  # keep the output non-empty
        k.append(ki), s.append(si), d.append(di), p.append(pi), op.append(oi), n.append(ni)
    kwargs = dict(stride=tuple(s), padding=tuple(p), dilation=tuple(d), groups=groups, transposed=True,
                  output_padding=tuple(op))
    return (cig * groups, cog, *k), (cig * groups, *n), kwargs


def any_layers(nd=None):
    return st.one_of(forward_layers(nd), transposed_layers(nd))
