"""``convmatrix spectrum``: spectral norm, certified bracket and top singular values of a layer."""

from __future__ import annotations

import time

import numpy as np

from . import CLIError
from .options import add_command, add_conv_options, add_layer_arguments, conv_kwargs

EPILOG = """\
examples:
  convmatrix spectrum 64x64x3x3 64x32x32 --padding 1 --padding-mode circular
  convmatrix spectrum 16x16x3x3 16x12x12 --padding 1 -k 10 --seed 3
  convmatrix spectrum 8x4x3x3 4x16x16 --stride 2 --weight w.npy --plot spectrum.png

Without --weight the kernel is random normal with standard deviation 1/sqrt(fan-in)
(from --seed). The exact norm uses the FFT for circular layers that keep the input
size, Lanczos (ARPACK) otherwise; the bracket is certified (lower <= norm <= upper).
torch.nn.utils.spectral_norm normalises the reshaped kernel instead, printed for contrast.
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "spectrum",
        help="spectral norm, certified bracket and top singular values of a conv layer",
        description="Spectral norm (exact), a certified bracket and the top singular values of a "
        "convolution layer's matrix.",
        epilog=EPILOG)
    add_layer_arguments(p)
    add_conv_options(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weight", metavar="FILE.npy", help="the kernel, a .npy file of shape WEIGHT_SHAPE")
    src.add_argument("--seed", type=int, default=0, help="seed of the random kernel (default 0)")
    p.add_argument("-k", type=int, default=5, metavar="K", help="how many top singular values to print (default 5)")
    p.add_argument("--plot", metavar="OUT.png", help="save a plot of the singular values (all, or the top K)")
    p.set_defaults(func=run)


def _weight(args) -> np.ndarray:
    if args.weight:
        try:
            w = np.load(args.weight, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read --weight {args.weight!r}: {exc}") from None
        if tuple(w.shape) != tuple(args.weight_shape):
            raise CLIError(f"--weight {args.weight!r} has shape {'x'.join(map(str, w.shape))}, "
                           f"but WEIGHT_SHAPE is {'x'.join(map(str, args.weight_shape))}")
        return w
    fan_in = int(np.prod(args.weight_shape[1:]))
    return np.random.default_rng(args.seed).standard_normal(args.weight_shape) / np.sqrt(fan_in)


def run(args) -> int:
    from ..core.matrix import conv_geometry, describe
    from ..analysis.spectral import (is_block_circulant, kernel_norm_vs_layer_norm, plot_spectrum,
                            singular_values, spectral_norm_bounds)

    kw = conv_kwargs(args)
    geom = conv_geometry(args.weight_shape, args.input_shape, **kw)  # validates before any work
    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    w = _weight(args)
    print(f"layer: weight {'x'.join(map(str, w.shape))}, {describe(geom, 8)}")
    circ = is_block_circulant(w.shape, args.input_shape, **kw)
    t = time.perf_counter()
    both = kernel_norm_vs_layer_norm(w, args.input_shape, **kw)
    print(f"spectral norm ||M||_2: {both.layer:.10g}  ({'FFT, exact' if circ else 'Lanczos'}, "
          f"{time.perf_counter() - t:.2f} s)")
    t = time.perf_counter()
    br = spectral_norm_bounds(w, args.input_shape, **kw)
    print(f"certified bracket: {br}  ({time.perf_counter() - t:.2f} s)")
    print(f"torch.nn.utils.spectral_norm's number (reshaped kernel): {both.reshaped_kernel:.10g} "
          f"(ratio layer/kernel {both.layer / both.reshaped_kernel:.4g})")
    k = min(args.k, min(geom.matrix_shape))
    t = time.perf_counter()
    top = singular_values(w, args.input_shape, k=k, **kw)
    print(f"top {k} singular values ({time.perf_counter() - t:.2f} s): "
          + " ".join(f"{v:.6g}" for v in top))
    if args.plot:
        plot_k = None if circ or np.prod(geom.matrix_shape) * 16 <= 2**28 else k
        plot_spectrum(w, args.input_shape, k=plot_k, path=args.plot, **kw)
        print(f"plot written to {args.plot}")
    return 0
