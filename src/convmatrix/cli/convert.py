"""``convmatrix convert IN.onnx -o OUT.onnx``: a CNN as the exactly equivalent FC ReLU network.

Parsing only: the pipeline is :func:`convmatrix.network.convert.convert`, whose report this prints.
"""

from __future__ import annotations

import argparse
import sys

from .options import add_command, shape

EPILOG = """\
examples:
  convmatrix convert cnn.onnx -o fc.onnx                 Gemm+Relu chain, checked on 10 random inputs
  convmatrix convert cnn.onnx -o fc.nnet                 NNet text file (format from the extension)
  convmatrix convert cnn.onnx -o fc.pt --check 100       torch state dict + layer sizes
  convmatrix convert cnn.onnx -o fc.npz                  sparse layers (scipy CSR arrays)
  convmatrix convert big.onnx -o fc.onnx --max-bytes 4GB
  convmatrix convert classifier.onnx -o fc.onnx --drop-final softmax
  convmatrix convert fcn.onnx -o fc.onnx --input-shape 3x32x32    dynamic height and width

The output computes exactly what the input computes (to float32 rounding); its input
and output keep the original names, shapes and order, so VNN-LIB properties written
for the original apply unchanged.
"""


def byte_size(text: str) -> int:
    """``"512MB"`` -> 512000000 (:func:`convmatrix.core.geometry.parse_bytes`), as an argparse type."""
    from ..core.geometry import parse_bytes

    try:
        return parse_bytes(text, "--max-bytes")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    p = add_command(subparsers, "convert", help="convert a CNN (ONNX) into an exactly equivalent fully connected ReLU network",
        description="Read a convolutional network from ONNX and write one sequential chain of "
        "Flatten/Reshape, Gemm and Relu nodes (or pt / NNet / npz) that computes exactly the same "
        "function. Prints a table of the layers and the largest difference between original "
        "(onnxruntime) and result on random inputs.",
        epilog=EPILOG)
    p.add_argument("input", metavar="IN.onnx", help="the ONNX model to convert")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    p.add_argument("--format", choices=("onnx", "pt", "nnet", "npz"), default=None,
                   help="output format (default: from OUT's extension, else onnx)")
    p.add_argument("--check", type=int, default=10, metavar="N",
                   help="compare original and result on N random inputs (default 10)")
    p.add_argument("--max-bytes", type=byte_size, default=None, metavar="SIZE",
                   help="refuse outputs larger than SIZE (default 2GB dense; npz: 2GB sparse)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-axis", dest="batch_axis", action="store_true", default=None,
                       help="the input's leading axis is a batch axis (default: when it is dynamic or of size 1)")
    batch.add_argument("--no-batch-axis", dest="batch_axis", action="store_false",
                       help="the input's leading axis is part of the sample")
    p.add_argument("--input-shape", type=shape, default=None, metavar="SHAPE",
                   help="the sample's shape without the batch axis (e.g. 3x224x224), for inputs with dynamic sizes")
    p.add_argument("--drop-final", default="", metavar="OP[,OP]",
                   help="drop a final strictly increasing operation, keeping the argmax: softmax, logsoftmax, "
                        "sigmoid, tanh, ...")
    p.add_argument("--no-simplify", dest="simplify", action="store_false",
                   help="write the chain as lowered, not the smallest exactly equivalent one found")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def convert_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`convmatrix.network.convert.convert` from the parsed options."""
    return dict(format=args.format, check=args.check, seed=args.seed, max_bytes=args.max_bytes,
                simplify=args.simplify, batch_axis=args.batch_axis, input_shape=args.input_shape,
                drop_final=args.drop_final)


def run(args) -> int:
    from ..network.check import ConversionError
    from ..network.convert import convert

    if args.check < 0:
        raise ValueError(f"--check must be >= 0, got {args.check}")
    try:
        report = convert(args.input, args.output, **convert_kwargs(args))
    except ConversionError as exc:  # the written network disagrees with the original: a bug, exit 1
        print(f"convmatrix convert: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(report)
    return 0
