"""Training pruned networks: fine-tuning, its checks and recipe, distillation, class sets, iterative pruning.

========================  ===========================================================================================
:mod:`.finetune`          :func:`finetune` a pruned checkpoint, :func:`resume` an interrupted fine-tuning
:mod:`.trainers`          the trainer per task that keeps the pruned network (:data:`PRUNED_TRAINERS`)
:mod:`.inputs`            everything checked before training (options, checkpoint, data, labels, teacher, resume)
:mod:`.recipe`            the default recipe (the base network's own, 30% of its epochs) and teacher (none)
:mod:`.distill`           kept-channel and head distillation from the network it was pruned from
:mod:`.class_outputs`     new class sets: only the class outputs are rebuilt
:mod:`.labels`            label checks (class indices, polygons, keypoints) before training
:mod:`.iterative`         prune + fine-tune rounds
:mod:`.sparse`            network slimming (L1 on BN scales) before ``bn`` pruning
:mod:`.keep_pruned`       ``YOLO("pruned.pt").train()`` keeps the pruned network (hooks the integration installs)
:mod:`.grad_checkpoint`   gradient checkpointing of the attention and RepViT blocks
========================  ===========================================================================================

Names are imported on first use, so ``import yolo_ext`` does not load Ultralytics' trainers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolo_ext.train.class_outputs import ClassChange, ClassesError, rebuild_class_outputs
    from yolo_ext.train.distill import DistillError, DistillWeights, PrunedDistillationModel
    from yolo_ext.train.errors import FinetuneError
    from yolo_ext.train.finetune import finetune, resume
    from yolo_ext.train.iterative import iterative_prune
    from yolo_ext.train.recipe import DEFAULT_TEACHER, finetune_recipe
    from yolo_ext.train.sparse import SparseDetectionTrainer, sparse_trainer
    from yolo_ext.train.trainers import (
        PRUNED_TRAINERS,
        PrunedDetectionTrainer,
        PrunedOBBTrainer,
        PrunedPoseTrainer,
        PrunedSegmentationTrainer,
    )

_HOMES = {
    "ClassChange": "class_outputs", "ClassesError": "class_outputs", "rebuild_class_outputs": "class_outputs",
    "DistillError": "distill", "DistillWeights": "distill", "PrunedDistillationModel": "distill",
    "FinetuneError": "errors", "finetune": "finetune", "resume": "finetune", "iterative_prune": "iterative",
    "DEFAULT_TEACHER": "recipe", "finetune_recipe": "recipe", "SparseDetectionTrainer": "sparse",
    "sparse_trainer": "sparse", "PRUNED_TRAINERS": "trainers", "PrunedDetectionTrainer": "trainers",
    "PrunedOBBTrainer": "trainers", "PrunedPoseTrainer": "trainers", "PrunedSegmentationTrainer": "trainers",
}

__all__ = [
    "DEFAULT_TEACHER", "PRUNED_TRAINERS", "ClassChange", "ClassesError", "DistillError", "DistillWeights",
    "FinetuneError", "PrunedDetectionTrainer", "PrunedDistillationModel", "PrunedOBBTrainer", "PrunedPoseTrainer",
    "PrunedSegmentationTrainer", "SparseDetectionTrainer", "finetune", "finetune_recipe", "iterative_prune",
    "rebuild_class_outputs", "resume", "sparse_trainer",
]
assert sorted(__all__) == sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"yolo_ext.train.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
