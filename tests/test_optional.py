"""The core works without the extras, and a missing extra is reported with the command that installs it.

The optional packages are hidden from a child interpreter by a ``sitecustomize`` whose import
hook refuses them, as if only ``pip install convmatrix`` had run (a fresh core-only venv gives
the same picture, at the cost of an install; see the README's "Installing" section).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

OPTIONAL = ("torch", "onnx", "onnxruntime", "matplotlib", "dask", "distributed", "zarr", "sparse",
            "starlette", "uvicorn", "tqdm", "sympy")

BLOCKER = textwrap.dedent("""
    import sys
    HIDDEN = set(sys.argv and {hidden!r})

    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _Hide())
""")

TESTS = os.path.dirname(os.path.abspath(__file__))


def _run(args, tmp_path, hidden=OPTIONAL, **kwargs):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(hidden=tuple(hidden)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path, **kwargs)


def test_import_convmatrix_loads_no_optional_package():
    code = ("import sys, convmatrix; convmatrix.conv_matrix; convmatrix.symbolic; "
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_core_works_with_every_extra_hidden(tmp_path):
    code = ("import numpy as np, convmatrix; "
            "M = convmatrix.conv_matrix(np.arange(1., 9.).reshape(2, 1, 2, 2), (1, 3, 3)); "
            "print(M @ np.arange(1., 10.)); print(convmatrix.symbolic((2, 1, 2, 2), (1, 3, 3)))")
    out = _run(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[ 37.  47.  67.  77.  85. 111. 163. 189.]" in out.stdout
    assert "[a b 0|c d 0|0 0 0]" in out.stdout


@pytest.mark.parametrize("argv, extra", [
    (["convert", "model.onnx", "-o", "out.onnx"], "onnx"),
    (["plot", "2x1x2x2", "1x3x3", "-o", "m.png"], "plot"),
    (["lipschitz", "model.onnx"], "onnx"),
    (["build", "w.npy", "1x8x8", "--out", "s.zarr", "--block-bytes", "1MB"], "dask"),
    (["explore", "2x1x2x2", "1x3x3", "--no-browser"], "web"),
])
def test_a_command_without_its_extra_says_how_to_get_it(tmp_path, argv, extra):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    np.save(tmp_path / "w.npy", np.ones((1, 1, 3, 3)))
    out = _run(["-m", "convmatrix", *argv], tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr == f"{argv[0]} needs the '{extra}' extra: pip install 'convmatrix[{extra}]'\n"


@pytest.mark.parametrize("call, extra", [
    ("convmatrix.plot_matrix((2, 1, 2, 2), (1, 3, 3))", "plot"),
    ("convmatrix.from_module(None, (1, 3, 3))", "torch"),
    ("convmatrix.dask_matrix(np.ones((1, 1, 2, 2)), (1, 3, 3))", "dask"),
    ("convmatrix.lipschitz('model.onnx', (1, 3, 3))", "onnx"),
    ("convmatrix.explore((2, 1, 2, 2), (1, 3, 3)).serve(open_browser=False, block=False)", "web"),
    ("convmatrix.symbolic((2, 1, 2, 2), (1, 3, 3)).to_sympy()", "sympy"),
])
def test_a_function_without_its_extra_raises_importerror_with_the_hint(tmp_path, call, extra):
    code = textwrap.dedent(f"""
        import numpy as np, convmatrix
        try:
            {call}
        except ImportError as exc:
            print(exc)
    """)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    out = _run(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"pip install 'convmatrix[{extra}]'" in out.stdout, out.stdout


def test_the_core_property_tests_pass_without_torch(tmp_path):
    out = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly",
                os.path.join(TESTS, "test_properties.py")], tmp_path, hidden=("torch",))
    assert out.returncode == 0, out.stdout[-3000:]
    assert "passed" in out.stdout
