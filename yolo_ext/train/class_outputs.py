"""New class sets for a trained (usually pruned) network: rebuild only the class outputs, keep everything else.

The usual workflow is to prune a network trained on a large, general data set and fine-tune it on your own classes.
Ultralytics does this for unpruned models when it loads weights into a model built for the new data: the last conv of
every class branch gets the new class count and a fresh prior (``Detect.bias_init``), rows of classes whose names
match an old class are copied over by name (``cls_remap``), and every other tensor is transferred. A pruned network
cannot be rebuilt from its YAML (that undoes the pruning), so :func:`rebuild_class_outputs` does the same on the
network itself: it replaces the class output layers named by the head's :class:`~yolo_ext.prune.heads.HeadSpec`
(``class_branches``; every level, one-to-many and one-to-one), and leaves the pruned body, the box branches and the
hidden layers of the class branches untouched.

The fine-tune trainer calls it when the data has another number of classes (:mod:`yolo_ext.train.trainers`); it prints
one line saying so, and the pruning record notes the change (:func:`yolo_ext.prune.record.note_class_change`), so a
checkpoint says which classes it was trained for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import torch
from torch import nn

from yolo_ext.prune.heads import check_supported_model, head_of
from yolo_ext.prune.record import ClassChangeEntry, is_pruned, note_class_change

__all__ = ["ClassChange", "ClassesError", "class_output_layers", "rebuild_class_outputs"]


class ClassesError(ValueError):
    """The network's class outputs cannot be rebuilt (a fused head, unexpected layers); nothing was changed."""


@dataclass(frozen=True)
class ClassChange:
    """What :func:`rebuild_class_outputs` did: old and new class counts, and the classes matched by name."""

    old_nc: int
    new_nc: int
    data: str | None
    by_name: tuple[str, ...]  # new classes whose rows came from an old class of the same name
    pruned: bool

    def line(self) -> str:
        """The one line users see: 'Classes: 80 -> 3 (data: other.yaml); rebuilt the class outputs, kept ...'."""
        data = f" (data: {self.data})" if self.data else ""
        body = "the pruned body" if self.pruned else "the rest of the network"
        named = (f"; {len(self.by_name)} of them keep their trained weights by name ({', '.join(self.by_name)})"
                 if self.by_name else "")
        return f"Classes: {self.old_nc} -> {self.new_nc}{data}; rebuilt the class outputs, kept {body}{named}"

    def entry(self) -> ClassChangeEntry:
        """What the pruning record keeps of it."""
        return ClassChangeEntry(self.old_nc, self.new_nc, self.data, self.by_name,
                                datetime.now().isoformat(timespec="seconds"))


def _resolve(head: nn.Module, path: str) -> nn.Module | None:
    obj: nn.Module | None = head
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def class_output_layers(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """Every class output of the model's head as (branch, index of its last layer), in the head table's order.

    Raises ClassesError when a class branch the head table names is missing (a head fused for inference) or does not
    end in a conv.
    """
    head = head_of(model)
    spec = check_supported_model(model, purpose="yolo_ext rebuilds the class outputs of")
    found: list[tuple[nn.Sequential, int]] = []
    for path in spec.class_branches:
        obj = _resolve(head, path)
        if obj is None:
            if path == spec.class_branches[0]:
                raise ClassesError(
                    f"The head has no {path!r} class branch (it was fused for inference). Fine-tune the checkpoint "
                    "training wrote or tools/prune.py wrote, not an exported or fused model."
                )
            continue  # optional branches: one-to-one heads, semantic branches
        for branch in obj if isinstance(obj, nn.ModuleList) else [obj]:
            if not isinstance(branch, nn.Sequential) or not isinstance(branch[-1], nn.Conv2d):
                raise ClassesError(
                    f"Class branch {path!r} of {type(head).__name__} does not end in a conv "
                    f"({type(branch).__name__}); its class outputs cannot be rebuilt."
                )
            found.append((branch, len(branch) - 1))
    return found


def _placeholder(names: Mapping[int, str]) -> bool:
    """Ultralytics' default names {0: '0', 1: '1', ...}: nothing to match by."""
    return all(str(k) == str(v) for k, v in names.items())


def _name_matches(old: Mapping[int, str], new: Mapping[int, str]) -> dict[int, int]:
    """new class index -> old class index, for names that match (case and surrounding spaces ignored)."""
    if not old or not new or _placeholder(old) or _placeholder(new):
        return {}
    lookup = {str(v).strip().lower(): k for k, v in old.items()}
    return {j: lookup[key] for j, name in new.items() if (key := str(name).strip().lower()) in lookup}


def _new_conv(old: nn.Conv2d, nc: int) -> nn.Conv2d:
    new = nn.Conv2d(old.in_channels, nc, old.kernel_size, old.stride, old.padding, old.dilation, old.groups,
                    bias=old.bias is not None, padding_mode=old.padding_mode,
                    device=old.weight.device, dtype=old.weight.dtype)
    new.requires_grad_(old.weight.requires_grad)
    return new.train(old.training)


@torch.no_grad()
def rebuild_class_outputs(
    model: nn.Module,
    names: Mapping[int, str] | Sequence[str],
    data: str | None = None,
    remap: bool = True,
) -> ClassChange | None:
    """Give ``model`` one class output per name in ``names``, keeping every other weight; None if the count matches.

    Args:
        model: a detection-family network (its head in the head table), pruned or not; changed in place.
        names: the new class names (a data YAML's ``names``).
        data: the data YAML, named in the line and the record.
        remap: copy the trained rows of classes whose names match an old class (Ultralytics' ``cls_remap``).

    Returns:
        The change (old and new counts, classes kept by name), or None when the model already has ``len(names)``
        classes (its class outputs are left as they are, as Ultralytics does).

    Examples:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> m = DetectionModel("yolo11n.yaml", nc=80, verbose=False)
        >>> rebuild_class_outputs(m, ["cat", "dog"]).new_nc, m.model[-1].cv3[0][-1].out_channels
        (2, 2)
    """
    names = dict(enumerate(names)) if not isinstance(names, Mapping) else {int(k): v for k, v in names.items()}
    if sorted(names) != list(range(len(names))) or not names:
        raise ClassesError(f"Class names must be numbered 0..n-1 with n >= 1, got {list(names)[:10]}.")
    head = head_of(model)
    layers = class_output_layers(model)
    old_nc, new_nc = head.nc, len(names)
    if old_nc == new_nc:
        return None
    wrong = [f"{type(b[i]).__name__}({b[i].out_channels})" for b, i in layers if b[i].out_channels != old_nc]
    if wrong:
        raise ClassesError(f"The head predicts {old_nc} classes but class outputs {', '.join(wrong)} do not; the "
                           "checkpoint is inconsistent and its class outputs cannot be rebuilt.")
    old_names = dict(getattr(model, "names", None) or {})
    matches = _name_matches(old_names, names) if remap else {}
    kept = {k: v.clone() for k, v in head.state_dict().items()}
    old_convs = [b[i] for b, i in layers]
    for branch, i in layers:
        branch[i] = _new_conv(branch[i], new_nc)
    head.no += new_nc - old_nc
    head.nc = new_nc
    # Ultralytics' own prior for the new class biases (it needs the strides, set when the model was built); it also
    # rewrites the box biases, which are put back below with every other tensor that was not rebuilt
    if hasattr(head, "bias_init") and float(torch.as_tensor(head.stride).max()) > 0:
        head.bias_init()
    rebuilt = {id(b[i]) for b, i in layers}
    skip = {f"{n}.{p}" for n, m in head.named_modules() if id(m) in rebuilt for p in ("weight", "bias")}
    for key, value in head.state_dict().items():
        if key not in skip:
            value.copy_(kept[key])
    for (branch, i), old in zip(layers, old_convs):
        for j, k in matches.items():
            branch[i].weight[j] = old.weight[k]
            if old.bias is not None:
                branch[i].bias[j] = old.bias[k]
    model.names = names
    model.nc = new_nc
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = new_nc
    model.__dict__.pop("criterion", None)  # a cached loss counts the old classes
    change = ClassChange(old_nc, new_nc, data, tuple(str(names[j]) for j in sorted(matches)), is_pruned(model))
    note_class_change(model, change.entry())  # the latest pruning record notes which classes it predicts since
    return change
