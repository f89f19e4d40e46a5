"""The trainers that fine-tune a pruned network without Ultralytics rebuilding the unpruned one from its YAML.

``Model.train()`` asks the trainer for a model built from ``model.yaml`` and copies in only the tensors whose shapes
still match, which silently undoes a pruning. :class:`PrunedDetectionTrainer` is the extension point Ultralytics
offers (``model.train(trainer=...)``): its ``get_model`` returns the network it is given. The same holds when
resuming (the network comes from ``last.pt``) and in DDP workers (Ultralytics pickles ``trainer.model`` for them).
Segmentation, pose and OBB networks train through Ultralytics' own trainer of their task (its data loading, loss
and metrics) with the same behaviour on top: :data:`PRUNED_TRAINERS`, picked from the checkpoint's head.

Checkpoints are written under temporary names and moved into place (:mod:`yolo_ext.io.atomic`), also for the final
strip, which Ultralytics does in place, and its log lines name the final files; temporary files of killed runs are
removed by the next run. Training checkpoints keep the EMA in FP32, so a resumed run continues from exactly the weights
it stopped at.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER

from yolo_ext.io.atomic import remove_stale_temps, temp_path
from yolo_ext.io.checkpoints import read_checkpoint
from yolo_ext.prune.heads import check_supported_model
from yolo_ext.train.distill import DistillWeights, PrunedDistillationModel
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.inputs import check_distillable, check_task_data, new_classes

__all__ = [
    "PRUNED_TRAINERS", "PrunedDetectionTrainer", "PrunedOBBTrainer", "PrunedPoseTrainer", "PrunedSegmentationTrainer",
    "check_trainer_task", "pruned_trainer", "trainer_task",
]


class PrunedDetectionTrainer(DetectionTrainer):
    """DetectionTrainer that trains the network it is handed (a pruned one) and writes checkpoints atomically.

    Training checkpoints (``last.pt``, ``best.pt`` before the final strip) keep the EMA in FP32, so a resumed run
    continues from exactly the weights it stopped at; the final stripped checkpoints are FP16 as in Ultralytics.

    With ``distill_model=<teacher.pt>`` the student learns from the network it was pruned from through
    :class:`yolo_ext.train.distill.PrunedDistillationModel` (kept-channel features, class scores, DFL boxes), with
    :attr:`distill_weights`; ``distill_method = "ultralytics"`` uses Ultralytics' projector distillation instead.
    """

    distill_weights: DistillWeights = DistillWeights()
    distill_method: str = "pruned"
    #: the Ultralytics trainer this class extends, i.e. the task it trains (see :data:`PRUNED_TRAINERS`)
    ultralytics_trainer: type[DetectionTrainer] = DetectionTrainer

    def setup_model(self):
        """As Ultralytics, but a resumed distillation run gets our wrapper back (built in set_model_attributes)."""
        ckpt = super().setup_model()
        if self.distill_method == "pruned" and isinstance(self.model, DistillationModel):
            self.model = self.model.student_model
        return ckpt

    def set_model_attributes(self) -> None:
        """Give the student its classes and args, then wrap it with its teacher (before EMA, DDP and the AMP check)."""
        super().set_model_attributes()
        if self.args.distill_model:
            check_distillable(self.model, "the network being trained")
        wrap = self.distill_method == "pruned" and not isinstance(self.model, DistillationModel)
        if self.args.distill_model and wrap:
            self.model = PrunedDistillationModel(self.args.distill_model, self.model, self.distill_weights)

    def get_model(
        self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True
    ) -> DetectionModel:
        """Return ``weights`` itself (the pruned network), after checking it fits this trainer's task and the data;
        its class outputs are rebuilt if the data has other classes."""
        if not isinstance(weights, DetectionModel):
            raise FinetuneError(
                f"{type(self).__name__} fine-tunes an existing network: call YOLO('pruned.pt').train(trainer=...) "
                "or yolo_ext.train.finetune('pruned.pt', ...); there is no model to start from."
            )
        check_trainer_task(type(self), weights)
        check_task_data(weights, self.data)
        change = new_classes(weights, self.data, self.args.data, getattr(self.args, "cls_remap", True))
        if change is not None:
            LOGGER.info(change.line())
        # A checkpoint's final strip (Ultralytics') leaves every weight frozen; Ultralytics would unfreeze them again
        # with one warning per tensor. Unfreeze here; _setup_train freezes what it always freezes (DFL, freeze=).
        weights.requires_grad_(True)
        return self.set_model_names_for_load(weights.float())

    def _setup_train(self) -> None:
        """As Ultralytics, with its one line per frozen teacher tensor said once."""
        with _log_rewritten(drop=("Freezing layer 'teacher_model.",)) as log:
            super()._setup_train()
        if log.dropped:
            LOGGER.info(f"Freezing the teacher's {log.dropped} tensors (it only teaches)")

    def save_model(self) -> bool:
        """Ultralytics' checkpoint, written to a temporary file, given an FP32 EMA, then renamed into place.

        The ``save_period`` copy (``epoch<N>.pt``), which Ultralytics writes in place and FP16, is made here from the
        finished temporary ``last`` instead, and moved into place the same way.
        """
        remove_stale_temps(self.wdir)  # left by a killed run in this folder (resume)
        final = {"last": self.last, "best": self.best}
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            final["period"] = self.wdir / f"epoch{self.epoch}.pt"
        tmp = {k: temp_path(p) for k, p in final.items()}
        self.last, self.best = tmp["last"], tmp["best"]
        period, self.save_period = self.save_period, 0
        try:
            saved = super().save_model()
            if tmp["last"].exists():
                _full_precision_ema(tmp["last"], self.ema.ema)
                if "period" in tmp:
                    shutil.copyfile(tmp["last"], tmp["period"])
            if tmp["best"].exists():
                _full_precision_ema(tmp["best"], self.ema.ema)
            for k, path in tmp.items():
                if path.exists():
                    os.replace(path, final[k])
        finally:
            self.save_period = period
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
            with _log_rewritten(replace={str(tmp[k]): str(final[k]) for k in final}):  # name the final files
                super().final_eval()
            for k, path in tmp.items():
                if path.exists():
                    os.replace(path, final[k])
        finally:
            self.last, self.best = final["last"], final["best"]
            for path in tmp.values():
                path.unlink(missing_ok=True)


class _LogRewrite(logging.Filter):
    """A filter on Ultralytics' logger: drops records starting with ``drop``, replaces text in the others."""

    def __init__(self, replace: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.replace, self.drop, self.dropped = replace or {}, drop, 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.drop and message.startswith(self.drop):
            self.dropped += 1
            return False
        for old, new in self.replace.items():
            message = message.replace(old, new)
        record.msg, record.args = message, ()
        return True


@contextlib.contextmanager
def _log_rewritten(replace: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Iterator[_LogRewrite]:
    """Ultralytics' log lines rewritten (temporary file names -> final names) or dropped inside the block."""
    rewrite = _LogRewrite(replace, drop)
    LOGGER.addFilter(rewrite)
    try:
        yield rewrite
    finally:
        LOGGER.removeFilter(rewrite)


class PrunedSegmentationTrainer(PrunedDetectionTrainer, SegmentationTrainer):
    """:class:`PrunedDetectionTrainer` for segmentation: Ultralytics' SegmentationTrainer (masks, mask loss, mask
    mAP) training the pruned network it is given."""

    ultralytics_trainer = SegmentationTrainer


class PrunedPoseTrainer(PrunedDetectionTrainer, PoseTrainer):
    """:class:`PrunedDetectionTrainer` for pose: Ultralytics' PoseTrainer (keypoints, OKS) on the pruned network."""

    ultralytics_trainer = PoseTrainer


class PrunedOBBTrainer(PrunedDetectionTrainer, OBBTrainer):
    """:class:`PrunedDetectionTrainer` for oriented boxes: Ultralytics' OBBTrainer on the pruned network."""

    ultralytics_trainer = OBBTrainer


#: Task (as in :data:`yolo_ext.prune.heads.HEADS`) -> the trainer that keeps a pruned network of that task. Each is
#: Ultralytics' trainer of the task with PrunedDetectionTrainer's behaviour first in the MRO, so a new task is one
#: class and one line here.
PRUNED_TRAINERS: dict[str, type[PrunedDetectionTrainer]] = {
    "detect": PrunedDetectionTrainer,
    "segment": PrunedSegmentationTrainer,
    "pose": PrunedPoseTrainer,
    "obb": PrunedOBBTrainer,
}


def pruned_trainer(model: torch.nn.Module) -> type[PrunedDetectionTrainer]:
    """The trainer of :data:`PRUNED_TRAINERS` for ``model``'s task (its head decides)."""
    task = check_supported_model(model, "yolo_ext fine-tunes").task
    if task not in PRUNED_TRAINERS:
        raise FinetuneError(
            f"No fine-tuning trainer for {task} models; yolo_ext fine-tunes {', '.join(PRUNED_TRAINERS)} models."
        )
    return PRUNED_TRAINERS[task]


def trainer_task(trainer: type) -> str | None:
    """The task a trainer class trains: that of the first Ultralytics task trainer in its MRO (None: no task
    trainer of :data:`PRUNED_TRAINERS`)."""
    stock = {t.ultralytics_trainer: task for task, t in PRUNED_TRAINERS.items()}
    return next((stock[cls] for cls in trainer.__mro__ if cls in stock), None)


def check_trainer_task(trainer: type, model: torch.nn.Module) -> None:
    """A trainer of another task would feed the network the wrong labels and loss; refuse it, naming the right one."""
    expected, task = pruned_trainer(model), check_supported_model(model).task
    trains = trainer_task(trainer)
    if trains != task:
        raise FinetuneError(
            f"{trainer.__name__} trains {trains or 'other'} models, but this is a {task} network: use "
            f"yolo_ext.train.{expected.__name__} (finetune() and tools/finetune.py pick it from the checkpoint)."
        )


@torch.no_grad()
def _full_precision_ema(path: Path, ema: torch.nn.Module) -> None:
    """Rewrite the checkpoint's FP16 EMA with the live FP32 values (same keys; a distillation teacher stays out)."""
    ckpt = read_checkpoint(path)  # the file this trainer wrote a moment ago
    saved, live = ckpt["ema"].float(), ema.state_dict()
    for k, v in saved.state_dict().items():
        if k in live and v.is_floating_point():
            v.copy_(live[k])
    ckpt["ema"] = saved
    torch.save(ckpt, path)
