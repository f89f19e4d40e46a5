"""Gradients of the model's own training loss on a few batches of real data, for first-order (Taylor) criteria.

The loss is the model's task loss (boxes and classes; plus masks, keypoints or angles), so the batches are read with
that task's labels: the data set is built at the first call, once the model (and so its task) is known.
"""

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
from yolo_ext.prune.heads import check_supported_model


def loss_gradients(data: str | Path, imgsz: int, batches: int = 4, batch_size: int = 8) -> Callable[[nn.Module], None]:
    """A ``gradient_fn`` for :func:`prune_model`: accumulates ``.grad`` from ``batches`` un-augmented train batches.

    BatchNorm layers stay in eval mode, so estimating importance never changes the model's running statistics.
    """
    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise PruningError(f"Cannot read data YAML {str(data)!r} for the Taylor criterion: {e}") from e
    loaders: dict[str, object] = {}

    def batches_for(task: str):
        """Un-augmented train batches with the labels ``task``'s loss reads (built once per task)."""
        if task not in loaders:
            cfg = get_cfg(overrides={"imgsz": imgsz, "batch": batch_size, "workers": 0, "task": task, "cache": False})
            try:
                dataset = build_yolo_dataset(cfg, info["train"], batch_size, info, mode="val", stride=32)
            except Exception as e:  # e.g. pose data without kpt_shape, detection boxes for a segmentation model
                raise PruningError(f"Cannot read {str(data)!r} as {task} data for the Taylor criterion: {e}") from e
            loaders[task] = build_dataloader(dataset, batch_size, workers=0, shuffle=False)
        return loaders[task]

    def accumulate(model: DetectionModel) -> None:
        args = getattr(model, "args", None)  # a checkpoint's train args (dict), the trainer's namespace, or none
        loader = batches_for(check_supported_model(model).task)
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
