"""Which model heads yolo_ext prunes, and what inside each head must never change: one :class:`HeadSpec` per class.

A head's *outputs* are the layers whose output channels are the model's contract with its loss and its users (box
distributions, class logits, and per task: mask coefficients and prototypes, keypoints, angles). Everything else in
the head is pruned like the body. The table is keyed by exact class (a subclass is another head with other outputs),
so supporting a new head is one entry here, and the refusal of an unsupported model lists what is supported.

While the dependency graph is traced the head runs a stand-in forward (:func:`trace_branches`): every branch on every
level, the one-to-one branches of end-to-end heads included and not detached, no box decoding, and the layers the
stock forward runs only while training (YOLO26's semantic-segmentation branch and keypoint sigmas), so that pruning
keeps their inputs consistent too.

Per task (Ultralytics 8.4): Segment adds the mask-coefficient branch ``cv4`` and a prototype net ``proto`` whose
last conv gives the prototypes (its inner convs and upsampling are pruned); Segment26's ``Proto26`` also merges the
three levels and has a semantic branch whose last conv gives class logits. Pose adds the keypoint branch ``cv4``;
Pose26 splits it into a shared trunk ``cv4`` and two output convs per level (``cv4_kpts``, ``cv4_sigma``). OBB and
OBB26 add the angle branch ``cv4``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from ultralytics.nn.modules import DFL, OBB, Detect, Pose, Segment, v10Detect
from ultralytics.nn.modules.head import OBB26, Pose26, Segment26
from ultralytics.nn.tasks import DetectionModel, OBBModel, PoseModel, SegmentationModel

from yolo_ext.prune.errors import PruningError

#: Per-level branches of every Detect: box and class, one-to-many and (end-to-end heads) one-to-one.
DETECT_BRANCHES = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
#: ... plus the task branch of Segment (mask coefficients), Pose (keypoints) and OBB (angles).
TASK_BRANCHES = DETECT_BRANCHES + ("cv4", "one2one_cv4")


@dataclass(frozen=True)
class HeadSpec:
    """How one head class prunes.

    Attributes:
        task: Ultralytics' task name ("detect", "segment", ...), used in messages and to pick trainers.
        model_class: the exact model class this head lives in (``DetectionModel`` for detect).
        branches: names of the per-level ``nn.ModuleList`` branches; the last layer of each is an output.
        forks: (trunk, outputs) names of per-level branches whose trunk feeds several output layers, one per level
            in each output list (Pose26: ``cv4`` feeds ``cv4_kpts`` and ``cv4_sigma``); every output layer is fixed.
        extra_outputs: other layers whose output channels are fixed (e.g. a mask prototype's last conv).
        extra_trace: extra stand-in outputs while tracing (e.g. the prototype branch), given the head and its inputs.
        class_branches: dotted paths of the branches whose last layer predicts one channel per class: a
            ``ModuleList`` of per-level branches (``cv3``) or one branch (``proto.semseg``). These are the layers
            rebuilt when a model is fine-tuned on data with another number of classes
            (:mod:`yolo_ext.train.class_outputs`).
    """

    task: str
    model_class: type[nn.Module]
    branches: tuple[str, ...] = DETECT_BRANCHES
    forks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    extra_outputs: Callable[[nn.Module], list[nn.Module]] = field(default=lambda head: [])
    extra_trace: Callable[[nn.Module, list[torch.Tensor]], list[torch.Tensor]] = field(default=lambda head, x: [])
    class_branches: tuple[str, ...] = ("cv3", "one2one_cv3")


def _proto_outputs(head: Segment) -> list[nn.Module]:
    """The prototypes' last conv, and Proto26's semantic logits conv (gone after ``fuse()``, which drops it)."""
    proto = head.proto
    semseg = getattr(proto, "semseg", None)
    return [proto.cv3] + ([semseg[-1]] if semseg is not None else [])


def _trace_proto(head: Segment, x: list[torch.Tensor]) -> list[torch.Tensor]:
    """The prototype net on the first level (Segment's ``Proto`` reads P3 only)."""
    return [head.proto(x[0])]


def _trace_proto26(head: Segment26, x: list[torch.Tensor]) -> list[torch.Tensor]:
    """Proto26 on all levels, with its semantic branch: Ultralytics' own forward, asked for the training outputs.

    Only the Proto26 module's flag is set (its convs' BatchNorms stay in eval mode), and only when the semantic
    branch is still there.
    """
    proto = head.proto
    if getattr(proto, "semseg", None) is None:
        return [proto(x)]
    training = proto.training
    proto.training = True
    try:
        return list(proto(x, return_semantic=True))
    finally:
        proto.training = training


#: head class -> spec. Exact classes: Segment is a Detect subclass with outputs Detect does not have.
HEADS: dict[type[nn.Module], HeadSpec] = {
    Detect: HeadSpec("detect", DetectionModel),
    # YOLOv10: one-to-many and one-to-one branches (both traced, all six outputs fixed); its class branches start
    # with depth-wise 3x3 convs, which lose the input channels the neck loses
    v10Detect: HeadSpec("detect", DetectionModel),
    Segment: HeadSpec("segment", SegmentationModel, TASK_BRANCHES, extra_outputs=_proto_outputs,
                      extra_trace=_trace_proto),
    Segment26: HeadSpec("segment", SegmentationModel, TASK_BRANCHES, extra_outputs=_proto_outputs,
                        extra_trace=_trace_proto26, class_branches=("cv3", "one2one_cv3", "proto.semseg")),
    Pose: HeadSpec("pose", PoseModel, TASK_BRANCHES),
    Pose26: HeadSpec("pose", PoseModel, DETECT_BRANCHES, forks=(
        ("cv4", ("cv4_kpts", "cv4_sigma")), ("one2one_cv4", ("one2one_cv4_kpts", "one2one_cv4_sigma")))),
    OBB: HeadSpec("obb", OBBModel, TASK_BRANCHES),
    OBB26: HeadSpec("obb", OBBModel, TASK_BRANCHES),
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
    layers += [conv for _, outs in spec.forks for name in outs for conv in (getattr(head, name, None) or [])]
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
    for trunk_name, out_names in spec.forks:
        trunk = getattr(self, trunk_name, None)
        if trunk is None:
            continue
        feats = [trunk[i](x[i]) for i in range(self.nl)]
        outs += [out[i](feats[i]) for name in out_names if getattr(self, name, None) is not None
                 for out in [getattr(self, name)] for i in range(self.nl)]
    return outs + list(spec.extra_trace(self, x))
