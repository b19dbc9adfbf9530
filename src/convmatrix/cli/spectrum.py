"""``convmatrix spectrum``: spectral norm, certified bracket and top singular values of a layer."""

from __future__ import annotations

import math
import time

import numpy as np

from . import CLIError
from .options import add_command, add_conv_options, add_layer_arguments, conv_kwargs, read_array

EPILOG = """\
examples:
  convmatrix spectrum 64x64x3x3 64x32x32 --padding 1 --padding-mode circular
  convmatrix spectrum 16x16x3x3 16x12x12 --padding 1 -k 10 --seed 3
  convmatrix spectrum 8x4x3x3 4x16x16 --stride 2 --weight w.npy --plot spectrum.png
  convmatrix spectrum 512x512x3x3 512x224x224 --padding 1 -k 1 --bracket-only

Without --weight the kernel is random normal with standard deviation 1/sqrt(fan-in)
(from --seed). The exact values use the FFT for circular layers that keep the input
size, a dense SVD for small matrices, Lanczos (ARPACK) otherwise; the bracket is
certified (lower <= norm <= upper). torch.nn.utils.spectral_norm normalises the
reshaped kernel instead, printed for contrast.

Lanczos on a large layer can take long: its time is estimated first (one product
with M^T M timed on a small grid, scaled), and a run estimated past --max-minutes
is refused at once with the estimate. Progress bars show on a terminal (--progress:
always).
"""

#: Power-iteration steps of the bracket's lower end (spectral_norm_bounds' default).
BRACKET_STEPS = 10


def register(subparsers) -> None:
    p = add_command(subparsers, "spectrum",
        help="spectral norm, certified bracket and top singular values of a conv layer",
        description="Spectral norm (exact), a certified bracket and the top singular values of a "
        "convolution layer's matrix.",
        epilog=EPILOG)
    add_layer_arguments(p)
    add_conv_options(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weight", metavar="FILE", help="the kernel, of exactly WEIGHT_SHAPE: a .npy file, or a .pt/.pth file holding one tensor")
    src.add_argument("--seed", type=int, default=0, help="seed of the random kernel (default 0)")
    p.add_argument("-k", type=int, default=5, metavar="K", help="how many top singular values to print (default 5)")
    p.add_argument("--plot", metavar="OUT.png", help="save a plot of the singular values (all, or the top K)")
    p.add_argument("--bracket-only", action="store_true",
                   help="only the certified bracket (10 power-iteration steps), not the exact values")
    p.add_argument("--max-minutes", type=float, default=10.0, metavar="M",
                   help="refuse exact values estimated to take longer (default 10)")
    p.add_argument("--progress", action="store_true", default=None,
                   help="show progress bars even when stderr is not a terminal")
    p.set_defaults(func=run)


def _weight(args) -> np.ndarray:
    if args.weight is not None:
        w = read_array(args.weight)
        if tuple(w.shape) != tuple(args.weight_shape):
            raise CLIError(f"--weight {args.weight!r} has shape {'x'.join(map(str, w.shape))}, "
                           f"but WEIGHT_SHAPE is {'x'.join(map(str, args.weight_shape))}")
        return w
    fan_in = int(np.prod(args.weight_shape[1:]))
    return np.random.default_rng(args.seed).standard_normal(args.weight_shape) / np.sqrt(fan_in)


def _check_time(est, k: int, args) -> None:
    """Refuse, before any long work, exact values estimated past ``--max-minutes``."""
    if args.bracket_only or est.seconds <= 60 * args.max_minutes:
        return
    bracket_s = BRACKET_STEPS * est.seconds_per_product
    raise CLIError(
        f"the exact top {k} singular value{'s' if k > 1 else ''} of this layer need{'' if k > 1 else 's'} "
        f"{est}, more than --max-minutes {args.max_minutes:g}. Pass --max-minutes "
        f"{math.ceil(2 * est.seconds / 60)} to wait for it (progress is shown on a terminal), or --bracket-only for the certified bracket"
        + (f" ({BRACKET_STEPS} products, about {bracket_s:.0f} s)" if est.route == "Lanczos" else ""))


def run(args) -> int:
    from ..core.matrix import conv_geometry, describe
    from ..analysis.spectral import (cost_estimate, plot_spectrum, reshaped_kernel_norm, singular_values,
                                     spectral_norm_bounds)

    kw = conv_kwargs(args)
    geom = conv_geometry(args.weight_shape, args.input_shape, **kw)  # validates before any work
    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    if not args.max_minutes > 0:
        raise CLIError(f"--max-minutes must be positive, got {args.max_minutes:g}")
    w = _weight(args)
    k = min(args.k, min(geom.matrix_shape))
    print(f"layer: weight {'x'.join(map(str, w.shape))}, {describe(geom, 8)}")
    est = cost_estimate(w, args.input_shape, k=k, **kw)
    _check_time(est, k, args)
    if est.route == "Lanczos" and not args.bracket_only:
        print(f"exact values by {est}", flush=True)
    top = None
    if not args.bracket_only:
        t = time.perf_counter()
        top = singular_values(w, args.input_shape, k=k, progress=args.progress, **kw)
        label = "FFT, exact" if est.route == "FFT" else est.route
        print(f"spectral norm ||M||_2: {top[0]:.10g}  ({label}, {time.perf_counter() - t:.2f} s)", flush=True)
    t = time.perf_counter()
    br = spectral_norm_bounds(w, args.input_shape, iterations=BRACKET_STEPS, progress=args.progress, **kw)
    print(f"certified bracket: {br}  ({time.perf_counter() - t:.2f} s)")
    kernel = reshaped_kernel_norm(w, transposed=geom.transposed)
    layer = top[0] if top is not None else br.lo
    print(f"torch.nn.utils.spectral_norm's number (reshaped kernel): {kernel:.10g} "
          f"(ratio layer/kernel {layer / kernel:.4g}{'' if top is not None else ', from the lower end'})")
    if top is not None:
        print(f"top {k} singular values: " + " ".join(f"{v:.6g}" for v in top))
    if args.plot:
        plot_k = None if est.route == "FFT" or np.prod(geom.matrix_shape) * 16 <= 2**28 else k
        plot_spectrum(w, args.input_shape, k=plot_k, path=args.plot, **kw)
        print(f"plot written to {args.plot}")
    return 0
