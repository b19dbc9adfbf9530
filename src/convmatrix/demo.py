"""``make demo``: the classic 2x1x2x2 example end to end, then a real-size layer.

Run with ``python -m convmatrix.demo``.
"""

from __future__ import annotations

import time

import numpy as np

import convmatrix
from convmatrix.core.geometry import format_bytes


def _rule(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def small_example() -> None:
    import torch

    _rule("A conv layer is a fully connected layer: a 2x1x2x2 kernel on a 3x3 image")
    print("Input x: 1 channel of 3x3; kernel K: 2 output channels of 2x2 (entries a..h), no padding.")
    print("Each row of M is one output neuron; each column one input neuron.\n")
    print("convmatrix.symbolic((2, 1, 2, 2), (1, 3, 3)):")
    print(convmatrix.symbolic((2, 1, 2, 2), (1, 3, 3)))

    K = np.arange(1.0, 9.0).reshape(2, 1, 2, 2)
    x = np.arange(1.0, 10.0).reshape(1, 3, 3)
    M = convmatrix.conv_matrix(K, x.shape)
    y_matrix = M @ x.ravel()
    y_torch = torch.nn.functional.conv2d(torch.from_numpy(x)[None], torch.from_numpy(K))[0].numpy().ravel()
    print("\nWith a..h = 1..8 and x = 1..9:  M @ x  vs  torch.nn.functional.conv2d(x, K)")
    for i, (a, b) in enumerate(zip(y_matrix, y_torch)):
        print(f"  neuron {i} (channel {i // 4}, position {divmod(i % 4, 2)}): {a:6.0f}  {b:6.0f}")
    print(f"  identical: {np.array_equal(y_matrix, y_torch)}")

    _rule("What is a neuron? One entry of a feature map = one row of M")
    print("convmatrix.neuron((2, 1, 2, 2), (1, 3, 3), 5):\n")
    print(convmatrix.neuron((2, 1, 2, 2), (1, 3, 3), 5))


def large_layer() -> None:
    import torch

    _rule("A real layer: 64 -> 64 channels, 3x3, padding 1, on 64x56x56")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    shape = (64, 56, 56)
    best, copy_best = np.inf, np.inf
    for _ in range(3):  # best of three: the first build also pays for page faults
        t0 = time.perf_counter()
        M = convmatrix.conv_matrix(w, shape, padding=1)
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        _ = (M.data.copy(), M.indices.copy(), M.indptr.copy())
        copy_best = min(copy_best, time.perf_counter() - t0)
        del _
    csr_bytes = M.data.nbytes + M.indices.nbytes + M.indptr.nbytes
    print(f"M: {M.shape[0]:,} x {M.shape[1]:,}, {M.nnz:,} stored entries, {format_bytes(csr_bytes)} as CSR "
          f"(dense would be {format_bytes(M.shape[0] * M.shape[1] * 4)})")
    print(f"build: {best:.3f} s (best of 3); copying the finished arrays: {copy_best:.3f} s; "
          f"ratio {best / copy_best:.2f}x")
    x = rng.standard_normal(shape).astype(np.float32)
    y = torch.nn.functional.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w), padding=1)[0].numpy()
    err = np.abs(M @ x.ravel() - y.ravel()).max()
    print(f"max |M @ x - conv2d(x)| = {err:.2e} (float32 rounding)")


def main() -> None:
    small_example()
    large_layer()
    _rule("More")
    print("convmatrix show 2x1x2x2 1x3x3 --padding 1    the symbolic matrix of any layer")
    print("convmatrix --help                           every command, with examples")


if __name__ == "__main__":
    main()
