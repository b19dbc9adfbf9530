"""``convmatrix explore``: the interactive explorer, served on 127.0.0.1 or written as one page."""

from __future__ import annotations

from .. import notation
from . import CLIError
from .options import add_command, add_conv_options, add_weight_options, conv_kwargs, layer_values

EPILOG = """\
examples:
  convmatrix explore                                the 2x1x2x2 example kernel on 1x3x3
  convmatrix explore 2x1x2x2 1x3x3                  the same, named explicitly
  convmatrix explore 4x2x3x3 2x8x8 --stride 2 --padding 1 --padding-mode reflect
  convmatrix explore 2x1x2x2 1x3x3 -o seed.html     one self-contained page (works offline)
  convmatrix explore 3x1x3x3 1x5x5 --kernel sharpen --bias 1
                                                    numbers: the sharpen kernel in every filter
  convmatrix explore 1x8x8 --layer 4x1x3x3:padding=1 --layer 4x2x3x3:stride=2:groups=2
                                                    a stack: click a deep neuron for its input set
  convmatrix explore model.onnx -o model.html       the convolutional part of an ONNX model:
                                                    its Conv/ConvTranspose and pooling nodes in order
                                                    (element-wise nodes skipped, the head left out)
layer specs (--layer): WEIGHT_SHAPE[:option=value...], options as the conv options without
'--' (stride, padding, dilation, groups, padding_mode, output_padding) and 'transposed';
a value for several dimensions joins ints with commas (stride=2,1).
"""

_DEFAULTS = dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", transposed=False,
                 output_padding=0)


def register(subparsers) -> None:
    p = add_command(subparsers, "explore", help="the interactive explorer in the browser",
        description="Serve the interactive explorer of a conv layer (or a stack) on 127.0.0.1 and open "
        "it in the browser; or write it as one self-contained page with -o.",
        epilog=EPILOG)
    p.add_argument("shapes", nargs="*", metavar="WEIGHT_SHAPE INPUT_SHAPE",
                   help="weight and input shapes (like 2x1x2x2 1x3x3); with --layer only INPUT_SHAPE; "
                        "or one MODEL.onnx")
    add_conv_options(p)
    add_weight_options(p)
    p.add_argument("--layer", action="append", default=[], metavar="SPEC",
                   help="one layer of a stack, WEIGHT_SHAPE[:option=value...] (repeat for more layers)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open the browser")
    p.add_argument("-o", "--output", metavar="PAGE.html", help="write one self-contained page instead of serving")
    p.set_defaults(func=run)


def parse_layer(text: str) -> tuple[tuple[int, ...], dict]:
    """``"4x1x3x3:stride=2:padding=1"`` -> (weight shape, conv keywords) of one layer of a stack."""
    try:
        return notation.layer(text)
    except ValueError as exc:
        raise CLIError(f"--layer {text!r}: {exc}") from None


def run(args) -> int:
    import convmatrix

    kw = conv_kwargs(args)
    values = any(getattr(args, k, None) is not None for k in ("weight", "kernel", "bias"))
    if len(args.shapes) == 1 and args.shapes[0].lower().endswith(".onnx"):
        if args.layer or kw != _DEFAULTS or values:
            raise CLIError("a model brings its own layers and values: give MODEL.onnx without --layer, "
                           "conv options, --weight, --kernel or --bias")
        ex = convmatrix.explore(args.shapes[0])
    elif args.layer:
        if len(args.shapes) != 1:
            raise CLIError("with --layer give exactly one positional shape, the input shape (like 1x8x8)")
        if kw != _DEFAULTS:
            raise CLIError("with --layer put the conv options inside each layer spec (like 4x1x3x3:stride=2)")
        if values:
            raise CLIError("--weight, --kernel and --bias are for one layer (WEIGHT_SHAPE INPUT_SHAPE), not --layer")
        ex = convmatrix.explore([parse_layer(t) for t in args.layer], _shape(args.shapes[0]))
    elif not args.shapes:
        if kw != _DEFAULTS or values:
            what = "conv options" if kw != _DEFAULTS else "--weight, --kernel and --bias"
            raise CLIError(f"{what} need WEIGHT_SHAPE INPUT_SHAPE (like 2x1x2x2 1x3x3)")
        ex = convmatrix.explore()
    elif len(args.shapes) == 2:
        args.weight_shape, input_shape = (_shape(t) for t in args.shapes)
        weight, bias = layer_values(args)
        ex = convmatrix.explore(args.weight_shape if weight is None else weight, input_shape, bias=bias,
                                      **{k: v for k, v in kw.items() if v != _DEFAULTS[k]})
    else:
        raise CLIError(f"give WEIGHT_SHAPE INPUT_SHAPE (two shapes) or none, got {len(args.shapes)}")
    if args.port < 0 or args.port > 65535:
        raise CLIError(f"--port must be from 0 to 65535, got {args.port}")
    notes = ex.spec.get("model")
    if notes:
        print(f"{notes['source']}: {len(ex.spec['layers'])} layers; skipped (element-wise): "
              f"{', '.join(notes['skipped']) or 'none'}; left out (after the convolutional part): "
              f"{', '.join(notes['left_out']) or 'none'}")
    if args.output is not None:
        if not args.output:
            raise CLIError("-o needs a file name, got ''")
        ex.save(args.output)
        print(f"wrote {args.output}: {ex.shapes()}, one self-contained page")
        return 0
    try:
        ex.serve(args.port, open_browser=not args.no_browser, block=True)
    except KeyboardInterrupt:
        pass
    return 0


def _shape(text: str):
    try:
        return notation.shape(text)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
