"""Symbolic matrices: the seed's layout character for character, and names that evaluate to M."""

from __future__ import annotations

import os
import re
import string
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convmatrix
from convmatrix.explain.symbolic import symbolic
from strategies import forward_convs, transposed_convs
from oracles import dense_by_probing

# CONTRACT.md's block, kept inline so the check runs without ../shared.
CONTRACT_SEED = """\
[
    [a b 0|c d 0|0 0 0]
    [0 a b|0 c d|0 0 0]
    [0 0 0|a b 0|c d 0]
    [0 0 0|0 a b|0 c d]
    [e f 0|g h 0|0 0 0]
    [0 e f|0 g h|0 0 0]
    [0 0 0|e f 0|g h 0]
    [0 0 0|0 e f|0 g h]
]"""


def seed_matrix(shared_dir: str) -> str:
    """The 8x9 matrix block of the seed answer, exactly as written there."""
    path = os.path.join(shared_dir, "seed-question.txt")
    if not os.path.exists(path):
        pytest.skip("seed-question.txt is absent")
    text = open(path, encoding="utf-8").read()
    after = text.split("We arrange this into the matrix", 1)[1].splitlines()[1:]
    start = next(i for i, line in enumerate(after) if line.strip() == "[")
    stop = next(i for i in range(start + 1, len(after)) if after[i].strip() == "]")
    return "\n".join(after[start:stop + 1])


def test_seed_character_for_character(shared_dir):
    expected = seed_matrix(shared_dir)
    assert expected.count("\n") == 9  # [, 8 rows, ]
    assert str(symbolic((2, 1, 2, 2), (1, 3, 3))) == expected


def test_seed_token_by_token(shared_dir):
    expected = seed_matrix(shared_dir)
    tokens = lambda s: re.findall(r"\|\||[|\[\]]|[^\s|\[\]]+", s)  # noqa: E731
    got = tokens(str(symbolic((2, 1, 2, 2), (1, 3, 3))))
    want = tokens(expected)
    assert len(got) == len(want) == 2 + 8 * (2 + 9 + 2)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"token {k}: {g!r} != {w!r}"


def test_contract_block_inline():
    assert str(convmatrix.symbolic((2, 1, 2, 2), (1, 3, 3))) == CONTRACT_SEED
    assert repr(symbolic((2, 1, 2, 2), (1, 3, 3))) == CONTRACT_SEED


# ----------------------------------------------------------- names evaluate to M
def parse_text(text: str) -> list[list[str]]:
    lines = text.split("\n")
    assert lines[0] == "[" and lines[-1] == "]"
    rows = []
    for line in lines[1:-1]:
        assert line.startswith("    [") and line.endswith("]")
        rows.append(line[5:-1].replace("||", " ").replace("|", " ").split())
    return rows


def evaluate(token: str, w: np.ndarray) -> float:
    """An entry's value: a letter is the C-order entry of w, K[u,i,...] its index; sums add."""
    total = 0.0
    for name in token.split("+"):
        if name == "0":
            continue
        m = re.fullmatch(r"K\[([0-9,]+)\]", name)
        total += w[tuple(int(v) for v in m.group(1).split(","))] if m else w.ravel()[string.ascii_lowercase.index(name)]
    return total


def layers():
    """Forward (every padding mode, 'same', 'valid') and transposed 1-D and 2-D layers."""
    return st.one_of(forward_convs(max_nd=2), transposed_convs(max_nd=2))


@settings(max_examples=40)
@given(layers(), st.integers(0, 2**31 - 1))
def test_names_evaluate_to_conv_matrix(layer, seed):
    shape, input_shape, kw = layer
    w = np.random.default_rng(seed).integers(-9, 10, size=shape).astype(np.float64)
    rows = parse_text(str(symbolic(shape, input_shape, max_rows=None, max_cols=None, **kw)))
    got = np.array([[evaluate(t, w) for t in row] for row in rows])
    M = convmatrix.conv_matrix(w, input_shape, **kw).toarray()
    assert got.shape == M.shape
    np.testing.assert_array_equal(got, M)  # integer weights: sums are exact
    np.testing.assert_array_equal(got, dense_by_probing(w, input_shape, **kw))


@pytest.mark.parametrize("shape, input_shape, kw", [
    ((2, 1, 2, 2, 2), (1, 3, 3, 3), dict(padding=1, padding_mode="circular")),
    ((1, 2, 2, 1, 2), (1, 2, 3, 3), dict(transposed=True, stride=(1, 2, 1))),
])
def test_names_evaluate_in_3d(shape, input_shape, kw, rng):
    w = rng.integers(-9, 10, size=shape).astype(np.float64)
    text = str(symbolic(shape, input_shape, max_rows=None, max_cols=None, **kw))
    got = np.array([[evaluate(t, w) for t in row] for row in parse_text(text)])
    np.testing.assert_array_equal(got, dense_by_probing(w, input_shape, **kw))


def test_many_entries_are_indexed_names():
    rows = parse_text(str(symbolic((2, 2, 3, 3), (2, 4, 4), padding=1)))
    assert rows[0][:2] == ["K[0,0,1,1]", "K[0,0,1,2]"]
    lines = str(symbolic((2, 2, 3, 3), (2, 4, 4), padding=1)).split("\n")[1:-1]
    assert len({len(line) for line in lines}) == 1  # every column padded to the common width
    assert lines[0].startswith("    [K[0,0,1,1] K[0,0,1,2]" + " " * 10 + "0 ")


def test_folded_sums_and_width():
    text = str(symbolic((1, 1, 3), (1, 10), padding=1, padding_mode="reflect"))
    rows = parse_text(text)
    assert rows[0][:3] == ["b", "a+c", "0"]  # ISSUE-NOTES' reflect row 0
    widths = {len(line) for line in text.split("\n")[1:-1]}
    assert len(widths) == 1
    assert parse_text(str(symbolic((1, 1, 3), (1, 10), padding=1, padding_mode="replicate")))[0][:2] == ["a+b", "c"]


def test_channel_separator_and_no_separators():
    text = str(symbolic((1, 2, 1, 1), (2, 2, 2)))
    assert text.split("\n")[1] == "    [a 0|0 0||b 0|0 0]"
    plain = str(symbolic((1, 2, 1, 1), (2, 2, 2), separators=False))
    assert plain.split("\n")[1] == "    [a 0 0 0 b 0 0 0]"


def test_custom_names_and_numeric_weights():
    names = ["w0", "w1", "w2", "w3"]
    m = symbolic((1, 1, 2, 2), (1, 2, 3), names=np.array(names).reshape(1, 1, 2, 2))
    assert parse_text(str(m))[0] == ["w0", "w1", "0", "w2", "w3", "0"]
    w = np.array([0.5, -1.0, 2.0, 4.0]).reshape(1, 1, 2, 2)
    rows = parse_text(str(symbolic((1, 1, 2, 2), (1, 2, 3), weight=w)))
    np.testing.assert_array_equal(np.array(rows, dtype=float), convmatrix.conv_matrix(w, (1, 2, 3)).toarray())


def test_window_and_elision():
    full = str(symbolic((3, 1, 3, 3), (1, 5, 5), padding=1, max_rows=None, max_cols=None)).split("\n")
    assert len(full) == 75 + 2
    win = str(symbolic((3, 1, 3, 3), (1, 5, 5), padding=1, rows=(10, 13), max_cols=None)).split("\n")
    assert win[1:-1] == full[11:14]
    cols = parse_text(str(symbolic((3, 1, 3, 3), (1, 5, 5), padding=1, rows=slice(0, 2), cols=range(5, 10))))
    assert cols == [row[5:10] for row in parse_text("\n".join(full))[:2]]
    short = str(symbolic((3, 1, 3, 3), (1, 5, 5), padding=1, max_rows=4, max_cols=None)).split("\n")
    assert short[1:3] == full[1:3] and short[3] == "    ..." and short[4:6] == full[-3:-1]
    elided = parse_text(str(symbolic((3, 1, 3, 3), (1, 5, 5), padding=1, rows=(0, 1), max_cols=6)))[0]
    assert elided[:3] == parse_text("\n".join(full))[0][:3] and elided[3].strip() == "..."
    assert len(elided) == 7


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self._cur = {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._cur = (int(a["data-row"]), int(a["data-col"])) if "data-row" in a else None

    def handle_data(self, data):
        if self._cur is not None:
            self.cells[self._cur] = data


def test_html_latex_markdown_agree_with_text():
    m = symbolic((2, 1, 2, 2), (1, 3, 3))
    rows = parse_text(str(m))
    p = _Cells()
    p.feed(m._repr_html_())
    assert p.cells == {(r, c): rows[r][c] for r in range(8) for c in range(9)}
    tex = m._repr_latex_()
    assert tex.startswith("$$\n\\begin{bmatrix}") and tex.endswith("\\end{bmatrix}\n$$")
    body = m.to_latex().split("\n")[1:-1]
    assert body[0] == r"  a & b & 0 & \vert & c & d & 0 & \vert & 0 & 0 & 0 \\"
    assert len(body) == 8
    md = m.to_markdown().split("\n")
    assert md[0].startswith("| y \\ x | x[0,0,0] |") and len(md) == 10
    assert md[2] == "| y[0,0,0] | a | b | 0 | c | d | 0 | 0 | 0 | 0 |"
    assert m.render("markdown") == m.to_markdown()
    big = symbolic((1, 1, 30), (1, 40))
    assert "K_{0,0,0}" in big.to_latex() and "⋯" not in big.to_html()


def test_errors():
    with pytest.raises(ValueError, match="names must have one entry per kernel entry"):
        symbolic((2, 1, 2, 2), (1, 3, 3), names=["a"])
    with pytest.raises(TypeError, match="names must be a sequence of strings"):
        symbolic((2, 1, 2, 2), (1, 3, 3), names="abcdefgh")
    with pytest.raises(ValueError, match=r"rows must satisfy 0 <= start < stop <= 8, got \(3, 9\)"):
        symbolic((2, 1, 2, 2), (1, 3, 3), rows=(3, 9))
    with pytest.raises(TypeError, match="cols must be None"):
        symbolic((2, 1, 2, 2), (1, 3, 3), cols="1:2")
    with pytest.raises(ValueError, match="max_rows must be >= 2"):
        symbolic((2, 1, 2, 2), (1, 3, 3), max_rows=1)
    with pytest.raises(ValueError, match="weight must have shape weight_shape"):
        symbolic((2, 1, 2, 2), (1, 3, 3), weight=np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="format must be one of"):
        symbolic((2, 1, 2, 2), (1, 3, 3)).render("pdf")
    with pytest.raises(ValueError, match="input_shape has 2 channel"):
        symbolic((2, 1, 2, 2), (2, 3, 3))


def test_window_must_hold_ints():
    with pytest.raises(TypeError, match="rows must hold ints"):
        symbolic((2, 1, 2, 2), (1, 3, 3), rows=(0.5, 2))
