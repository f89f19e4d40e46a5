"""Everything checked before a fine-tuning starts, so a mistake costs no training and leaves no run folder.

Four kinds of checks: the training options (:func:`check_train_args`: epochs, batch, image size, learning rate,
optimizer, device, output folder, the checkpointing switch); the checkpoint and the data (:func:`check_finetune_inputs`:
a pruned network of a supported task, a usable data YAML whose classes and labels it can train on); the teacher
(:func:`check_teacher`, :func:`find_default_teacher`: a network the model was pruned from, predicting its classes);
and what ``--resume`` points at (:func:`check_resume`). Each raises :class:`~yolo_ext.train.errors.FinetuneError`
with one message that says what to pass instead.

A checkpoint is read once per run: :func:`open_checkpoint` reads it through Ultralytics' own loader (the ``YOLO``
object that then trains), and the checks run on what that read.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER

from yolo_ext import checks
from yolo_ext.prune.checkpoint import (
    check_checkpoint_path,
    load_prunable_checkpoint,
    network_digest,
    prunable_network,
    unreadable,
)
from yolo_ext.prune.errors import CheckpointError, PruningError
from yolo_ext.prune.heads import check_supported_model
from yolo_ext.prune.record import ancestor_digests, is_pruned, read_history
from yolo_ext.train.class_outputs import ClassChange, ClassesError, rebuild_class_outputs
from yolo_ext.train.distill import DistillError, kept_channels
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.grad_checkpoint import checkpointing_enabled
from yolo_ext.train.labels import LabelError, check_labels

__all__ = [
    "check_device", "check_distillable", "check_finetune_inputs", "check_resume", "check_task_data", "check_teacher",
    "check_train_args", "default_teacher", "find_default_teacher", "new_classes", "open_checkpoint",
]


def open_checkpoint(path: str | Path, purpose: str = "yolo_ext fine-tunes") -> tuple[YOLO, dict, DetectionModel]:
    """Read ``path`` once, through Ultralytics (``YOLO(path)``, honouring ``ULTRALYTICS_SAFE_LOAD``), with yolo_ext's
    messages: the ``YOLO`` object that will train, the checkpoint dict, and a copy of its network for the checks
    (they rebuild class outputs on it as training will, without touching the one that trains)."""
    try:
        path = check_checkpoint_path(path)
        if path.suffix.lower() != ".pt":
            raise CheckpointError(f"{str(path)!r} is not a .pt file; pass the checkpoint training or "
                                  "tools/prune.py wrote (best.pt, last.pt, <name>-pruned40.pt).")
        try:
            yolo = YOLO(str(path))
        except Exception as e:
            raise unreadable(path, e) from e
        model = prunable_network(yolo.ckpt, path, purpose)
    except (CheckpointError, PruningError) as e:
        raise FinetuneError(str(e)) from e
    return yolo, yolo.ckpt, copy.deepcopy(model).float()


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
    """Distillation (:mod:`yolo_ext.train.distill`) compares detection outputs only; refuse it for other tasks rather
    than
    leave their masks, keypoints or angles untaught while looking like it worked."""
    task = check_supported_model(model, "yolo_ext fine-tunes").task
    if task != "detect":
        raise FinetuneError(
            f"Distillation (--teacher / distill_model) supports detection models only, and {what} is a {task} model. "
            "Fine-tune it without a teacher."
        )


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


def retrain_hint(last: str | Path, model: torch.nn.Module) -> str:
    """The command that fine-tunes ``last`` again (an unpruned one needs --allow-unpruned)."""
    unpruned = "" if is_pruned(model) else " --allow-unpruned"
    return f"tools/finetune.py --model-path {last} --data <data.yaml>{unpruned}"


def check_resume(last: str | Path, data: str | Path | None = None) -> tuple[YOLO, dict, DetectionModel]:
    """``last`` must be the ``last.pt`` of an interrupted training, and its data usable (or ``data`` given).

    Returns what :func:`open_checkpoint` read: the ``YOLO`` object, the checkpoint, its network (whose task picks the
    trainer)."""
    try:
        yolo, ckpt, model = open_checkpoint(last)
    except FinetuneError as e:
        raise FinetuneError(f"Cannot resume: {e}") from e
    if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:
        if "train_results" in ckpt:
            epochs = (ckpt.get("train_args") or {}).get("epochs", "?")
            raise FinetuneError(
                f"{str(last)!r} is the end of a finished training ({epochs} epochs): there is nothing to resume. To "
                f"train longer, fine-tune it again: {retrain_hint(last, model)} --epochs N."
            )
        what = "a pruned checkpoint" if is_pruned(model) else "not a training checkpoint"
        raise FinetuneError(
            f"{str(last)!r} is {what}, not the last.pt of an interrupted fine-tuning (no epoch/optimizer state). "
            f"Start a fine-tuning instead: {retrain_hint(last, model)}."
        )
    args = ckpt.get("train_args") or {}
    if isinstance(args.get("epochs"), int) and ckpt["epoch"] + 1 >= args["epochs"]:
        raise FinetuneError(
            f"{str(last)!r} has trained all its {args['epochs']} epochs (the run stopped in its final save): there is "
            f"nothing to resume. Use it as it is, or fine-tune it again: {retrain_hint(last, model)} --epochs N."
        )
    data = data or args.get("data")
    try:
        check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"The data YAML of the run ({str(data)!r}) cannot be used: {e}") from e
    return yolo, ckpt, model


def check_finetune_inputs(
    model_path: str | Path, data: str | Path, require_pruned: bool = True,
    loaded: tuple[dict, DetectionModel] | None = None,
) -> tuple[dict, DetectionModel]:
    """Everything that can be checked before training starts: checkpoint, pruning record, data YAML, classes, labels.

    ``loaded`` is the checkpoint and (a copy of) its network when already read (:func:`open_checkpoint`); otherwise
    ``model_path`` is read here. Returns the checkpoint and its network, with its class outputs already rebuilt for
    the data's classes when their number differs (as the trainer will rebuild them) and the data's class names, so a
    teacher is checked against the classes it must teach.
    """
    if loaded is None:
        try:
            loaded = load_prunable_checkpoint(model_path, purpose="yolo_ext fine-tunes")
        except (CheckpointError, PruningError) as e:
            raise FinetuneError(str(e)) from e
    ckpt, model = loaded
    if require_pruned and not is_pruned(model):
        raise FinetuneError(
            f"{str(model_path)!r} is not a pruned checkpoint (no yolo_ext pruning record). Prune it first with "
            "tools/prune.py, fine-tune it anyway with --allow-unpruned, or train it normally with tools/train.py / "
            "yolo-ext train."
        )
    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise FinetuneError(f"Data YAML {str(data)!r} cannot be used: {e}") from e
    new_classes(model, info, data)  # the model as training will see it: teachers are checked against it
    model.names = dict(info["names"])  # what the trainer gives it
    check_task_data(model, info)
    try:
        check_labels(info, check_supported_model(model).task, getattr(model.model[-1], "kpt_shape", None), data)
    except LabelError as e:
        raise FinetuneError(str(e)) from None
    return ckpt, model


def check_teacher(model: DetectionModel, teacher: str | Path) -> None:
    """The teacher must be a detection checkpoint that ``model`` was pruned from: its weights are one of the networks
    in the pruning record (when the record has their digests), so its kept channels are known, and it predicts the
    same classes. A record without digests (older yolo_ext) is accepted on widths and classes, and says so."""
    check_distillable(model, "the student")
    try:
        network = load_prunable_checkpoint(teacher, purpose="distillation uses")[1]
        check_distillable(network, f"the teacher {str(teacher)!r}")
        digests = ancestor_digests(model)
        if digests and network_digest(network) not in digests:
            sources = ", ".join(str(r.source) for r in read_history(model))
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
    history = read_history(model)
    source = history[0].source if history else None
    if not source:
        return None, "fine-tuning without a teacher: it has no pruning record naming the network it was pruned from"
    digest = history[0].source_sha256
    student = Path(model_path).resolve()
    places = (Path(source), Path(model_path).parent / Path(source).name)
    candidates = [c for c in dict.fromkeys(p.resolve() for p in places)
                  if c != student and c.is_file()]
    reasons = []
    for candidate in candidates:
        try:
            network = load_prunable_checkpoint(candidate)[1]
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


def new_classes(model: DetectionModel, data: dict, name: Any, remap: bool = True) -> ClassChange | None:
    """Rebuild ``model``'s class outputs for ``data`` (a checked data dict) if it has another number of classes
    (:mod:`yolo_ext.train.class_outputs`)."""
    try:
        return rebuild_class_outputs(model, data["names"], data=str(name), remap=remap)
    except (ClassesError, PruningError) as e:
        raise FinetuneError(f"Cannot fine-tune on {str(name)!r}, which has {data['nc']} classes: {e}") from e
