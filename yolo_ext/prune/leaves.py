"""How channel-preserving leaves prune: each is one node whose inside the dependency graph never sees.

Torch-Pruning traces through a module even when it is ignored, and loses itself in attention reshapes (C2PSA hangs;
CoordAtt's concat of the H and W descriptors along a spatial axis, and MCA's channel gate, which reshapes the channel
axis into the width of a 1-D conv, would be read as channel operations). So while the graph is built, every class
whose spec (:mod:`yolo_ext.registry.modules`) has a leaf rule runs a stand-in forward that is an identity to the graph
(:func:`trace_stand_ins`), and a :class:`LeafPruner` prunes the real layer: its input and output channels are the
same indices; inner widths (CoordAtt's squeeze, ContextAggregation's value width) shrink in proportion, dropping their
weakest channels; what the trained weights need stays (single-channel gate/key, MCA's 1-D kernels, attention key_dim
and scale). Detect gets a stand-in too: all branches, including YOLO26's one-to-one head that the stock forward
detaches, with no box decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules.block import AAttn, Attention

from yolo_ext.nn import MCA, ContextAggregation, CoordAtt
from yolo_ext.prune.heads import HEADS, trace_branches
from yolo_ext.prune.patching import instance_forwards
from yolo_ext.registry.spec import ModuleSpec, SpecError, specs


def _prune_conv_out(conv: Conv | nn.Conv2d, idxs: Sequence[int]) -> None:
    """Output channels of a plain conv or of an Ultralytics Conv (conv + BN; a fused one has no BN)."""
    inner = conv.conv if isinstance(conv, Conv) else conv
    if inner.groups > 1 and inner.groups == inner.out_channels:
        tp.prune_depthwise_conv_out_channels(inner, list(idxs))
    else:
        tp.prune_conv_out_channels(inner, list(idxs))
    if isinstance(conv, Conv) and hasattr(conv, "bn"):
        tp.prune_batchnorm_out_channels(conv.bn, list(idxs))


def _prune_conv_in(conv: Conv | nn.Conv2d, idxs: Sequence[int]) -> None:
    tp.prune_conv_in_channels(conv.conv if isinstance(conv, Conv) else conv, list(idxs))


def _weakest_inner(width: int, new_width: int, producer: nn.Conv2d, consumers: Sequence[nn.Conv2d]) -> list[int]:
    """Inner channels to drop so ``width`` becomes ``new_width``: smallest L1 norm of the producer row plus the
    consumer columns (the weights a channel carries in and out of the block)."""
    if new_width >= width:
        return []
    score = producer.weight.detach().abs().flatten(1).sum(1)
    for c in consumers:
        score = score + c.weight.detach().abs().transpose(0, 1).flatten(1).sum(1)
    return sorted(torch.argsort(score)[: width - new_width].tolist())


def _scaled(inner: int, old: int, new: int, floor: int = 1) -> int:
    """Inner width that keeps its trained proportion to the block width, never below ``floor`` (or its own size)."""
    return max(min(floor, inner), round(inner * new / old))


class LeafPruner(tp.pruner.BasePruningFunc):
    """A channel-preserving layer: pruning its output channels prunes the same input channels (one function).

    Subclasses implement :meth:`prune` (remove channels from every weight that sees them) and may read
    :meth:`channels` from the weights; by default the width is counted from the input the layer sees while the
    graph is traced, and follows the removals, which works for layers without per-channel weights too.
    """

    TARGET_MODULES = None

    def __init__(self) -> None:
        super().__init__()
        self._channels: dict[int, int] = {}

    def track(self, layer: nn.Module, channels: int) -> None:
        """Record the width the layer receives (called while the graph is traced)."""
        self._channels[id(layer)] = channels

    def channels(self, layer: nn.Module) -> int:
        """Input (= output) channels: as counted while tracing, minus what was removed since."""
        if id(layer) not in self._channels:
            raise RuntimeError(f"{type(layer).__name__} was not seen while the graph was traced; cannot count its "
                               "channels.")
        return self._channels[id(layer)]

    def prune(self, layer: nn.Module, idxs: Sequence[int]) -> None:
        """Remove channels ``idxs`` from every weight that sees them."""
        raise NotImplementedError

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        idxs = sorted(set(idxs))
        self.prune(layer, idxs)
        if id(layer) in self._channels:
            self._channels[id(layer)] -= len(idxs)
        return layer

    prune_in_channels = prune_out_channels  # one function: Torch-Pruning couples input and output channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.channels(layer)

    get_in_channels = get_out_channels


class RepairLeaf(LeafPruner):
    """A leaf rule given as a function: ``repair(layer, idxs)`` removes channels ``idxs`` from the layer's weights.

    What :func:`yolo_ext.register_module` builds from ``prune=<function>``. ``groups(layer)`` (optional) is the number
    of equal channel groups that must lose the same positions: channel ``i`` is position ``i % (C // groups)`` of
    group ``i // (C // groups)``, and Torch-Pruning removes a position from every group at once.
    """

    def __init__(
        self, repair: Callable[[nn.Module, list[int]], None], groups: Callable[[nn.Module], int] | None = None
    ) -> None:
        super().__init__()
        self.repair, self.groups = repair, groups

    def prune(self, layer: nn.Module, idxs: Sequence[int]) -> None:
        self.repair(layer, list(idxs))

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return 1 if self.groups is None else int(self.groups(layer))

    get_in_channel_groups = get_out_channel_groups


class CoordAttPruner(LeafPruner):
    """CoordAtt: the squeeze conv loses input channels, the two gate convs output channels; the squeeze width
    shrinks in proportion (not below the module's own floor, ``min_mid``), dropping its weakest channels."""

    def channels(self, layer: CoordAtt) -> int:
        return layer.conv_h.out_channels

    def prune(self, layer: CoordAtt, idxs: Sequence[int]) -> None:
        old = self.channels(layer)
        _prune_conv_in(layer.conv1, idxs)
        _prune_conv_out(layer.conv_h, idxs)
        _prune_conv_out(layer.conv_w, idxs)
        mid = layer.conv1.conv.out_channels
        new_mid = _scaled(mid, old, old - len(idxs), layer.min_mid)
        inner = _weakest_inner(mid, new_mid, layer.conv1.conv, [layer.conv_h, layer.conv_w])
        if inner:
            _prune_conv_out(layer.conv1, inner)
            _prune_conv_in(layer.conv_h, inner)
            _prune_conv_in(layer.conv_w, inner)


class MCAPruner(LeafPruner):
    """MCA has no per-channel weights: its 1-D kernels slide over the axes and keep their trained size. Its width is
    only in the tensors it sees, which the base class counts."""

    def prune(self, layer: MCA, idxs: Sequence[int]) -> None:
        pass


class ContextAggregationPruner(LeafPruner):
    """ContextAggregation: gate, key and value convs lose input channels, the output projection output channels;
    the value width shrinks in proportion (weakest channels first); gate and key keep their single channel."""

    def channels(self, layer: ContextAggregation) -> int:
        return layer.in_channels

    def prune(self, layer: ContextAggregation, idxs: Sequence[int]) -> None:
        old = self.channels(layer)
        for conv in (layer.a, layer.k, layer.v):
            _prune_conv_in(conv, idxs)
        _prune_conv_out(layer.m, idxs)
        width = layer.inter_channels
        inner = _weakest_inner(width, _scaled(width, old, old - len(idxs)), layer.v, [layer.m])
        if inner:
            _prune_conv_out(layer.v, inner)
            _prune_conv_in(layer.m, inner)


class AttentionPruner(LeafPruner):
    """Ultralytics' multi-head ``Attention`` (C2PSA, PSABlock, C3k2 with attn): head_dim shrinks in every head alike.

    Channel ``i`` of the block is value channel ``i % head_dim`` of head ``i // head_dim``; the channel groups
    reported to the pruner (one per head) make Torch-Pruning remove the same positions in every head. Query/key
    widths and the softmax scale stay as trained.
    """

    def channels(self, layer: Attention) -> int:
        return layer.proj.conv.out_channels

    def get_out_channel_groups(self, layer: Attention) -> int:
        return layer.num_heads

    get_in_channel_groups = get_out_channel_groups

    def prune(self, layer: Attention, idxs: Sequence[int]) -> None:
        hd, kd, nh = layer.head_dim, layer.key_dim, layer.num_heads
        per_head = [sorted(i % hd for i in idxs if i // hd == h) for h in range(nh)]
        if any(p != per_head[0] for p in per_head):
            raise RuntimeError(f"Attention pruning must remove the same value channels in every head, got {per_head}")
        qkv_rows = [h * (2 * kd + hd) + 2 * kd + j for h in range(nh) for j in per_head[0]]
        _prune_conv_in(layer.qkv, idxs)
        _prune_conv_out(layer.qkv, qkv_rows)
        _prune_conv_out(layer.pe, idxs)
        _prune_conv_in(layer.proj, idxs)
        _prune_conv_out(layer.proj, idxs)
        layer.head_dim = hd - len(per_head[0])


class AreaAttentionPruner(LeafPruner):
    """Ultralytics' area attention ``AAttn`` (A2C2f, YOLO12): the block width is only qkv's input and proj's output;
    the heads (queries, keys, values, position conv, softmax scale from head_dim) keep their trained width."""

    def channels(self, layer: AAttn) -> int:
        return layer.proj.conv.out_channels

    def prune(self, layer: AAttn, idxs: Sequence[int]) -> None:
        _prune_conv_in(layer.qkv, idxs)
        _prune_conv_out(layer.proj, idxs)


def make_pruner(spec: ModuleSpec) -> tp.pruner.BasePruningFunc:
    """A fresh Torch-Pruning layer pruner for a leaf spec (pruners may hold per-run state): its
    :class:`LeafPruner` subclass, or a :class:`RepairLeaf` around its repair function."""
    if not spec.leaf:
        raise SpecError(f"{spec.cls.__name__} is not a leaf; it prunes by {spec.prune or 'trace'}.")
    if isinstance(spec.prune, type):
        if not issubclass(spec.prune, tp.pruner.BasePruningFunc):
            raise SpecError(f"{spec.cls.__name__}: a pruner class must subclass yolo_ext.prune.leaves.LeafPruner.")
        return spec.prune()
    return RepairLeaf(spec.prune, spec.groups)


def leaf_pruners() -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """A fresh pruner per leaf class of the spec table (Torch-Pruning matches the exact class; pruners count widths)."""
    return {spec.cls: make_pruner(spec) for spec in specs() if spec.leaf}


def _identity_to_graph(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stand-in forward: one node from input to output, nothing inside for the graph to walk into."""
    return x.clone()


@contextmanager
def trace_stand_ins(model: nn.Module, pruners: dict[type[nn.Module], LeafPruner]) -> Iterator[None]:
    """Give leaf layers and Detect their stand-in forwards while the dependency graph is traced."""
    stand_ins, hooks = [], []
    for m in model.modules():
        pruner = pruners.get(type(m))
        if pruner is not None:
            if isinstance(pruner, LeafPruner):
                hooks.append(
                    m.register_forward_pre_hook(lambda layer, args, p=pruner: p.track(layer, args[0].shape[1]))
                )
            stand_ins.append((m, _identity_to_graph))
        elif type(m) in HEADS:
            stand_ins.append((m, trace_branches))
    try:
        with instance_forwards(stand_ins):
            yield
    finally:
        for h in hooks:
            h.remove()
