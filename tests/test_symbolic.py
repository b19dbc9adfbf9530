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
        line = line[:line.rindex("]") + 1]  # without the bias after it, if any
        assert line.startswith("    [")
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
    assert tex.startswith("$$\n\\left[\\begin{array}{ccc|ccc|ccc}") and tex.endswith("\\end{array}\\right]\n$$")
    body = m.to_latex().split("\n")[1:-1]
    assert body[0] == r"  a & b & 0 & c & d & 0 & 0 & 0 & 0 \\"
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


# ----------------------------------------------------------------- numbers and bias
def parse_bias(text: str) -> list[float]:
    """The ``+ b`` / ``- b`` after every row of the text layout."""
    return [float(line.rsplit("]", 1)[1].replace(" ", "")) for line in text.split("\n")[1:-1]]


def test_format_number():
    from convmatrix.explain.symbolic import format_number

    cases = [(5.0, "5"), (-1.0, "-1"), (0.0, "0"), (-0.0, "0"), (123456789.0, "123456789"), (0.0625, "0.0625"),
             (1 / 3, "0.3333"), (2.5e-7, "2.5e-07"), (1e20, "1e+20"), (np.float32(0.1), "0.1"), (3 + 0j, "3")]
    assert [format_number(v) for v, _ in cases] == [want for _, want in cases]
    assert format_number(np.pi, 2) == "3.1" and format_number(np.pi, 8) == "3.1415927"


@settings(max_examples=12)
@given(layers(), st.integers(0, 2**31 - 1))
def test_numbers_are_conv_matrix(layer, seed):
    shape, input_shape, kw = layer
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    text = str(symbolic(shape, input_shape, weight=w, precision=17, max_rows=None, max_cols=None, **kw))
    got = np.array(parse_text(text), dtype=float)
    np.testing.assert_allclose(got, dense_by_probing(w, input_shape, **kw), rtol=1e-14, atol=1e-14)
    lines = text.split("\n")[1:-1]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    plain = str(symbolic(shape, input_shape, weight=w, separators=False, **kw)).split("\n")[1:-1]
    inner = [line[5:-1] for line in plain if line != "    ..."]  # n cells of one width, joined by single spaces
    n = len(inner[0].split())
    width = (len(inner[0]) - (n - 1)) // n
    cells = [line[k:k + width] for line in inner for k in range(0, len(line), width + 1)]
    points = {c.index(".") for c in cells if "." in c and c.strip() != "..."}
    assert len(points) <= 1  # every decimal point at one offset in its cell
    tokens = [c.strip() for c in cells]
    assert all(len(t.lstrip("-").replace(".", "").lstrip("0")) <= 4 or "e" in t for t in tokens)  # precision 4


def test_integer_numbers_print_without_a_point():
    w = np.broadcast_to(np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), (3, 1, 3, 3))
    text = str(symbolic((3, 1, 3, 3), (1, 5, 5), weight=w, rows=(0, 2)))
    assert text == "\n".join([
        "[",
        "    [ 0 -1  0  0  0|-1  5 -1  0  0| 0 -1  0  0  0| 0  0  0  0  0| 0  0  0  0  0]",
        "    [ 0  0 -1  0  0| 0 -1  5 -1  0| 0  0 -1  0  0| 0  0  0  0  0| 0  0  0  0  0]",
        "]"])
    np.testing.assert_array_equal(np.array(parse_text(text), dtype=float),
                                  convmatrix.conv_matrix(w.astype(float), (1, 5, 5)).toarray()[:2])


@pytest.mark.parametrize("shape, input_shape, kw", [
    ((3, 2, 3, 3), (2, 4, 5), dict(padding=1, padding_mode="reflect")),
    ((2, 2, 3), (4, 6), dict(groups=2, stride=2)),
    ((2, 3, 2, 2), (2, 3, 3), dict(transposed=True, stride=2)),
])
def test_bias_rows_give_torch_output(shape, input_shape, kw, rng):
    from oracles import torch_module
    import torch

    w = rng.standard_normal(shape)
    m = symbolic(shape, input_shape, weight=w, precision=17, max_rows=None, max_cols=None, **kw)
    channels = m.geometry.out_channels
    b = rng.standard_normal(channels)
    text = str(symbolic(shape, input_shape, weight=w, bias=b, precision=17, max_rows=None, max_cols=None, **kw))
    M, bias = np.array(parse_text(text), dtype=float), np.array(parse_bias(text))
    x = rng.standard_normal(input_shape)
    with torch.no_grad():
        want = torch_module(w, bias=b, **kw)(torch.as_tensor(x)[None])[0].numpy().ravel()
    np.testing.assert_allclose(M @ x.ravel() + bias, want, rtol=1e-12, atol=1e-12)
    scalar = str(symbolic(shape, input_shape, weight=w, bias=-0.5, **kw)).split("\n")[1]
    assert scalar.endswith("]  - 0.5")
    md = symbolic(shape, input_shape, bias=b, precision=3, **kw).to_markdown().split("\n")
    assert md[0].endswith("| + b |") and md[2].endswith(f"| {float(b[0]):.3g} |")
    page = symbolic(shape, input_shape, bias=b, max_rows=None, **kw).to_html()
    assert page.count('<td class="bias"') == len(M) and f"{'+' if b[0] >= 0 else '-'} {abs(b[0]):.4g}<" in page


def test_bias_errors():
    with pytest.raises(ValueError, match=r"bias must be a scalar or have shape \(2,\) \(one per output channel\)"):
        symbolic((2, 1, 2, 2), (1, 3, 3), bias=[1, 2, 3])
    with pytest.raises(TypeError, match="bias must be numbers"):
        symbolic((2, 1, 2, 2), (1, 3, 3), bias="1")
    with pytest.raises(ValueError, match="precision must be an int from 1 to 17"):
        symbolic((2, 1, 2, 2), (1, 3, 3), precision=0)


# ----------------------------------------------------------------------------- LaTeX
def compile_latex(tmp_path, *displays: str) -> str:
    """pdflatex on a plain article with amsmath holding the displays; the log (checked for errors)."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-base)")
    body = "\n".join("\\[\n" + d + "\n\\]" for d in displays)
    doc = "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n" + body + "\n\\end{document}\n"
    (tmp_path / "m.tex").write_text(doc, encoding="utf-8")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "m.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    log = (tmp_path / "m.log").read_text(encoding="latin-1")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert r.returncode == 0 and not errors, "\n".join(errors) or r.stdout[-2000:]
    assert (tmp_path / "m.pdf").stat().st_size > 0
    return log


def latex_columns(tex: str) -> int:
    spec = re.search(r"\\begin\{array\}\{([^}]*)\}", tex).group(1)
    return len(spec.replace("|", ""))


def test_latex_compiles_seed(tmp_path):
    m = symbolic((2, 1, 2, 2), (1, 3, 3))
    assert latex_columns(m.to_latex()) == 9
    compile_latex(tmp_path, m.to_latex(), m._repr_latex_()[2:-2].strip())


def test_latex_compiles_27x25_names_numbers_and_bias(tmp_path):
    names = symbolic((3, 1, 3, 3), (1, 5, 5), padding=1)  # 27 kernel entries: K_{u,i,p,q}, 75 x 25
    w = np.broadcast_to(np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), (3, 1, 3, 3)) * 1.5e-5
    numbers = symbolic((3, 1, 3, 3), (1, 5, 5), weight=w, bias=[0.5, -1, 2])  # 27 x 25
    assert numbers.shape == (27, 25) and latex_columns(numbers.to_latex()) == 25
    assert "K_{0,0,1,1}" in names.to_latex() and r"7.5\cdot10^{-5}" in numbers.to_latex()
    assert names.to_latex().count(r"\\") == 75
    compile_latex(tmp_path, names.to_latex(), numbers.to_latex())


def test_latex_compiles_elided_large(tmp_path):
    m = symbolic((3, 2, 3, 3), (2, 30, 30), padding=1, padding_mode="reflect")  # 2700 x 1800
    tex = m.to_latex()
    assert latex_columns(tex) == 65 and r"\cdots" in tex and r"\ddots" in tex and r"\vdots" in tex
    assert "+K_{" in tex  # folded taps
    wide = symbolic((1, 1, 3), (1, 500), max_cols=None, max_rows=None).to_latex()  # asked never to elide
    assert latex_columns(wide) == 65
    compile_latex(tmp_path, tex, wide)


# ----------------------------------------------------------------------------- SymPy
def seed_products(shared_dir: str) -> list[str]:
    """The eight entries of M x' in the 2x1x2x2 example's answer, as written there (``1a+2b+4c+5d``)."""
    path = os.path.join(shared_dir, "seed-question.txt")
    if not os.path.exists(path):
        pytest.skip("seed-question.txt is absent")
    text = open(path, encoding="utf-8").read().split("computes", 1)[1]
    line = next(line for line in text.splitlines() if line.strip().startswith("["))
    return [t.strip() for t in line.strip().strip("[]").split(",")]


def test_to_sympy_reproduces_the_answer(shared_dir):
    import sympy

    expected = seed_products(shared_dir)
    assert len(expected) == 8 and expected[0] == "1a+2b+4c+5d"
    got = symbolic((2, 1, 2, 2), (1, 3, 3)).to_sympy() * sympy.Matrix(range(1, 10))
    assert isinstance(got, sympy.Matrix) and got.shape == (8, 1)
    for g, e in zip(got, expected):
        want = sympy.sympify(re.sub(r"(\d)([a-h])", r"\1*\2", e))
        assert g == want and sympy.expand(g - want) == 0
    assert str(got[0]) == "a + 2*b + 4*c + 5*d" and str(got[1]) == "2*a + 3*b + 5*c + 6*d"


@settings(max_examples=10)
@given(layers(), st.integers(0, 2**31 - 1))
def test_to_sympy_substituted_is_conv_matrix(layer, seed):
    import sympy

    shape, input_shape, kw = layer
    w = np.random.default_rng(seed).integers(-9, 10, size=shape).astype(np.float64)
    S = symbolic(shape, input_shape, **kw).to_sympy()
    names = convmatrix.explain.symbolic.kernel_names(shape)
    symbols = [sympy.Symbol(re.sub(r"K\[(.*)\]", lambda m: "K_" + m.group(1).replace(",", "_"), n)) for n in names]
    assert S.free_symbols <= set(symbols)
    got = np.array(S.subs(dict(zip(symbols, (int(v) for v in w.ravel())))), dtype=float)
    np.testing.assert_array_equal(got, dense_by_probing(w, input_shape, **kw))
    np.testing.assert_array_equal(got, convmatrix.conv_matrix(w, input_shape, **kw).toarray())
    N = symbolic(shape, input_shape, weight=w, **kw).to_sympy()
    assert all(isinstance(v, sympy.Integer) for v in N)
    np.testing.assert_array_equal(np.array(N, dtype=float), got)


def test_to_sympy_names_the_missing_extra(monkeypatch):
    import sys

    from convmatrix._optional import MissingDependency

    monkeypatch.setitem(sys.modules, "sympy", None)
    with pytest.raises(MissingDependency, match=r"to_sympy needs the 'sympy' extra: pip install 'convmatrix\[sympy\]'"):
        symbolic((2, 1, 2, 2), (1, 3, 3)).to_sympy()


def test_to_sympy_names_sums_floats_and_window():
    import sympy

    K = symbolic((3, 1, 3, 3), (1, 5, 5), padding=1).to_sympy()
    assert K.shape == (75, 25) and K[0, 0] == sympy.Symbol("K_0_0_1_1")
    a, b, c = sympy.symbols("a b c")
    R = symbolic((1, 1, 3), (1, 4), padding=1, padding_mode="reflect").to_sympy()
    assert R[0, :] == sympy.Matrix([[b, a + c, 0, 0]])
    w = np.array([0.1, -2.0, 0.3]).reshape(1, 1, 3)
    F = symbolic((1, 1, 3), (1, 4), padding=1, padding_mode="reflect", weight=w).to_sympy()
    M = convmatrix.conv_matrix(w, (1, 4), padding=1, padding_mode="reflect").toarray()
    assert isinstance(F[0, 1], sympy.Float) and isinstance(F[0, 0], sympy.Integer)
    np.testing.assert_allclose(np.array(F, dtype=float), M, rtol=1e-15)
    win = symbolic((2, 1, 2, 2), (1, 3, 3), rows=(2, 5), cols=(1, 4), max_rows=2, max_cols=2).to_sympy()
    assert win == symbolic((2, 1, 2, 2), (1, 3, 3)).to_sympy()[2:5, 1:4]  # never elided
    with pytest.raises(ValueError, match="to_sympy: the window has 2700 x 1800 entries, more than 1,000,000"):
        symbolic((3, 2, 3, 3), (2, 30, 30), padding=1).to_sympy()
