"""Optional dependencies: one way to import them, with the install hint when they are missing.

Every module of convmatrix that needs a package outside NumPy and SciPy imports it with
:func:`require`, at the point of use, so ``import convmatrix`` stays light and a missing
package is reported as the extra that provides it::

    torch = require("torch", extra="torch", feature="from_module")

raises, when torch is not installed, ``MissingDependency: from_module needs the 'torch'
extra: pip install 'convmatrix[torch]'``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "missing_extra", "require"]

# The extra of pyproject.toml that installs each optional top-level package.
EXTRAS = {
    "torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "matplotlib": "plot", "dask": "dask",
    "distributed": "dask", "zarr": "dask", "sparse": "dask", "starlette": "web", "uvicorn": "web",
    "tqdm": "progress", "sympy": "sympy",
}


class MissingDependency(ImportError):
    """An optional package is not installed; the message says which extra installs it."""

    def __init__(self, feature: str, extra: str, module: str):
        self.feature, self.extra, self.module = feature, extra, module
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'convmatrix[{extra}]'", name=module)


def missing_extra(exc: ImportError) -> str | None:
    """The extra that would cure ``exc`` when it is an optional package that is not installed.

    >>> missing_extra(ModuleNotFoundError("No module named 'onnx'", name="onnx"))
    'onnx'
    >>> missing_extra(ModuleNotFoundError("No module named 'foo'", name="foo")) is None
    True
    """
    if isinstance(exc, MissingDependency):
        return exc.extra
    name = getattr(exc, "name", None)
    return EXTRAS.get(name.split(".")[0]) if name else None


def require(module: str, *, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise :class:`MissingDependency`.

    ``extra`` defaults to the one :data:`EXTRAS` names; ``feature`` names what needs it in the
    message (default: the module's name).

    >>> require("numpy", extra="core").__name__
    'numpy'
    >>> require("no_such_package_xyz", extra="plot", feature="plot_matrix")
    Traceback (most recent call last):
    ...
    convmatrix._optional.MissingDependency: plot_matrix needs the 'plot' extra: pip install 'convmatrix[plot]'
    """
    try:
        return import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        # Only the package itself missing is a missing extra; an error inside it is its own.
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        raise MissingDependency(feature or module, extra or EXTRAS.get(top, top), module) from None
