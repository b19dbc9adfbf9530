"""A small NumPy reference convolution, independent of convmatrix and of torch.

It follows PyTorch's definitions directly: pad (np.pad with the mode torch names), then sum
strided, dilated slices of the padded input times the kernel taps, group by group; the
transposed convolution scatters each input entry's kernel copy and crops the padding. Loops
run over kernel taps only, so it is quick on the small layers of property tests.
"""

from __future__ import annotations

import itertools

import numpy as np

_NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _per_dim(value, nd: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def _pads(padding, kernel, dilation) -> list[tuple[int, int]]:
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in _per_dim(padding, len(kernel))]


def conv(weight, x, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """torch.nn.functional.convNd(x[None], weight, ...)[0] with torch's padding modes, in NumPy."""
    weight, x = np.asarray(weight), np.asarray(x)
    nd = weight.ndim - 2
    kernel = weight.shape[2:]
    s, d = _per_dim(stride, nd), _per_dim(dilation, nd)
    pads = _pads(padding, kernel, d)
    xp = np.pad(x, [(0, 0)] + pads, mode=_NP_PAD[padding_mode])
    out_sizes = [(n - dd * (k - 1) - 1) // ss + 1 for n, k, dd, ss in zip(xp.shape[1:], kernel, d, s)]
    cout, cin_g = weight.shape[:2]
    cout_g = cout // groups
    y = np.zeros((cout, *out_sizes), dtype=np.result_type(weight, x))
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(t * dd, t * dd + (o - 1) * ss + 1, ss) for t, dd, ss, o in zip(tap, d, s, out_sizes))
        patch = xp[(slice(None), *window)]
        for g in range(groups):
            w = weight[(slice(g * cout_g, (g + 1) * cout_g), slice(None), *tap)]
            y[g * cout_g:(g + 1) * cout_g] += np.tensordot(w, patch[g * cin_g:(g + 1) * cin_g], axes=(1, 0))
    return y


def conv_transpose(weight, x, *, stride=1, padding=0, dilation=1, groups=1, output_padding=0):
    """torch.nn.functional.conv_transposeNd(x[None], weight, ...)[0], in NumPy."""
    weight, x = np.asarray(weight), np.asarray(x)
    nd = weight.ndim - 2
    kernel = weight.shape[2:]
    s, d = _per_dim(stride, nd), _per_dim(dilation, nd)
    p, op = _per_dim(padding, nd), _per_dim(output_padding, nd)
    cin, cout_g = weight.shape[:2]
    cin_g = cin // groups
    n = x.shape[1:]
    full = [(nn - 1) * ss + dd * (k - 1) + 1 + oo for nn, ss, dd, k, oo in zip(n, s, d, kernel, op)]
    y = np.zeros((cout_g * groups, *full), dtype=np.result_type(weight, x))
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(t * dd, t * dd + (nn - 1) * ss + 1, ss) for t, dd, ss, nn in zip(tap, d, s, n))
        for g in range(groups):
            w = weight[(slice(g * cin_g, (g + 1) * cin_g), slice(None), *tap)]
            y[(slice(g * cout_g, (g + 1) * cout_g), *window)] += np.tensordot(w, x[g * cin_g:(g + 1) * cin_g],
                                                                               axes=(0, 0))
    crop = tuple(slice(pp, f - pp) for pp, f in zip(p, full))
    return y[(slice(None), *crop)]
