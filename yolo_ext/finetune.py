"""Fine-tune pruned models with the Ultralytics trainer, without it rebuilding the unpruned network from the YAML.

``Model.train()`` asks the trainer for a model built from ``model.yaml`` and copies in only the tensors whose shapes
still match, which silently undoes a pruning. :class:`PrunedDetectionTrainer` is the extension point Ultralytics
offers (``model.train(trainer=...)``): its ``get_model`` returns the network it is given. The same holds when
resuming (the network comes from ``last.pt``) and in DDP workers (Ultralytics pickles ``trainer.model`` for them).
Segmentation, pose and OBB networks train through Ultralytics' own trainer of their task (its data loading, loss
and metrics) with the same behaviour on top: :data:`PRUNED_TRAINERS`, picked from the checkpoint's head.

Everything that can be checked before training (checkpoint, data and its labels, teacher, training options such as
epochs, image size, learning rate, optimizer, device and output folder, what ``--resume`` points at) is checked first
(:mod:`yolo_ext.checks`, :mod:`yolo_ext.labels`), so a mistake costs no training and leaves no run folder. A copy of
a ``last.pt`` resumes into a folder of its own (:func:`resume_folder`). Checkpoints are written under temporary names
and moved into place (:mod:`yolo_ext.files`), also for the final strip, which Ultralytics does in place, and its log
lines name the final files; temporary files of killed runs are removed by the next run.
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
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel
from ultralytics.cfg import DEFAULT_CFG
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from yolo_ext import checks
from yolo_ext.classes import ClassChange, ClassesError, rebuild_class_outputs
from yolo_ext.distill import DistillError, DistillWeights, PrunedDistillationModel, kept_channels
from yolo_ext.files import remove_stale_temps, temp_path
from yolo_ext.grad_checkpoint import checkpointing_enabled
from yolo_ext.labels import LabelError, check_labels
from yolo_ext.prune.checkpoint import base_train_args, load_detection_checkpoint, network_digest, pruning_history
from yolo_ext.prune.errors import CheckpointError, PruningError
from yolo_ext.prune.heads import check_supported_model

#: Training hyperparameters a fine-tuning inherits from the run that trained the base network (its checkpoint's
#: ``train_args``): the same optimizer, learning-rate schedule, loss gains and augmentation, over fewer epochs.
RECIPE_KEYS = (
    "optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "cos_lr", "close_mosaic", "nbs", "box", "cls", "dfl", "imgsz", "batch",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr",
    "mosaic", "mixup", "cutmix", "copy_paste",
)
#: Fine-tuning epochs as a fraction of the base network's training epochs.
EPOCHS_FRACTION = 0.3
#: No teacher by default: ``None`` in Python is ``--teacher none`` on the command line. ``"auto"`` opts in to
#: distilling from the network the model was pruned from (:func:`default_teacher`); a path distils from that file.
#: The rule (issue 15): head distillation is on by default only if it adds at least +0.5 mAP50-95 on both data sets
#: measured. It added +0.43 (H200, four seeds) and +0.22 (CPU, two seeds) on BCCD at -50% params, and -0.25 on an
#: outside data set (benchmarks/RESULTS.md), so it stays opt-in. It costs one teacher forward per batch (about 30% more
#: time per epoch on CPU, little on a GPU). Detection only: other tasks train without one.
DEFAULT_TEACHER: str | None = None


def teacher_option(value: str | None) -> str | None:
    """A ``--teacher`` / ``teacher=`` value: None or ``none`` (any case) is no teacher; ``auto`` (any case) the network
    the model was pruned from; anything else a checkpoint path."""
    if value is None or str(value).strip().lower() in {"none", ""}:
        return None
    return "auto" if str(value).strip().lower() == "auto" else value


class FinetuneError(ValueError):
    """A fine-tuning request that cannot start (missing or unpruned checkpoint, wrong data); nothing was trained."""


class PrunedDetectionTrainer(DetectionTrainer):
    """DetectionTrainer that trains the network it is handed (a pruned one) and writes checkpoints atomically.

    Training checkpoints (``last.pt``, ``best.pt`` before the final strip) keep the EMA in FP32, so a resumed run
    continues from exactly the weights it stopped at; the final stripped checkpoints are FP16 as in Ultralytics.

    With ``distill_model=<teacher.pt>`` the student learns from the network it was pruned from through
    :class:`yolo_ext.distill.PrunedDistillationModel` (kept-channel features, class scores, DFL boxes), with
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
        if self.args.distill_model and self.distill_method == "pruned" and not isinstance(self.model, DistillationModel):
            self.model = PrunedDistillationModel(self.args.distill_model, self.model, self.distill_weights)

    def get_model(self, cfg: Any = None, weights: torch.nn.Module | None = None, verbose: bool = True) -> DetectionModel:
        """Return ``weights`` itself (the pruned network), after checking it fits this trainer's task and the data;
        its class outputs are rebuilt if the data has other classes."""
        if not isinstance(weights, DetectionModel):
            raise FinetuneError(
                f"{type(self).__name__} fine-tunes an existing network: call YOLO('pruned.pt').train(trainer=...) "
                "or yolo_ext.finetune.finetune('pruned.pt', ...); there is no model to start from."
            )
        check_trainer_task(type(self), weights)
        check_task_data(weights, self.data)
        change = _new_classes(weights, self.data, self.args.data, getattr(self.args, "cls_remap", True))
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
            f"yolo_ext.finetune.{expected.__name__} (finetune() and tools/finetune.py pick it from the checkpoint)."
        )


def check_task_data(model: torch.nn.Module, data: dict) -> None:
    """What the data must agree on beyond classes: a pose network's keypoint layout is fixed by its head."""
    head = model.model[-1]
    kpt_shape = getattr(head, "kpt_shape", None)
    if kpt_shape is not None and list(data.get("kpt_shape") or []) != list(kpt_shape):
        raise FinetuneError(
            f"The pose network predicts keypoints of shape {list(kpt_shape)} but the data's kpt_shape is "
            f"{data.get('kpt_shape')}: fine-tune on data with the same keypoints (kpt_shape: {list(kpt_shape)})."
        )


def check_distillable(model: torch.nn.Module, what: str) -> None:
    """Distillation (:mod:`yolo_ext.distill`) compares detection outputs only; refuse it for other tasks rather than
    leave their masks, keypoints or angles untaught while looking like it worked."""
    task = check_supported_model(model, "yolo_ext fine-tunes").task
    if task != "detect":
        raise FinetuneError(
            f"Distillation (--teacher / distill_model) supports detection models only, and {what} is a {task} model. "
            "Fine-tune it without a teacher."
        )


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
    """The device must be one this machine has (:func:`yolo_ext.checks.check_device`)."""
    try:
        checks.check_device(device)
    except checks.InputError as e:
        raise FinetuneError(str(e)) from None


def check_train_args(train_args: dict[str, Any]) -> None:
    """Ultralytics train arguments that would otherwise fail after setup (a traceback, a run folder left behind) or
    train nothing: epochs, batch, image size, learning rate, optimizer, device, the output folder, and the
    gradient-checkpointing switch (read only at the first batch otherwise)."""
    try:
        if train_args.get("epochs") is not None:
            checks.check_positive_int(train_args["epochs"], "epochs")
        batch = train_args.get("batch")
        autobatch = batch == -1 or (isinstance(batch, float) and 0 < batch < 1)  # Ultralytics' AutoBatch forms
        if batch is not None and not autobatch:
            checks.check_positive_int(batch, "--batch-size")
        if train_args.get("imgsz") is not None:
            checks.check_imgsz(train_args["imgsz"], "--imgsz")
        if train_args.get("lr0") is not None:
            checks.check_lr(train_args["lr0"], "--lr0")
        if train_args.get("optimizer") is not None:
            checks.check_optimizer(train_args["optimizer"], "--optimizer")
        warmup = train_args.get("warmup_epochs")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0):
            raise checks.InputError(f"warmup_epochs must be a number >= 0, got {warmup!r}.")
        checks.check_device(train_args.get("device"), "--device")
        if train_args.get("project"):
            checks.check_folder(train_args["project"], "--project")
        checkpointing_enabled()
    except (checks.InputError, ValueError) as e:
        raise FinetuneError(str(e)) from None


def _retrain_hint(last: str | Path, model: torch.nn.Module) -> str:
    """The command that fine-tunes ``last`` again (an unpruned one needs --allow-unpruned)."""
    unpruned = "" if pruning_history(model) else " --allow-unpruned"
    return f"tools/finetune.py --model-path {last} --data <data.yaml>{unpruned}"


def check_resume(last: str | Path, data: str | Path | None = None) -> DetectionModel:
    """``last`` must be the ``last.pt`` of an interrupted training, and its data usable (or ``data`` given).

    Returns the network it holds (its task picks the trainer)."""
    try:
        ckpt, model = load_detection_checkpoint(last, purpose="yolo_ext fine-tunes")
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(f"Cannot resume: {e}") from e
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        if "train_results" in ckpt:
            epochs = (ckpt.get("train_args") or {}).get("epochs", "?")
            raise FinetuneError(
                f"{str(last)!r} is the end of a finished training ({epochs} epochs): there is nothing to resume. To "
                f"train longer, fine-tune it again: {_retrain_hint(last, model)} --epochs N."
            )
        what = "a pruned checkpoint" if pruning_history(model) else "not a training checkpoint"
        raise FinetuneError(
            f"{str(last)!r} is {what}, not the last.pt of an interrupted fine-tuning (no epoch/optimizer state). "
            f"Start a fine-tuning instead: {_retrain_hint(last, model)}."
        )
    args = ckpt.get("train_args") or {}
    if isinstance(args.get("epochs"), int) and ckpt["epoch"] + 1 >= args["epochs"]:
        raise FinetuneError(
            f"{str(last)!r} has trained all its {args['epochs']} epochs (the run stopped in its final save): there is "
            f"nothing to resume. Use it as it is, or fine-tune it again: {_retrain_hint(last, model)} --epochs N."
        )
    data = data or args.get("data")
    try:
        check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"The data YAML of the run ({str(data)!r}) cannot be used: {e}") from e
    return model


def resume_folder(last: str | Path) -> tuple[Path | None, str]:
    """Where resuming ``last`` writes, so that no other run's weights are replaced: (None, '') for its own run folder.

    Ultralytics resumes into the folder recorded in the checkpoint (``train_args['save_dir']``). That is right for the
    ``last.pt`` inside it; for a copy (taken while the run went on) it would replace that run's newer ``best.pt`` /
    ``last.pt`` and list epochs twice in its ``results.csv``. A ``last.pt`` in another run folder's ``weights/``
    (a copied or moved folder) resumes there; any other copy into a new folder beside the recorded one. The second
    value is the line that says so.
    """
    from ultralytics.utils.files import increment_path

    last = Path(last).resolve()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    recorded = (ckpt.get("train_args") or {}).get("save_dir")
    if not recorded or (Path(recorded) / "weights" / "last.pt").resolve() == last:
        return None, ""
    recorded = Path(recorded)
    if last.name == "last.pt" and last.parent.name == "weights":
        folder = last.parent.parent
    else:
        folder = increment_path(recorded, exist_ok=False, sep="-")
    return folder, (f"yolo_ext: {last} is not the last.pt of the run folder it records ({recorded}), which is left as "
                    f"it is; resuming into {folder}")


def finetune_recipe(ckpt: dict, model: DetectionModel, fraction: float = EPOCHS_FRACTION) -> dict[str, Any]:
    """Default train args for fine-tuning ``model``: the base network's own optimizer, schedule and augmentation
    (learning-rate rewinding, Renda et al., ICLR 2020) for ``fraction`` of its epochs.

    The base's args come from the pruning record (``base_train_args``), else from the checkpoint's ``train_args``;
    a checkpoint without either gets Ultralytics' defaults (100 epochs -> 30).
    """
    base = base_train_args(ckpt, model)
    args = {k: base[k] for k in RECIPE_KEYS if k in base}
    args["epochs"] = max(1, round(fraction * int(base.get("epochs") or DEFAULT_CFG.epochs)))
    return args


def check_finetune_inputs(
    model_path: str | Path, data: str | Path, require_pruned: bool = True
) -> tuple[dict, DetectionModel]:
    """Everything that can be checked before training starts: checkpoint, pruning record, data YAML, classes, labels.

    Returns the checkpoint and its network, with its class outputs already rebuilt for the data's classes when their
    number differs (as the trainer will rebuild them) and the data's class names, so a teacher is checked against the
    classes it must teach.
    """
    try:
        ckpt, model = load_detection_checkpoint(model_path)
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(str(e)) from e
    if require_pruned and not pruning_history(model):
        raise FinetuneError(
            f"{str(model_path)!r} is not a pruned checkpoint (no yolo_ext pruning record). Prune it first with "
            "tools/prune.py, fine-tune it anyway with --allow-unpruned, or train it normally with tools/train.py / "
            "yolo-ext train."
        )
    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"Data YAML {str(data)!r} cannot be used: {e}") from e
    _new_classes(model, info, data)  # the model as training will see it: teachers are checked against it
    model.names = dict(info["names"])  # what the trainer gives it
    check_task_data(model, info)
    try:
        check_labels(info, check_supported_model(model).task, getattr(model.model[-1], "kpt_shape", None), data)
    except LabelError as e:
        raise FinetuneError(str(e)) from None
    return ckpt, model


def _ancestor_digests(model: torch.nn.Module) -> list[str]:
    """The recorded weight digests of the networks ``model`` was pruned from (none for records older than them)."""
    return [r["source_sha256"] for r in pruning_history(model) if r.get("source_sha256")]


def check_teacher(model: DetectionModel, teacher: str | Path) -> None:
    """The teacher must be a detection checkpoint that ``model`` was pruned from: its weights are one of the networks
    in the pruning record (when the record has their digests), so its kept channels are known, and it predicts the
    same classes. A record without digests (older yolo_ext) is accepted on widths and classes, and says so."""
    check_distillable(model, "the student")
    try:
        network = load_detection_checkpoint(teacher, purpose="distillation uses")[1]
        check_distillable(network, f"the teacher {str(teacher)!r}")
        digests = _ancestor_digests(model)
        if digests and network_digest(network) not in digests:
            sources = ", ".join(str(r.get("source")) for r in pruning_history(model))
            raise DistillError(
                f"{str(teacher)!r} is not a network this model was pruned from (its weights match none of those "
                f"recorded: {sources}). Pass one of those checkpoints, or fine-tune without a teacher (--teacher none)."
            )
        kept_channels(model, network)
    except (CheckpointError, PruningError, DistillError) as e:
        raise FinetuneError(f"Teacher (--teacher / distill_model): {e}") from e
    if not digests:
        LOGGER.warning(f"yolo_ext: the pruning record has no weight digests (pruned by an older yolo_ext), so "
                       f"{teacher} could not be verified to be the network this model was pruned from")


def find_default_teacher(model_path: str | Path, model: DetectionModel) -> tuple[Path | None, str]:
    """The network ``model`` was first pruned from, if its file is still there (as recorded, or beside the pruned
    checkpoint under the same name), is that network (its weights match the recorded digest) and can teach it (its
    Detect inputs are the ones the record starts from, and it predicts ``model.names``).

    Returns the file (or None) and the one line that says what was found, or why none can teach.
    """
    history = pruning_history(model)
    source = history[0].get("source") if history else None
    if not source:
        return None, "fine-tuning without a teacher: it has no pruning record naming the network it was pruned from"
    digest = history[0].get("source_sha256")
    student = Path(model_path).resolve()
    candidates = [c for c in dict.fromkeys(p.resolve() for p in (Path(source), Path(model_path).parent / Path(source).name))
                  if c != student and c.is_file()]
    reasons = []
    for candidate in candidates:
        try:
            network = load_detection_checkpoint(candidate)[1]
            if digest and network_digest(network) != digest:
                raise DistillError("its weights are not those of the network it was pruned from (changed or replaced)")
            kept_channels(model, network)
        except (CheckpointError, PruningError, DistillError) as e:
            reasons.append(f"{candidate}: {e}")
            continue
        unverified = "" if digest else (" (pruned by an older yolo_ext: the record has no digest of its weights, so "
                                         "it could not be verified to be that network)")
        return candidate, f"distilling from {candidate}, the network it was pruned from{unverified}"
    why = "; ".join(reasons) if reasons else f"the network it was pruned from ({source}) is not there"
    return None, f"fine-tuning without a teacher: {why}"


def default_teacher(model_path: str | Path, model: DetectionModel) -> Path | None:
    """The file :func:`find_default_teacher` finds, or None."""
    return find_default_teacher(model_path, model)[0]


def _new_classes(model: DetectionModel, data: dict, name: Any, remap: bool = True) -> ClassChange | None:
    """Rebuild ``model``'s class outputs for ``data`` (a checked data dict) if it has another number of classes."""
    try:
        return rebuild_class_outputs(model, data["names"], data=str(name), remap=remap)
    except (ClassesError, PruningError) as e:
        raise FinetuneError(f"Cannot fine-tune on {str(name)!r}, which has {data['nc']} classes: {e}") from e


def finetune(
    model_path: str | Path,
    data: str | Path,
    require_pruned: bool = True,
    trainer: type[PrunedDetectionTrainer] | None = None,
    teacher: str | Path | None = DEFAULT_TEACHER,
    **train_args: Any,
) -> YOLO:
    """Fine-tune a pruned checkpoint; ``train_args`` are Ultralytics train arguments (epochs, imgsz, batch, ...).

    Arguments not given follow :func:`finetune_recipe` (the base network's own recipe, 30% of its epochs).
    ``trainer`` defaults to the one of the checkpoint's task (:data:`PRUNED_TRAINERS`); a given one must train that
    task. ``teacher`` (detection only) is a network to distil from (:mod:`yolo_ext.distill`): None (the default, as
    ``--teacher none``) trains without one; a checkpoint path distils from it (it must be a network the model was
    pruned from); ``"auto"`` from the one the model was pruned from when its file is still there
    (:func:`find_default_teacher`; without one, or for another task, it trains without a teacher and says why).
    ``distill_model=...`` in ``train_args`` (Ultralytics' name) wins over it.
    Data with another number of classes than the model's gets new class outputs and keeps the rest of the network
    (:mod:`yolo_ext.classes`); a teacher must then predict the data's classes.
    A relative ``project`` is taken from the current folder (Ultralytics would put it under ``runs/detect/``).
    Returns the YOLO object holding the fine-tuned network (its ``trainer.best`` is the checkpoint path).
    """
    check_train_args(train_args)
    teacher = teacher_option(teacher)
    ckpt, model = check_finetune_inputs(model_path, data, require_pruned)
    trainer = trainer or pruned_trainer(model)
    check_trainer_task(trainer, model)
    if train_args.get("distill_model") or teacher not in (None, "auto"):
        check_distillable(model, repr(str(model_path)))
    if train_args.get("distill_model"):
        check_teacher(model, train_args["distill_model"])
    elif teacher == "auto":  # opted in: distil when the network it was pruned from can teach it, else say why not
        if check_supported_model(model).task == "detect":
            found, line = find_default_teacher(model_path, model)
        else:
            found, line = None, "fine-tuning without a teacher: distillation is for detection models"
        LOGGER.warning(f"yolo_ext: {line}")
        if found is not None:
            train_args["distill_model"] = str(found)
    elif teacher is not None:
        check_teacher(model, teacher)
        train_args["distill_model"] = str(teacher)
    args = {**finetune_recipe(ckpt, model), **train_args}
    if args.get("project"):
        args["project"] = str(Path(args["project"]).resolve())
        for weights in Path(args["project"]).glob("*/weights"):
            remove_stale_temps(weights)  # temporary checkpoints of earlier runs that were killed
    yolo = YOLO(str(model_path))
    yolo.train(trainer=trainer, data=str(data), **args)
    return yolo


def resume(last: str | Path, **train_args: Any) -> YOLO:
    """Continue an interrupted fine-tuning from its ``last.pt`` with the pruned architecture.

    A copy of a ``last.pt`` resumes into a folder of its own (:func:`resume_folder`), never into the run it was
    copied from."""
    remove_stale_temps(Path(last).parent)  # left by the run that was killed
    check_train_args(train_args)
    network = check_resume(last, train_args.get("data"))
    folder, line = resume_folder(last)
    if folder is not None:
        LOGGER.warning(line)
        train_args["save_dir"] = str(folder)
    model = YOLO(str(last))
    model.train(trainer=pruned_trainer(network), resume=True, **train_args)
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
