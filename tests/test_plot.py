"""Pictures, measured as a reader sees them (Agg renderer):

- every text the renderer draws is inside the figure, no two of them overlap, and every
  cell label is inside its axes (extents from ``get_window_extent`` after a draw), over a
  sweep of geometries up to 64 kernel entries and 4 input channels;
- what the cells say is what torch computes: a matrix picture with a weight labels cell
  (row, col) with the entry of the matrix probed from torch's module, and a neuron drawn
  with one grid per input channel colours exactly the inputs its Jacobian row touches;
- labels are black on light cells and white on dark ones.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from oracles import dense_by_probing, torch_module  # noqa: E402

import convmatrix  # noqa: E402
from convmatrix.explain.plot import ink, number  # noqa: E402

# (weight shape, input shape, conv options): 4 to 64 kernel entries, 1 to 4 input channels
SWEEP = [
    ((2, 1, 2, 2), (1, 3, 3), {}),
    ((3, 1, 3, 3), (1, 5, 5), {}),
    ((2, 3, 3, 3), (3, 6, 6), dict(padding=1)),
    ((4, 4, 2, 2), (4, 4, 4), {}),
    ((2, 2, 4, 4), (4, 6, 6), dict(groups=2, padding=1, padding_mode="reflect")),
    ((1, 4, 4, 4), (4, 5, 5), dict(padding=2, padding_mode="circular", stride=2)),
    ((4, 4, 4), (4, 9), dict(padding=1, dilation=2)),
    ((2, 2, 3, 3), (2, 3, 3), dict(stride=2, padding=1, transposed=True)),
    ((1, 1, 8, 8), (1, 9, 9), dict(padding=3, padding_mode="replicate")),
]


def check_png(path) -> np.ndarray:
    """A real, non-blank PNG file (used by the CLI tests too)."""
    import matplotlib.image as mpimg

    data = open(path, "rb").read()
    assert len(data) > 0 and data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert np.ptp(img[..., :3]) > 0.2  # not blank: at least two clearly different colours
    return img


def drawn_texts(fig):
    """(text, pixel extent) of every text the renderer draws, in drawing order."""
    seen, draw = [], Text.draw

    def record(self, renderer):
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            seen.append((self, self.get_window_extent(renderer)))

    Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        Text.draw = draw
    return seen


def layout_faults(fig) -> list[str]:
    """Overlapping texts, texts outside the figure, cell labels outside their axes or cells."""
    texts = drawn_texts(fig)
    width, height = fig.canvas.get_width_height()
    faults = []
    for t, b in texts:
        if b.x0 < -0.5 or b.y0 < -0.5 or b.x1 > width + 0.5 or b.y1 > height + 0.5:
            faults.append(f"outside the figure: {t.get_text()!r}")
    for ax in fig.axes:
        box = ax.get_window_extent()
        for t in ax.texts:
            b = t.get_window_extent()
            if b.x0 < box.x0 - 0.5 or b.x1 > box.x1 + 0.5 or b.y0 < box.y0 - 0.5 or b.y1 > box.y1 + 0.5:
                faults.append(f"label outside its axes: {t.get_text()!r}")
            x, y = t.get_position()  # a cell label sits at its cell's centre: it stays inside the cell
            (cx0, cy0), (cx1, cy1) = ax.transData.transform([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)])
            if b.x0 < min(cx0, cx1) or b.x1 > max(cx0, cx1) or b.y0 < min(cy0, cy1) or b.y1 > max(cy0, cy1):
                faults.append(f"label wider or taller than its cell: {t.get_text()!r}")
    boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for _, b in texts])
    for i in range(len(texts)):
        a = boxes[i]
        hit = (np.minimum(a[2], boxes[i + 1:, 2]) - np.maximum(a[0], boxes[i + 1:, 0]) > 0.5) & \
              (np.minimum(a[3], boxes[i + 1:, 3]) - np.maximum(a[1], boxes[i + 1:, 1]) > 0.5)
        for j in np.flatnonzero(hit):
            faults.append(f"overlap: {texts[i][0].get_text()!r} and {texts[i + 1 + j][0].get_text()!r}")
    return faults


def positive_weight(shape, seed=0):
    """Small positive integers: no folded sum cancels, every label is short."""
    return np.random.default_rng(seed).integers(1, 10, shape).astype(np.float64)


def middle_neuron(wshape, ishape, kw):
    m = torch_module(np.ones(wshape), **kw)
    out = tuple(m(torch.zeros(1, *ishape, dtype=torch.float64)).shape[1:])
    return tuple([out[0] - 1] + [s // 2 for s in out[1:]]), out


@pytest.mark.parametrize("case", range(len(SWEEP)))
def test_texts_fit_and_never_overlap(case):
    wshape, ishape, kw = SWEEP[case]
    coords, _ = middle_neuron(wshape, ishape, kw)
    # names in one picture, numbers in the other, alternating over the sweep (both kinds for each)
    names, numbers = wshape, positive_weight(wshape) - 5
    matrix = convmatrix.plot_matrix(names if case % 2 else numbers, ishape, **kw)
    one = convmatrix.plot_neuron(numbers if case % 2 else names, ishape, coords, bias=0.5, **kw)
    for fig in (matrix, one):
        assert layout_faults(fig) == [], (wshape, kw)
    if np.prod(wshape) <= 26 and len(ishape) == 3:  # labels short enough for the cells: they are drawn
        assert len(matrix.axes[0].texts) > 0


def test_stack_pictures_fit():
    nets = [(nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 2, dilation=3)),
             (1, 9, 9), 0),
            (nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 2, 3), nn.ReLU(),
                           nn.Conv2d(2, 2, 1), nn.AvgPool2d(2)), (4, 16, 16), (1, 0, 0))]
    for net, shape, index in nets:
        assert layout_faults(convmatrix.plot_receptive_field(net, shape, index)) == []


def test_the_sharpen_matrix_says_what_torch_computes():
    """The asker's follow-up: 3x1x3x3 sharpen kernels on 1x5x5, every stored entry numbered."""
    sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
    K = np.broadcast_to(sharpen, (3, 1, 3, 3)).copy()
    D = dense_by_probing(K, (1, 5, 5))
    same = convmatrix.plot_matrix((3, 1, 3, 3), (1, 5, 5), weight=K)  # the weight as a keyword: the same picture
    fig = convmatrix.plot_matrix(K, (1, 5, 5))
    assert [t.get_text() for t in same.axes[0].texts] == [t.get_text() for t in fig.axes[0].texts]
    ax = fig.axes[0]
    labels = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(labels) == 27 * 9  # every stored entry (zeros of the kernel included) carries its number
    assert all(number(D[r, c]) == text for (r, c), text in labels.items())
    assert {t.get_color() for t in ax.texts if t.get_text() == "5"} == {"black"}  # on the light end
    assert {t.get_color() for t in ax.texts if t.get_text() == "-1"} == {"white"}  # on the dark end
    assert layout_faults(fig) == []


@pytest.mark.parametrize("case", [2, 4, 7])
def test_a_neuron_has_one_grid_per_input_channel(case):
    wshape, ishape, kw = SWEEP[case]
    coords, out = middle_neuron(wshape, ishape, kw)
    w = positive_weight(wshape, case)
    row = dense_by_probing(w, ishape, **kw)[int(np.ravel_multi_index(coords, out))].reshape(ishape)
    groups = kw.get("groups", 1)
    per_group = ishape[0] // groups
    group = coords[0] // ((wshape[1] * groups if kw.get("transposed") else wshape[0]) // groups)
    fig = convmatrix.plot_neuron(w, ishape, coords, **kw)
    grids = [ax for ax in fig.axes if ax.get_title().startswith("input channel")]
    assert [int(ax.get_title().split()[2].rstrip(":")) for ax in grids] == \
        list(range(group * per_group, (group + 1) * per_group))
    empty = np.array(matplotlib.colors.to_rgba("#F5F5F5"))
    for ax in grids:
        ch = int(ax.get_title().split()[2].rstrip(":"))
        image = np.asarray(ax.images[0].get_array())
        coloured = np.flatnonzero(np.abs(image - empty).sum(-1) > 1e-9)
        assert coloured.tolist() == np.flatnonzero(row[ch]).tolist()
        for t in ax.texts:  # each label is the weight the neuron reads there
            x, y = t.get_position()
            assert t.get_text() == number(row[ch][round(y), round(x)])


def test_seed_matrix_names_and_colours():
    fig = convmatrix.plot_matrix((2, 1, 2, 2), (1, 3, 3))
    ax = fig.axes[0]
    image = np.asarray(ax.images[0].get_array())
    assert image.shape == (8, 9, 4) and int((image[..., :3].sum(-1) < 3).sum()) == 32  # one coloured cell each
    assert sorted(t.get_text() for t in ax.texts) == sorted("abcdefgh" * 4)
    # one colour per kernel entry
    colours = {t.get_text(): tuple(image[round(t.get_position()[1]), round(t.get_position()[0])]) for t in ax.texts}
    assert len(set(colours.values())) == 8
    fig = convmatrix.plot_matrix((3, 2, 3, 3), (2, 6, 6), padding=1, padding_mode="reflect", rows=(0, 40))
    assert fig.axes[0].images[0].get_array().shape == (40, 72, 4)


def test_reflect_neuron_reads_folded_sums():
    fig = convmatrix.plot_neuron((1, 1, 3, 3), (1, 5, 5), (0, 0, 0), padding=1, padding_mode="reflect")
    assert fig.axes[0].get_title() == "input channel 0: 4 read"  # reflect folds the window into 4 inputs
    assert {t.get_text() for t in fig.axes[0].texts} <= {"e", "d+f", "b+h", "a+c+g+i"}


def test_stack_picture(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, dilation=2),
                        nn.MaxPool2d(2))
    fig = convmatrix.plot_receptive_field(net, (1, 16, 16), (0, 1, 1))
    rs = convmatrix.receptive_set(net, (1, 16, 16), (0, 1, 1))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 4  # input and the three layers (the ReLU adds no panel)
    image = np.asarray(shown[0].images[0].get_array())
    read = np.array(matplotlib.colors.to_rgba("#E69F00"))
    assert int((np.abs(image - read).sum(-1) < 1e-9).sum()) == len(rs.flat)
    fig.savefig(tmp_path / "s.png", dpi=50)
    check_png(tmp_path / "s.png")


def test_ink_follows_luminance():
    from matplotlib import colormaps

    cividis = colormaps["cividis"]
    assert ink(cividis(0.0)) == "white" and ink(cividis(1.0)) == "black"
    assert ink((0, 0, 0, 1)) == "white" and ink((1, 1, 1, 1)) == "black"


def test_errors():
    with pytest.raises(ValueError, match="more than 4,000,000 to draw"):
        convmatrix.plot_matrix((1, 1, 3, 3), (1, 100, 100))
    with pytest.raises(ValueError, match="only 1-D and 2-D feature maps"):
        convmatrix.plot_neuron((1, 1, 1, 1, 1), (1, 2, 2, 2), 0)
    with pytest.raises(ValueError, match=r"weight must have weight_shape \(1, 1, 2, 2\), got \(1, 1, 3, 3\)"):
        convmatrix.plot_matrix((1, 1, 2, 2), (1, 3, 3), weight=np.ones((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="real weights"):
        convmatrix.plot_matrix(np.ones((1, 1, 2, 2), dtype=complex), (1, 3, 3))
