"""``convmatrix explore``: the interactive explorer, served on 127.0.0.1 or written as one page."""

from __future__ import annotations

import argparse

from . import CLIError
from .options import add_command, add_conv_options, conv_kwargs, shape

EPILOG = """\
examples:
  convmatrix explore                                the seed question's 2x1x2x2 kernel on 1x3x3
  convmatrix explore 2x1x2x2 1x3x3                  the same, named explicitly
  convmatrix explore 4x2x3x3 2x8x8 --stride 2 --padding 1 --padding-mode reflect
  convmatrix explore 2x1x2x2 1x3x3 -o seed.html     one self-contained page (works offline)
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
    p.add_argument("--layer", action="append", default=[], metavar="SPEC",
                   help="one layer of a stack, WEIGHT_SHAPE[:option=value...] (repeat for more layers)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open the browser")
    p.add_argument("-o", "--output", metavar="PAGE.html", help="write one self-contained page instead of serving")
    p.set_defaults(func=run)


def parse_layer(text: str) -> dict:
    """``"4x1x3x3:stride=2:padding=1"`` -> a layer spec for the explorer."""
    from ..explorer.data import CONV_FIELDS, layer_spec

    head, *opts = text.split(":")
    try:
        spec = layer_spec(shape(head))
    except argparse.ArgumentTypeError as exc:
        raise CLIError(f"--layer {text!r}: {exc}") from None
    for opt in opts:
        key, eq, value = opt.partition("=")
        key = key.replace("-", "_")
        if key == "transposed" and not eq:
            spec["transposed"] = True
        elif key in CONV_FIELDS and key != "transposed" and eq:
            spec[key] = value
        else:
            raise CLIError(f"--layer {text!r}: options are {', '.join(CONV_FIELDS)} as option=value "
                           f"('transposed' alone), got {opt!r}")
    return spec


def run(args) -> int:
    from ..explorer import Explorer
    from ..explorer.data import default_spec, layer_spec

    kw = conv_kwargs(args)
    weights = biases = notes = None
    if len(args.shapes) == 1 and args.shapes[0].lower().endswith(".onnx"):
        if args.layer or kw != _DEFAULTS:
            raise CLIError("a model brings its own layers: give MODEL.onnx without --layer or conv options")
        from ..explorer.models import from_onnx

        model = from_onnx(args.shapes[0])
        spec, weights, biases, notes = model.spec, model.weights, model.biases, model.spec["model"]
    elif args.layer:
        if len(args.shapes) != 1:
            raise CLIError("with --layer give exactly one positional shape, the input shape (like 1x8x8)")
        if kw != _DEFAULTS:
            raise CLIError("with --layer put the conv options inside each layer spec (like 4x1x3x3:stride=2)")
        spec = {"input": args.shapes[0], "layers": [parse_layer(t) for t in args.layer]}
    elif not args.shapes:
        if kw != _DEFAULTS:
            raise CLIError("conv options need WEIGHT_SHAPE INPUT_SHAPE (like 2x1x2x2 1x3x3)")
        spec = default_spec()
    elif len(args.shapes) == 2:
        wshape, ishape = (_shape(t) for t in args.shapes)
        spec = {"input": "x".join(map(str, ishape)),
                "layers": [layer_spec(wshape, **{k: v for k, v in kw.items() if v != _DEFAULTS[k]})]}
    else:
        raise CLIError(f"give WEIGHT_SHAPE INPUT_SHAPE (two shapes) or none, got {len(args.shapes)}")
    if args.port < 0 or args.port > 65535:
        raise CLIError(f"--port must be from 0 to 65535, got {args.port}")
    explorer = Explorer(spec, weights, biases)  # validates every layer: a refusal is a one-line error
    if notes:
        print(f"{notes['source']}: {len(spec['layers'])} layers; skipped (element-wise): "
              f"{', '.join(notes['skipped']) or 'none'}; left out (after the convolutional part): "
              f"{', '.join(notes['left_out']) or 'none'}")
    if args.output:
        explorer.save(args.output)
        shapes = " -> ".join("x".join(map(str, s)) for _, s in explorer.stack.maps)
        print(f"wrote {args.output}: {shapes}, one self-contained page")
        return 0
    try:
        explorer.serve(args.port, open_browser=not args.no_browser, block=True)
    except KeyboardInterrupt:
        pass
    return 0


def _shape(text: str):
    try:
        return shape(text)
    except argparse.ArgumentTypeError as exc:
        raise CLIError(str(exc)) from None
