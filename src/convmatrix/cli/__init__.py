"""The ``convmatrix`` command: one sub-command per module of this package.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed arguments, returning an exit status).
Shared argument types and the conv options live in :mod:`convmatrix.cli.options`.
Bad arguments or files give a one-line error on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .._optional import missing_extra

# Command modules, in the order ``--help`` lists them.
COMMANDS = [
    "show",
    "neuron",
    "plot",
    "explore",
    "build",
    "convert",
    "spectrum",
    "lipschitz",
]

EPILOG = """\
examples:
  convmatrix show 2x1x2x2 1x3x3            the 8x9 matrix of a 2x1x2x2 kernel, entries as letters
  convmatrix show 3x1x3x3 1x5x5 --kernel sharpen --rows 0:2
                                           two rows of M with a sharpen kernel's numbers
  convmatrix show 3x1x3x3 1x5x5 --padding 1 --stride 2
  convmatrix convert model.onnx -o mlp.onnx
  convmatrix build 64x64x3x3 64x224x224 --padding 1 --out conv.zarr --block-bytes 512MB
  convmatrix spectrum 64x64x3x3 64x32x32 --padding 1 --padding-mode circular
  convmatrix lipschitz model.onnx
run 'convmatrix COMMAND --help' for the options and examples of each command.
"""


class CLIError(Exception):
    """An error to report as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad arguments: one line on stderr, exit status 2
    (sub-command parsers inherit the class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convmatrix",
        description="A convolutional layer as the fully connected layer it is: exact sparse matrices "
        "of convolutions, explained, converted and analysed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"convmatrix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f".{name}", __name__).register(sub)
    return parser


def one_line(text: str, limit: int = 2000) -> str:
    """A message as one line (newlines become spaces), cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 internal error, 130 interrupted).

    No traceback reaches the terminal unless ``--debug`` is given: bad arguments,
    files and sizes are one line on stderr with status 2, an unexpected error is
    one line saying so with status 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        print("convmatrix: error: a command is required (see convmatrix --help)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"convmatrix {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns every error into a line
        extra = missing_extra(exc) if isinstance(exc, ImportError) else None
        if extra is not None:
            print(f"{args.command} needs the '{extra}' extra: pip install 'convmatrix[{extra}]'", file=sys.stderr)
            return 2
        if args.debug:
            raise
        expected = isinstance(exc, (CLIError, ValueError, TypeError, OSError, MemoryError, OverflowError))
        what = one_line(exc) or type(exc).__name__
        if isinstance(exc, (MemoryError, OverflowError)):
            what = f"too large for this machine ({type(exc).__name__}: {what})"
        if expected:
            print(f"convmatrix {args.command}: error: {what}", file=sys.stderr)
            return 2
        print(f"convmatrix {args.command}: internal error ({type(exc).__name__}: {what}); "
              "run again with --debug for the traceback", file=sys.stderr)
        return 1
