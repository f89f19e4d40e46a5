"""SimAM: a simple, parameter-free attention module.

Paper: Lingxiao Yang, Ru-Yi Zhang, Lida Li, Xiaohua Xie, "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, https://proceedings.mlr.press/v139/yang21o.html. Code:
https://github.com/ZjjConan/SimAM

Each activation is weighted by the inverse of its minimal energy, a closed form of how much it stands out from the
other positions of its channel: ``x * sigmoid((x - mean)^2 / (4 * (var + lambda)) + 0.5)``, with the variance over
the ``h * w - 1`` other positions. No weights, so it adds no parameters and prunes by tracing (nothing inside to
repair); it asks for its input channels only so that every attention layer is built the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import check_channels

__all__ = ["SimAM"]


class SimAM(nn.Module):
    """Parameter-free energy attention; output has the shape of the input.

    Args:
        c1 (int): Input (= output) channels; checked, not used (there are no weights).
        e_lambda (float): The energy's regulariser (the paper's lambda, 1e-4).

    Examples:
        >>> m = SimAM(64)
        >>> m(torch.randn(2, 64, 20, 16)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 64, 20, 16]), 0)
    """

    def __init__(self, c1: int, e_lambda: float = 1e-4) -> None:
        """Check the arguments; there is nothing to build."""
        super().__init__()
        check_channels("SimAM", c1)
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not e_lambda > 0:
            raise ValueError(f"SimAM: e_lambda must be a number > 0, got {e_lambda!r}; the paper uses 1e-4")
        self.e_lambda = float(e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weight ``x`` (N, C, H, W) by ``sigmoid(1 / minimal energy)`` per position."""
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        # h * w - 1 positions besides this one, as a tensor so an ONNX export keeps H and W dynamic; at least one,
        # so a 1x1 map gives the neutral 0.5 instead of 0 / 0
        n = torch.ones_like(x[:1, :1]).sum(dim=(2, 3), keepdim=True).sub(1).clamp(min=1)
        y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * y.sigmoid()

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda:g}"
