"""``convmatrix show``: the symbolic matrix of a layer, as in the seed question's answer."""

from __future__ import annotations

from ..explain.symbolic import MAX_COLS, MAX_ROWS
from .options import add_command, add_conv_options, add_layer_arguments, conv_kwargs, window

EPILOG = """\
examples:
  convmatrix show 2x1x2x2 1x3x3
      the seed question's 8x9 matrix: kernel entries a..h, '|' between image rows
  convmatrix show 1x1x3 1x6 --padding 1 --padding-mode reflect
      folded taps appear as sums like a+c
  convmatrix show 3x1x3x3 1x5x5 --padding 1 --rows 0:10 --cols 0:15
      a window of a larger matrix
  convmatrix show 2x1x2x2 1x3x3 --format latex
      a LaTeX bmatrix (also: markdown, html)
"""


def register(sub) -> None:
    p = add_command(sub, "show", help="print the matrix of a layer with kernel entries as symbols",
        description="Print the matrix M of a convolution (flatten(conv(x)) == M @ flatten(x)) with every "
        "entry written as the kernel entry that fills it: a, b, c, ... in C order of the weight (K[u,i,p,q] "
        "past 26 entries), 0 for structural zeros, sums like a+c where padding folds taps. Rows are output "
        "neurons, columns input neurons; '|' separates image rows and '||' input channels.",
        epilog=EPILOG)
    add_layer_arguments(p)
    add_conv_options(p)
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

    m = symbolic(
        args.weight_shape, args.input_shape, rows=args.rows, cols=args.cols,
        max_rows=args.max_rows or None, max_cols=args.max_cols or None,
        separators=not args.no_separators, **conv_kwargs(args))
    print(m.render(args.format))
    return 0
