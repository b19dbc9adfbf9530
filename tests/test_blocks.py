"""Block-wise builds: rows, channels and byte-bounded blocks, stacked, equal the whole matrix."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import convmatrix
from convmatrix.core.geometry import parse_bytes
from strategies import forward_convs, transposed_convs


ANY_LAYER = st.one_of(forward_convs(), transposed_convs())


def csr_bytes(M):
    return M.data.nbytes + M.indices.nbytes + M.indptr.nbytes


def assert_same_csr(A, B):
    assert A.shape == B.shape and A.has_canonical_format and A.dtype == B.dtype
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    np.testing.assert_array_equal(A.data, B.data)


@given(ANY_LAYER, st.integers(0, 2**32 - 1), st.data())
def test_rows_and_channels_are_slices_of_the_matrix(layer, seed, data):
    weight_shape, input_shape, kw = layer
    w = np.random.default_rng(seed).standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    start = data.draw(st.integers(0, M.shape[0]))
    stop = data.draw(st.integers(start, M.shape[0]))
    assert_same_csr(convmatrix.conv_matrix_rows(w, input_shape, start, stop, **kw), M[start:stop])
    c_out = weight_shape[1] * kw["groups"] if kw.get("transposed") else weight_shape[0]
    c0 = data.draw(st.integers(0, c_out))
    c1 = data.draw(st.integers(c0, c_out))
    per = M.shape[0] // c_out
    assert_same_csr(convmatrix.conv_matrix_channels(w, input_shape, c0, c1, **kw), M[c0 * per:c1 * per])


@given(ANY_LAYER, st.integers(0, 2**32 - 1), st.data())
def test_blocks_stack_to_the_matrix_within_budget(layer, seed, data):
    weight_shape, input_shape, kw = layer
    w = np.random.default_rng(seed).standard_normal(weight_shape)
    M = convmatrix.conv_matrix(w, input_shape, **kw)
    row_bytes = [csr_bytes(M[r:r + 1]) for r in range(M.shape[0])]
    budget = data.draw(st.integers(max(row_bytes), csr_bytes(M) + 16))
    blocks = list(convmatrix.conv_matrix_blocks(w, input_shape, block_bytes=budget, **kw))
    assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]]  # contiguous, in order
    assert blocks[-1][1] == M.shape[0]
    for start, stop, block in blocks:
        assert block.shape == (stop - start, M.shape[1])
        assert csr_bytes(block) <= budget
    for (_, stop, block), (_, _, following) in zip(blocks, blocks[1:]):
        # Greedy: the next row would not have fitted.
        assert csr_bytes(sp.vstack([block, following[:1]], format="csr")) > budget
    assert_same_csr(sp.vstack([b for _, _, b in blocks], format="csr"), M)


def test_int64_indices_past_two_to_the_31_columns():
    # 1x1 kernel, stride 1000, over 1x50000x50000: 2.5e9 columns, 2,500 entries. Output (v, w)
    # reads exactly input (0, 1000*v, 1000*w), i.e. column 1000*v*50000 + 1000*w.
    k = 0.7431
    w = np.full((1, 1, 1, 1), k)
    shape = (1, 50000, 50000)
    v, u = np.divmod(np.arange(2500), 50)
    expected_cols = 1000 * v * 50000 + 1000 * u
    tracemalloc.start()
    M = convmatrix.conv_matrix(w, shape, stride=1000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10**6  # nothing scales with the 2.5e9 input neurons
    assert M.shape == (2500, 2_500_000_000) and M.nnz == 2500
    assert M.indices.dtype == np.int64 and M.indptr.dtype == np.int64
    np.testing.assert_array_equal(M.indptr, np.arange(2501))
    np.testing.assert_array_equal(M.indices, expected_cols)
    np.testing.assert_array_equal(M.data, np.full(2500, k))
    rows = convmatrix.conv_matrix_rows(w, shape, 1234, 2100, stride=1000)
    assert rows.indices.dtype == np.int64
    np.testing.assert_array_equal(rows.indices, expected_cols[1234:2100])
    blocks = list(convmatrix.conv_matrix_blocks(w, shape, stride=1000, block_bytes="10kB"))
    # 24 bytes a row (value, int64 column, pointer) and one more pointer: 416 rows per 10 kB block.
    assert [stop for _, stop, _ in blocks] == [416, 832, 1248, 1664, 2080, 2496, 2500]
    np.testing.assert_array_equal(np.concatenate([b.indices for _, _, b in blocks]), expected_cols)


def test_few_rows_many_columns_fit_a_small_budget():
    # CSR points at rows: 2,500 rows of one entry each are 60 kB, however many columns there are
    # (the size estimate once counted a pointer per column: 20 GB, refused on a smaller machine).
    M = convmatrix.conv_matrix(np.ones((1, 1, 1, 1)), (1, 50000, 50000), stride=1000, max_bytes=61_000)
    assert M.data.nbytes + M.indices.nbytes + M.indptr.nbytes == 2500 * 16 + 2501 * 8
    with pytest.raises(ValueError, match="csc matrix .* would need 20 GB"):
        convmatrix.conv_matrix(np.ones((1, 1, 1, 1)), (1, 50000, 50000), stride=1000, format="csc",
                               max_bytes=61_000)


def test_block_rows_against_direct_indexing():
    # Blocks of a layer with 16 input channels, checked entry by entry against which input neuron
    # each output neuron reads: output (u, v, j) reads input (c, v + dy - 1, j + dx - 1) through
    # kernel entry (u, c, dy, dx), wherever that lies inside the 40x40 image (zero padding 1).
    w = np.random.default_rng(3).standard_normal((4, 16, 3, 3))
    shape = (16, 40, 40)
    checked = 0
    for start, stop, block in convmatrix.conv_matrix_blocks(w, shape, padding=1, block_bytes="20kB"):
        assert csr_bytes(block) <= 20_000
        for r in range(-(-start // 97) * 97, stop, 97):  # every 97th row of the matrix
            u, v, j = np.unravel_index(r, (4, 40, 40))
            row = block[[r - start]]
            c, y, x = np.unravel_index(row.indices, shape)
            inside = (min(v, 1) + min(39 - v, 1) + 1) * (min(j, 1) + min(39 - j, 1) + 1)
            assert row.nnz == 16 * inside
            np.testing.assert_array_equal(row.data, w[u, c, y - v + 1, x - j + 1])
            checked += 1
    assert checked == 66


# ------------------------------------------------------------------ bad input
def test_rows_out_of_range():
    with pytest.raises(ValueError, match=r"0 <= start <= stop <= 8 \(the number of rows\), got start=3, stop=9"):
        convmatrix.conv_matrix_rows(np.ones((2, 1, 2, 2)), (1, 3, 3), 3, 9)


def test_rows_reversed():
    with pytest.raises(ValueError, match="got start=5, stop=2"):
        convmatrix.conv_matrix_rows(np.ones((2, 1, 2, 2)), (1, 3, 3), 5, 2)


def test_rows_not_int():
    with pytest.raises(TypeError, match="start must be an int, got 1.5"):
        convmatrix.conv_matrix_rows(np.ones((2, 1, 2, 2)), (1, 3, 3), 1.5, 2)


def test_channels_out_of_range():
    with pytest.raises(ValueError, match=r"c1 <= 2 \(the number of output channels\), got c0=0, c1=3"):
        convmatrix.conv_matrix_channels(np.ones((2, 1, 2, 2)), (1, 3, 3), 0, 3)


def test_rows_over_max_bytes():
    with pytest.raises(ValueError, match=r"rows \[0, 8\) of the matrix would need .* more than max_bytes=10"):
        convmatrix.conv_matrix_rows(np.ones((2, 1, 2, 2)), (1, 3, 3), 0, 8, max_bytes=10)


def test_block_budget_below_one_row():
    # Each row: 4 float64 values and 4 int32 columns (48 bytes) plus two row pointers (8 bytes).
    with pytest.raises(ValueError, match=r"block_bytes='50B' \(50 B\) is smaller than one row.*needs 56 bytes"):
        convmatrix.conv_matrix_blocks(np.ones((2, 1, 2, 2)), (1, 3, 3), block_bytes="50B")


def test_block_budget_not_a_size():
    with pytest.raises(ValueError, match="block_bytes must be a number of bytes or a size like '512MB'.*'12XB'"):
        convmatrix.conv_matrix_blocks(np.ones((2, 1, 2, 2)), (1, 3, 3), block_bytes="12XB")


def test_block_budget_wrong_type():
    with pytest.raises(TypeError, match="block_bytes must be a number of bytes .*got True"):
        convmatrix.conv_matrix_blocks(np.ones((2, 1, 2, 2)), (1, 3, 3), block_bytes=True)


@pytest.mark.parametrize(
    "text, expected",
    [("512MB", 512 * 10**6), ("1GB", 10**9), ("1 gb", 10**9), ("64KiB", 65536), ("2GiB", 2 * 2**30),
     ("1.5kB", 1500), ("100", 100), ("7B", 7), (4096, 4096), (1e9, 10**9), ("3TB", 3 * 10**12)],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "1.2.3MB", "-5MB", "0", "nan", "5 parsecs"])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError, match="size"):
        parse_bytes(bad)
