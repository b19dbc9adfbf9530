"""``convmatrix plot``: pictures of a layer's matrix or of one neuron's receptive field."""

from __future__ import annotations


from . import CLIError
from .options import (add_command, add_conv_options, add_layer_arguments, add_weight_options, conv_kwargs, index,
                      layer_values, window)

EPILOG = """\
examples:
  convmatrix plot 2x1x2x2 1x3x3 -o M.png
      the sparsity pattern of the 8x9 matrix of a 2x1x2x2 kernel, coloured by kernel entry
  convmatrix plot 3x2x3x3 2x6x6 --padding 1 --padding-mode reflect -o reflect.png
      folded entries (sums) are drawn black
  convmatrix plot 1x1x3x3 1x5x5 --padding 1 --neuron 0,0,0 -o neuron.png
      one output neuron: the inputs it reads and its receptive-field box
  convmatrix plot 3x1x3x3 1x5x5 --kernel sharpen --rows 0:2 -o rows.png
      two rows of M with the numbers of a sharpen kernel in the cells
"""


def register(sub) -> None:
    p = add_command(sub, "plot", help="draw the matrix of a layer or one neuron's receptive field (PNG, SVG, PDF)",
        description="Draw the sparsity pattern of the layer's matrix M (entries coloured by kernel entry, "
        "thin lines between image rows, thick lines between channels) or, with --neuron, one output "
        "neuron's inputs and receptive-field box on the input grid. Needs matplotlib.",
        epilog=EPILOG)
    add_layer_arguments(p)
    add_conv_options(p)
    p.add_argument("--neuron", type=index, metavar="I", help="draw this output neuron (flat or channel,*position)")
    p.add_argument("--rows", type=window, metavar="A:B", help="draw rows A..B-1 of M only")
    p.add_argument("--cols", type=window, metavar="A:B", help="draw columns A..B-1 of M only")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the picture to write (.png, .svg, .pdf)")
    p.add_argument("--dpi", type=int, default=100, help=f"dots per inch, {DPI_RANGE[0]} to {DPI_RANGE[1]} (default 100)")
    add_weight_options(p)
    p.set_defaults(func=run)


DPI_RANGE = (10, 2400)  # below, the font renderer fails; above, one picture outgrows memory


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from ..explain.plot import plot_matrix, plot_neuron

    if not DPI_RANGE[0] <= args.dpi <= DPI_RANGE[1]:
        raise CLIError(f"--dpi must be from {DPI_RANGE[0]} to {DPI_RANGE[1]}, got {args.dpi}")
    weight, bias = layer_values(args)
    if args.neuron is not None:
        layer = args.weight_shape if weight is None else weight
        fig = plot_neuron(layer, args.input_shape, args.neuron, bias=bias, **conv_kwargs(args))
    elif bias is not None:
        raise CLIError("--bias needs --neuron (the picture of M has no bias)")
    else:
        fig = plot_matrix(args.weight_shape, args.input_shape, rows=args.rows, cols=args.cols, weight=weight,
                          **conv_kwargs(args))
    fig.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    return 0
