"""Fine-tune a pruned checkpoint (:func:`finetune`) or resume an interrupted fine-tuning (:func:`resume`).

Everything that can be checked first is checked first (:mod:`yolo_ext.train.inputs`), then the checkpoint trains with
the pruned trainer of its task (:mod:`yolo_ext.train.trainers`) and, unless told otherwise, the base network's own
recipe (:mod:`yolo_ext.train.recipe`). A copy of a ``last.pt`` resumes into a folder of its own (:func:`resume_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics import YOLO
from ultralytics.utils import LOGGER

from yolo_ext.io.atomic import remove_stale_temps
from yolo_ext.prune.heads import check_supported_model
from yolo_ext.train.inputs import (
    check_distillable,
    check_finetune_inputs,
    check_resume,
    check_teacher,
    check_train_args,
    find_default_teacher,
    open_checkpoint,
)
from yolo_ext.train.recipe import DEFAULT_TEACHER, finetune_recipe, teacher_option
from yolo_ext.train.trainers import PrunedDetectionTrainer, check_trainer_task, pruned_trainer

__all__ = ["finetune", "resume", "resume_folder"]


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
    task. ``teacher`` (detection only) is a network to distil from (:mod:`yolo_ext.train.distill`): None (the default,
    as
    ``--teacher none``) trains without one; a checkpoint path distils from it (it must be a network the model was
    pruned from); ``"auto"`` from the one the model was pruned from when its file is still there
    (:func:`find_default_teacher`; without one, or for another task, it trains without a teacher and says why).
    ``distill_model=...`` in ``train_args`` (Ultralytics' name) wins over it.
    Data with another number of classes than the model's gets new class outputs and keeps the rest of the network
    (:mod:`yolo_ext.train.class_outputs`); a teacher must then predict the data's classes.
    A relative ``project`` is taken from the current folder (Ultralytics would put it under ``runs/detect/``).
    Returns the YOLO object holding the fine-tuned network (its ``trainer.best`` is the checkpoint path).
    """
    check_train_args(train_args)
    teacher = teacher_option(teacher)
    yolo, ckpt, model = open_checkpoint(model_path)  # the one read of the checkpoint: the YOLO object trains it
    ckpt, model = check_finetune_inputs(model_path, data, require_pruned, loaded=(ckpt, model))
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
    yolo.train(trainer=trainer, data=str(data), **args)
    return yolo


def resume_folder(last: str | Path, ckpt: dict) -> tuple[Path | None, str]:
    """Where resuming ``last`` writes, so that no other run's weights are replaced: (None, '') for its own run folder.

    Ultralytics resumes into the folder recorded in the checkpoint (``train_args['save_dir']``). That is right for the
    ``last.pt`` inside it; for a copy (taken while the run went on) it would replace that run's newer ``best.pt`` /
    ``last.pt`` and list epochs twice in its ``results.csv``. A ``last.pt`` in another run folder's ``weights/``
    (a copied or moved folder) resumes there; any other copy into a new folder beside the recorded one. The second
    value is the line that says so. ``ckpt`` is what ``last`` holds (read once, by :func:`check_resume`).
    """
    from ultralytics.utils.files import increment_path

    last = Path(last).resolve()
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


def resume(last: str | Path, **train_args: Any) -> YOLO:
    """Continue an interrupted fine-tuning from its ``last.pt`` with the pruned architecture.

    A copy of a ``last.pt`` resumes into a folder of its own (:func:`resume_folder`), never into the run it was
    copied from."""
    remove_stale_temps(Path(last).parent)  # left by the run that was killed
    check_train_args(train_args)
    model, ckpt, network = check_resume(last, train_args.get("data"))
    folder, line = resume_folder(last, ckpt)
    if folder is not None:
        LOGGER.warning(line)
        train_args["save_dir"] = str(folder)
    model.train(trainer=pruned_trainer(network), resume=True, **train_args)
    return model
