"""README.md runs as written, in a fresh folder: every example a user would paste.

The ```python blocks run in order in one namespace (a block of ``>>>`` lines runs as a doctest
and must print what it shows); every ``$ convmatrix ...`` line of a shell block runs the command,
which must succeed (or, where the README shows its ``error:``, be refused with exit status 2), and
``show``/``neuron`` must print exactly the lines under them. Files an
example writes (models, stores, pictures) land in a temporary folder, the working directory.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import shlex

import matplotlib
import pytest

matplotlib.use("Agg")

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
EXACT_COMMANDS = ("show", "neuron")  # their output is pure text of the library; others print timings


def readme_blocks() -> list[tuple[int, str, str]]:
    """``(line, language, body)`` of every fenced block of the README."""
    text = open(README, encoding="utf-8").read()
    return [(text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def _commands(body: str) -> list[tuple[str, str]]:
    parts = re.split(r"^\$ ", body, flags=re.M)[1:]
    return [(command, output) for command, _, output in (part.partition("\n") for part in parts)]


def _run_doctest(body: str, namespace: dict, line: int) -> None:
    test = doctest.DocTestParser().get_doctest(body, namespace, f"README line {line}", README, line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = io.StringIO()
    runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()


def _run_command(command: str, expected: str, line: int, capsys) -> None:
    from convmatrix.cli import main

    argv = shlex.split(command)
    assert argv[0] == "convmatrix", f"README line {line}: {command}"
    capsys.readouterr()
    status = main(argv[1:])
    printed = capsys.readouterr()
    refused = "error:" in expected  # an example of a refusal: one line on stderr, exit status 2
    assert status == (2 if refused else 0), f"README line {line}: {command}\n{printed.err}"
    if argv[1] in EXACT_COMMANDS and expected.strip():
        if "..." in expected:  # an elided output: "..." stands for any text, and the README may stop early
            checker = doctest.OutputChecker()
            assert checker.check_output(expected.rstrip("\n") + "...", printed.out, doctest.ELLIPSIS), \
                f"README line {line}: {command}\n{printed.out}"
        else:
            assert printed.out.rstrip("\n") == expected.rstrip("\n"), f"README line {line}: {command}"


def test_readme_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for line, lang, body in readme_blocks():
        if lang == "python" and body.lstrip().startswith(">>>"):
            namespace.setdefault("np", __import__("numpy"))
            namespace.setdefault("convmatrix", __import__("convmatrix"))
            _run_doctest(body, namespace, line)
        elif lang == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(body, f"README line {line}", "exec"), namespace)
        elif lang in ("", "console", "sh") and re.search(r"^\$ convmatrix ", body, re.M):
            for command, expected in _commands(body):
                _run_command(command, expected, line, capsys)
        else:
            continue
        ran += 1
    assert ran >= 15


@pytest.mark.parametrize("pattern", [r"\.\./shared", r"CONTRACT\.md", r"ISSUE-NOTES", r"(?i)seed question"])
def test_readme_speaks_to_users(pattern):
    text = open(README, encoding="utf-8").read()
    assert not re.search(pattern, text)
