"""Regenerate the tutorial's pictures under docs/img/: run its Python blocks from the repository root.

    python docs/make_figures.py

The tutorial's code is the one source of every picture (the test suite runs the same blocks).
"""

from __future__ import annotations

import contextlib
import io
import os
import re

import matplotlib

matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    text = open(os.path.join(ROOT, "docs", "tutorial.md"), encoding="utf-8").read()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
    os.chdir(ROOT)
    namespace: dict = {"__name__": "tutorial"}
    with contextlib.redirect_stdout(io.StringIO()):
        for k, body in enumerate(blocks):
            exec(compile(body, f"tutorial block {k}", "exec"), namespace)
    print("\n".join(sorted(os.path.join("docs", "img", f) for f in os.listdir(os.path.join(ROOT, "docs", "img")))))


if __name__ == "__main__":
    main()
