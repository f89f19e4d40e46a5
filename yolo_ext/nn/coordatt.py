"""Coordinate Attention.

Paper: Qibin Hou, Daquan Zhou, Jiashi Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
https://arxiv.org/abs/2103.02907

Channel attention that keeps position: the map is pooled along each spatial axis separately, the two 1-D
descriptors share one 1x1 conv, and two sigmoid gates (one per axis) rescale the input.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from ._utils import check_channels, check_int, make_divisible

__all__ = ["CoordAtt"]


class CoordAtt(nn.Module):
    """Coordinate attention; output has the shape of the input.

    Args:
        c1 (int): Input (= output) channels.
        reduction (int): Bottleneck width is ``c1 / reduction`` rounded by ``make_divisible``...
        min_mid (int): ...but never below this, so narrow layers keep a useful bottleneck.

    Examples:
        >>> m = CoordAtt(64)
        >>> m(torch.randn(2, 64, 20, 16)).shape
        torch.Size([2, 64, 20, 16])
        >>> m.mid_channels
        8
    """

    #: the bottleneck floor; an instance keeps the one it was built with (pruning shrinks the bottleneck down to it),
    #: checkpoints written before it was stored read this default
    min_mid: int = 8

    def __init__(self, c1: int, reduction: int = 32, min_mid: int = min_mid) -> None:
        """Build the shared bottleneck conv (a Ultralytics ``Conv`` so fusing folds its BN) and the two gate convs."""
        super().__init__()
        c1 = check_channels("CoordAtt", c1)
        reduction = check_int("CoordAtt", "reduction", reduction, 1, "use 1 for no reduction")
        min_mid = check_int("CoordAtt", "min_mid", min_mid, 1, "the bottleneck needs at least one channel")
        mid = make_divisible(c1 / reduction, 1, min_mid)  # nearest width, never below min_mid
        self.min_mid = min_mid
        self.conv1 = Conv(c1, mid, 1, act=nn.Hardswish())
        self.conv_h = nn.Conv2d(mid, c1, 1)
        self.conv_w = nn.Conv2d(mid, c1, 1)

    @property
    def in_channels(self) -> int:
        """Input (= output) channels, read from the weights so it follows pruning."""
        return self.conv1.conv.weight.shape[1]

    @property
    def mid_channels(self) -> int:
        """Bottleneck width, read from the weights so it follows pruning."""
        return self.conv1.conv.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x`` (N, C, H, W) by a per-row and a per-column attention map."""
        h = x.shape[2]  # traced as a dynamic Shape op by the ONNX exporter, so slicing below stays dynamic
        x_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        y = self.conv1(torch.cat((x_h, x_w), dim=2))  # one BN over both descriptors, as in the paper
        a_h = self.conv_h(y[:, :, :h]).sigmoid()  # (N, C, H, 1)
        a_w = self.conv_w(y[:, :, h:].transpose(2, 3)).sigmoid()  # (N, C, 1, W)
        return x * a_h * a_w
