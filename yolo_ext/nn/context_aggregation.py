"""Context Aggregation block of CATNet.

Paper: Ye Liu, Huifang Li, Chao Hu, Shuang Luo, Yan Luo, Chang Wen Chen, "CATNet: Context AggregaTion Network for
Instance Segmentation in Remote Sensing Images", arXiv 2021, https://arxiv.org/abs/2111.11057; published as "Learning
to Aggregate Multi-Scale Context for Instance Segmentation in Remote Sensing Images", IEEE Transactions on Neural
Networks and Learning Systems, 2024 (doi:10.1109/TNNLS.2023.3336563). Code: https://github.com/yeliudev/CATNet

A global-context block: one softmax over all positions pools a value map into a single vector per image, which is
projected back, gated per position and added to the input. Plain PyTorch (no mmcv); exports to ONNX with dynamic
H and W.
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import check_channels, check_int, make_divisible

__all__ = ["ContextAggregation"]


class ContextAggregation(nn.Module):
    """Global context aggregation, residual; a freshly built block is an exact identity.

    Args:
        c1 (int): Input (= output) channels.
        reduction (int): Value width is ``c1 / reduction`` rounded by ``make_divisible`` (at least 1).

    Examples:
        >>> m = ContextAggregation(64, reduction=4)
        >>> x = torch.randn(2, 64, 20, 16)
        >>> torch.equal(m(x), x), m.inter_channels
        (True, 16)
    """

    def __init__(self, c1: int, reduction: int = 1) -> None:
        """Build the gate ``a``, key ``k``, value ``v`` and the zero-initialised output projection ``m``."""
        super().__init__()
        c1 = check_channels("ContextAggregation", c1)
        reduction = check_int("ContextAggregation", "reduction", reduction, 1, "use 1 for no reduction")
        c = make_divisible(c1 / reduction, 1)  # nearest width, at least one channel
        self.a = nn.Conv2d(c1, 1, 1)  # per-position gate; must keep its single output channel
        self.k = nn.Conv2d(c1, 1, 1)  # attention logits; must keep its single output channel
        self.v = nn.Conv2d(c1, c, 1)
        self.m = nn.Conv2d(c, c1, 1)
        for conv in (self.a, self.k, self.v):  # the paper's "caffe2 xavier" init
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        # Zero projection: inserting the block into a trained network does not change its output.
        nn.init.zeros_(self.m.weight)
        nn.init.zeros_(self.m.bias)

    @property
    def in_channels(self) -> int:
        """Input (= output) channels, read from the weights so it follows pruning."""
        return self.v.weight.shape[1]

    @property
    def inter_channels(self) -> int:
        """Value width, read from the weights so it follows pruning."""
        return self.v.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + gate * proj(sum_p softmax(key)_p * value_p)`` for ``x`` of shape (N, C, H, W)."""
        a = self.a(x).sigmoid()  # (N, 1, H, W)
        k = self.k(x).flatten(2).softmax(dim=-1)  # (N, 1, HW)
        v = self.v(x).flatten(2)  # (N, c, HW)
        y = torch.matmul(v, k.transpose(1, 2)).unsqueeze(-1)  # (N, c, 1, 1)
        return x + self.m(y) * a
