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

Limits: a ``YOLO`` object created before ``import yolo_ext`` has no such callback, and Ultralytics does not run the
callback in the parent process of a multi-GPU (DDP) run; pass ``trainer=PrunedDetectionTrainer`` (or the task's
pruned trainer) there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER

EVENT = "on_pretrain_routine_start"


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


def keep_pruned_network(trainer: Any) -> None:
    """Callback: train a pruned checkpoint with its task's pruned trainer (see module doc)."""
    from yolo_ext.finetune import PRUNED_TRAINERS, PrunedDetectionTrainer

    if isinstance(trainer, PrunedDetectionTrainer):
        return
    path = str(getattr(trainer.args, "model", "") or "")
    network = _pruned_network(path)
    if network is None:
        return
    params = sum(p.numel() for p in network.parameters())
    what = f"{path} holds a pruned network ({params:,} params, pruned {len(network.yolo_ext_pruning)} time(s))"
    pruned = {t.ultralytics_trainer: t for t in PRUNED_TRAINERS.values()}.get(type(trainer))
    if pruned is not None:
        trainer.__class__ = pruned  # adds no state: only get_model / save_model / final_eval differ
        LOGGER.warning(
            f"yolo_ext: {what}. Ultralytics' {pruned.ultralytics_trainer.__name__} would rebuild the unpruned network "
            f"from its YAML and undo the pruning; training it with yolo_ext.finetune.{pruned.__name__} instead, which "
            f"keeps it. Pass trainer={pruned.__name__} (or use tools/finetune.py) to choose this explicitly."
        )
    else:
        LOGGER.warning(
            f"yolo_ext: {what}, but {type(trainer).__name__} rebuilds the network from its YAML: THE PRUNING WILL BE "
            "UNDONE. Derive your trainer from the pruned trainer of its task (yolo_ext.finetune.PRUNED_TRAINERS, "
            "e.g. PrunedDetectionTrainer), or use tools/finetune.py."
        )


def install() -> None:
    """Add :func:`keep_pruned_network` to Ultralytics' default callbacks (idempotent)."""
    from ultralytics.utils.callbacks.base import default_callbacks

    callbacks = default_callbacks.setdefault(EVENT, [])
    if keep_pruned_network not in callbacks:
        callbacks.append(keep_pruned_network)
