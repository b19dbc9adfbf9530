"""``convmatrix convert`` at the write limit: time and peak memory against writing the output file.

Every model is converted to ONNX (default settings: simplified, checked on 10 random
inputs) in a fresh child process, which reports the time of the ``convert(...)`` call,
its peak resident memory (``ru_maxrss``, the whole process: interpreter and imports
included; in brackets the part above the imports) and the output's size. Imports
(onnx, onnxruntime, convmatrix) come before the clock starts. The anchor, timed interleaved with it in another
child, writes the same number of bytes from memory to a file in the same folder: the
least any converter writing that file can take. Ratios: best convert time / best anchor
time (in brackets the median over the pairs of runs, each pair back to back),
peak memory / the output's dense bytes, and the dense bytes of the written chain over
those of the chain as lowered (before simplification).

Examples:
    python bench/convert.py models/*.onnx                 # every model, best of 3
    python bench/convert.py big.onnx --repeats 1 --output convert.md
    python bench/run.py --quick --convert models/         # in the main benchmark's report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")

CONVERT = """
import json, os, resource, sys, time
import onnx, onnxruntime, scipy.sparse  # imports are not the conversion's time
from convmatrix.network import convert as pipeline, onnx_frontend, simplify
from convmatrix.network.convert import convert
src, out = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
report = convert(src, out, check=10)
seconds = time.perf_counter() - t
size = os.path.getsize(out) + (os.path.getsize(out + ".data") if os.path.exists(out + ".data") else 0)
print(json.dumps({"seconds": seconds, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base": base,
                  "size": size, "dense": report.dense_bytes, "before": report.dense_bytes_before,
                  "layers": len(report.chain.layers), "max_rel": report.max_rel}))
"""

WRITE = """
import json, sys, time
import numpy as np
path, n = sys.argv[1], int(sys.argv[2])
block = np.ones(64 * 2**20, np.uint8)
t = time.perf_counter()
with open(path, "wb") as f:
    for i in range(0, n, len(block)):
        f.write(memoryview(block)[:min(len(block), n - i)])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(model: str, repeats: int, folder: str) -> dict:
    """Best of ``repeats`` interleaved runs of convert and of its anchor."""
    out = os.path.join(folder, "fc.onnx")
    runs, anchors = [], []
    for _ in range(repeats):
        runs.append(child(CONVERT, model, out))
        for path in (out, out + ".data"):
            if os.path.exists(path):
                os.remove(path)
        anchors.append(child(WRITE, out + ".anchor", str(runs[-1]["size"])))
        os.remove(out + ".anchor")
    best = min(runs, key=lambda r: r["seconds"])
    ratios = sorted(r["seconds"] / max(a["seconds"], 1e-9) for r, a in zip(runs, anchors))
    return dict(best, peak=min(r["peak"] for r in runs), base=min(r["base"] for r in runs),
                anchor=min(a["seconds"] for a in anchors), ratio=ratios[len(ratios) // 2])


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def table(results: dict) -> str:
    head = ("| model | layers | dense bytes lowered -> written | output file | convert | writing the file | "
            "time ratio (median of pairs) | peak RSS (after imports) | peak / dense bytes |")
    lines = [head, "|" + "|".join([" --- "] * 9) + "|"]
    for name, r in results.items():  # ratios of tiny outputs measure fixed costs only: left out
        time_ratio = f"{r['seconds'] / r['anchor']:.1f}x ({r['ratio']:.1f}x)" if r["anchor"] >= 0.01 else "-"
        peak_ratio = f"{r['peak'] / r['dense']:.2f}x" if r["dense"] >= 10**6 else "-"
        lines.append(f"| {name} | {r['layers']} | {fmt_bytes(r['before'])} -> {fmt_bytes(r['dense'])} "
                     f"({r['dense'] / r['before']:.0%}) | {fmt_bytes(r['size'])} | {r['seconds']:.2f} s | "
                     f"{r['anchor']:.2f} s | {time_ratio} | {fmt_bytes(r['peak'])} "
                     f"({fmt_bytes(r['peak'] - r['base'])}) | {peak_ratio} |")
    return "\n".join(lines)


def run(paths: list[str], repeats: int = 3) -> str:
    """The Markdown table of every ONNX file in ``paths`` (files or folders), with the machine load."""
    models = sorted(os.path.join(m, f) for m in paths if os.path.isdir(m) for f in os.listdir(m)
                    if f.endswith(".onnx")) + [m for m in paths if not os.path.isdir(m)]
    results, loads = {}, [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            results[os.path.basename(model)] = measure(model, repeats, folder)
            print(f"{os.path.basename(model)}: {results[os.path.basename(model)]}", file=sys.stderr)
    loads.append(os.getloadavg()[0])
    return table(results) + (f"\n\nBest of {repeats} interleaved runs; load average {loads[0]:.1f} at the "
                             f"start, {loads[1]:.1f} at the end, on {os.cpu_count()} cores.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Examples:")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="ONNX files (or folders of them) to convert")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per model; the best is quoted")
    p.add_argument("--output", default=os.path.join(HERE, "results", "convert.md"), help="report file")
    args = p.parse_args(argv)
    text = run(args.models, args.repeats)
    print(text)
    with open(args.output, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
