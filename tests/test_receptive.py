"""Receptive fields through stacks: published tables, autograd boxes and exact input sets."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

import convmatrix
from convmatrix.explain.receptive import receptive_field, receptive_set

# google-research's receptive-field table for TF-slim models (RF, effective stride, effective padding).
VGG_16 = {
    "conv1_1": (3, 1, 1), "pool1": (6, 2, 2), "conv2_1": (10, 2, 4), "pool2": (16, 4, 6),
    "conv3_1": (24, 4, 10), "conv3_2": (32, 4, 14), "pool3": (44, 8, 18), "conv4_1": (60, 8, 26),
    "conv4_2": (76, 8, 34), "pool4": (100, 16, 42), "conv5_1": (132, 16, 58), "conv5_2": (164, 16, 74),
    "pool5": (212, 32, 90),
}
VGG_A = {
    "conv1_1": (3, 1, 1), "pool1": (4, 2, 1), "conv2_1": (8, 2, 3), "pool2": (10, 4, 3),
    "conv3_1": (18, 4, 7), "conv3_2": (26, 4, 11), "pool3": (30, 8, 11), "conv4_1": (46, 8, 19),
    "conv4_2": (62, 8, 27), "pool4": (70, 16, 27), "conv5_1": (102, 16, 43), "conv5_2": (134, 16, 59),
    "pool5": (150, 32, 59),
}
ALEXNET_V2 = {
    "conv1": (11, 4, 0), "pool1": (19, 8, 0), "conv2": (51, 8, 16), "conv3": (99, 16, 32),
    "conv4": (131, 16, 48), "conv5": (163, 16, 64), "pool5": (195, 32, 64),
}


def vgg(blocks):
    """TF-slim vgg: 3x3 SAME convs (padding 1) and 2x2/2 VALID pools; 2 channels keep it cheap."""
    layers, c = OrderedDict(), 3
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            layers[f"conv{b}_{i}"] = nn.Conv2d(c, 2, 3, padding=1)
            layers[f"relu{b}_{i}"] = nn.ReLU()
            c = 2
        layers[f"pool{b}"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


def alexnet_v2():
    """TF-slim alexnet_v2: conv1 11x11/4 VALID, 3x3/2 VALID pools, SAME 5x5 and 3x3 convs."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 2, 11, stride=4)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(2, 2, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(2, 2, 3, padding=1)), ("conv4", nn.Conv2d(2, 2, 3, padding=1)),
        ("conv5", nn.Conv2d(2, 2, 3, padding=1)), ("pool5", nn.MaxPool2d(3, 2)),
    ]))


@pytest.mark.parametrize("model, table", [(vgg((2, 2, 3, 3, 3)), VGG_16), (vgg((1, 1, 2, 2, 2)), VGG_A),
                                          (alexnet_v2(), ALEXNET_V2)], ids=["vgg_16", "vgg_a", "alexnet_v2"])
def test_published_table(model, table):
    rf = receptive_field(model, (3, 224, 224))
    rows = {name: (s[0], j[0], p[0]) for name, s, j, p in rf.table}
    assert {name: rows[name] for name in table} == table
    assert (rf.size[0], rf.stride[0], rf.padding[0]) == list(table.values())[-1]
    assert rf.size[0] == rf.size[1]


def test_contract_pool5():
    rf = convmatrix.receptive_field(vgg((2, 2, 3, 3, 3)), (3, 224, 224))
    assert (rf.size, rf.stride, rf.padding) == ((212, 212), (32, 32), (90, 90))


def grad_support(model, input_shape, out_index, x=None):
    x = torch.rand((1, *input_shape), dtype=torch.float64) + 0.5 if x is None else x
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).reshape(-1)[out_index], x)
    return np.flatnonzero(g.numpy().ravel())


def positive(model):
    """Float64, eval mode, all weights positive: no unit dies and nothing cancels."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.1, 1.0)
    return model


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1, stride=2)
        self.b = nn.Conv2d(2, 2, 3, dilation=2, padding=2)
        self.skip = nn.AvgPool2d(2)
        self.c = nn.Conv2d(1, 1, 4, stride=2, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = self.b(h) + h
        return torch.cat([h, self.c(x) + self.skip(x)], dim=1)


def test_union_box_matches_autograd_bounding_box():
    model = positive(Residual())
    rf = receptive_field(model, (1, 32, 32))
    assert rf.stride == (2, 2)
    # A central neuron: its field lies inside the input, so the gradient's bounding box is the box.
    pos = (8, 8)
    for channel in (0, 2):
        idx = np.ravel_multi_index((channel, *pos), (3, 16, 16))
        coords = np.array(np.unravel_index(grad_support(model, (1, 32, 32), idx), (1, 32, 32)))[1:]
        box = tuple((int(lo), int(hi) + 1) for lo, hi in zip(coords.min(1), coords.max(1)))
        expected = rf.box(pos)
        if channel == 0:  # the branch with the larger field decides the union
            assert box == expected
        else:
            assert all(e[0] <= b[0] and b[1] <= e[1] for b, e in zip(box, expected))


STACKS = {
    # strides, dilation gaps and zero-padding borders
    "strided": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 1, 2, dilation=3),
                                     nn.AvgPool2d(2, stride=1)),
    # folding padding modes and padding layers, asymmetric included
    "folding": lambda: nn.Sequential(nn.ZeroPad2d((2, 0, 1, 0)), nn.Conv2d(1, 2, 3, padding=1,
                                     padding_mode="reflect"), nn.ReflectionPad2d(1),
                                     nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="circular"),
                                     nn.ReplicationPad2d((0, 1, 1, 0)), nn.Conv2d(2, 1, 2)),
    # groups, adaptive pooling, batch norm, dropout, transposed
    "grouped": lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2, padding=1), nn.BatchNorm2d(4),
                                     nn.Dropout(0.5), nn.AdaptiveAvgPool2d(4),
                                     nn.ConvTranspose2d(4, 2, 3, stride=2, groups=2), nn.Identity()),
    "residual": Residual,
}


@pytest.mark.parametrize("name", list(STACKS))
def test_exact_set_equals_gradient_support(name, rng):
    model = positive(STACKS[name]())
    in_shape = {"grouped": (2, 8, 8), "residual": (1, 10, 10)}.get(name, (1, 9, 9))
    with torch.no_grad():
        n_out = model(torch.zeros((1, *in_shape), dtype=torch.float64)).numel()
    for idx in rng.choice(n_out, size=min(n_out, 6), replace=False):
        rs = receptive_set(model, in_shape, int(idx))
        np.testing.assert_array_equal(rs.flat, grad_support(model, in_shape, int(idx)))
        assert rs.input_coords[0] == tuple(np.unravel_index(rs.flat[0], in_shape))


def test_exact_set_differs_from_box_and_lies_inside_it():
    model = positive(STACKS["strided"]())
    rs = receptive_set(model, (1, 9, 9), 0)
    size = np.prod([hi - lo for lo, hi in rs.box])
    assert len(rs.flat) < size  # border (zero padding) and stride/dilation gaps
    for c in rs.input_coords:
        assert all(lo <= v < hi for v, (lo, hi) in zip(c[1:], rs.box))
    assert rs.spatial_mask().shape == (9, 9) and rs.spatial_mask().sum() == len(rs.flat)


def test_relu_and_maxpool_gradient_is_subset(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 1, 3),
                          nn.LeakyReLU()).double()
    for idx in range(0, 4):
        rs = set(receptive_set(model, (1, 10, 10), idx).flat.tolist())
        assert set(grad_support(model, (1, 10, 10), idx, torch.randn(1, 1, 10, 10, dtype=torch.float64))) <= rs
    linear = positive(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(2, 1, 3)))
    assert receptive_set(model, (1, 10, 10), 5).flat.tolist() == receptive_set(linear, (1, 10, 10), 5).flat.tolist()


def test_training_mode_model_is_left_as_it_was():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1), nn.Dropout())
    net[2].eval()
    assert receptive_field(net, (1, 3, 3)).size == (3, 3)  # batch norm on a 1x1 map of a batch of one
    assert [m.training for m in net.modules()] == [True, True, True, False]


def test_single_layer_and_list():
    rf = receptive_field(nn.Conv1d(1, 1, 3, dilation=2, stride=3, padding=1), (1, 20))
    assert (rf.size, rf.stride, rf.padding) == ((5,), (3,), (1,))
    rf = receptive_field([nn.Conv3d(1, 1, 3), nn.MaxPool3d(2)], (1, 8, 8, 8))
    assert rf.size == (4, 4, 4) and rf.stride == (2, 2, 2)


def test_errors():
    with pytest.raises(ValueError, match=r"layer '1' \(ConvTranspose2d\) is a transposed convolution"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 2, stride=2)), (1, 8, 8))
    with pytest.raises(ValueError, match=r"layer '1' \(Upsample\) maps \(6, 6\) to \(12, 12\) in a way no conv"):
        receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3)), (1, 8, 8))
    with pytest.raises(ValueError, match=r"maps \(7, 7\) to \(2, 2\): only integer ratios"):
        receptive_field(nn.Sequential(nn.AdaptiveAvgPool2d(2)), (1, 7, 7))

    class SpatialCat(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], dim=2)

    with pytest.raises(ValueError, match=r"layer 'cat' \(cat\) maps \(4, 4\) to \(8, 4\) in a way no conv"):
        receptive_field(SpatialCat(), (1, 4, 4))

    class TwoStrides(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(1, 1, 2, stride=2), nn.Conv1d(1, 1, 1, stride=2)

        def forward(self, x):
            return self.a(x) + self.b(x)

    rf = receptive_field(TwoStrides(), (1, 8))
    assert (rf.size, rf.stride, rf.padding) == ((2,), (2,), (0,))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        receptive_field(3, (1, 8, 8))
    with pytest.raises(ValueError, match="vgg: no such ONNX file"):
        receptive_field("vgg", (1, 8, 8))
    with pytest.raises(ValueError, match=r"fails on an input of shape \(N, \*\(1, 8, 8\)\)"):
        receptive_field(nn.Conv2d(3, 1, 3), (1, 8, 8))


class _Returns(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv, self.pool, self.fn = nn.Conv1d(1, 1, 3, padding=1), nn.MaxPool1d(2), fn
        self.wide, self.mean = nn.Conv1d(1, 1, 5), nn.AdaptiveAvgPool1d(1)

    def forward(self, x):
        return self.fn(self, x)


def test_different_strides_have_no_box_but_an_exact_set():
    model = _Returns(lambda m, x: m.wide(x) + m.pool(x))
    with pytest.raises(ValueError, match=r"joins paths with different strides \[1, 2\]"):
        receptive_field(model, (1, 8))
    rs = receptive_set(model, (1, 8), 1)
    assert rs.box is None and rs.flat.tolist() == [1, 2, 3, 4, 5]  # wide reads 1..5, the pool 2..3


@pytest.mark.parametrize("fn, message", [
    (lambda m, x: (m.conv(x), x), "model must return one tensor"),
    (lambda m, x: torch.softmax(m.conv(x), dim=2), r"node 'softmax' \(call_function softmax\): unsupported"),
    (lambda m, x: m.conv(x) if x.sum() > 0 else x, "torch.fx cannot trace _Returns"),
])
def test_graph_errors(fn, message):
    model = _Returns(fn)
    with pytest.raises(ValueError, match=message):
        receptive_set(model, (1, 8), 0)


def test_two_inputs_refused():
    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(ValueError, match="the model's forward takes more than one input"):
        receptive_field(Two(), (1, 4))


def test_broadcast_addition_is_an_exact_set():
    """A global mean broadcast onto every position: every output reads the whole input."""
    model = positive(_Returns(lambda m, x: m.conv(x) + m.mean(x)))
    for idx in (0, 5):
        np.testing.assert_array_equal(receptive_set(model, (1, 8), idx).flat, grad_support(model, (1, 8), idx))


def classifier(features):
    head = OrderedDict([("flatten", nn.Flatten()), ("fc", nn.Linear(2 * 7 * 7, 10)), ("relu", nn.ReLU()),
                        ("logits", nn.Linear(10, 3))])
    return nn.Sequential(OrderedDict(list(features.named_children()) + list(head.items())))


def test_classifier_head_reports_the_spatial_part():
    rf = receptive_field(classifier(vgg((2, 2, 3, 3, 3))), (3, 224, 224))
    assert (rf.size, rf.stride, rf.padding) == ((212, 212), (32, 32), (90, 90))
    assert rf.spatial_end == "pool5" and rf.head[0] == "'flatten' (Flatten)"
    assert [r.layer for r in rf.table][-1] == "pool5" and rf.table[0].start == (-1, -1)
    text = str(rf)
    assert text.splitlines()[0].split() == ["layer", "size", "jump", "start"]
    assert "pool5" in text and "spatial part ends at 'pool5'" in text and "212x212" in text
    assert "spatial_end='pool5'" in repr(rf)


def test_onnx_classifier_field_equals_torch(tmp_path):
    import warnings

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 16, 16),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=13)
    a, b = receptive_field(model, (1, 16, 16)), receptive_field(str(tmp_path / "m.onnx"))
    assert (a.size, a.stride, a.padding) == (b.size, b.stride, b.padding) == ((8, 8), (4, 4), (1, 1))
    assert a.spatial_end == "3" and b.head and "(Flatten)" in b.head[0]
    np.testing.assert_array_equal(receptive_set(str(tmp_path / "m.onnx"), None, 0).flat,
                                  receptive_set(model, (1, 16, 16), 0).flat)
