"""Cost-aware allocation: how many channels each group keeps, so that the most importance is kept per unit of cost
removed (HALP-style, greedy): milliseconds from a measured latency table, or MACs, or parameters.

Torch-Pruning's own ranking removes a ratio of channels per group, or the globally least important channels, and
knows nothing of what a channel costs: a channel of a 160x160 map costs 100 times one of a 20x20 map in time, and
widths a runtime computes in blocks cost the same inside a block. Here every prunable group (Torch-Pruning's
dependency groups, with yolo_ext's splits, leaves and protected outputs) may only keep widths that are multiples of
the runtime's channel multiple (:mod:`yolo_ext.latency.multiples`), within ``max_layer_ratio``. Starting from the
full network, the step with the least importance lost per unit of cost saved is taken until the cost is within the
budget; a group's next few steps are all priced, so a step that saves nothing alone (inside a block) does not stall
it. The chosen channels are then removed the way Torch-Pruning removes them (its groups, its indices).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from yolo_ext.latency.costs import ConvShape, CostModel
from yolo_ext.prune.errors import PruningError
from yolo_ext.prune.tracking import FeatureTaps, min_kept

#: how many of its next allowed widths a group prices each round
LOOKAHEAD = 4


@dataclass
class Group:
    """One prunable dependency group and what removing its channels does."""

    root: nn.Module
    fn: Callable
    name: str
    width: int  # channels of the root layer (its index space)
    ch_groups: int  # channel groups sharing one ranking (Torch-Pruning's channel grouping)
    order: list[int]  # ranking indices (width // ch_groups of them), least important first
    cum: list[float]  # cum[k]: importance of the k least important
    effects: list[tuple[str, bool, float]]  # (conv name, output side?, channels removed per ranking index)
    keeps: list[int] = field(default_factory=list)  # allowed ranking counts to keep, largest first

    @property
    def n(self) -> int:
        return len(self.order)


def prunable_groups(
    pruner: tp.pruner.BasePruner, model: nn.Module, shapes: Mapping[str, ConvShape], multiple: int,
    max_ratio: float, initial_out: Mapping[str, int],
) -> list[Group]:
    """Every group Torch-Pruning would rank, with its importance, effects on conv widths and allowed widths."""
    graph = pruner.DG
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        if not pruner._check_pruning_ratio(group):
            continue
        imp = pruner.estimate_importance(group)
        if imp is None:
            continue
        ch_groups = pruner._get_channel_groups(group)
        dim_imp = imp.view(ch_groups, -1).mean(0).cpu() if ch_groups > 1 else imp.cpu()
        root, fn = group[0].dep.target.module, group[0].dep.handler
        width = len(group[0].idxs)
        order = torch.argsort(dim_imp).tolist()
        cum = [0.0]
        for i in order:
            cum.append(cum[-1] + float(dim_imp[i]))
        n = len(order)
        effects: dict[tuple[str, bool], float] = {}
        most = n  # ranking indices the group may lose before a layer passes max_ratio
        for dep, idxs in group:
            module = dep.target.module
            name = names.get(module)
            if not isinstance(module, nn.Conv2d) or name not in shapes or not idxs:
                continue
            out = graph.is_out_channel_pruning_fn(dep.handler)
            per = len(idxs) / n
            effects[(name, out)] = effects.get((name, out), 0.0) + per
            if shapes[name].depthwise:  # loses inputs with its outputs
                effects[(name, not out)] = effects.get((name, not out), 0.0) + per
            if out:
                initial = initial_out.get(name, module.out_channels)
                spare = module.out_channels - min_kept(initial, max_ratio, strict=True)
                most = min(most, max(0, math.floor(spare / per + 1e-9)))
        keeps = [n]
        for keep in range(n - 1, n - most - 1, -1):
            if (width - (n - keep) * ch_groups) % multiple == 0:
                keeps.append(keep)
        label = f"{names.get(root, '?')}:{getattr(fn, '__name__', type(fn).__name__)}"
        g = Group(root, fn, label, width, ch_groups, order, cum, [(c, o, p) for (c, o), p in effects.items()],
                  keeps)
        if len(keeps) > 1:
            groups.append(g)
    return groups


class _State:
    """Current (in, out) channels of every conv while the allocation runs."""

    def __init__(self, shapes: Mapping[str, ConvShape], cost: CostModel) -> None:
        self.shapes, self.cost = shapes, cost
        self.widths = {n: [s.cin, s.cout] for n, s in shapes.items()}
        self.total = cost.total(shapes)

    def change(self, group: Group, removed: int) -> dict[str, tuple[int, int]]:
        new: dict[str, list[int]] = {}
        for conv, out, per in group.effects:
            w = new.setdefault(conv, list(self.widths[conv]))
            w[1 if out else 0] -= round(removed * per)
        return {c: (max(w[0], 1), max(w[1], 1)) for c, w in new.items()}

    def saving(self, change: Mapping[str, tuple[int, int]]) -> float:
        return sum(
            self.cost.conv_cost(self.shapes[c], *self.widths[c]) - self.cost.conv_cost(self.shapes[c], *w)
            for c, w in change.items()
        )

    def apply(self, change: Mapping[str, tuple[int, int]], saving: float) -> None:
        for c, w in change.items():
            self.widths[c] = list(w)
        self.total -= saving


def allocate(groups: list[Group], shapes: Mapping[str, ConvShape], cost: CostModel, budget: float) -> dict[str, int]:
    """Ranking indices each group keeps (by group name) so the cost is at most ``budget``; raises when the groups
    cannot shrink that far within their limits."""
    state = _State(shapes, cost)
    keep = {g.name: g.n for g in groups}
    users: dict[str, list[Group]] = {}
    for g in groups:
        for conv, _, _ in g.effects:
            users.setdefault(conv, []).append(g)
    best_step: dict[str, tuple[float, int, dict, float] | None] = {}

    def price(g: Group) -> tuple[float, int, dict, float] | None:
        """(importance lost per cost saved, kept count, width change, saving) of the group's best next step."""
        i = g.keeps.index(keep[g.name])
        best = None
        for k in g.keeps[i + 1 : i + 1 + LOOKAHEAD]:
            change = state.change(g, keep[g.name] - k)
            saving = state.saving(change)
            if saving <= 1e-12 * max(abs(state.total), 1.0):
                continue
            lost = g.cum[g.n - k] - g.cum[g.n - keep[g.name]]
            score = lost / saving
            if best is None or score < best[0]:
                best = (score, k, change, saving)
        return best

    for g in groups:
        best_step[g.name] = price(g)
    by_name = {g.name: g for g in groups}
    while state.total > budget:
        candidates = [(s[0], name) for name, s in best_step.items() if s is not None]
        if not candidates:
            raise PruningError(
                f"Cannot reach the {cost.unit} budget ({budget:.4g}; closest {state.total:.4g}): every group is at "
                "its limit. Protected layers, max_layer_ratio and the channel multiple limit how much can be removed; "
                "lower the target or raise --max-layer-ratio."
            )
        _, name = min(candidates)
        _, k, change, saving = best_step[name]
        state.apply(change, saving)
        keep[name] = k
        stale = {name} | {u.name for conv in change for u in users.get(conv, [])}
        for s in stale:
            best_step[s] = price(by_name[s])
    return keep


def apply_allocation(pruner: tp.pruner.BasePruner, groups: list[Group], keep: Mapping[str, int],
                     taps: FeatureTaps | None = None) -> int:
    """Remove each group's least important channels down to ``keep``; returns how many groups were pruned.

    All rankings were computed before any pruning (as Torch-Pruning does): a group's indices are its root's channels,
    which no other group touches."""
    pruned = 0
    for g in groups:
        k = g.n - keep.get(g.name, g.n)
        if k <= 0:
            continue
        drop = g.order[:k]
        idxs = sorted(i + c * g.n for c in range(g.ch_groups) for i in drop)
        group = pruner.DG.get_pruning_group(g.root, g.fn, idxs)
        if not pruner.DG.check_pruning_group(group):
            continue
        if taps is not None:
            taps.record(group, pruner.DG)
        group.prune()
        pruned += 1
    return pruned
