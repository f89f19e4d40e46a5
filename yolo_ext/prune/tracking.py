"""What a pruning step may remove, and what it removed: per-layer caps and the Detect inputs' kept channels.

Torch-Pruning 1.6 checks ``max_pruning_ratio`` only *before* a group is pruned, so global ranking can take a layer
far past the cap in one step (at ``--global --prune_ratio 0.95`` one layer lost 99%). :class:`LayerCap` trims every
group to what its layers may still lose, keeping the group's most important channels, and
:func:`check_layer_cap` refuses a result that breaks the cap anyway.

:class:`FeatureTaps` follows which input channels of each Detect level survive. A pruned student's features are
then exactly a subset of its teacher's (the network it was pruned from), so distillation can compare them channel by
channel with no projector (see :mod:`yolo_ext.train.distill`).
"""

from __future__ import annotations

import math

import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules import Detect

from yolo_ext.prune.errors import PruningError
from yolo_ext.prune.record import FeatureChannels, PruningRecord


def min_kept(initial: int, max_ratio: float, strict: bool = False) -> int:
    """Fewest channels a layer of ``initial`` channels may keep when it may lose at most ``max_ratio`` of them
    (never fewer than one). The check rounds down, as Torch-Pruning does; ``strict`` (what :class:`LayerCap` keeps)
    rounds up, so that a layer pruned in pieces (a split ``cv1``'s two halves) still passes once whole."""
    kept = initial * (1 - max_ratio)
    return max(1, math.ceil(kept - 1e-6) if strict else int(kept + 1e-6))


class LayerCap:
    """Trims each pruning group so that no layer loses more than ``max_ratio`` of the channels it had at the start.

    Args:
        pruner: the Torch-Pruning pruner (its dependency graph and the layers' initial widths are read).
        max_ratio: the cap, as ``PruneConfig.max_layer_ratio``.
        round_to: keep the root layer's width a multiple of this after trimming, as the pruner does.
    """

    def __init__(self, pruner: tp.pruner.BasePruner, max_ratio: float, round_to: int | None = None) -> None:
        self.pruner, self.max_ratio, self.round_to = pruner, max_ratio, round_to

    def room(self, group) -> int:
        """How many of the group's root indices may go: the tightest layer of the group decides."""
        graph, items = self.pruner.DG, list(group)
        n = allowed = len(items[0].idxs)
        for dep, idxs in items:
            if (dep.target.type == tp.ops.OPTYPE.PARAMETER or not idxs
                    or not graph.is_out_channel_pruning_fn(dep.handler)):
                continue
            module = dep.target.module
            initial, current = self.pruner.layer_init_out_ch.get(module), graph.get_out_channels(module)
            if initial is None or current is None:
                continue
            spare = max(current - min_kept(initial, self.max_ratio, strict=True), 0)
            if len(idxs) > spare:  # one root index can stand for several channels (heads, concat): scale
                allowed = min(allowed, spare * n // len(idxs))
        return allowed

    def limit(self, group):
        """``group`` itself when it respects the cap, a smaller group of its least important channels, or None."""
        items = list(group)
        root, fn, idxs = items[0].dep.target.module, items[0].dep.handler, list(items[0].idxs)
        k = self.room(group)
        if k >= len(idxs):
            return group
        if self.pruner._get_channel_groups(group) > 1:
            return None  # attention heads must lose the same channels each; skip rather than break the cap
        graph = self.pruner.DG
        out = graph.is_out_channel_pruning_fn(fn)
        width = graph.get_out_channels(root) if out else graph.get_in_channels(root)
        if self.round_to and out:
            while k > 0 and (width - k) % self.round_to:
                k -= 1
        if k <= 0:
            return None
        # importance is defined on the whole group (criteria normalise over it), so score all channels, then keep
        # pruning only the k least important of those the pruner chose
        score = self.pruner.estimate_importance(graph.get_pruning_group(root, fn, list(range(width))))
        if score is not None and len(score) == width:
            chosen = sorted(idxs, key=lambda i: float(score[i]))[:k]
        else:  # a criterion that scores groups differently: keep the order the pruner chose
            chosen = idxs[:k]
        return graph.get_pruning_group(root, fn, sorted(int(i) for i in chosen))


def check_layer_cap(before: dict[str, int], after: dict[str, int], max_ratio: float) -> None:
    """Refuse a pruning that left any conv with fewer channels than the cap allows (whatever the engine did)."""
    over = [
        f"{name} {n} -> {after[name]}"
        for name, n in before.items()
        if name in after and after[name] < min_kept(n, max_ratio)
    ]
    if over:
        raise PruningError(
            f"{len(over)} layer(s) lost more than max_layer_ratio={max_ratio:g} of their channels "
            f"({', '.join(over[:5])}{', ...' if len(over) > 5 else ''}). Lower the ratio, or raise --max-layer-ratio."
        )


def tap_conv(branch: nn.Module) -> nn.Conv2d:
    """The first dense conv of a Detect branch: its input channels are the level's feature channels."""
    for m in branch.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            return m
    raise PruningError(f"No dense conv at the start of Detect branch {type(branch).__name__}; cannot track features.")


def detect_widths(model: nn.Module) -> list[int]:
    """Input channels of each Detect level (what :class:`FeatureTaps` records and distillation compares)."""
    return [tap_conv(branch).in_channels for branch in model.model[-1].cv2]


class FeatureTaps:
    """Which channels of each Detect input level are kept, as indices into the network before pruning began."""

    def __init__(self, model: nn.Module) -> None:
        head = model.model[-1]
        if not isinstance(head, Detect):
            raise PruningError(f"Feature tracking needs a Detect head, got {type(head).__name__}.")
        self.convs = [tap_conv(branch) for branch in head.cv2]
        self.widths = [c.in_channels for c in self.convs]
        self.kept = [list(range(w)) for w in self.widths]

    def feature_channels(self) -> FeatureChannels:
        """Detect input widths before, and the kept indices per level, for the pruning record."""
        return FeatureChannels(tuple(self.widths), tuple(tuple(k) for k in self.kept))

    def record(self, group, graph) -> None:
        """Note the input channels that ``group`` is about to remove from a tap conv (call before ``prune()``)."""
        for dep, idxs in group:
            if not graph.is_in_channel_pruning_fn(dep.handler):
                continue
            for i, conv in enumerate(self.convs):
                if dep.target.module is conv:
                    drop = {int(j) for j in idxs}
                    self.kept[i] = [c for j, c in enumerate(self.kept[i]) if j not in drop]


def compose_feature_channels(
    history: list[PruningRecord], student: list[int], teacher: list[int]
) -> list[list[int]] | None:
    """For each Detect level, the teacher channels that the student's channels are, or None if unknown.

    ``student`` / ``teacher`` are the widths of the Detect inputs; ``history`` the student's pruning records, oldest
    first. The student's channels are followed back one pruning at a time until a network with the teacher's widths
    is reached; None if the history never passes through one (the teacher is not what the student was pruned from).
    """
    current, widths = [list(range(w)) for w in student], list(student)
    if widths == teacher:
        return current
    for record in reversed(history):  # each record maps the network after it onto the network before it
        taps = record.feature_channels
        if not taps.widths or [len(k) for k in taps.kept] != widths:
            return None
        current = [[kept[j] for j in level] for kept, level in zip(taps.kept, current)]
        widths = list(taps.widths)
        if widths == teacher:
            return current
    return None
