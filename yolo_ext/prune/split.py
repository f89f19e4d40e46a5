"""C2f-family blocks split their ``cv1`` output in two halves; Torch-Pruning mis-maps ``chunk``/``split`` indices there.

While a model is pruned, ``cv1`` is replaced by :class:`SplitConv`, two real 1x1 convs (one per half), and the block
runs its entry in :data:`SPLIT_FORWARDS`, which never chunks. The halves are tied by an exact ``+ 0 * a`` so
Torch-Pruning couples their channels: both always lose the same number of channels, which the stock forward
(``chunk(2, 1)`` / ``split((self.c, self.c))``) needs. :meth:`SplitConv.merged` folds the halves back into the
original ``cv1`` and ``self.c`` is set from it. YOLOv10's PSA has the same layout without being a C2PSA subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from ultralytics.nn.modules import C2PSA, PSA, C2f, Conv

from yolo_ext.prune.patching import instance_forwards
from yolo_ext.registry.spec import prune_kind


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


def _c2f_split(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """C2f / C3k2 / C2fCIB / C3k2_RVB*: every inner block feeds the next, all outputs are concatenated."""
    a, b = self.cv1(x)
    y = [a, b]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2psa_split(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """C2PSA (YOLO11): the second half runs the PSABlocks."""
    a, b = self.cv1(x)
    return self.cv2(torch.cat((a, self.m(b)), 1))


def _psa_split(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """PSA (YOLOv10): the second half gets residual attention, then a residual feed-forward."""
    a, b = self.cv1(x)
    b = b + self.attn(b)
    b = b + self.ffn(b)
    return self.cv2(torch.cat((a, b), 1))


#: stock forward -> the same maths on a :class:`SplitConv`. Keyed by the forward, not the class: a subclass that
#: overrides its forward is traced instead (its forward may no longer be the one reproduced here).
SPLIT_FORWARDS: dict[Callable, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    C2f.forward: _c2f_split,
    C2PSA.forward: _c2psa_split,
    PSA.forward: _psa_split,
}


def _stock_forward(cls: type[nn.Module]) -> Callable:
    """The class's forward, seen through the gradient-checkpointing wrapper (:mod:`yolo_ext.train.grad_checkpoint`)."""
    return getattr(cls.forward, "__wrapped__", cls.forward)


def is_split_block(module: nn.Module) -> bool:
    """Whether the spec table says ``module``'s class splits (C2f, C2PSA, PSA and their registered subclasses such
    as C3k2, C2fCIB and C3k2_RVB*) and it still runs a stock forward that :data:`SPLIT_FORWARDS` reproduces (a stock
    forward wrapped for gradient checkpointing, ``checkpoint=True`` in its spec, still does)."""
    return prune_kind(type(module)) == "split" and _stock_forward(type(module)) in SPLIT_FORWARDS


@contextmanager
def split_blocks(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Swap every split block's ``cv1`` for a :class:`SplitConv` inside the context; merge back on exit."""
    blocks = [m for m in model.modules() if is_split_block(m)]
    for m in blocks:
        m.cv1 = SplitConv(m.cv1)
    try:
        with instance_forwards((m, SPLIT_FORWARDS[_stock_forward(type(m))]) for m in blocks):
            yield blocks
    finally:
        for m in blocks:
            m.cv1 = m.cv1.merged()
            m.c = m.cv1.conv.out_channels // 2
