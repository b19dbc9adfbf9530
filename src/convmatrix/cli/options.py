"""Argument types shared by the commands: shapes (``2x1x2x2``), per-dimension ints
(``2,1``), padding (``1``, ``1,2``, ``same``, ``valid``) and the conv options group."""

from __future__ import annotations

import argparse

from .. import notation
from . import CLIError
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


# ------------------------------------------------------------------ layer values
def add_weight_options(parser: argparse.ArgumentParser) -> None:
    """``--weight FILE``, ``--kernel SPEC`` and ``--bias B``: numbers for a layer given by its shapes."""
    g = parser.add_argument_group("layer values (default: kernel entries as names)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--weight", metavar="FILE",
                     help="the weight, of exactly WEIGHT_SHAPE: a .npy file, or a .pt/.pth file holding one tensor")
    src.add_argument("--kernel", metavar="SPEC",
                     help="one kernel repeated over every (output, input) channel pair: numbers with ',' between "
                     "entries, ';' between rows, '/' between 3-D slices (\"0,-1,0;-1,5,-1;0,-1,0\"), or one of "
                     + ", ".join(notation.KERNEL_NAMES))
    g.add_argument("--bias", metavar="B", help="one number, or one per output channel joined by ','")


def read_array(path: str, option: str = "--weight"):
    """The array in a ``.npy`` file, or the one tensor in a ``.pt``/``.pth`` file, as a NumPy array.

    Any file that cannot be read as one (empty, truncated, pickled objects, a module, a dict) is a
    :class:`CLIError` naming ``option`` and the file. Quantised and sparse tensors are read as the
    dense values they stand for; bfloat16 and float8 tensors as float32 (NumPy has no such dtype).

    >>> read_array("missing.npy")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    CLIError: --weight missing.npy: cannot read it as a .npy file (No such file or directory)
    """
    import numpy as np

    if path.lower().endswith((".pt", ".pth")):
        return _read_tensor(path, option)
    if not path.lower().endswith(".npy"):
        raise CLIError(f"{option} takes a .npy, .pt or .pth file, got {path!r}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is not a readable array
        raise CLIError(f"{option} {path}: cannot read it as a .npy file ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_tensor(path: str, option: str):
    import warnings

    from .._optional import require

    torch = require("torch", extra="torch", feature=f"{option} FILE.pt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation notes are not the user's business
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a file torch cannot read safely is a bad file
        reason = "it holds more than tensors" if "Weights only load failed" in str(exc) else _reason(exc)
        raise CLIError(f"{option} {path}: cannot read it as a torch file holding one tensor ({reason})") from None
    if not isinstance(value, torch.Tensor):
        raise CLIError(f"{option} {path} must hold one tensor, it holds a {type(value).__name__}")
    value = value.detach()
    if value.is_quantized:
        value = value.dequantize()
    if value.layout != torch.strided:
        value = value.to_dense()
    if value.dtype in (torch.bfloat16,) or "float8" in str(value.dtype):
        value = value.float()
    try:
        return value.cpu().numpy()
    except (TypeError, RuntimeError) as exc:
        raise CLIError(f"{option} {path}: a tensor of dtype {value.dtype} has no NumPy equivalent ({_reason(exc)})") from None


def layer_values(args: argparse.Namespace):
    """``(weight, bias)`` from ``--weight``/``--kernel``/``--bias`` (each None when not given).

    The weight has exactly ``args.weight_shape``; the bias one number per output channel.
    """
    import numpy as np

    wshape = tuple(args.weight_shape)
    weight = None
    if getattr(args, "weight", None) is not None:
        weight = read_array(args.weight)
        if weight.shape != wshape:
            raise CLIError(f"--weight {args.weight} has shape {'x'.join(map(str, weight.shape))}, "
                           f"but WEIGHT_SHAPE is {'x'.join(map(str, wshape))}")
    elif getattr(args, "kernel", None) is not None:
        try:
            one = notation.kernel(args.kernel, wshape[2:])
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        weight = np.broadcast_to(one, wshape).copy()
    bias = None
    if getattr(args, "bias", None) is not None:
        try:
            values = np.array(notation.numbers(args.bias, "--bias"))
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        groups = getattr(args, "groups", 1) or 1
        out_channels = wshape[1] * groups if getattr(args, "transposed", False) else wshape[0]
        if values.size not in (1, out_channels):
            raise CLIError(f"--bias needs one number or {out_channels} (one per output channel), got {values.size}")
        bias = np.broadcast_to(values, (out_channels,)).copy()
    return weight, bias
