"""The IR and its passes: lowering any DAG to a chain must not change the function.

The oracle is the IR's own node-by-node evaluation (each node type is a one-line NumPy
definition), which shares nothing with the lowering (expressions over a state, carried
skip values, neuron pruning); NumPy's max is the oracle of the ReLU trees.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convmatrix.network import Graph, expand_max, fuse_affine, load, lower, relu_only
from convmatrix.network.ir import Act, Max

KINDS = ["ReLU", "ReLU", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "PReLU"]


@st.composite
def random_graphs(draw):
    """Small DAGs: affine maps, activations, additions, concatenations and max groups over random earlier nodes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    g = Graph((draw(st.integers(1, 4)),))
    for _ in range(draw(st.integers(1, 10))):
        op = draw(st.sampled_from(["affine", "act", "add", "concat", "max"]))
        pick = lambda: draw(st.integers(0, len(g.nodes) - 1))
        if op == "affine":
            srcs = sorted({pick() for _ in range(draw(st.integers(1, 2)))})
            n_in = sum(g.nodes[i].size for i in srcs)
            signed = draw(st.booleans())  # all-positive maps keep ReLU outputs >= 0 (unless the bias says no)
            sample = (lambda size: rng.standard_normal(size)) if signed else (lambda size: rng.uniform(0.1, 1, size))
            M = sp.random_array((draw(st.integers(1, 5)), n_in), density=0.6, rng=rng, format="csr",
                                data_sampler=sample)
            g.affine(srcs, M, rng.standard_normal(M.shape[0]))
        elif op == "act":
            kind = draw(st.sampled_from(KINDS))
            x = pick()
            params = {"negative_slope": 0.2} if kind == "LeakyReLU" else {}
            if kind == "PReLU":
                params = {"slopes": rng.uniform(-1, 1, g.nodes[x].size)}
            g.act(x, kind, params)
        elif op == "add":
            x = pick()
            same = [i for i, n in enumerate(g.nodes) if n.size == g.nodes[x].size]
            g.add([x, draw(st.sampled_from(same))])
        elif op == "concat":
            g.concat([pick(), pick()])
        else:
            x = pick()
            k = draw(st.integers(1, 4))
            g.max(x, rng.integers(0, g.nodes[x].size, (draw(st.integers(1, 4)), k)))
    g.output = len(g.nodes) - 1
    return g


@settings(max_examples=80)
@given(random_graphs(), st.booleans())
def test_lowered_chain_equals_graph(g, only_relu):
    x = np.random.default_rng(0).standard_normal((9, g.nodes[0].size)) * 3
    want = g.evaluate(x)
    h = relu_only(expand_max(g)) if only_relu else g
    chain = lower(h)
    np.testing.assert_allclose(chain.evaluate(x), want, rtol=1e-10, atol=1e-10)
    if only_relu:
        assert set(chain.kinds) <= {"ReLU", "Sigmoid", "Tanh"}
    relu_layers = [layer for layer in chain.layers if layer.kind == "ReLU"]
    assert all(layer.index is None for layer in relu_layers)  # ReLU layers never need a mask


@settings(max_examples=40)
@given(n=st.integers(1, 6), k=st.integers(1, 9), seed=st.integers(0, 1000))
def test_max_tree_is_numpy_max(n, k, seed):
    rng = np.random.default_rng(seed)
    g = Graph((n,))
    groups = rng.integers(0, n, (3, k))
    g.output = g.max(0, groups)
    h = expand_max(g)
    assert not any(isinstance(node, Max) for node in h.nodes)
    assert sum(isinstance(node, Act) for node in h.nodes) == int(np.ceil(np.log2(k)))  # one ReLU per level
    x = rng.standard_normal((5, n))
    np.testing.assert_allclose(h.evaluate(x), x[:, groups].max(axis=2), rtol=1e-12, atol=1e-12)


def test_relu_output_is_carried_by_one_neuron():
    g = Graph((3,))
    h = g.act(g.affine([0], sp.identity(3, format="csr")), "ReLU")
    r = g.act(g.affine([h], sp.csr_array(np.ones((2, 3)))), "ReLU")
    g.output = g.concat([r, h])
    chain = lower(g)
    assert [layer.M.shape[0] for layer in chain.layers] == [3, 5]  # h: one neuron each, not two
    x = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(chain.evaluate(x), g.evaluate(x))


def test_unused_neurons_are_pruned():
    g = Graph((4,))
    h = g.act(g.affine([0], sp.csr_array(np.eye(4))), "ReLU")
    g.output = g.affine([h], sp.csr_array(np.array([[1.0, 0, 0, 2.0]])))
    chain = lower(g)
    assert chain.layers[0].M.shape == (2, 4) and chain.layers[1].M.shape == (1, 2)


def test_graph_rejects_bad_nodes():
    g = Graph((2,))
    with pytest.raises(ValueError, match="matrix has 3 columns for 2 input neurons"):
        g.affine([0], sp.csr_array(np.ones((1, 3))))
    with pytest.raises(ValueError, match="reads node 5, which does not exist yet"):
        g.act(5, "ReLU") if False else g.append(Act((5,), (2,), "x"))
    with pytest.raises(ValueError, match="Add of values of different sizes"):
        g.add([0, g.affine([0], sp.csr_array(np.ones((3, 2))))])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        g.evaluate(np.ones((2, 3)))


def test_load_api():
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool1d(2)).eval()
    g = load(net, (1, 6))
    assert [n.op for n in g.nodes] == ["Input", "Affine", "Act", "Max"]
    assert g.nodes[1].name == "0" and g.nodes[1].shape == (2, 6) and g.nodes[1].M.shape == (12, 6)
    x = torch.randn(3, 1, 6, dtype=torch.float64)
    np.testing.assert_allclose(g.evaluate(x.reshape(3, -1).numpy()), net.double()(x).reshape(3, -1).detach().numpy())
    with pytest.raises(ValueError, match="input_shape is required for a torch module"):
        load(net)


@settings(max_examples=40)
@given(random_graphs())
def test_fuse_affine_keeps_the_function(g):
    x = np.random.default_rng(2).standard_normal((4, g.nodes[0].size))
    f = fuse_affine(g)
    assert len(f.nodes) <= len(g.nodes)
    np.testing.assert_allclose(f.evaluate(x), g.evaluate(x), rtol=1e-10, atol=1e-10)


def test_fuse_affine_merges_conv_bn_flatten_linear():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8, 3)).eval()
    f = fuse_affine(load(net, (1, 4, 4)))
    assert [n.op for n in f.nodes] == ["Input", "Affine", "Act", "Affine"]
    assert f.nodes[1].name == "0+1" and f.nodes[3].name == "3+4"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_relu_before_max_folds_into_the_tree(k):
    rng = np.random.default_rng(k)
    g = Graph((6,))
    r = g.act(g.affine([0], sp.csr_array(rng.standard_normal((6, 6)))), "ReLU")
    groups = rng.integers(0, 6, (4, k))
    g.output = g.max(r, groups)
    chain = lower(expand_max(g))
    levels = int(np.ceil(np.log2(k)))
    assert sum(layer.kind == "ReLU" for layer in chain.layers) == max(levels, 1) + (k > 1)  # same depth as before
    x = rng.standard_normal((7, 6))
    z = x @ g.nodes[1].M.toarray().T
    np.testing.assert_allclose(chain.evaluate(x), np.maximum(z, 0)[:, groups].max(axis=2), rtol=1e-12, atol=1e-12)


def test_conv_pool_and_padding_nodes_keep_their_convolution():
    """Every ConvRecord rebuilds its node: a conv's matrix and bias exactly, a pooling or padding layer's
    pattern (the node's matrix or windows are checked against torch in test_network_torch)."""
    import torch.nn as nn

    from convmatrix.network import load

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
                          nn.MaxPool2d(2, ceil_mode=True), nn.ReplicationPad2d((1, 0, 2, 1)),
                          nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                          nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=1), nn.AdaptiveAvgPool2d(1)).eval()
    g = load(model, (1, 7, 6))
    kinds = {}
    for node in g.nodes:
        rec = getattr(node, "conv", None)
        if rec is None:
            continue
        kinds[node.name] = rec.kind
        assert rec.geometry.output_shape == node.shape
        M, b = rec.matrix(), rec.neuron_bias()
        if rec.kind == "conv":
            np.testing.assert_allclose(M.toarray(), node.M.toarray(), rtol=1e-12)
            np.testing.assert_allclose(b, node.b, rtol=1e-12)
        elif rec.kind == "max_pool":
            assert [set(M.indices[M.indptr[r]:M.indptr[r + 1]]) for r in range(M.shape[0])] == \
                [set(row) for row in node.groups.tolist()]
        else:
            assert (abs(M) > 0).astype(int).toarray().tolist() == (abs(node.M) > 0).astype(int).toarray().tolist()
    assert kinds == {"0": "conv", "2": "max_pool", "3": "pad", "4": "avg_pool", "5": "conv", "6": "avg_pool"}


def test_conv_matrix_is_built_on_first_use_and_refused_when_too_large():
    import torch.nn as nn

    from convmatrix.network import load
    from convmatrix.network.layers import conv_record

    g = load(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval(), (1, 5, 5))
    node = g.nodes[1]
    assert node.op == "Affine" and node.__dict__.get("M") is None  # not built by the reader
    assert node.M.shape == (18, 25) and node.__dict__.get("M") is not None
    rec = conv_record(np.ones((64, 64, 3, 3)), None, (64, 30000, 30000), padding=1)
    with pytest.raises(ValueError, match="(?i)memory|bytes"):
        rec.matrix()
