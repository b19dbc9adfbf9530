"""docs/tutorial.md runs: every ```python block executes, and a ```text block right after one is its output;
every ```console block's ``$ convmatrix ...`` lines run, printing the lines under them."""

from __future__ import annotations

import contextlib
import io
import os
import re

import matplotlib

matplotlib.use("Agg")

TUTORIAL = os.path.join(os.path.dirname(__file__), "..", "docs", "tutorial.md")


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks in order: (language, body)."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def run_tutorial(workdir: str) -> list[tuple[str, str, str]]:
    """Execute the python blocks in one namespace (cwd ``workdir``): (code, printed, expected or None)."""
    found = blocks(open(TUTORIAL, encoding="utf-8").read())
    namespace: dict = {"__name__": "tutorial"}
    results = []
    cwd = os.getcwd()
    os.makedirs(os.path.join(workdir, "docs", "img"), exist_ok=True)
    os.chdir(workdir)
    try:
        for k, (lang, body) in enumerate(found):
            if lang != "python":
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, f"tutorial block {k}", "exec"), namespace)
            expected = found[k + 1][1] if k + 1 < len(found) and found[k + 1][0] == "text" else None
            results.append((body, out.getvalue(), expected))
    finally:
        os.chdir(cwd)
    return results


def console_commands(text: str) -> list[tuple[str, str]]:
    """(command, expected output) for every ``$ convmatrix ...`` line of the ```console blocks."""
    found = []
    for lang, body in blocks(text):
        if lang == "console":
            for part in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, _, output = part.partition("\n")
                found.append((command, output))
    return found


def test_tutorial_console_blocks_print_what_they_say(capsys):
    import shlex

    from convmatrix.cli import main

    commands = console_commands(open(TUTORIAL, encoding="utf-8").read())
    assert len(commands) >= 2
    for command, expected in commands:
        argv = shlex.split(command)
        assert argv[0] == "convmatrix"
        assert main(argv[1:]) == 0, command
        assert capsys.readouterr().out == expected, command


def test_tutorial_runs_and_prints_what_it_says(tmp_path):
    results = run_tutorial(str(tmp_path))
    assert len(results) >= 12
    checked = 0
    for code, printed, expected in results:
        if expected is not None:
            assert printed.rstrip("\n") == expected.rstrip("\n"), f"output of\n{code}"
            checked += 1
    assert checked >= 10
    for name in ("seed-matrix.png", "receptive-field.png", "neuron.png", "sharpen-matrix.png", "rgb-neuron.png"):
        assert os.path.getsize(tmp_path / "docs" / "img" / name) > 0
