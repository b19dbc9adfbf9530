"""``convmatrix neuron``: what one output neuron of a layer reads (or one input neuron feeds)."""

from __future__ import annotations


from . import CLIError
from .options import (add_command, add_conv_options, add_layer_arguments, add_weight_options, conv_kwargs, index,
                      layer_values)

EPILOG = """\
examples:
  convmatrix neuron 2x1x2x2 1x3x3 1
      output neuron 1 of a 2x1x2x2 layer: y[0,0,1] = a*x[0,0,1] + b*x[0,0,2] + ...
  convmatrix neuron 2x1x2x2 1x3x3 1,1,1
      the same by (channel, row, column): neuron 7
  convmatrix neuron 3x1x3x3 1x5x5 0 --padding 1 --padding-mode reflect
      folded taps show as sums such as (a+c)
  convmatrix neuron 2x1x2x2 1x3x3 4 --feeds
      the reverse: the output neurons that input neuron 4 feeds, with which kernel entries
  convmatrix neuron 3x1x3x3 1x5x5 0 --kernel sharpen --bias 0.5
      the formula also with its numbers: y[0,0,0] = ... + 5*x[0,1,1] + ... + 0.5

INDEX is a flat index (the row of M; with --feeds the column) or channel,*position
in array-axis order (for 2-D maps: channel,row,column).
"""


def register(sub) -> None:
    p = add_command(sub, "neuron", help="explain one neuron of a layer: its inputs, weights and receptive field",
        description="Explain one output neuron (one row of M): the input neurons it reads, the kernel "
        "entry that weights each, its formula and its receptive-field box. With --feeds: one input neuron "
        "(one column of M) and the output neurons it feeds.",
        epilog=EPILOG)
    add_layer_arguments(p)
    p.add_argument("index", type=index, metavar="INDEX", help="flat index or channel,*position (e.g. 0,1,1)")
    add_conv_options(p)
    p.add_argument("--feeds", action="store_true", help="INDEX is an input neuron: list what it feeds")
    add_weight_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explain.neurons import feeds, neuron

    weight, bias = layer_values(args)
    layer = args.weight_shape if weight is None else weight
    if args.feeds:
        if bias is not None:
            raise CLIError("--bias does not apply with --feeds (it belongs to output neurons)")
        print(feeds(layer, args.input_shape, args.index, **conv_kwargs(args)))
    else:
        print(neuron(layer, args.input_shape, args.index, bias=bias, **conv_kwargs(args)))
    return 0
