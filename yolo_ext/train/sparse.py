"""Network-slimming training: an L1 penalty on BatchNorm scales, so the ``bn`` criterion can prune afterwards."""

from __future__ import annotations

from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import unwrap_model

from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.trainers import PrunedDetectionTrainer

__all__ = ["SparseDetectionTrainer", "sparse_trainer"]


class SparseDetectionTrainer(PrunedDetectionTrainer):
    """Network-slimming training: an L1 penalty on every BatchNorm scale, so unneeded channels drift to zero and the
    ``bn`` criterion can remove them afterwards. Use :func:`sparse_trainer` to choose the penalty.

    The penalty's subgradient ``l1 * sign(gamma)`` is added by a gradient hook, scaled like the loss when AMP scales
    it, so the optimizer (and DDP's gradient averaging) sees it exactly as part of the loss gradient.
    """

    bn_l1: float = 1e-4
    keep_given_model: bool = True

    def get_model(
        self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True
    ) -> DetectionModel:
        """The given network (pruned or trained), or a new one from ``cfg`` when sparse training starts from a YAML."""
        if weights is None or not self.keep_given_model:
            return DetectionTrainer.get_model(self, cfg, weights, verbose)
        return super().get_model(cfg, weights, verbose)

    def _setup_train(self) -> None:
        super()._setup_train()
        for m in unwrap_model(self.model).modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.weight.requires_grad:
                m.weight.register_hook(_L1Subgradient(m.weight, self))


class _L1Subgradient:
    """Gradient hook adding ``l1 * sign(w)`` (times the AMP loss scale while one is active)."""

    def __init__(self, weight: torch.Tensor, trainer: SparseDetectionTrainer) -> None:
        self.weight, self.trainer = weight, trainer

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        scaler = self.trainer.scaler
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        return grad + self.trainer.bn_l1 * scale * torch.sign(self.weight.detach())


def sparse_trainer(bn_l1: float, keep_given_model: bool = True) -> type[SparseDetectionTrainer]:
    """A SparseDetectionTrainer class with penalty ``bn_l1`` (typical: 1e-4 .. 1e-3), for
    ``model.train(trainer=...)``."""
    if not bn_l1 > 0:
        raise FinetuneError(f"The BN L1 penalty must be > 0, got {bn_l1!r}; typical values are 1e-4 to 1e-3.")
    attrs = {"bn_l1": bn_l1, "keep_given_model": keep_given_model}
    return type("SparseDetectionTrainer", (SparseDetectionTrainer,), attrs)
