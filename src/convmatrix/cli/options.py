"""Argument types shared by the commands: shapes (``2x1x2x2``), per-dimension ints
(``2,1``), padding (``1``, ``1,2``, ``same``, ``valid``) and the conv options group."""

from __future__ import annotations

import argparse

from .. import notation
from ..core.geometry import PADDING_MODES


def _argument_type(parse):
    """An argparse type from a notation parser: its ValueError becomes argparse's one-line error."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__
    convert.__doc__ = parse.__doc__
    return convert


shape = _argument_type(notation.shape)
int_or_tuple = _argument_type(notation.int_or_tuple)
padding = _argument_type(notation.padding)
window = _argument_type(notation.window)
index = _argument_type(notation.index)


def add_conv_options(parser: argparse.ArgumentParser) -> None:
    """The conv options every layer-taking command accepts."""
    g = parser.add_argument_group("convolution options (as in torch.nn.ConvNd)")
    g.add_argument("--stride", type=int_or_tuple, default=1, metavar="S", help="int or one per dimension, e.g. 2,1")
    g.add_argument("--padding", type=padding, default=0, metavar="P", help="int, one per dimension, 'same' or 'valid'")
    g.add_argument("--dilation", type=int_or_tuple, default=1, metavar="D")
    g.add_argument("--groups", type=int, default=1, metavar="G")
    g.add_argument("--padding-mode", choices=PADDING_MODES, default="zeros")
    g.add_argument("--transposed", action="store_true", help="the layer is a transposed convolution")
    g.add_argument("--output-padding", type=int_or_tuple, default=0, metavar="O", help="transposed layers only")


def conv_kwargs(args: argparse.Namespace) -> dict:
    """The conv keyword arguments of parsed options, for conv_matrix and friends."""
    return dict(
        stride=args.stride,
        padding=args.padding,
        dilation=args.dilation,
        groups=args.groups,
        padding_mode=args.padding_mode,
        transposed=args.transposed,
        output_padding=args.output_padding,
    )


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command parser whose ``--help`` keeps the epilog's examples as written."""
    return subparsers.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_layer_arguments(parser: argparse.ArgumentParser, weight_example: str = "2x1x2x2",
                        input_example: str = "1x3x3") -> None:
    """The WEIGHT_SHAPE and INPUT_SHAPE positionals of the layer-taking commands."""
    parser.add_argument("weight_shape", type=shape, metavar="WEIGHT_SHAPE",
                        help=f"e.g. {weight_example} (C_out x C_in/groups x kernel; transposed: C_in x C_out/groups x kernel)")
    parser.add_argument("input_shape", type=shape, metavar="INPUT_SHAPE",
                        help=f"e.g. {input_example} (channels x spatial, no batch axis)")
