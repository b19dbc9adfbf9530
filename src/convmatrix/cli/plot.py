"""``convmatrix plot``: pictures of a layer's matrix or of one neuron's receptive field."""

from __future__ import annotations


from .options import add_command, add_conv_options, add_layer_arguments, conv_kwargs, index, window

EPILOG = """\
examples:
  convmatrix plot 2x1x2x2 1x3x3 -o seed.png
      the sparsity pattern of the seed's 8x9 matrix, coloured by kernel entry
  convmatrix plot 3x2x3x3 2x6x6 --padding 1 --padding-mode reflect -o reflect.png
      folded entries (sums) are drawn black
  convmatrix plot 1x1x3x3 1x5x5 --padding 1 --neuron 0,0,0 -o neuron.png
      one output neuron: the inputs it reads and its receptive-field box
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
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=run)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from ..explain.plot import plot_matrix, plot_neuron

    if args.neuron is not None:
        fig = plot_neuron(args.weight_shape, args.input_shape, args.neuron, **conv_kwargs(args))
    else:
        fig = plot_matrix(args.weight_shape, args.input_shape, rows=args.rows, cols=args.cols, **conv_kwargs(args))
    fig.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    return 0
