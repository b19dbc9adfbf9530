"""Training through the sparse form: forward + backward of ``to_linear(conv, sparse=True)``.

Compares, on float32 Conv2d layers (padding 1), with the kernel, bias AND input
needing gradients:

- ``csr_linear``: ``SparseConvLinear`` as it is (backward keeps one gradient per stored entry);
- ``torch sparse mm``: the former forward, ``(module.matrix() @ x.T).T``, whose torch
  backward forms the dense ``out x in`` gradient of the matrix;
- ``torch conv2d``: the convolution itself, for scale.

Each (layer, method) runs in a fresh process (address space capped by ``--cap-gb``, so a
dense gradient fails instead of swapping) and reports the seconds of one warm forward +
backward (best of ``--repeat``) and the peak RSS growth over the process after the module
was built (first call included: it builds ``M.T``'s structure).

    PYTHONPATH=src python bench/sparse_grad.py            # both layers below
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

LAYERS = [  # (channels, size, batch)
    (16, 32, 32),
    (64, 56, 1),
]
METHODS = ("csr_linear", "torch sparse mm", "torch conv2d")

CHILD = textwrap.dedent("""
    import json, resource, sys, time, torch, convmatrix
    c, n, batch, method, repeat, cap = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, padding=1)
    x = torch.randn(batch, c, n, n, requires_grad=True)
    if method == "torch conv2d":
        model, inp = conv, x
    else:
        model, inp = convmatrix.to_linear(conv, (c, n, n), sparse=True), x.flatten(1)
        if method == "torch sparse mm":
            model.forward = lambda v: (model.matrix() @ v.T).T + model.bias.repeat_interleave(n * n)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base, times = rss(), []
    try:
        for _ in range(repeat + 1):
            model.zero_grad(); x.grad = None
            t = time.perf_counter()
            model(inp).square().sum().backward()
            times.append(time.perf_counter() - t)
        print(json.dumps({"seconds": min(times[1:]), "first": times[0], "peak_growth": rss() - base}))
    except RuntimeError as exc:
        print(json.dumps({"error": str(exc).splitlines()[0][:160], "peak_growth": rss() - base}))
""")


def run(c, n, batch, method, repeat, cap_gb):
    args = json.dumps([c, n, batch, method, repeat, int(cap_gb * 2**30)])
    out = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1][:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap-gb", type=float, default=12.0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    print("| layer | batch | method | fwd+bwd s (warm) | first call s | peak RSS growth |")
    print("|---|---|---|---|---|---|")
    for c, n, batch in LAYERS:
        for method in args.methods:
            r = run(c, n, batch, method, args.repeat, args.cap_gb)
            mib = f"{r['peak_growth'] / 2**20:,.0f} MiB" if "peak_growth" in r else "-"
            if "error" in r:
                print(f"| {c}->{c} 3x3 on {n}x{n} | {batch} | {method} | fails: {r['error']} | - | {mib} |")
            else:
                print(f"| {c}->{c} 3x3 on {n}x{n} | {batch} | {method} | {r['seconds']:.3f} | "
                      f"{r['first']:.3f} | {mib} |", flush=True)


if __name__ == "__main__":
    main()
