"""Distillation for a pruned student from the network it was pruned from: kept-channel features and head outputs.

A pruned student is a sub-network of its teacher: every channel it has is one of the teacher's (the pruning record
says which, :mod:`yolo_ext.prune.tracking`). So its Detect input features are compared with the teacher's *kept*
channels directly; Ultralytics' ``distill_model`` instead learns a randomly initialised projector per level, which
starts the student far from a teacher it actually matches. Head distillation adds the teacher's class scores
(Bernoulli KL per class) and DFL box distributions (KL over the ``reg_max`` bins of each side). Every term is
weighted per anchor by the teacher's confidence (its highest class probability), so the student is pulled where the
teacher sees objects rather than towards its background noise. All three terms are exactly zero for a student equal
to its teacher (pruned at ratio 0).

Use it through the fine-tune trainer: ``tools/finetune.py --teacher best.pt`` (or ``--teacher auto``) or
``finetune(..., teacher="best.pt")``. It is opt-in; why, with the measurements: :mod:`yolo_ext.train.recipe` and
``benchmarks/RESULTS.md``.

:class:`PrunedDistillationModel` and :class:`DistillWeights` are pickled into a distillation run's ``last.pt`` (the
EMA), so their import path is part of that file's format; :mod:`yolo_ext.integration` puts them on torch's safe
globals so such a file also loads under ``ULTRALYTICS_SAFE_LOAD=1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel, load_checkpoint
from ultralytics.utils.torch_utils import copy_attr

from yolo_ext.prune.record import read_history
from yolo_ext.prune.tracking import compose_feature_channels, detect_widths


class DistillError(ValueError):
    """The teacher cannot teach this student (not the network it was pruned from, other classes)."""


@dataclass(frozen=True)
class DistillWeights:
    """Loss weights of the three distillation terms, added to Ultralytics' detection loss (per image, as it is).

    The default is head-only, (0, 1, 1): the best of the weight grid in ``benchmarks/accuracy.py`` (feature-only was
    level with no teacher, x4 below it; numbers in ``benchmarks/RESULTS.md``). The feature term stays available
    (``DistillWeights(feature=1.0)``).
    """

    feature: float = 0.0
    cls: float = 1.0
    box: float = 1.0


def kept_channels(student: DetectionModel, teacher: DetectionModel) -> list[list[int]]:
    """For each Detect level, the teacher channels that the student's channels are (from the pruning record)."""
    s_nc, t_nc = student.model[-1].nc, teacher.model[-1].nc
    if s_nc != t_nc:
        raise DistillError(
            f"The teacher predicts {t_nc} classes and the student {s_nc} (the data's): distillation compares their "
            "class scores class by class, which needs the same classes. Fine-tune without a teacher, or pass one "
            "trained on these classes."
        )
    s_names, t_names = class_names(student), class_names(teacher)
    if s_names and t_names and s_names != t_names:
        raise DistillError(
            f"The teacher predicts the classes {t_names} and the student {s_names} (the data's): distillation "
            "compares class scores class by class, which needs the same classes. Fine-tune without a teacher, or "
            "pass one trained on these classes."
        )
    maps = compose_feature_channels(read_history(student), detect_widths(student), detect_widths(teacher))
    if maps is None:
        raise DistillError(
            f"The teacher's Detect inputs have {detect_widths(teacher)} channels, and no network in the student's "
            "pruning record has those: pass the checkpoint the student was pruned from as the teacher."
        )
    return maps


def class_names(model: nn.Module) -> list[str] | None:
    """The model's class names in index order, compared case-blind; None for Ultralytics' placeholders (0, 1, ...)."""
    names = getattr(model, "names", None)
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names or all(str(k) == str(v) for k, v in names.items()):
        return None
    return [str(names[k]).strip().lower() for k in sorted(names)]


def _branches(preds: dict) -> list[dict]:
    """Training-format head outputs as a list of branches (YOLO26 / v10 heads have one-to-many and one-to-one)."""
    return [preds["one2many"], preds["one2one"]] if "one2many" in preds else [preds]


def _weighted_mean(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (value * weight).sum() / weight.sum().clamp_min(1e-9)


def distill_losses(
    student: dict, teacher: dict, channels: list[torch.Tensor], reg_max: int
) -> dict[str, torch.Tensor]:
    """Feature, class and box distillation terms from training-format head outputs of student and teacher.

    Args:
        student: the student's Detect output in training format (``boxes``, ``scores``, ``feats``; or per branch).
        teacher: the teacher's, same format (evaluated without gradients).
        channels: per level, the teacher channel index of each student channel (a LongTensor).
        reg_max: DFL bins per box side.

    Returns:
        ``{"feature", "cls", "box"}``: each a scalar, exactly zero when student and teacher outputs agree.
    """
    s_branches, t_branches = _branches(student), _branches(teacher)
    t_main = t_branches[0]
    confidence = t_main["scores"].detach().float().sigmoid().amax(1)  # (N, anchors)
    sizes = [f.shape[-2] * f.shape[-1] for f in t_main["feats"]]
    per_level = confidence.split(sizes, dim=1)
    feature = sum(
        _weighted_mean((s.float() - t.float().index_select(1, idx)).pow(2).mean(1).flatten(1), w)
        for s, t, idx, w in zip(s_branches[0]["feats"], t_main["feats"], channels, per_level)
    ) / len(sizes)
    cls = box = confidence.new_zeros(())
    for s, t in zip(s_branches, t_branches):
        zs, zt = s["scores"].float(), t["scores"].float()
        kl_cls = F.logsigmoid(zt).exp() * (F.logsigmoid(zt) - F.logsigmoid(zs)) + F.logsigmoid(-zt).exp() * (
            F.logsigmoid(-zt) - F.logsigmoid(-zs)
        )
        cls = cls + _weighted_mean(kl_cls.sum(1), confidence)
        n = zs.shape[0]
        ls = s["boxes"].float().view(n, 4, reg_max, -1).log_softmax(2)
        lt = t["boxes"].float().view(n, 4, reg_max, -1).log_softmax(2)
        kl_box = (lt.exp() * (lt - ls)).sum(2).mean(1)
        box = box + _weighted_mean(kl_box, confidence)
    return {"feature": feature, "cls": cls / len(s_branches), "box": box / len(s_branches)}


class PrunedDistillationModel(DistillationModel):
    """Ultralytics' ``DistillationModel`` contract (the trainer freezes ``teacher_model``, the EMA and saved
    checkpoints drop it, ``fuse`` returns the student) with kept-channel feature and head distillation instead of a
    projector. Built by :class:`yolo_ext.train.trainers.PrunedDetectionTrainer` when a teacher is given.
    """

    def __init__(
        self,
        teacher_model: str | Path | DetectionModel,
        student_model: DetectionModel,
        weights: DistillWeights = DistillWeights(),
    ) -> None:
        nn.Module.__init__(self)  # not DistillationModel.__init__: it builds projectors and hooks we do not use
        if isinstance(teacher_model, (str, Path)):
            teacher_model = load_checkpoint(teacher_model)[0]
        maps = kept_channels(student_model, teacher_model)
        device = next(student_model.parameters()).device
        self.teacher_model = teacher_model.float().to(device)
        self._freeze_teacher()
        self.student_model = student_model
        self.projector = nn.ModuleList()  # kept so Ultralytics' resume / NaN-recovery code finds one (empty)
        self.feats_idx, self.teacher_feats_idx = [], []  # no hooks: the Detect output carries its input features
        self._teacher_feats, self._student_feats, self._teacher_hooks, self._student_hooks = {}, {}, [], []
        for i, m in enumerate(maps):
            self.register_buffer(f"kept{i}", torch.tensor(m, dtype=torch.long, device=device), persistent=False)
        self.levels = len(maps)
        copy_attr(self, student_model)
        self.weights = weights
        self.dis = 1.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        nn.Module.__setstate__(self, state)  # no hooks to re-register

    def _register_feature_hooks(self) -> None:
        """No hooks: features come with the Detect output."""

    def loss(self, batch: dict, preds: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detection loss of the student with the weighted distillation loss appended (as ``dis_loss``)."""
        if not self.training or self.teacher_model is None:  # validation while training: the student's own loss
            return super().loss(batch, preds)
        with torch.no_grad():
            taught = self.teacher_model(batch["img"])
        taught = taught[1] if isinstance(taught, tuple) else taught
        preds = self.student_model(batch["img"])
        regular, items = self.student_model.loss(batch, preds)
        channels = [getattr(self, f"kept{i}") for i in range(self.levels)]
        terms = distill_losses(preds, taught, channels, self.student_model.model[-1].reg_max)
        w = self.weights
        dis = w.feature * terms["feature"] + w.cls * terms["cls"] + w.box * terms["box"]
        items["dis_loss"] = dis.detach().view(1)
        return torch.cat([regular, (dis * batch["img"].shape[0]).view(1)]), items

    def extra_repr(self) -> str:
        return f"weights={asdict(self.weights)}"
