"""Gradients of the detection loss on a few batches of real data, for first-order (Taylor) pruning criteria."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.data import build_dataloader, build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG_DICT

from yolo_ext.prune.errors import PruningError


def loss_gradients(data: str | Path, imgsz: int, batches: int = 4, batch_size: int = 8) -> Callable[[nn.Module], None]:
    """A ``gradient_fn`` for :func:`prune_model`: accumulates ``.grad`` from ``batches`` un-augmented train batches.

    BatchNorm layers stay in eval mode, so estimating importance never changes the model's running statistics.
    """
    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise PruningError(f"Cannot read data YAML {str(data)!r} for the Taylor criterion: {e}") from e
    cfg = get_cfg(overrides={"imgsz": imgsz, "batch": batch_size, "workers": 0, "task": "detect", "cache": False})
    dataset = build_yolo_dataset(cfg, info["train"], batch_size, info, mode="val", stride=32)
    loader = build_dataloader(dataset, batch_size, workers=0, shuffle=False)

    def accumulate(model: DetectionModel) -> None:
        args = getattr(model, "args", None)  # a checkpoint's train args (dict), the trainer's namespace, or none
        model.args = args if hasattr(args, "box") else get_cfg({**DEFAULT_CFG_DICT, **(args or {})})
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        try:
            for i, batch in enumerate(loader):
                if i == batches:
                    break
                batch["img"] = batch["img"].float() / 255
                loss, _ = model.loss(batch)
                loss.sum().backward()
        finally:
            if args is None:
                del model.args
            else:
                model.args = args
            model.__dict__.pop("criterion", None)  # the loss holds a reference to the model; never pickle it
            model.eval()

    return accumulate
