"""Which model heads yolo_ext prunes, and what inside each head must never change: one :class:`HeadSpec` per class.

A head's *outputs* are the layers whose output channels are the model's contract with its loss and its users (box
distributions, class logits, and per task: mask coefficients and prototypes, keypoints, angles). Everything else in
the head is pruned like the body. The table is keyed by exact class (a subclass is another head with other outputs),
so supporting a new head is one entry here, and the refusal of an unsupported model lists what is supported.

While the dependency graph is traced the head runs a stand-in forward (:func:`trace_branches`): every branch on every
level, the one-to-one branches of end-to-end heads included and not detached, and no box decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from ultralytics.nn.modules import DFL, Detect, v10Detect
from ultralytics.nn.tasks import DetectionModel

from yolo_ext.prune.errors import PruningError


@dataclass(frozen=True)
class HeadSpec:
    """How one head class prunes.

    Attributes:
        task: Ultralytics' task name ("detect", "segment", ...), used in messages and to pick trainers.
        model_class: the exact model class this head lives in (``DetectionModel`` for detect).
        branches: names of the per-level ``nn.ModuleList`` branches; the last layer of each is an output.
        extra_outputs: other layers whose output channels are fixed (e.g. a mask prototype's last conv).
        extra_trace: extra stand-in outputs while tracing (e.g. the prototype branch), given the head and its inputs.
    """

    task: str
    model_class: type[nn.Module]
    branches: tuple[str, ...] = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
    extra_outputs: Callable[[nn.Module], list[nn.Module]] = field(default=lambda head: [])
    extra_trace: Callable[[nn.Module, list[torch.Tensor]], list[torch.Tensor]] = field(default=lambda head, x: [])


#: head class -> spec. Exact classes: Segment is a Detect subclass with outputs Detect does not have.
HEADS: dict[type[nn.Module], HeadSpec] = {
    Detect: HeadSpec("detect", DetectionModel),
    # YOLOv10: one-to-many and one-to-one branches (both traced, all six outputs fixed); its class branches start
    # with depth-wise 3x3 convs, which lose the input channels the neck loses
    v10Detect: HeadSpec("detect", DetectionModel),
}


#: Ultralytics model class name -> task, for messages about models we do not prune (they carry no ``task``)
TASK_OF_MODEL = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
                 "ClassificationModel": "classify", "RTDETRDetectionModel": "RT-DETR", "WorldModel": "YOLO-World",
                 "YOLOEModel": "YOLOE", "YOLOESegModel": "YOLOE segment"}


def head_of(model: nn.Module) -> nn.Module | None:
    """The model's last layer (where Ultralytics puts the head), or None."""
    layers = getattr(model, "model", None)
    return layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None


def head_spec(model: nn.Module) -> HeadSpec | None:
    """The spec of the model's head if yolo_ext prunes this model (head and model class both supported)."""
    head = head_of(model)
    spec = HEADS.get(type(head)) if head is not None else None
    return spec if spec is not None and type(model) is spec.model_class else None


def supported() -> str:
    """What is supported, for messages: 'detect (Detect), ...'."""
    by_task: dict[str, list[str]] = {}
    for cls, spec in HEADS.items():
        by_task.setdefault(spec.task, []).append(cls.__name__)
    return ", ".join(f"{task} ({', '.join(names)})" for task, names in by_task.items())


def check_supported_model(model: nn.Module, purpose: str = "yolo_ext prunes", source: str | None = None) -> HeadSpec:
    """Refuse any model whose head is not in :data:`HEADS` (with its model class); return the head's spec.

    Args:
        model: the network.
        purpose: starts the message's second half, "<purpose> these models only".
        source: the checkpoint it came from, named in the message.
    """
    spec = head_spec(model)
    if spec is not None:
        return spec
    head = head_of(model)
    task = getattr(model, "task", None) or TASK_OF_MODEL.get(type(model).__name__, type(model).__name__)
    where = f"{source!r} holds" if source else "This is"
    head_name = type(head).__name__ if head is not None else "none"
    raise PruningError(
        f"{where} a {task} model ({type(model).__name__}, head {head_name}); {purpose} these models only: "
        f"{supported()}."
    )


def head_outputs(head: nn.Module) -> list[nn.Module]:
    """Layers of ``head`` whose output channels never change (the last layer of every branch, plus extras)."""
    spec = HEADS.get(type(head))
    if spec is None:
        return []
    layers = [branch[-1] for name in spec.branches for branch in (getattr(head, name, None) or [])]
    return layers + list(spec.extra_outputs(head))


def output_layers(model: nn.Module) -> list[nn.Module]:
    """Every head output layer of ``model`` and every DFL (its fixed conv is the box decoding)."""
    layers: list[nn.Module] = []
    for m in model.modules():
        if type(m) in HEADS:
            layers += head_outputs(m)
        elif isinstance(m, DFL):
            layers.append(m)
    return layers


def trace_branches(self: nn.Module, x: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stand-in head forward while the graph is traced: every branch on every level, plus the spec's extras."""
    spec = HEADS[type(self)]
    outs = [branch[i](x[i]) for name in spec.branches if getattr(self, name, None) is not None
            for branch in [getattr(self, name)] for i in range(self.nl)]
    return outs + list(spec.extra_trace(self, x))
