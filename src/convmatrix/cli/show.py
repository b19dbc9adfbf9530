"""``convmatrix show``: the matrix of a layer with kernel entries as symbols (or numbers)."""

from __future__ import annotations

from ..explain.symbolic import MAX_COLS, MAX_ROWS
from .options import (add_command, add_conv_options, add_layer_arguments, add_weight_options, conv_kwargs,
                      layer_values, window)

EPILOG = """\
examples:
  convmatrix show 2x1x2x2 1x3x3
      the 8x9 matrix of a 2x1x2x2 kernel on a 1x3x3 input: kernel entries a..h, '|' between image rows
  convmatrix show 1x1x3 1x6 --padding 1 --padding-mode reflect
      folded taps appear as sums like a+c
  convmatrix show 3x1x3x3 1x5x5 --padding 1 --rows 0:10 --cols 0:15
      a window of a larger matrix
  convmatrix show 3x1x3x3 1x5x5 --kernel sharpen --rows 0:2
      rows 0 and 1 with numbers: every kernel the sharpen kernel 0,-1,0;-1,5,-1;0,-1,0
  convmatrix show 2x1x2x2 1x3x3 --kernel "1,2;3,4" --bias 0.5,-1
      with a bias, each row ends with '+ b', its neuron's bias (row i reads m_i . x + b_i)
  convmatrix show 2x1x2x2 1x3x3 --weight w.npy --precision 3
      the numbers of a saved weight, 3 significant digits
  convmatrix show 2x1x2x2 1x3x3 --format latex
      a LaTeX array for math mode (also: markdown, html)
"""


def register(sub) -> None:
    p = add_command(sub, "show", help="print the matrix of a layer with kernel entries as symbols or numbers",
        description="Print the matrix M of a convolution (flatten(conv(x)) == M @ flatten(x) + b) with every "
        "entry written as the kernel entry that fills it: a, b, c, ... in C order of the weight (K[u,i,p,q] "
        "past 26 entries), 0 for structural zeros, sums like a+c where padding folds taps. Rows are output "
        "neurons, columns input neurons; '|' separates image rows and '||' input channels. With --weight or "
        "--kernel the entries are numbers, aligned on their decimal point: integers in full, others with "
        "--precision significant digits; with --bias each row ends with '+ b', the bias of its neuron.",
        epilog=EPILOG)
    add_layer_arguments(p)
    add_conv_options(p)
    add_weight_options(p)
    p.add_argument("--precision", type=int, default=4, metavar="N",
                   help="significant digits of numbers that are not integers (default 4)")
    p.add_argument("--rows", type=window, metavar="A:B", help="show rows A..B-1 only")
    p.add_argument("--cols", type=window, metavar="A:B", help="show columns A..B-1 only")
    p.add_argument("--max-rows", type=int, default=MAX_ROWS, metavar="N",
                   help=f"elide the middle rows beyond N (0: never; default {MAX_ROWS})")
    p.add_argument("--max-cols", type=int, default=MAX_COLS, metavar="N",
                   help=f"elide the middle columns beyond N (0: never; default {MAX_COLS})")
    p.add_argument("--no-separators", action="store_true", help="spaces instead of '|' and '||'")
    p.add_argument("--format", choices=("text", "markdown", "latex", "html"), default="text")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explain.symbolic import symbolic

    weight, bias = layer_values(args)
    m = symbolic(
        args.weight_shape, args.input_shape, weight=weight, bias=bias, precision=args.precision,
        rows=args.rows, cols=args.cols, max_rows=args.max_rows or None, max_cols=args.max_cols or None,
        separators=not args.no_separators, **conv_kwargs(args))
    print(m.render(args.format))
    return 0
