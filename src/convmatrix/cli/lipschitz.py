"""``convmatrix lipschitz``: an upper bound on a network's Lipschitz constant, layer by layer."""

from __future__ import annotations


EPILOG = """\
examples:
  convmatrix lipschitz model.onnx
  convmatrix lipschitz cifar_base_kw.onnx

The bound is in the 2-norm: each linear layer's exact spectral norm (batch norm folded in first),
each activation's constant, max pooling's sqrt(windows per input), and residual blocks whose
branch is affine bounded by the exact norm of I + A.
"""

from .options import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "lipschitz",
        help="an upper bound on an ONNX network's Lipschitz constant, with a per-layer table",
        description="An upper bound on the Lipschitz constant (2-norm) of an ONNX network, with the "
        "factor and the running bound of every layer.",
        epilog=EPILOG)
    p.add_argument("model", metavar="MODEL.onnx", help="the network, an ONNX file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.lipschitz import lipschitz

    print(lipschitz(args.model))
    return 0
