"""The default fine-tuning: the base network's own recipe for part of its epochs, and no teacher unless asked.

Why these defaults, measured in ``benchmarks/accuracy.py`` (numbers in ``benchmarks/RESULTS.md``): learning-rate
rewinding (Renda et al., ICLR 2020), i.e. the base network's own optimizer, schedule, loss gains and augmentation, beat
a separate fine-tuning recipe; 30% of the base's epochs recovered its accuracy after a -50% params pruning. Head
distillation from the network it was pruned from was better on every seed measured on BCCD, but by less than the rule
set for a default (issue 15: at least +0.5 mAP50-95 on both data sets measured), and below it on the second data set,
so it is opt-in (``teacher="auto"`` / ``--teacher auto``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from ultralytics.cfg import DEFAULT_CFG

from yolo_ext.prune.record import base_train_args

__all__ = ["DEFAULT_TEACHER", "EPOCHS_FRACTION", "RECIPE_KEYS", "finetune_recipe", "teacher_option"]

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
#: No teacher by default, in Python and on the command line alike: ``None`` here is ``--teacher none``. ``"auto"`` opts
#: in to distilling from the network the model was pruned from (:func:`yolo_ext.train.inputs.find_default_teacher`);
#: a path distils from that file. Detection only: other tasks train without one.
DEFAULT_TEACHER: str | None = None


def teacher_option(value: str | None) -> str | None:
    """A ``--teacher`` / ``teacher=`` value: None or ``none`` (any case) is no teacher; ``auto`` (any case) the network
    the model was pruned from; anything else a checkpoint path."""
    if value is None or str(value).strip().lower() in {"none", ""}:
        return None
    return "auto" if str(value).strip().lower() == "auto" else value


def finetune_recipe(ckpt: Mapping[str, Any], model: nn.Module, fraction: float = EPOCHS_FRACTION) -> dict[str, Any]:
    """Default train args for fine-tuning ``model``: the base network's own optimizer, schedule and augmentation
    for ``fraction`` of its epochs.

    The base's args come from the pruning record (``base_train_args``), else from the checkpoint's ``train_args``;
    a checkpoint without either gets Ultralytics' defaults (100 epochs -> 30).
    """
    base = base_train_args(ckpt, model)
    args = {k: base[k] for k in RECIPE_KEYS if k in base}
    args["epochs"] = max(1, round(fraction * int(base.get("epochs") or DEFAULT_CFG.epochs)))
    return args
