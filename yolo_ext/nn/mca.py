"""Multidimensional Collaborative Attention (MCA).

Paper: Yang Yu, Yi Zhang, Zeyu Cheng, Zhe Song, Chengkai Tang, "MCA: Multidimensional collaborative attention in deep
convolutional neural networks for image recognition", Engineering Applications of Artificial Intelligence, 2023,
article 107079. No arXiv version is known to us; the authors' code is https://github.com/ndsclark/MCANet

Three cheap gates, one per axis (height, width, channel). Each squeezes the other two axes into a mix of average and
standard deviation, runs a 1-D conv along its own axis and rescales the input; the three results are averaged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._utils import check_bool, check_channels, check_int

__all__ = ["MCA", "MCAGate"]


def _check_kernel(owner: str, arg: str, k: object) -> int:
    """Return ``k`` if it is an odd integer >= 1: an even kernel would shift the gate by half a position."""
    k = check_int(owner, arg, k, 1, "use an odd kernel size such as 3 or 5")
    if k % 2 == 0:
        raise ValueError(f"{owner}: {arg} must be odd, got {k}; use {k - 1} or {k + 1}")
    return k


def mca_channel_kernel(c1: int) -> int:
    """The paper's channel-gate kernel for ``c1`` channels: ``round(|log2(c1) - 1| / 1.5)`` made odd, at least 3.

    Args:
        c1 (int): Channel count.

    Returns:
        (int): Odd kernel size >= 3.

    Examples:
        >>> [mca_channel_kernel(c) for c in (16, 64, 256, 2048)]
        [3, 3, 5, 7]
    """
    c1 = check_channels("MCA", c1)
    t = round(abs((math.log2(c1) - 1) / 1.5))
    k = t if t % 2 else t - 1
    return max(k, 3)


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Mean over ``dims`` (keepdim), one axis at a time in the given order."""
    for d in dims:
        x = x.mean(dim=d, keepdim=True)
    return x


def _std(x: torch.Tensor, mean: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Population standard deviation over ``dims`` (keepdim), finite in value and gradient even for one element.

    ``Tensor.std`` is NaN on a single element and ``sqrt`` has an infinite slope at 0, so a zero variance is routed
    through a constant instead; the value is exact everywhere.
    """
    var = _mean((x - mean).square(), dims)
    pos = var > 0
    return torch.where(pos, torch.where(pos, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))


class MCAGate(nn.Module):
    """Gate over one axis of an (N, C, H, W) tensor: squeeze the other two, 1-D conv along the axis, sigmoid, rescale.

    Works on the tensor as laid out: no permutes, and each statistic reduces the innermost remaining axis first, so
    every reduction reads memory in order (ONNX Runtime runs a reduction over permuted, strided axes several times
    slower, which made MCA the one attention layer above a 5% latency budget).

    Args:
        k_size (int): Odd 1-D kernel size along the gated axis.

    Examples:
        >>> g = MCAGate(3)
        >>> g(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, k_size: int) -> None:
        """Build the 1-D conv (as a (1, k) Conv2d) and the two learnable avg/std mixing weights."""
        super().__init__()
        k_size = _check_kernel("MCAGate", "k_size", k_size)
        self.conv = nn.Conv2d(1, 1, (1, k_size), padding=(0, k_size // 2), bias=False)
        self.weight = nn.Parameter(torch.rand(2))  # random start as in the authors' code

    @property
    def kernel_size(self) -> int:
        """1-D kernel size, read from the weights."""
        return self.conv.weight.shape[-1]

    def forward(self, x: torch.Tensor, axis: int = 1) -> torch.Tensor:
        """Rescale ``x`` (N, C, H, W) by a gate over ``axis`` (1, 2 or 3) from statistics over the other two axes."""
        others = tuple(d for d in (3, 2, 1) if d != axis)  # innermost first
        avg = _mean(x, others)  # x's shape with 1 on the two squeezed axes
        std = _std(x, avg, others)
        w = self.weight.sigmoid()
        y = 0.5 * (avg + std) + w[0] * avg + w[1] * std
        n = y.shape[0]
        y = self.conv(y.reshape(n, 1, 1, -1)).reshape(y.shape)  # the axis is the only one left: no permute needed
        return x * y.sigmoid()


class MCA(nn.Module):
    """Multidimensional collaborative attention; output has the shape of the input.

    Args:
        c1 (int): Input (= output) channels; sets the channel gate's kernel unless ``kernel_size`` is given.
        no_spatial (bool): Leave out the channel gate (``c_hw``) and average the H and W gates only. The name and
            meaning follow the authors' code.
        kernel_size (int | None): Odd channel-gate kernel overriding the rule from ``c1``. A pruned or rebuilt
            model passes its trained kernel here, since the rule would give another size for the new width.

    Examples:
        >>> m = MCA(256)
        >>> m(torch.randn(2, 256, 20, 16)).shape, m.kernel_size
        (torch.Size([2, 256, 20, 16]), 5)
        >>> MCA(128, kernel_size=5).kernel_size
        5
    """

    def __init__(self, c1: int, no_spatial: bool = False, kernel_size: int | None = None) -> None:
        """Build the H, W and (unless ``no_spatial``) channel gates."""
        super().__init__()
        c1 = check_channels("MCA", c1)
        no_spatial = check_bool("MCA", "no_spatial", no_spatial)
        k = mca_channel_kernel(c1) if kernel_size is None else _check_kernel("MCA", "kernel_size", kernel_size)
        self.h_cw = MCAGate(3)  # gate over H, statistics over C and W
        self.w_hc = MCAGate(3)  # gate over W, statistics over H and C
        self.c_hw = None if no_spatial else MCAGate(k)  # gate over C, statistics over H and W

    @property
    def no_spatial(self) -> bool:
        """Whether the channel gate is left out (read from the structure)."""
        return self.c_hw is None

    @property
    def kernel_size(self) -> int | None:
        """Channel-gate kernel size read from its weights, ``None`` when ``no_spatial``."""
        return None if self.c_hw is None else self.c_hw.conv.weight.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average the gated copies of ``x`` (N, C, H, W)."""
        x_h = self.h_cw(x, axis=2)  # gate over H, statistics over C and W
        x_w = self.w_hc(x, axis=3)  # gate over W, statistics over H and C
        if self.c_hw is None:
            return 0.5 * (x_h + x_w)
        return (x_h + x_w + self.c_hw(x, axis=1)) * (1.0 / 3.0)
