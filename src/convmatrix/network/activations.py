"""The one table of element-wise activations: torch module, NumPy function, Lipschitz constant.

Every part of convmatrix that meets an activation reads this table: the torch front
end (which modules and functions are activations, which constructor arguments to
keep), :meth:`Graph.evaluate <convmatrix.network.Graph.evaluate>` (NumPy where a
row has a NumPy function, else the torch module in float64), the Lipschitz bound
(:func:`lipschitz_constant`) and the receptive fields (an activation reads only its
own neuron). An activation is named by its ``torch.nn`` class (``"ReLU"``); its
parameters are that class's constructor keywords (``{"negative_slope": 0.1}``),
except ``PReLU``, which keeps one slope per neuron in ``params["slopes"]``.

>>> ACTIVATIONS["LeakyReLU"].piecewise_linear, lipschitz_constant("LeakyReLU", {"negative_slope": 3.0})
(True, 3.0)
>>> apply_activation("ReLU6", {}, np.array([[-1.0, 2.0, 9.0]]))
array([[0., 2., 6.]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "FUNCTIONAL", "lipschitz_constant", "apply_activation",
           "activation_module", "activation_kind", "ACTIVATION_NAMES"]


@dataclass(frozen=True)
class Activation:
    """One row of the table.

    ``params``: constructor keywords kept (and, for the functional form, its
    positional arguments after the input); ``functional``: the name of the
    ``torch.nn.functional`` / ``torch`` function, or None; ``lipschitz``: the
    constant (sup of ``|f'|``), a function of the parameters, or None where there
    is none (a jump); ``piecewise_linear``: exactly a ReLU network;
    ``numpy``: ``f(z, params)`` on a float64 array, or None (then torch computes it).
    """

    name: str
    params: tuple[str, ...] = ()
    functional: str | None = None
    lipschitz: float | Callable[[dict], float] | None = 1.0
    piecewise_linear: bool = False
    numpy: Callable[[np.ndarray, dict], np.ndarray] | None = None
    positional: bool = True  # the functional form takes ``params`` positionally (gelu's is keyword-only)


def _leaky(z, p):
    return np.where(z >= 0, z, z * p.get("negative_slope", 0.01))


def _prelu(z, p):
    return np.where(z >= 0, z, z * np.asarray(p["slopes"], dtype=np.float64))


def _hardtanh(z, p):
    return np.clip(z, p.get("min_val", -1.0), p.get("max_val", 1.0))


def _max_abs(key, default):
    return lambda p: max(1.0, abs(float(p.get(key, default))))


_SELU = 1.0507009873554805 * 1.6732632423543772  # scale * alpha: the slope just left of 0

_ROWS = [
    Activation("ReLU", (), "relu", 1.0, True, lambda z, p: np.maximum(z, 0.0)),
    Activation("LeakyReLU", ("negative_slope",), "leaky_relu", _max_abs("negative_slope", 0.01), True, _leaky),
    Activation("PReLU", (), None, lambda p: max(1.0, float(np.max(np.abs(p["slopes"])))), True, _prelu),
    Activation("Hardtanh", ("min_val", "max_val"), "hardtanh", 1.0, True, _hardtanh),
    Activation("ReLU6", (), "relu6", 1.0, True, lambda z, p: np.clip(z, 0.0, 6.0)),
    Activation("Softshrink", ("lambd",), None, 1.0, True),
    Activation("Hardshrink", ("lambd",), None, None, False),  # a jump at +-lambda: no constant
    Activation("ELU", ("alpha",), "elu", _max_abs("alpha", 1.0)),
    Activation("CELU", ("alpha",), "celu", _max_abs("alpha", 1.0)),
    Activation("SELU", (), "selu", _SELU),
    Activation("GELU", ("approximate",), "gelu", 1.129, positional=False),  # Phi(x) + x phi(x) peaks at 1.1289
    Activation("Sigmoid", (), "sigmoid", 0.25),
    Activation("Tanh", (), "tanh", 1.0),
    Activation("Softplus", ("beta", "threshold"), "softplus", 1.0),
    Activation("SiLU", (), "silu", 1.1),  # peaks near x = 2.40 at 1.0998
    Activation("Mish", (), "mish", 1.089),  # peaks near x = 1.2 at 1.0886
    Activation("Hardsigmoid", (), "hardsigmoid", 1 / 6),
    Activation("Hardswish", (), "hardswish", 1.5),
    Activation("LogSigmoid", (), "logsigmoid", 1.0),
    Activation("Softsign", (), "softsign", 1.0),
    Activation("Tanhshrink", (), "tanhshrink", 1.0),
]

#: The activations by ``torch.nn`` class name.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in _ROWS}
#: The functional forms: function name -> row.
FUNCTIONAL: dict[str, Activation] = {a.functional: a for a in _ROWS if a.functional}


#: Lower-case names accepted for an activation (``relu``, ``leaky_relu``, ``leakyrelu``, ...), by kind.
ACTIVATION_NAMES: dict[str, str] = {**{a.name.lower(): a.name for a in _ROWS},
                                    **{a.functional: a.name for a in _ROWS if a.functional}}


def activation_kind(name: str) -> str:
    """The table's kind of an activation named in any case or by its function (``"relu"`` -> ``"ReLU"``).

    >>> activation_kind("relu"), activation_kind("leaky_relu"), activation_kind("Sigmoid")
    ('ReLU', 'LeakyReLU', 'Sigmoid')
    """
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name such as 'relu', got {name!r}")
    kind = ACTIVATION_NAMES.get(name.lower()) or ACTIVATION_NAMES.get(name.lower().replace("_", ""))
    if kind is None:
        raise ValueError(f"activation must be one of {sorted(set(ACTIVATION_NAMES))}, got {name!r}")
    return kind


def lipschitz_constant(kind: str, params: dict | None = None) -> float:
    """The Lipschitz constant of activation ``kind`` with its parameters.

    >>> lipschitz_constant("Sigmoid"), lipschitz_constant("PReLU", {"slopes": [0.5, -2.0]})
    (0.25, 2.0)
    """
    row = ACTIVATIONS.get(kind)
    if row is None or row.lipschitz is None:
        why = "a jump, so no" if row is not None else "no known"
        known = sorted(k for k, a in ACTIVATIONS.items() if a.lipschitz is not None)
        raise ValueError(f"activation {kind!r} has {why} Lipschitz constant; known: {known}")
    return float(row.lipschitz(dict(params or {})) if callable(row.lipschitz) else row.lipschitz)


def activation_module(kind: str, params: dict, size: int | None = None):
    """The ``torch.nn`` module of an activation (``PReLU``: one slope per neuron)."""
    import torch

    if kind == "PReLU":
        slopes = torch.as_tensor(np.asarray(params["slopes"], dtype=np.float32))
        m = torch.nn.PReLU(num_parameters=slopes.numel())
        with torch.no_grad():
            m.weight.copy_(slopes)
        return m
    cls = getattr(torch.nn, kind, None)
    if cls is None:
        raise ValueError(f"unknown activation kind {kind!r} (not a torch.nn module)")
    return cls(**params)


def apply_activation(kind: str, params: dict, z: np.ndarray) -> np.ndarray:
    """An activation on a ``(N, n)`` float64 batch (NumPy where the table has it, else torch)."""
    row = ACTIVATIONS.get(kind)
    if row is not None and row.numpy is not None:
        return row.numpy(z, params)
    import torch

    with torch.no_grad():
        module = activation_module(kind, params).double()
        return module(torch.from_numpy(np.ascontiguousarray(z))).numpy()
