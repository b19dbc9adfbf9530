"""Argument types shared by the commands: shapes (``2x1x2x2``), per-dimension ints
(``2,1``), padding (``1``, ``1,2``, ``same``, ``valid``) and the conv options group."""

from __future__ import annotations

import argparse

from ..core.geometry import PADDING_MODES


def shape(text: str) -> tuple[int, ...]:
    """``"2x1x2x2"`` -> ``(2, 1, 2, 2)``."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is positive ints joined by 'x' (like 2x1x2x2), got {text!r}")
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"a shape is positive ints joined by 'x' (like 2x1x2x2), got {text!r}")
    return dims


def int_or_tuple(text: str) -> int | tuple[int, ...]:
    """``"2"`` -> ``2``; ``"2,1"`` -> ``(2, 1)``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or ints joined by commas (like 2,1), got {text!r}")
    return values[0] if len(values) == 1 else values


def padding(text: str):
    """An int, ints joined by commas, ``same`` or ``valid``."""
    if text in ("same", "valid"):
        return text
    try:
        return int_or_tuple(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"padding is an int, ints joined by commas, 'same' or 'valid', got {text!r}")


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


def window(text: str) -> tuple[int, int]:
    """``"2:5"`` -> ``(2, 5)``: rows or columns 2, 3 and 4."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a window is START:STOP with ints (like 0:10), got {text!r}")
    return a, b


def index(text: str) -> int | tuple[int, ...]:
    """A neuron: ``"7"`` (flat) or ``"1,1,1"`` (channel, *position)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a neuron is a flat index or channel,*position ints joined by commas (like 0,1,1), got {text!r}"
        )
    return values[0] if len(values) == 1 else values


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
