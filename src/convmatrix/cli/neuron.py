"""``convmatrix neuron``: what one output neuron of a layer reads (or one input neuron feeds),
or one neuron of any layer of a model."""

from __future__ import annotations

from .. import notation
from ..network.activations import ACTIVATION_NAMES
from . import CLIError
from .options import add_command, add_conv_options, add_weight_options, conv_kwargs, layer_values

EPILOG = """\
examples:
  convmatrix neuron 2x1x2x2 1x3x3 1
      output neuron 1 of a 2x1x2x2 layer: y[0,0,1] = a*x[0,0,1] + b*x[0,0,2] + ...
  convmatrix neuron 2x1x2x2 1x3x3 1,1,1
      the same by (channel, row, column): neuron 7
  convmatrix neuron 2x1x2x2 1x3x3 1 --activation relu
      and its output after a ReLU: a[0,0,1] = ReLU(y[0,0,1])
  convmatrix neuron 3x1x3x3 1x5x5 0 --padding 1 --padding-mode reflect
      folded taps show as sums such as (a+c)
  convmatrix neuron 2x1x2x2 1x3x3 4 --feeds
      the reverse: the output neurons that input neuron 4 feeds, with which kernel entries
  convmatrix neuron 3x1x3x3 1x5x5 0 --kernel sharpen --bias 0.5
      the formula also with its numbers: y[0,0,0] = ... + 5*x[0,1,1] + ... + 0.5
  convmatrix neuron model.onnx 5 --layer 3
      neuron 5 of layer 3 of a model (a name or a number; a wrong one lists the layers):
      its row of that layer's matrix, its activation and the network inputs it depends on

INDEX is a flat index (the row of M; with --feeds the column) or channel,*position
in array-axis order (for 2-D maps: channel,row,column).
"""


def register(sub) -> None:
    p = add_command(sub, "neuron", help="explain one neuron of a layer: its inputs, weights and receptive field",
        description="Explain one output neuron (one row of M): the input neurons it reads, the kernel "
        "entry that weights each, its formula and its receptive-field box; with --activation also its "
        "output after the activation. With --feeds: one input neuron (one column of M) and the output "
        "neurons it feeds. With MODEL.onnx INDEX --layer L: a neuron of any layer of a model.",
        epilog=EPILOG)
    p.add_argument("operands", nargs="+", metavar="WEIGHT_SHAPE INPUT_SHAPE INDEX | MODEL.onnx INDEX",
                   help="a layer (e.g. 2x1x2x2 1x3x3) and the neuron (flat index or channel,*position, e.g. "
                   "0,1,1); or an ONNX model and the neuron of --layer")
    add_conv_options(p)
    p.add_argument("--feeds", action="store_true", help="INDEX is an input neuron: list what it feeds")
    p.add_argument("--activation", metavar="NAME", choices=sorted({k for k in ACTIVATION_NAMES if "_" not in k}),
                   help="the activation that follows the layer (relu, sigmoid, tanh, leakyrelu, ...)")
    p.add_argument("--layer", metavar="L", help="with MODEL.onnx: the layer's name or number in the model")
    add_weight_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explain.neurons import feeds, neuron

    ops = args.operands
    if len(ops) == 2:
        if args.layer is None:
            raise ValueError("MODEL.onnx INDEX needs --layer L (the layer's name or number in the model)")
        if args.weight or args.kernel or args.bias is not None:
            raise ValueError("--weight, --kernel and --bias are for a layer given by its shapes; a model has its own")
        print(neuron(ops[0], None, notation.index(ops[1]), layer=args.layer))
        return 0
    if len(ops) != 3:
        raise ValueError(f"give WEIGHT_SHAPE INPUT_SHAPE INDEX (or MODEL.onnx INDEX --layer L), got {len(ops)} "
                         f"operand(s): {' '.join(ops)}")
    if args.layer is not None:
        raise ValueError("--layer is for a model (MODEL.onnx INDEX --layer L), not for a single layer")
    args.weight_shape, input_shape, index = notation.shape(ops[0]), notation.shape(ops[1]), notation.index(ops[2])
    weight, bias = layer_values(args)
    layer = args.weight_shape if weight is None else weight
    if args.feeds:
        if args.activation:
            raise ValueError("--activation is for an output neuron, not with --feeds")
        if bias is not None:
            raise CLIError("--bias does not apply with --feeds (it belongs to output neurons)")
        print(feeds(layer, input_shape, index, **conv_kwargs(args)))
        return 0
    print(neuron(layer, input_shape, index, bias=bias, activation=args.activation, **conv_kwargs(args)))
    return 0
