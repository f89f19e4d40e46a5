"""Keep a pruned network when it is trained through plain Ultralytics: ``YOLO("pruned.pt").train(...)`` and
``yolo-ext train model=pruned.pt ...``.

Ultralytics' ``DetectionTrainer.get_model`` rebuilds the network from its YAML and copies only the tensors whose shapes
still match, which silently undoes a pruning (the unpruned parameter count is back, Ultralytics logs "Transferred
N/M items", the pruning record is gone). Two hooks, both installed (and removed) by :mod:`yolo_ext.integration`,
pick the trainer of
:data:`yolo_ext.train.trainers.PRUNED_TRAINERS` for a network that carries a pruning record: the stock trainer of its
task (``DetectionTrainer``, ``SegmentationTrainer``, ``PoseTrainer``, ``OBBTrainer``) becomes its pruned subclass,
which only changes how the network is obtained and saved, and a warning says so. Other trainer classes are not
changed: they get the warning and the advice to derive from the pruned trainer of their task.

- :func:`wrap_train` wraps ``Model.train``, which every training goes through (Python, ``yolo-ext train``, resume, DDP
  parents): the network is already in memory (``YOLO.model``), so its record is read there and nothing is loaded.
- :func:`keep_pruned_network`, an ``on_pretrain_routine_start`` default callback (run in the trainer's constructor),
  covers trainers built without ``Model.train`` (``DetectionTrainer(overrides={"model": "pruned.pt"})``). It never
  unpickles the file, which Ultralytics loads itself moments later (honouring ``ULTRALYTICS_SAFE_LOAD``): whether the
  checkpoint carries a record is read from the names in its pickle stream
  (:func:`yolo_ext.io.checkpoints.has_pruning_record`).

The DDP launcher pickles the chosen trainer class and the pruned network for its workers; unpickling the class imports
yolo_ext in each worker, which installs the integration before the worker builds its trainer. The ``Model.train``
wrapper also refuses a bad ``YOLO_EXT_CHECKPOINT`` before any run folder is made (it is read at the first batch
otherwise).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from torch import nn
from ultralytics.utils import LOGGER

from yolo_ext.io.checkpoints import has_pruning_record
from yolo_ext.prune.record import is_pruned, times_pruned

__all__ = ["EVENT", "choose_trainer", "keep_pruned_network", "wrap_train"]

EVENT = "on_pretrain_routine_start"
_IN_TRAIN = threading.local()  # set while the Model.train wrapper runs: it has chosen the trainer and said so


def choose_trainer(trainer: type, where: str, what: str = "a pruned network") -> type:
    """The trainer class that trains a pruned network (``what``, held by ``where``) without undoing its pruning.

    Ultralytics' stock trainer of its task becomes the matching pruned trainer (a subclass that only changes how the
    network is obtained and saved), with a warning; a pruned trainer stays; any other class stays, with a warning
    that it will undo the pruning.
    """
    from yolo_ext.train.trainers import PRUNED_TRAINERS, PrunedDetectionTrainer

    if isinstance(trainer, type) and issubclass(trainer, PrunedDetectionTrainer):
        return trainer
    pruned = {t.ultralytics_trainer: t for t in PRUNED_TRAINERS.values()}.get(trainer)
    if pruned is not None:
        LOGGER.warning(
            f"yolo_ext: {where} holds {what}. Ultralytics' {pruned.ultralytics_trainer.__name__} would rebuild the "
            f"unpruned network from its YAML and undo the pruning; training it with yolo_ext.train.{pruned.__name__} "
            f"instead, which keeps it. Pass trainer={pruned.__name__} (or use tools/finetune.py) to choose this "
            "explicitly."
        )
        return pruned
    LOGGER.warning(
        f"yolo_ext: {where} holds {what}, but {getattr(trainer, '__name__', trainer)} rebuilds the network from its "
        "YAML: THE PRUNING WILL BE UNDONE. Derive your trainer from the pruned trainer of its task "
        "(yolo_ext.train.PRUNED_TRAINERS, e.g. PrunedDetectionTrainer), or use tools/finetune.py."
    )
    return trainer


def keep_pruned_network(trainer: Any) -> None:
    """Callback: train a pruned checkpoint with its task's pruned trainer (see module doc). Nothing to do when the
    ``Model.train`` wrapper chose the trainer already, or for a trainer that is a pruned one."""
    from yolo_ext.train.trainers import PrunedDetectionTrainer

    if isinstance(trainer, PrunedDetectionTrainer) or getattr(_IN_TRAIN, "active", False):
        return
    path = str(getattr(trainer.args, "model", "") or "")
    if not path.endswith(".pt") or not has_pruning_record(path):
        return
    chosen = choose_trainer(type(trainer), path)
    if chosen is not type(trainer):
        trainer.__class__ = chosen  # adds no state: only get_model / save_model / final_eval differ


def wrap_train(train: Any) -> Any:
    """``Model.train`` that picks the pruned trainer for a network with a pruning record (see module doc)."""

    @functools.wraps(train)
    def wrapper(self: Any, trainer: Any = None, **kwargs: Any) -> Any:
        from yolo_ext.train.grad_checkpoint import checkpointing_enabled

        checkpointing_enabled()  # a bad YOLO_EXT_CHECKPOINT: ValueError now, not at the first batch
        network = getattr(self, "model", None)
        if isinstance(network, nn.Module) and is_pruned(network):
            stock = trainer or self._smart_load("trainer")
            params = sum(p.numel() for p in network.parameters())
            what = f"a pruned network ({params:,} params, pruned {times_pruned(network)} time(s))"
            trainer = choose_trainer(stock, str(getattr(self, "ckpt_path", None) or "the model"), what)
        _IN_TRAIN.active = True
        try:
            return train(self, trainer=trainer, **kwargs)
        finally:
            _IN_TRAIN.active = False

    wrapper.yolo_ext = True  # type: ignore[attr-defined]
    return wrapper
