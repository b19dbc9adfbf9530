"""convmatrix: a convolutional layer as the fully connected layer it is.

Build the exact sparse matrix ``M`` of any PyTorch convolution, with
``flatten(conv(x)) == M @ flatten(x) + b``, explain it, convert whole CNNs into
fully connected networks, and analyse their spectra.

The core (:func:`conv_matrix`, the signal-processing matrices) needs only
NumPy and SciPy; everything that needs torch, onnx, matplotlib or dask imports
it lazily, on first use, so ``import convmatrix`` stays light.
"""

from importlib import import_module

from .core.blocks import conv_matrix_blocks, conv_matrix_channels, conv_matrix_rows
from .core.geometry import ConvGeometry
from .core.matrix import conv_matrix
# Eager (NumPy/SciPy only): the function must shadow its own module's name, convmatrix.core.operator.
from .core.operator import operator
from .core.signal import convmtx, convmtx2, convolution_matrix, convolution_matrix_nd

# Eager (NumPy only): the function must shadow its own module's name, convmatrix.explain.symbolic.
from .explain.symbolic import SymbolicMatrix, symbolic

__version__ = "0.1.0"

# Public names defined in modules that pull optional dependencies, loaded on first access.
_LAZY = {
    "neuron": ".explain.neurons",
    "feeds": ".explain.neurons",
    "receptive_field": ".explain.receptive",
    "receptive_set": ".explain.receptive",
    "plot_matrix": ".explain.plot",
    "plot_neuron": ".explain.plot",
    "plot_receptive_field": ".explain.plot",
    "from_module": ".network.modules",
    "to_linear": ".network.modules",
    "SparseConvLinear": ".network.modules",
    "explore": ".explorer",
    "dask_matrix": ".distributed",
    "to_zarr": ".distributed",
    "from_zarr": ".distributed",
    "store_info": ".distributed",
    "matvec_store": ".distributed",
    "evaluate_stored": ".distributed",
    "dask_spectral_norm": ".distributed",
    "to_mlp": ".network.mlp",
    "MaskedActivation": ".network.mlp",
    "singular_values": ".analysis.spectral",
    "spectral_norm": ".analysis.spectral",
    "spectral_norm_bounds": ".analysis.spectral",
    "plot_spectrum": ".analysis.spectral",
    "kernel_norm_vs_layer_norm": ".analysis.spectral",
    "lipschitz": ".analysis.lipschitz",
}

__all__ = [
    "ConvGeometry", "conv_matrix", "conv_matrix_rows", "conv_matrix_channels", "conv_matrix_blocks",
    "convolution_matrix", "convolution_matrix_nd", "convmtx", "convmtx2", "operator", "symbolic", "SymbolicMatrix", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convmatrix' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
