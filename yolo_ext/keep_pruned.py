"""Keep a pruned network when it is trained through plain Ultralytics: ``YOLO("pruned.pt").train(...)`` and
``yolo-ext train model=pruned.pt ...``.

Ultralytics' ``DetectionTrainer.get_model`` rebuilds the network from its YAML and copies only the tensors whose shapes
still match, which silently undoes a pruning (2.59M params back from 0.93M, "Transferred 89/499 items", the pruning
record gone). The one hook Ultralytics runs between creating the trainer and asking it for the network is the
``on_pretrain_routine_start`` callback, run in the trainer's constructor. ``import yolo_ext`` adds
:func:`keep_pruned_network` to Ultralytics' default callbacks; when the checkpoint being trained carries a yolo_ext
pruning record, it makes the stock trainer of its task (``DetectionTrainer``, ``SegmentationTrainer``,
``PoseTrainer``, ``OBBTrainer``) the matching trainer of :data:`yolo_ext.finetune.PRUNED_TRAINERS` (a subclass that
only changes how the network is obtained and saved) and says so loudly. Other trainer classes are not changed: they
get the warning and the advice to derive from the pruned trainer of their task.

That callback does not run in every case: Ultralytics skips it in the parent process of a multi-GPU (DDP) run, and a
``YOLO`` object created before ``import yolo_ext`` has no such callback. So ``import yolo_ext`` also wraps
``Model.train`` (:func:`install`), which every training goes through (Python, ``yolo-ext train``, resume, DDP
parents): for a network with a pruning record it picks the pruned trainer before Ultralytics builds one. The DDP
launcher then pickles that trainer class and the pruned network for its workers; unpickling the class imports
yolo_ext in each worker, which registers everything before the worker builds its trainer. The wrapper also refuses a
bad ``YOLO_EXT_CHECKPOINT`` before any run folder is made (it is read at the first batch otherwise).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from torch import nn
from ultralytics.utils import LOGGER

EVENT = "on_pretrain_routine_start"
_IN_TRAIN = threading.local()  # set while the Model.train wrapper runs: it has chosen the trainer and said so


def _pruned_network(path: str) -> Any:
    """The network of checkpoint ``path`` if it carries a pruning record, else None (never raises)."""
    if not path.endswith(".pt") or not Path(path).is_file():
        return None
    try:
        from ultralytics.utils.patches import torch_load

        ckpt = torch_load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None  # Ultralytics will report an unreadable file itself
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    return model if getattr(model, "yolo_ext_pruning", None) else None


def choose_trainer(trainer: type, network: nn.Module, where: str) -> type:
    """The trainer class that trains ``network`` (which carries a pruning record) without undoing its pruning.

    Ultralytics' stock trainer of its task becomes the matching pruned trainer (a subclass that only changes how the
    network is obtained and saved), with a warning; a pruned trainer stays; any other class stays, with a warning
    that it will undo the pruning.
    """
    from yolo_ext.finetune import PRUNED_TRAINERS, PrunedDetectionTrainer

    if isinstance(trainer, type) and issubclass(trainer, PrunedDetectionTrainer):
        return trainer
    params = sum(p.numel() for p in network.parameters())
    what = f"{where} holds a pruned network ({params:,} params, pruned {len(network.yolo_ext_pruning)} time(s))"
    pruned = {t.ultralytics_trainer: t for t in PRUNED_TRAINERS.values()}.get(trainer)
    if pruned is not None:
        LOGGER.warning(
            f"yolo_ext: {what}. Ultralytics' {pruned.ultralytics_trainer.__name__} would rebuild the unpruned network "
            f"from its YAML and undo the pruning; training it with yolo_ext.finetune.{pruned.__name__} instead, which "
            f"keeps it. Pass trainer={pruned.__name__} (or use tools/finetune.py) to choose this explicitly."
        )
        return pruned
    LOGGER.warning(
        f"yolo_ext: {what}, but {getattr(trainer, '__name__', trainer)} rebuilds the network from its YAML: THE PRUNING "
        "WILL BE UNDONE. Derive your trainer from the pruned trainer of its task (yolo_ext.finetune.PRUNED_TRAINERS, "
        "e.g. PrunedDetectionTrainer), or use tools/finetune.py."
    )
    return trainer


def keep_pruned_network(trainer: Any) -> None:
    """Callback: train a pruned checkpoint with its task's pruned trainer (see module doc). Nothing to do when the
    ``Model.train`` wrapper chose the trainer already."""
    from yolo_ext.finetune import PrunedDetectionTrainer

    if isinstance(trainer, PrunedDetectionTrainer) or getattr(_IN_TRAIN, "active", False):
        return
    path = str(getattr(trainer.args, "model", "") or "")
    network = _pruned_network(path)
    if network is None:
        return
    chosen = choose_trainer(type(trainer), network, path)
    if chosen is not type(trainer):
        trainer.__class__ = chosen  # adds no state: only get_model / save_model / final_eval differ


def _wrap_train(train: Any) -> Any:
    """``Model.train`` that picks the pruned trainer for a network with a pruning record (see module doc)."""

    @functools.wraps(train)
    def wrapper(self: Any, trainer: Any = None, **kwargs: Any) -> Any:
        from yolo_ext.grad_checkpoint import checkpointing_enabled

        checkpointing_enabled()  # a bad YOLO_EXT_CHECKPOINT: ValueError now, not at the first batch
        network = getattr(self, "model", None)
        if isinstance(network, nn.Module) and getattr(network, "yolo_ext_pruning", None):
            stock = trainer or self._smart_load("trainer")
            trainer = choose_trainer(stock, network, str(getattr(self, "ckpt_path", None) or "the model"))
        _IN_TRAIN.active = True
        try:
            return train(self, trainer=trainer, **kwargs)
        finally:
            _IN_TRAIN.active = False

    wrapper.yolo_ext = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Add :func:`keep_pruned_network` to Ultralytics' default callbacks and wrap ``Model.train`` (idempotent)."""
    from ultralytics.engine.model import Model
    from ultralytics.utils.callbacks.base import default_callbacks

    callbacks = default_callbacks.setdefault(EVENT, [])
    if keep_pruned_network not in callbacks:
        callbacks.append(keep_pruned_network)
    if not getattr(Model.train, "yolo_ext", False):
        Model.train = _wrap_train(Model.train)
