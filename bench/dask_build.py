"""Benchmark: a conv matrix larger than the block budget, built by Dask workers into Zarr.

Builds the matrix of one 64->64 3x3 layer (padding 1) on a 64xNxN input with
``convmatrix.dask_matrix`` and ``convmatrix.to_zarr`` on a ``dask.distributed``
LocalCluster of 1 and of 2 single-threaded worker processes, and reports, next
to the matrix's size as CSR: the build rate, the peak resident memory of every
worker process (``ru_maxrss``, read inside the worker after the build, and RSS
sampled every 50 ms) and of the client, and the store's size on disk. The
store is deleted after each run.

    python bench/dask_build.py                       # 128x128 input: ~598M entries, 4.8 GB as CSR
    python bench/dask_build.py --size 64 --workers 1 # a quick look (1.2 GB as CSR)

Not a unit test: it takes minutes and GBs of memory and disk.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time

import numpy as np


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux: ru_maxrss is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler(threading.Thread):
    """Samples the summed RSS of a set of process ids every ``interval`` seconds."""

    def __init__(self, pids, interval=0.05):
        super().__init__(daemon=True)
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.interval, self.peak, self.peak_each = interval, 0, {p.pid: 0 for p in self.procs}
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            total = 0
            for p in self.procs:
                try:
                    rss = p.memory_info().rss
                except Exception:  # the process ended
                    continue
                self.peak_each[p.pid] = max(self.peak_each[p.pid], rss)
                total += rss
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


def run_once(n_workers: int, weight, input_shape, block_bytes: str, folder: str) -> dict:
    import distributed

    import convmatrix
    from convmatrix.distributed import layer_metadata

    path = os.path.join(folder, f"conv-{n_workers}w.zarr")
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, memory_limit=None) as cluster, \
            distributed.Client(cluster) as client:
        client.run(lambda: None)  # workers up
        pids = list(client.run(os.getpid).values())
        base = client.run(lambda: __import__("psutil").Process().memory_info().rss)
        cpu0 = client.run(cpu_seconds)
        sampler = RssSampler(pids)
        sampler.start()
        t0 = time.perf_counter()
        D = convmatrix.dask_matrix(weight, input_shape, block_bytes=block_bytes, padding=1)
        info = convmatrix.to_zarr(D, path, metadata={"layer": layer_metadata(weight, input_shape, padding=1)})
        seconds = time.perf_counter() - t0
        sampler.stop()
        maxrss = client.run(worker_peak_rss)
        cpu = sum(client.run(cpu_seconds).values()) - sum(cpu0.values())
    result = dict(
        workers=n_workers, seconds=seconds, nnz=info.nnz, csr_bytes=info.csr_bytes, disk_bytes=info.disk_bytes,
        blocks=info.n_blocks, worker_maxrss=sorted(maxrss.values()), worker_base=sorted(base.values()),
        sampled_peak_total=sampler.peak, client_maxrss=worker_peak_rss(), worker_cpu=cpu,
    )
    shutil.rmtree(path)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="spatial size N of the 64xNxN input (default 128)")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--block-bytes", default="512MB")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dir", default=None, help="where to write the stores (default: a temporary folder)")
    args = ap.parse_args()

    from convmatrix.core.geometry import format_bytes, parse_bytes
    from convmatrix.core.matrix import conv_geometry, describe

    c, n = args.channels, args.size
    weight = np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32)
    shape = (c, n, n)
    print(f"layer {c}->{c} 3x3, padding 1, input {shape}, float32; block budget {args.block_bytes}")
    print("  " + describe(conv_geometry(weight.shape, shape, padding=1), 4))
    budget = parse_bytes(args.block_bytes)
    folder = tempfile.mkdtemp(prefix="convmatrix-bench-", dir=args.dir)
    try:
        for k in args.workers:
            r = run_once(k, weight, shape, args.block_bytes, folder)
            rate = r["nnz"] / r["seconds"]
            peak = max(r["worker_maxrss"])
            print(
                f"{k} worker(s): {r['nnz']:,} entries in {r['blocks']} blocks, {format_bytes(r['csr_bytes'])} as CSR, "
                f"{format_bytes(r['disk_bytes'])} on disk; {r['seconds']:.1f} s = {rate / 1e6:.0f} M entries/s "
                f"({format_bytes(r['csr_bytes'] / r['seconds'])}/s); workers' CPU time {r['worker_cpu']:.1f} s = "
                f"{r['nnz'] / r['worker_cpu'] / 1e6:.0f} M entries per CPU second\n"
                f"    peak RSS per worker {', '.join(format_bytes(v) for v in r['worker_maxrss'])} "
                f"(idle worker {format_bytes(max(r['worker_base']))}; budget {format_bytes(budget)}; "
                f"largest worker peak = {peak / budget:.2f} x budget, {peak / r['csr_bytes']:.2f} x the matrix); "
                f"sampled peak of all workers together {format_bytes(r['sampled_peak_total'])}; "
                f"client {format_bytes(r['client_maxrss'])}",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
