"""Every bad argument gets a clear ValueError/TypeError naming it, before any large allocation."""

import numpy as np
import pytest
import torch

import convmatrix

W2 = np.ones((4, 2, 3, 3))


@pytest.mark.parametrize("kwargs, shape, exc, match", [
    (dict(), (3, 8, 8), ValueError, r"input_shape has 3 channel\(s\) but the weight .* expects 2"),
    (dict(), (2, 8), ValueError, r"input_shape must be \(channels, \*spatial\) with 2 spatial"),
    (dict(), (2, 0, 8), ValueError, r"input_shape must have positive sizes"),
    (dict(), "2x8x8", TypeError, r"input_shape must be a sequence of ints"),
    (dict(groups=3), (6, 8, 8), ValueError, r"groups=3 must divide out_channels"),
    (dict(groups=0), (2, 8, 8), ValueError, r"groups must be >= 1, got 0"),
    (dict(stride=0), (2, 8, 8), ValueError, r"stride must be >= 1, got 0"),
    (dict(stride=-1), (2, 8, 8), ValueError, r"stride must be >= 1, got -1"),
    (dict(dilation=0), (2, 8, 8), ValueError, r"dilation must be >= 1, got 0"),
    (dict(stride=(1, 2, 3)), (2, 8, 8), ValueError, r"stride must be an int or a sequence of 2 ints"),
    (dict(stride=1.5), (2, 8, 8), TypeError, r"stride must be an int"),
    (dict(stride="2"), (2, 8, 8), TypeError, r"stride must be an int or a sequence"),
    (dict(padding=-1), (2, 8, 8), ValueError, r"padding must be >= 0, got -1"),
    (dict(padding="full"), (2, 8, 8), ValueError, r"padding must be an int, a tuple of ints, 'same' or 'valid'"),
    (dict(padding="same", stride=2), (2, 8, 8), ValueError, r"padding='same' is not supported for strided"),
    (dict(padding_mode="mirror"), (2, 8, 8), ValueError, r"padding_mode must be one of"),
    (dict(padding=8, padding_mode="reflect"), (2, 8, 8), ValueError, r"reflect padding must be smaller than the input"),
    (dict(padding=9, padding_mode="circular"), (2, 8, 8), ValueError, r"circular padding must be at most the input"),
    (dict(), (2, 2, 8), ValueError, r"kernel larger than the padded input on spatial dimension 0"),
    (dict(dilation=4), (2, 8, 8), ValueError, r"kernel larger than the padded input"),
    (dict(output_padding=1), (2, 8, 8), ValueError, r"output_padding is only for transposed"),
    (dict(transposed=True, output_padding=1), (4, 8, 8), ValueError, r"output_padding must be smaller than either stride or dilation"),
    (dict(transposed=True, padding="same"), (4, 8, 8), ValueError, r"not supported for transposed"),
    (dict(transposed=True, padding=1, padding_mode="reflect"), (4, 8, 8), ValueError, r"transposed convolutions support only padding_mode='zeros'"),
    (dict(transposed=True, padding=5), (4, 3, 3), ValueError, r"transposed convolution output would be empty"),
    (dict(transposed="yes"), (4, 8, 8), TypeError, r"transposed must be a bool"),
    (dict(format="bsr"), (2, 8, 8), ValueError, r"format must be one of"),
    (dict(max_bytes=100), (2, 8, 8), ValueError, r"would need .* more than max_bytes=100"),
    (dict(max_bytes="lots"), (2, 8, 8), TypeError, r"max_bytes must be an int"),
])
def test_bad_arguments(kwargs, shape, exc, match):
    with pytest.raises(exc, match=match):
        convmatrix.conv_matrix(W2, shape, **kwargs)


@pytest.mark.parametrize("weight, exc, match", [
    (np.ones((4, 2)), ValueError, r"weight must have 3, 4 or 5 dimensions"),
    (np.ones((4, 2, 3, 3, 3, 3)), ValueError, r"weight must have 3, 4 or 5 dimensions"),
    (np.ones((4, 0, 3, 3)), ValueError, r"weight must have no empty dimension"),
    (np.array([["a", "b"]]), TypeError, r"weight must hold numbers"),
    (np.ones((4, 2, 3, 3), dtype=bool), TypeError, r"weight must hold numbers"),
    ("abc", TypeError, r"weight must hold numbers"),
])
def test_bad_weights(weight, exc, match):
    with pytest.raises(exc, match=match):
        convmatrix.conv_matrix(weight, (2, 8, 8))


def test_unknown_keyword():
    with pytest.raises(TypeError):
        convmatrix.conv_matrix(W2, (2, 8, 8), strides=2)


def test_absurd_build_is_refused_before_allocating():
    """512->512 3x3 on 4096x4096 would hold 9.9e12 entries: refused at once, with the estimate."""
    w = torch.empty((512, 512, 3, 3)).as_strided((512, 512, 3, 3), (0, 0, 0, 0))  # no real memory
    with pytest.raises(ValueError, match=r"would need [\d.]+ (TB|PB).*conv_matrix_blocks.*operator.*dask_matrix"):
        convmatrix.conv_matrix(w.numpy(), (512, 4096, 4096), padding=1)


def test_dense_format_counts_dense_bytes():
    with pytest.raises(ValueError, match=r"the dense matrix of shape \(2097152, 1048576\)"):
        convmatrix.conv_matrix(np.ones((2, 1, 3, 3), np.float32), (1, 1024, 1024), padding=1, format="dense")
