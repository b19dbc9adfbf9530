"""``convmatrix build``: a layer's matrix built block by block into a Zarr store (Dask)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..core.geometry import format_bytes
from . import CLIError
from .options import add_command, add_conv_options, conv_kwargs, read_array, shape

EPILOG = """\
examples:
  convmatrix build weight.npy 64x224x224 --padding 1 --out conv.zarr --block-bytes 512MB
  convmatrix build 64x64x3x3 64x128x128 --padding 1 --seed 0 --out conv.zarr --block-bytes 1GB
  convmatrix build weight.npy 64x224x224 --padding 1 --out conv.zarr --resume
  convmatrix build weight.npy 64x224x224 --padding 1 --out conv.zarr --scheduler tcp://10.0.0.5:8786

WEIGHT is a .npy file (layout (C_out, C_in/groups, *k), as torch's) or a weight shape
like 64x64x3x3 for random normal weights (--seed, --dtype). The store is read back with
convmatrix.from_zarr(STORE) (a Dask array) or convmatrix.matvec_store(STORE, x).
An interrupted build continues with --resume: finished blocks are not rebuilt.
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "build",
        help="build a layer's matrix block by block into a Zarr store (Dask; larger than memory)",
        description="Build the exact sparse matrix of a convolution block by block with Dask and store "
        "it in Zarr: rows are cut into blocks of at most --block-bytes as CSR, each built and written "
        "by the worker that computes it.",
        epilog=EPILOG)
    p.add_argument("weight", metavar="WEIGHT", help="a .npy weight file, or a weight shape like 64x64x3x3")
    p.add_argument("input_shape", metavar="INPUT_SHAPE", type=shape, help="input shape (C, *spatial), like 64x224x224")
    add_conv_options(p)
    p.add_argument("--out", "-o", required=True, metavar="STORE.zarr", help="the Zarr store to write")
    p.add_argument("--block-bytes", default="512MB", metavar="SIZE",
                   help="budget of one row block as CSR, like 512MB, 1GB or bytes (default 512MB)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler, like tcp://host:8786 "
                   "(default: threads on this machine)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler (default 10)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    again.add_argument("--resume", action="store_true", help="keep an existing store's finished blocks, write the rest")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when WEIGHT is a shape")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the random weights when WEIGHT is a shape (default float32)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def load_weight(text: str, seed: int, dtype: str) -> tuple[np.ndarray, str]:
    """The weight from a .npy file or random normal weights of a shape; and how to name it."""
    if text.endswith(".npy") or os.path.exists(text):
        return read_array(text, "WEIGHT"), os.path.abspath(text)
    try:
        dims = shape(text)
    except argparse.ArgumentTypeError:
        raise CLIError(f"WEIGHT must be a .npy file or a weight shape like 64x64x3x3, got {text!r}") from None
    w = np.random.default_rng(seed).standard_normal(dims).astype(dtype)
    return w, f"random normal {text} {dtype}, seed {seed}"


def run(args: argparse.Namespace) -> int:
    w, source = load_weight(args.weight, args.seed, args.dtype)
    from .. import distributed as dist  # dask, zarr, sparse: only for this command

    kw = conv_kwargs(args)
    D = dist.dask_matrix(w, args.input_shape, block_bytes=args.block_bytes, **kw)
    metadata = {"layer": dist.layer_metadata(w, args.input_shape, **kw), "weight": source,
                "block_bytes": str(args.block_bytes)}
    client = dist.connect(args.scheduler, timeout=args.timeout) if args.scheduler else None
    try:
        t0 = time.perf_counter()
        write = dist.to_zarr(D, args.out, overwrite=args.overwrite, resume=args.resume, metadata=metadata,
                             compute=False)
        n_new = write.shape[0]  # one row of entry counts per block to write
        show = not args.quiet and sys.stderr.isatty()
        if client is not None:
            future = client.compute(write)
            if show:
                from distributed import progress

                progress(future)
            future.result()
        elif show:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                write.compute()
        else:
            write.compute()
        seconds = time.perf_counter() - t0
    finally:
        if client is not None:
            client.close()
    info = dist.store_info(args.out)
    rows, cols = info.shape
    print(f"wrote {args.out}")
    print(f"  matrix   {rows:,} x {cols:,} {info.dtype}, {info.nnz:,} stored entries")
    print(f"  blocks   {info.n_blocks} ({n_new} written now, {info.n_blocks - n_new} already there), "
          f"at most {args.block_bytes} each as CSR")
    print(f"  bytes    {format_bytes(info.csr_bytes)} as CSR, {format_bytes(info.disk_bytes)} on disk")
    rate = f", {info.nnz / seconds / 1e6:.1f} M entries/s" if n_new == info.n_blocks and seconds > 0 else ""
    print(f"  time     {seconds:.2f} s{rate}")
    return 0
