"""The core: convolution geometry, the tap pattern, and the matrices built from it (NumPy and SciPy only)."""
