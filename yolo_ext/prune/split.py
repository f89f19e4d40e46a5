"""C2f-family blocks split their ``cv1`` output in two halves; Torch-Pruning mis-maps ``chunk``/``split`` indices there.

While a model is pruned, ``cv1`` is replaced by :class:`SplitConv`, two real 1x1 convs (one per half), and the block
runs :func:`split_forward`, which never chunks. The halves are tied by an exact ``+ 0 * a`` so Torch-Pruning couples
their channels: both always lose the same number of channels, which the stock forward (``chunk(2, 1)`` /
``split((self.c, self.c))``) needs. :func:`merge` folds the halves back into the original ``cv1`` and sets ``self.c``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from ultralytics.nn.modules import C2PSA, C2f, Conv

from yolo_ext.prune.patching import instance_forwards
from yolo_ext.spec import prune_kind


class SplitConv(nn.Module):
    """``cv1`` as two convs, ``a`` (first half: skips the inner blocks) and ``b`` (second half: feeds them)."""

    def __init__(self, cv1: Conv) -> None:
        """Copy each half of ``cv1``'s output channels (conv and BN) into its own ``Conv``."""
        super().__init__()
        c = cv1.conv.out_channels // 2
        self.original = [cv1]  # a list hides it from named_modules, so the graph and the pruner never see it
        self.a, self.b = (self._half(cv1, slice(0, c)), self._half(cv1, slice(c, 2 * c)))

    @staticmethod
    def _half(cv1: Conv, rows: slice) -> Conv:
        conv, bn = cv1.conv, cv1.bn
        half = Conv(conv.in_channels, rows.stop - rows.start, conv.kernel_size, conv.stride, act=cv1.act)
        half.conv.padding, half.conv.dilation = conv.padding, conv.dilation
        with torch.no_grad():
            half.conv.weight.copy_(conv.weight[rows])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(half.bn, name).copy_(getattr(bn, name)[rows])
        half.bn.eps, half.bn.momentum = bn.eps, bn.momentum
        half.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        return half.train(cv1.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both halves; ``b + 0 * a`` is exact and makes the dependency graph prune the same channels in both."""
        a = self.a(x)
        return a, self.b(x) + 0 * a

    def merged(self) -> Conv:
        """The original ``cv1`` with the (pruned) halves written back into it."""
        cv1 = self.original[0]
        conv, bn = cv1.conv, cv1.bn
        with torch.no_grad():
            conv.weight = nn.Parameter(torch.cat([self.a.conv.weight, self.b.conv.weight]))
            for name in ("weight", "bias"):
                setattr(bn, name, nn.Parameter(torch.cat([getattr(self.a.bn, name), getattr(self.b.bn, name)])))
            for name in ("running_mean", "running_var"):
                setattr(bn, name, torch.cat([getattr(self.a.bn, name), getattr(self.b.bn, name)]))
        conv.in_channels = conv.weight.shape[1]
        conv.out_channels = bn.num_features = conv.weight.shape[0]
        return cv1


def split_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """C2f / C3k2 / C3k2_RVB* / C2PSA forward on a :class:`SplitConv` (same maths as the stock forwards)."""
    a, b = self.cv1(x)
    if isinstance(self, C2PSA):
        return self.cv2(torch.cat((a, self.m(b)), 1))
    y = [a, b]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


# The forwards split_forward reproduces; a block that overrides them is traced instead.
_SPLIT_FORWARDS = (C2f.forward, C2PSA.forward)


def is_split_block(module: nn.Module) -> bool:
    """Whether the spec table says ``module``'s class splits (C2f, C2PSA and their registered subclasses such as
    C3k2 and C3k2_RVB*) and it still runs the stock forward that :func:`split_forward` reproduces (a stock forward
    wrapped for gradient checkpointing, ``checkpoint=True`` in its spec, still is)."""
    forward = type(module).forward
    return prune_kind(type(module)) == "split" and getattr(forward, "__wrapped__", forward) in _SPLIT_FORWARDS


@contextmanager
def split_blocks(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Swap every split block's ``cv1`` for a :class:`SplitConv` inside the context; merge back on exit."""
    blocks = [m for m in model.modules() if is_split_block(m)]
    for m in blocks:
        m.cv1 = SplitConv(m.cv1)
    try:
        with instance_forwards((m, split_forward) for m in blocks):
            yield blocks
    finally:
        for m in blocks:
            m.cv1 = m.cv1.merged()
            m.c = m.cv1.conv.out_channels // 2
