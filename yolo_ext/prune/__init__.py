"""Structured channel pruning for Ultralytics YOLO models: detect, segment, pose, obb (see :func:`prune_model`).

The engine (and with it Torch-Pruning's graph, the latency backends and the cost allocation) is imported on first use
of :func:`prune_model`, :class:`PruneConfig` or :class:`PruneResult`: ``import yolo_ext`` needs only the per-module
rules (:mod:`.leaves`, :mod:`.validate`), which the spec table names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yolo_ext.prune.errors import CheckpointError, PrunedModelError, PruningError
from yolo_ext.prune.importance import CRITERIA, DEFAULT_CRITERION

if TYPE_CHECKING:
    from yolo_ext.prune.engine import PruneConfig, PruneResult, prune_model

__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "CheckpointError", "PruneConfig", "PruneResult", "PrunedModelError",
    "PruningError", "prune_model",
]

_ENGINE = {"PruneConfig", "PruneResult", "prune_model"}


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from yolo_ext.prune import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
