"""Fine-tune pruned models with the Ultralytics trainer, without it rebuilding the unpruned network from the YAML.

``Model.train()`` asks the trainer for a model built from ``model.yaml`` and copies in only the tensors whose shapes
still match, which silently undoes a pruning. :class:`PrunedDetectionTrainer` is the extension point Ultralytics
offers (``model.train(trainer=...)``): its ``get_model`` returns the network it is given. The same holds when
resuming (the network comes from ``last.pt``) and in DDP workers (Ultralytics pickles ``trainer.model`` for them).

Everything that can be checked before training (checkpoint, data, teacher, epochs, device, what ``--resume`` points
at) is checked first, so a mistake costs no training and leaves no run folder. Checkpoints are written under
temporary names and moved into place (:mod:`yolo_ext.files`), also for the final strip, which Ultralytics does in
place; temporary files of killed runs are removed by the next run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import unwrap_model

from yolo_ext.files import remove_stale_temps, temp_path
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
        remove_stale_temps(self.wdir)  # left by a killed run in this folder (resume)
        final = {"last": self.last, "best": self.best}
        tmp = {k: temp_path(p) for k, p in final.items()}
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

    def final_eval(self) -> None:
        """Ultralytics strips ``last.pt`` / ``best.pt`` in place; strip copies instead and move them into place, so
        a kill during the final save leaves the complete (still resumable) training checkpoints."""
        final = {"last": self.last, "best": self.best}
        tmp = {k: temp_path(p) for k, p in final.items()}
        for k, path in final.items():
            if path.exists():
                shutil.copyfile(path, tmp[k])
        self.last, self.best = tmp["last"], tmp["best"]
        try:
            super().final_eval()
            for k, path in tmp.items():
                if path.exists():
                    os.replace(path, final[k])
        finally:
            self.last, self.best = final["last"], final["best"]
            for path in tmp.values():
                path.unlink(missing_ok=True)


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


def check_device(device: Any) -> None:
    """A CUDA device index must exist on this machine (Ultralytics would fail with a traceback after setup)."""
    if device is None:
        return
    text = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    parts = text.split(",") if text else []
    if not parts or not all(p.isdigit() for p in parts):
        return  # cpu, mps, '' (auto), -1 (idle GPU), other back-ends: Ultralytics resolves them
    n = torch.cuda.device_count()
    if any(int(p) >= n for p in parts):
        have = "no CUDA GPU" if n == 0 else f"{n} CUDA GPU(s), numbered 0..{n - 1}"
        raise FinetuneError(f"--device {device}: this machine has {have}. Use --device cpu" + (" or 0." if n else "."))


def check_train_args(train_args: dict[str, Any]) -> None:
    """Ultralytics train arguments that would otherwise fail after setup (or train nothing): epochs, device."""
    epochs = train_args.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise FinetuneError(f"epochs must be a whole number >= 1, got {epochs!r}.")
    check_device(train_args.get("device"))


def check_teacher(teacher: str | Path) -> None:
    """The distillation teacher must be a readable detection checkpoint (normally the unpruned one)."""
    try:
        load_detection_checkpoint(teacher, purpose="distillation uses")
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(f"Teacher (--teacher / distill_model): {e}") from e


def check_resume(last: str | Path, data: str | Path | None = None) -> None:
    """``last`` must be the ``last.pt`` of an interrupted training, and its data usable (or ``data`` given)."""
    try:
        ckpt, model = load_detection_checkpoint(last, purpose="yolo_ext fine-tunes")
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(f"Cannot resume: {e}") from e
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        if "train_results" in ckpt:
            epochs = (ckpt.get("train_args") or {}).get("epochs", "?")
            raise FinetuneError(
                f"{str(last)!r} is the end of a finished training ({epochs} epochs): there is nothing to resume. To "
                f"train longer, fine-tune it again: tools/finetune.py --model_path {last} --data <data.yaml> --epochs N."
            )
        what = "a pruned checkpoint" if pruning_history(model) else "not a training checkpoint"
        raise FinetuneError(
            f"{str(last)!r} is {what}, not the last.pt of an interrupted fine-tuning (no epoch/optimizer state). "
            f"Start a fine-tuning instead: tools/finetune.py --model_path {last} --data <data.yaml>."
        )
    args = ckpt.get("train_args") or {}
    if isinstance(args.get("epochs"), int) and ckpt["epoch"] + 1 >= args["epochs"]:
        raise FinetuneError(
            f"{str(last)!r} has trained all its {args['epochs']} epochs (the run stopped in its final save): there is "
            f"nothing to resume. Use it as it is, or fine-tune it again: tools/finetune.py --model_path {last} "
            "--data <data.yaml> --epochs N."
        )
    data = data or args.get("data")
    try:
        check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"The data YAML of the run ({str(data)!r}) cannot be used: {e}") from e


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
    A relative ``project`` is taken from the current folder (Ultralytics would put it under ``runs/detect/``).
    Returns the YOLO object holding the fine-tuned network (its ``trainer.best`` is the checkpoint path).
    """
    check_train_args(train_args)
    check_finetune_inputs(model_path, data, require_pruned)
    if train_args.get("distill_model"):
        check_teacher(train_args["distill_model"])
    if train_args.get("project"):
        train_args["project"] = str(Path(train_args["project"]).resolve())
        for weights in Path(train_args["project"]).glob("*/weights"):
            remove_stale_temps(weights)  # temporary checkpoints of earlier runs that were killed
    model = YOLO(str(model_path))
    model.train(trainer=PrunedDetectionTrainer, data=str(data), **train_args)
    return model


def resume(last: str | Path, **train_args: Any) -> YOLO:
    """Continue an interrupted fine-tuning from its ``last.pt`` with the pruned architecture."""
    remove_stale_temps(Path(last).parent)  # left by the run that was killed
    check_train_args(train_args)
    check_resume(last, train_args.get("data"))
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
