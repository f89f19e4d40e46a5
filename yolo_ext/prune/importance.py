"""Pruning criteria by name: one registry mapping a CLI name to a Torch-Pruning importance."""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp

from yolo_ext.prune.errors import PruningError

CRITERIA: dict[str, tuple[Callable[[], tp.importance.Importance], str]] = {
    "l1": (lambda: tp.importance.GroupMagnitudeImportance(p=1), "L1 norm of the group's weights"),
    "l2": (lambda: tp.importance.GroupMagnitudeImportance(p=2), "L2 norm of the group's weights"),
    "random": (lambda: tp.importance.RandomImportance(), "random ranking (a baseline)"),
    "lamp": (lambda: tp.importance.LAMPImportance(p=2), "layer-adaptive magnitude (LAMP), scale-free across layers"),
    "bn": (lambda: tp.importance.BNScaleImportance(), "|gamma| of the BatchNorm after each conv (network slimming)"),
    "taylor": (lambda: tp.importance.GroupTaylorImportance(), "first-order Taylor |w * dL/dw| on real data batches"),
}

NEEDS_GRADIENTS = frozenset({"taylor"})
#: What tools/prune.py uses with no --prune-type: global LAMP kept the most accuracy at equal params after the same
#: fine-tuning in benchmarks/accuracy.py (benchmarks/RESULTS.md). PruneConfig itself keeps uniform L1, whose per-layer
#: ratios are exact; the tools' whole default pruning is yolo_ext.prune.defaults.
DEFAULT_CRITERION = "lamp"
#: Criteria whose scores compare across layers, so they rank globally unless told otherwise. LAMP normalises each
#: weight by what its layer keeps; BN scales are trained to be compared (network slimming). Plain magnitudes are not
#: comparable across layers of different widths, and globally they empty the wide layers.
GLOBAL_BY_DEFAULT = frozenset({"lamp", "bn"})


def make_importance(name: str) -> tp.importance.Importance:
    """The importance for ``name``; a clear error lists the known criteria."""
    try:
        factory, _ = CRITERIA[name]
    except KeyError:
        known = ", ".join(f"{k} ({d})" for k, (_, d) in CRITERIA.items())
        raise PruningError(f"Unknown pruning criterion {name!r}. Choose one of: {known}.") from None
    return factory()
