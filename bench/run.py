"""convmatrix benchmarks: ``make bench`` (or ``python bench/run.py``).

Builds every benchmark layer's matrix with ``conv_matrix`` and with every
anchor that can build it, checks that they hold the same numbers, times
``M @ X`` against the convolution, times the exact spectral norm against torch
power iteration (with and without a busy core), and writes a Markdown report to stdout and
to ``bench/results/latest.md``.

Examples:
    python bench/run.py --quick                 # small sizes, under a minute
    python bench/run.py                         # the full run (minutes; ~2 GB of memory)
    python bench/run.py --cases "64->64" 1-D    # only layers whose name contains these
    python bench/run.py --list                  # the layers, and what is installed
    python bench/run.py --stat best --readme README.md   # rewrite the README's benchmark section
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import convmatrix  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(HERE, "..", "src"))

import numpy as np

import harness
import report
from anchors import ANCHORS
from build import ANCHOR_BUDGET_S, bench_build
from cases import full_cases, quick_cases, select
from harness import machine_info
from matmul import bench_matmul
from spectral import bench_threads

GB = 10**9


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (under a minute)")
    p.add_argument("--cases", nargs="+", metavar="TEXT", help="only layers whose name contains any TEXT")
    p.add_argument("--repeats", type=int, help="timed repeats per contender (default 7, quick 3)")
    p.add_argument("--stat", choices=("median", "best"), default="median",
                   help="which statistic of the repeats the tables quote (best: on a busy machine)")
    p.add_argument("--no-anchors", action="store_true", help="skip the anchors")
    p.add_argument("--no-matmul", action="store_true", help="skip the M @ X timings")
    p.add_argument("--no-spectral", action="store_true",
                   help="skip the spectral norm against torch power iteration (with and without a busy core)")
    p.add_argument("--dense-cap", type=float, default=None,
                   help="largest dense anchor result in GB (default: per layer, 0.1 and 1.2 for jacrev's "
                        "16->16 3x3 layer on 32x32)")
    p.add_argument("--output", default=os.path.join(HERE, "results", "latest.md"), help="report file")
    p.add_argument("--readme", metavar="PATH", help="also write the README's benchmark section into PATH "
                   "(between its bench:start / bench:end markers, or the whole file if it has none)")
    p.add_argument("--list", action="store_true", help="list the layers and anchors, run nothing")
    p.add_argument("--convert", nargs="+", metavar="MODEL", help="also time `convert` of these ONNX files (or "
                   "folders of them) against writing their output (bench/convert.py)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = select(quick_cases() if args.quick else full_cases(), args.cases)
    repeats = args.repeats or (3 if args.quick else 7)
    dense_cap = None if args.dense_cap is None else int(args.dense_cap * GB)
    budget = ANCHOR_BUDGET_S["quick" if args.quick else "full"]
    if args.list:
        for c in cases:
            print(f"{c.name:40s} {report.describe(c)}")
        for a in ANCHORS:
            print(f"anchor {a.name}: {a.missing() or 'installed'}")
        return 0
    if not cases:
        print("no layer matches --cases; see --list", file=sys.stderr)
        return 2

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    harness.STAT = args.stat
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    log(f"building {len(cases)} layers, {repeats} repeats")
    builds = [bench_build(c, repeats, rng, dense_cap, not args.no_anchors, log, budget) for c in cases]
    products = []
    if not args.no_matmul:
        log("M @ X")
        # Quick: the small layer only; full: also issue 2's 64->64 layer.
        for c in select(cases, ["16->16"] if args.quick else ["16->16", "64->64"]):
            products += bench_matmul(c, (1, 32, 256), repeats, rng, dense_cap or GB // 4, log, 2 * budget)
    spectral = None
    if not args.no_spectral:
        spectral = bench_threads(args.quick, min(repeats, 3), log)
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    info["benchmark wall time"] = f"{time.perf_counter() - t0:.0f} s"
    lines = ["# convmatrix benchmark", ""] + report.machine_section(info, command.strip())
    lines += report.target_section(builds)[:-1] + report.spectral_targets(spectral) + [""]
    lines += report.build_section(builds) + report.anchor_section(builds)
    lines += report.matmul_section(products) + report.spectral_section(spectral)
    if args.convert:
        import convert

        log("convert")
        lines += ["", "## convert at the write limit", "", convert.run(args.convert, repeats=min(repeats, 3))]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text + "\n")
    log(f"report written to {args.output}")
    if args.readme:
        section = report.readme_section(info, command.strip(), builds, products, spectral)
        report.write_readme_section(args.readme, section)
        log(f"README section written to {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
