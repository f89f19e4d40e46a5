"""Structured channel pruning for Ultralytics YOLO detectors (see :func:`prune_model`)."""

from yolo_ext.prune.engine import PruneConfig, PruneResult, PruningError, prune_model
from yolo_ext.prune.importance import CRITERIA
from yolo_ext.prune.validate import PrunedModelError

__all__ = ["CRITERIA", "PruneConfig", "PruneResult", "PrunedModelError", "PruningError", "prune_model"]
