"""Pictures: render with Agg, check the PNG files are real, non-blank images."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch.nn as nn  # noqa: E402

import convmatrix  # noqa: E402


def check_png(path) -> np.ndarray:
    import matplotlib.image as mpimg

    data = open(path, "rb").read()
    assert len(data) > 0 and data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert np.ptp(img[..., :3]) > 0.2  # not blank: at least two clearly different colours
    return img


def test_matrix_picture(tmp_path):
    fig = convmatrix.plot_matrix((2, 1, 2, 2), (1, 3, 3))
    ax = fig.axes[0]
    code = ax.images[0].get_array()
    assert code.shape == (8, 9) and int((code > 0).sum()) == 32  # one coloured cell per stored entry
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted("abcdefgh" * 4)
    fig.savefig(tmp_path / "m.png", dpi=50)
    check_png(tmp_path / "m.png")
    fig = convmatrix.plot_matrix((3, 2, 3, 3), (2, 6, 6), padding=1, padding_mode="reflect", rows=(0, 40))
    assert fig.axes[0].images[0].get_array().shape == (40, 72)
    fig.savefig(tmp_path / "r.png", dpi=40)
    check_png(tmp_path / "r.png")


def test_neuron_picture(tmp_path):
    fig = convmatrix.plot_neuron((1, 1, 3, 3), (1, 5, 5), (0, 0, 0), padding=1, padding_mode="reflect")
    reads = fig.axes[0].images[0].get_array()
    assert int(reads.sum()) == 4  # reflect folds the 3x3 window into 4 inputs
    fig.savefig(tmp_path / "n.png", dpi=50)
    check_png(tmp_path / "n.png")


def test_stack_picture(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, dilation=2),
                        nn.MaxPool2d(2))
    fig = convmatrix.plot_receptive_field(net, (1, 16, 16), (0, 1, 1))
    rs = convmatrix.receptive_set(net, (1, 16, 16), (0, 1, 1))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 4  # input and the three layers (the ReLU adds no panel)
    assert int(shown[0].images[0].get_array().sum()) == len(rs.flat)
    fig.savefig(tmp_path / "s.png", dpi=50)
    check_png(tmp_path / "s.png")


def test_errors():
    with pytest.raises(ValueError, match="more than 4,000,000 to draw"):
        convmatrix.plot_matrix((1, 1, 3, 3), (1, 100, 100))
    with pytest.raises(ValueError, match="only 1-D and 2-D feature maps"):
        convmatrix.plot_neuron((1, 1, 1, 1, 1), (1, 2, 2, 2), 0)
