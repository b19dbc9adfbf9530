"""The layers we benchmark, each with a small variant for ``--quick``.

A case is a convolution in PyTorch's conventions (weight ``(C_out, C_in/groups,
*k)``, input ``(C, *spatial)``). ``signal`` marks the single-channel cases that
the signal-processing anchors state as a *true* convolution (kernel flipped):
``"full"`` (padding k-1) or ``"same"``; there the benchmarked weight is the
flipped kernel, so every tool builds the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    name: str
    weight_shape: tuple
    input_shape: tuple
    kwargs: dict = field(default_factory=dict)
    signal: str | None = None  # "full" / "same": a single-channel true convolution
    note: str = ""
    count: int = 1  # how many layers of the network share this geometry
    dense_gb: float = 0.1  # the largest dense result (GB) a dense anchor (jacrev, PyLops, SciPy) may build


def _signal(name, n, k, mode, note=""):
    pad = tuple(kk - 1 for kk in k) if mode == "full" else tuple(kk // 2 for kk in k)
    return Case(name, (1, 1, *k), (1, *n), {"padding": pad}, signal=mode, note=note)


# The 20 convolutions of torchvision's ResNet-18 at 224x224, by distinct geometry
# (count: how many share it).
RESNET18 = [
    Case("resnet18.conv1", (64, 3, 7, 7), (3, 224, 224), {"stride": 2, "padding": 3}, note="7x7/2"),
    # layer1's four 64->64 3x3 convolutions on 56x56: the "64->64 3x3 on 56x56" case.
    Case("resnet18.layer2.0.conv1", (128, 64, 3, 3), (64, 56, 56), {"stride": 2, "padding": 1}, note="3x3/2"),
    Case("resnet18.layer2.0.downsample", (128, 64, 1, 1), (64, 56, 56), {"stride": 2}, note="1x1/2"),
    Case("resnet18.layer2", (128, 128, 3, 3), (128, 28, 28), {"padding": 1}, count=3),
    Case("resnet18.layer3.0.conv1", (256, 128, 3, 3), (128, 28, 28), {"stride": 2, "padding": 1}, note="3x3/2"),
    Case("resnet18.layer3.0.downsample", (256, 128, 1, 1), (128, 28, 28), {"stride": 2}, note="1x1/2"),
    Case("resnet18.layer3", (256, 256, 3, 3), (256, 14, 14), {"padding": 1}, count=3),
    Case("resnet18.layer4.0.conv1", (512, 256, 3, 3), (256, 14, 14), {"stride": 2, "padding": 1}, note="3x3/2"),
    Case("resnet18.layer4.0.downsample", (512, 256, 1, 1), (256, 14, 14), {"stride": 2}, note="1x1/2"),
    Case("resnet18.layer4", (512, 512, 3, 3), (512, 7, 7), {"padding": 1}, count=3),
]


def full_cases() -> list[Case]:
    return [
        _signal("single 2-D 256x256, 5x5 full", (256, 256), (5, 5), "full", "sparse-convolution's case"),
        _signal("single 2-D 64x64, 5x5 same", (64, 64), (5, 5), "same", "small enough for dense anchors"),
        _signal("single 1-D 4096, k=9 full", (4096,), (9,), "full", "SciPy's 1-D case"),
        Case("16->16 3x3 on 32x32", (16, 16, 3, 3), (16, 32, 32), {"padding": 1}, dense_gb=1.2,
             note="jacrev's case (1.07 GB dense)"),
        Case("64->64 3x3 on 56x56 (resnet18.layer1)", (64, 64, 3, 3), (64, 56, 56), {"padding": 1}, count=4,
             note="issue 2's layer"),
        *RESNET18,
        Case("3-D 8->8 3x3x3 on 32^3", (8, 8, 3, 3, 3), (8, 32, 32, 32), {"padding": 1}),
        Case("depthwise 128 3x3 on 112x112", (128, 1, 3, 3), (128, 112, 112), {"padding": 1, "groups": 128}),
        Case("transposed 64->32 4x4/2 on 32x32", (64, 32, 4, 4), (64, 32, 32),
             {"stride": 2, "padding": 1, "transposed": True}, note="DCGAN-style upsampling"),
    ]


def quick_cases() -> list[Case]:
    """The same kinds of layer, small (the whole quick run takes well under a minute)."""
    return [
        _signal("single 2-D 256x256, 5x5 full", (256, 256), (5, 5), "full", "sparse-convolution's case"),
        _signal("single 2-D 32x32, 5x5 same", (32, 32), (5, 5), "same", "small enough for dense anchors"),
        _signal("single 1-D 1024, k=9 full", (1024,), (9,), "full", "SciPy's 1-D case"),
        Case("16->16 3x3 on 16x16", (16, 16, 3, 3), (16, 16, 16), {"padding": 1}, note="small variant"),
        Case("64->64 3x3 on 28x28", (64, 64, 3, 3), (64, 28, 28), {"padding": 1}, note="small variant"),
        Case("resnet18.conv1 at 64x64", (64, 3, 7, 7), (3, 64, 64), {"stride": 2, "padding": 3}, note="7x7/2"),
        Case("resnet18.layer2.0.downsample", (128, 64, 1, 1), (64, 56, 56), {"stride": 2}, note="1x1/2"),
        Case("resnet18.layer4 at 64x64 input", (512, 512, 3, 3), (512, 2, 2), {"padding": 1}),
        Case("3-D 4->4 3x3x3 on 16^3", (4, 4, 3, 3, 3), (4, 16, 16, 16), {"padding": 1}),
        Case("depthwise 32 3x3 on 56x56", (32, 1, 3, 3), (32, 56, 56), {"padding": 1, "groups": 32}),
        Case("transposed 32->16 4x4/2 on 16x16", (32, 16, 4, 4), (32, 16, 16),
             {"stride": 2, "padding": 1, "transposed": True}),
    ]


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """Cases whose name contains any of ``patterns`` (case-insensitive); all when None.

    >>> [c.name for c in select(quick_cases(), ["1-d"])]
    ['single 1-D 1024, k=9 full']
    """
    if not patterns:
        return cases
    pats = [p.lower() for p in patterns]
    return [c for c in cases if any(p in c.name.lower() for p in pats)]
