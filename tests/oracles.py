"""Independent oracles for the tests: torch's own convolution modules and functions.

Nothing here uses convmatrix: these are the references the library is checked against.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
CONV_T = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_module(weight, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                 transposed=False, output_padding=0, bias=None):
    """The torch.nn.ConvNd / ConvTransposeNd module with exactly this weight (float64)."""
    weight = torch.as_tensor(np.asarray(weight))
    nd = weight.ndim - 2
    if transposed:
        m = CONV_T[nd](weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]), stride=stride,
                       padding=padding, output_padding=output_padding, groups=groups, dilation=dilation,
                       bias=bias is not None, padding_mode=padding_mode)
    else:
        m = CONV[nd](weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=stride,
                     padding=padding, dilation=dilation, groups=groups, bias=bias is not None,
                     padding_mode=padding_mode)
    m = m.to(weight.dtype)
    with torch.no_grad():
        m.weight.copy_(weight)
        if bias is not None:
            m.bias.copy_(torch.as_tensor(np.asarray(bias)))
    return m.eval()


def torch_conv(weight, x, **conv_kwargs):
    """conv(x) for one unbatched input x of shape (C, *spatial), as a NumPy array."""
    m = torch_module(weight, **conv_kwargs)
    with torch.no_grad():
        return m(torch.as_tensor(np.asarray(x))[None])[0].numpy()


def dense_by_probing(weight, input_shape, **conv_kwargs):
    """The conv matrix column by column: conv of every unit vector (slow, small sizes only)."""
    n = int(np.prod(input_shape))
    eye = torch.eye(n, dtype=torch.as_tensor(np.asarray(weight)).dtype).reshape(n, *input_shape)
    m = torch_module(weight, **conv_kwargs)
    with torch.no_grad():
        cols = m(eye).reshape(n, -1).numpy()
    return cols.T
