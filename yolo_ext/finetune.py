"""Fine-tune pruned models with the Ultralytics trainer, without it rebuilding the unpruned network from the YAML.

``Model.train()`` asks the trainer for a model built from ``model.yaml`` and copies in only the tensors whose shapes
still match, which silently undoes a pruning. :class:`PrunedDetectionTrainer` is the extension point Ultralytics
offers (``model.train(trainer=...)``): its ``get_model`` returns the network it is given. The same holds when
resuming (the network comes from ``last.pt``) and in DDP workers (Ultralytics pickles ``trainer.model`` for them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import unwrap_model

from yolo_ext.prune.checkpoint import load_detection_checkpoint, pruning_history
from yolo_ext.prune.errors import CheckpointError, PruningError


class FinetuneError(ValueError):
    """A fine-tuning request that cannot start (missing or unpruned checkpoint, wrong data); nothing was trained."""


class PrunedDetectionTrainer(DetectionTrainer):
    """DetectionTrainer that trains the network it is handed (a pruned one) and writes checkpoints atomically.

    Training checkpoints (``last.pt``, ``best.pt`` before the final strip) keep the EMA in FP32, so a resumed run
    continues from exactly the weights it stopped at; the final stripped checkpoints are FP16 as in Ultralytics.
    """

    def get_model(self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True) -> DetectionModel:
        """Return ``weights`` itself (the pruned network), after checking it predicts the data's classes."""
        if not isinstance(weights, DetectionModel):
            raise FinetuneError(
                "PrunedDetectionTrainer fine-tunes an existing network: call YOLO('pruned.pt').train(trainer=...) "
                "or yolo_ext.finetune.finetune('pruned.pt', ...); there is no model to start from."
            )
        nc = weights.model[-1].nc
        if nc != self.data["nc"]:
            raise FinetuneError(
                f"The pruned model predicts {nc} classes but the data set has {self.data['nc']}; fine-tune on the "
                "data it was trained on (a pruned head cannot change its classes)."
            )
        return self.set_model_names_for_load(weights.float())

    def save_model(self) -> bool:
        """Ultralytics' checkpoint, written to a temporary file, given an FP32 EMA, then renamed into place."""
        final = {"last": self.last, "best": self.best}
        tmp = {k: p.with_name(f".{p.name}.{os.getpid()}.tmp") for k, p in final.items()}
        self.last, self.best = tmp["last"], tmp["best"]
        try:
            saved = super().save_model()
            for k, path in tmp.items():
                if path.exists():
                    _full_precision_ema(path, self.ema.ema)
                    os.replace(path, final[k])
        finally:
            self.last, self.best = final["last"], final["best"]
            for path in tmp.values():
                path.unlink(missing_ok=True)
        return saved


@torch.no_grad()
def _full_precision_ema(path: Path, ema: torch.nn.Module) -> None:
    """Rewrite the checkpoint's FP16 EMA with the live FP32 values (same keys; a distillation teacher stays out)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved, live = ckpt["ema"].float(), ema.state_dict()
    for k, v in saved.state_dict().items():
        if k in live and v.is_floating_point():
            v.copy_(live[k])
    ckpt["ema"] = saved
    torch.save(ckpt, path)


def check_finetune_inputs(model_path: str | Path, data: str | Path, require_pruned: bool = True) -> DetectionModel:
    """Everything that can be checked before training starts: checkpoint, pruning record, data YAML, classes."""
    try:
        _, model = load_detection_checkpoint(model_path)
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(str(e)) from e
    if require_pruned and not pruning_history(model):
        raise FinetuneError(
            f"{str(model_path)!r} is not a pruned checkpoint (no yolo_ext pruning record). Prune it first with "
            "tools/prune.py, or train it normally with tools/train.py / yolo-ext train."
        )
    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"Data YAML {str(data)!r} cannot be used: {e}") from e
    if model.model[-1].nc != info["nc"]:
        raise FinetuneError(
            f"{str(model_path)!r} predicts {model.model[-1].nc} classes but {str(data)!r} has {info['nc']}: "
            "fine-tune on the data the model was trained on."
        )
    return model


def finetune(model_path: str | Path, data: str | Path, require_pruned: bool = True, **train_args: Any) -> YOLO:
    """Fine-tune a pruned checkpoint; ``train_args`` are Ultralytics train arguments (epochs, imgsz, batch, ...).

    Pass ``distill_model="unpruned.pt"`` to distil from the unpruned network (Ultralytics' feature distillation).
    Returns the YOLO object holding the fine-tuned network (its ``trainer.best`` is the checkpoint path).
    """
    check_finetune_inputs(model_path, data, require_pruned)
    model = YOLO(str(model_path))
    model.train(trainer=PrunedDetectionTrainer, data=str(data), **train_args)
    return model


def resume(last: str | Path, **train_args: Any) -> YOLO:
    """Continue an interrupted fine-tuning from its ``last.pt`` with the pruned architecture."""
    model = YOLO(str(last))
    model.train(trainer=PrunedDetectionTrainer, resume=True, **train_args)
    return model


class SparseDetectionTrainer(PrunedDetectionTrainer):
    """Network-slimming training: an L1 penalty on every BatchNorm scale, so unneeded channels drift to zero and the
    ``bn`` criterion can remove them afterwards. Use :func:`sparse_trainer` to choose the penalty.

    The penalty's subgradient ``l1 * sign(gamma)`` is added by a gradient hook, scaled like the loss when AMP scales
    it, so the optimizer (and DDP's gradient averaging) sees it exactly as part of the loss gradient.
    """

    bn_l1: float = 1e-4
    keep_given_model: bool = True

    def get_model(self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True) -> DetectionModel:
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
    """A SparseDetectionTrainer class with penalty ``bn_l1`` (typical: 1e-4 .. 1e-3), for ``model.train(trainer=...)``."""
    if not bn_l1 > 0:
        raise FinetuneError(f"The BN L1 penalty must be > 0, got {bn_l1!r}; typical values are 1e-4 to 1e-3.")
    return type("SparseDetectionTrainer", (SparseDetectionTrainer,), {"bn_l1": bn_l1, "keep_given_model": keep_given_model})
