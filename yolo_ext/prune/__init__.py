"""Structured channel pruning for Ultralytics YOLO models: detect, segment, pose, obb (see :func:`prune_model`)."""

from yolo_ext.prune.engine import PruneConfig, PruneResult, prune_model
from yolo_ext.prune.errors import CheckpointError, PrunedModelError, PruningError
from yolo_ext.prune.importance import CRITERIA, DEFAULT_CRITERION

__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "CheckpointError", "PruneConfig", "PruneResult", "PrunedModelError", "PruningError", "prune_model",
]
