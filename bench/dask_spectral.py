"""Benchmark: the spectral norm through Dask against the in-memory one, on the same layer.

For one C->C 3x3 layer (padding 1) on a CxNxN input, times, in the same run and
interleaved (best of ``--repeat``):

- the anchor: ``convmatrix.spectral_norm`` (in memory, matrix-free);
- ``convmatrix.dask_spectral_norm(dask_matrix(...))`` on three ``dask.distributed``
  LocalClusters of ``--workers`` single-threaded workers: one of worker processes,
  one of worker threads, and one of worker processes whose glibc keeps freed memory
  (all started once, outside the timing): the layer's array
  (matrix-free pieces, nothing built) and the same matrix read from a Zarr store
  (``from_zarr``: its CSR blocks read once and kept on the workers);

and reports both norms, their relative difference and the ratio of the times.

    python bench/dask_spectral.py                     # 16->16 on 64x64: a 65,536 x 65,536 matrix
    python bench/dask_spectral.py --channels 64 --size 32   # 64->64 on 32x32: also 65,536 x 65,536

Not a unit test: it starts a cluster and takes tens of seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time

import numpy as np


def timed(f):
    t0 = time.perf_counter()
    value = f()
    return time.perf_counter() - t0, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="spatial size N of the CxNxN input (default 64)")
    ap.add_argument("--padding-mode", default="zeros")
    ap.add_argument("--block-bytes", default="32MB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-stored", dest="stored", action="store_false",
                    help="skip the stored matrix (from_zarr: CSR blocks kept on the workers)")
    args = ap.parse_args()

    import dask
    import distributed

    import convmatrix
    from convmatrix.core.matrix import conv_geometry, describe

    c, n = args.channels, args.size
    w = np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32)
    shape, kw = (c, n, n), dict(padding=1, padding_mode=args.padding_mode)
    geom = conv_geometry(w.shape, shape, **kw)
    rows, cols = geom.matrix_shape
    print(f"layer {c}->{c} 3x3, padding 1 ({args.padding_mode}), input {shape}, float32: "
          f"{rows:,} x {cols:,} matrix; block budget {args.block_bytes}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("  " + describe(geom, 4))
    # dask's worker processes set MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand every large
    # temporary back to the system and fault it in again at the next step; "tuned" lets it keep them.
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    tuned = {**env, "MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(2**26)}
    kinds = {"processes": (True, env), "processes, malloc tuned": (True, tuned), "threads": (False, env)}
    best = {"memory": float("inf")}
    folder = tempfile.mkdtemp(prefix="convmatrix-bench-")
    store = os.path.join(folder, "layer.zarr")
    if args.stored:
        convmatrix.to_zarr(convmatrix.dask_matrix(w, shape, block_bytes=args.block_bytes, **kw), store)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        clusters = {}
        for kind, (processes, environ) in kinds.items():
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                clusters[kind] = stack.enter_context(distributed.LocalCluster(
                    n_workers=args.workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                    memory_limit=None))
        for r in range(args.repeat):
            t_mem, s_mem = timed(lambda: convmatrix.spectral_norm(w, shape, **kw))
            best["memory"] = min(best["memory"], t_mem)
            line = f"run {r + 1}: in memory {t_mem:.2f} s (sigma {s_mem:.9g})"
            for kind, cluster in clusters.items():
                with distributed.Client(cluster):
                    D = convmatrix.dask_matrix(w, shape, block_bytes=args.block_bytes, **kw)
                    arrays = {kind: D, f"{kind}, stored": convmatrix.from_zarr(store)} if args.stored else {kind: D}
                    for label, A in arrays.items():
                        t, s = timed(lambda: convmatrix.dask_spectral_norm(A))
                        best[label] = min(best.get(label, float("inf")), t)
                        line += (f"; {label}: {t:.2f} s (relative difference {abs(s - s_mem) / s_mem:.1e}, "
                                 f"ratio {t / t_mem:.2f})")
            print(line, flush=True)
    best_memory = best.pop("memory")
    print(f"best of {args.repeat}: in memory {best_memory:.2f} s; " + "; ".join(
        f"Dask on {args.workers} worker {label} {t:.2f} s, ratio {t / best_memory:.2f}"
        for label, t in best.items()) + f"; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
