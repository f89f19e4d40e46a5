"""The check run after every pruning: stored attributes agree with weights, forward works at two sizes, finite outputs.

Per-layer checks come from the spec table (:mod:`yolo_ext.registry.modules`); the forward runs in eval mode at
:data:`CHECK_SIZES` and in training mode (on a copy) at the first of them, and must give the output shapes recorded
before pruning: every head output of every task, training-only ones included. It does not fuse, save or export the model
(the tests do that for every family); a model that fails is never written to disk.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules import C2PSA, PSA, C2f
from ultralytics.nn.modules.block import Attention

from yolo_ext.nn import ContextAggregation
from yolo_ext.prune.errors import PrunedModelError
from yolo_ext.registry.spec import checks_for


def check_conv(m: nn.Conv2d) -> str | None:
    """Stored channel counts and groups agree with the weight and bias."""
    o, i_g = m.weight.shape[:2]
    if (m.out_channels, m.in_channels) != (o, i_g * m.groups) or m.in_channels % m.groups or m.out_channels % m.groups:
        return f"out/in/groups {m.out_channels}/{m.in_channels}/{m.groups} vs weight {tuple(m.weight.shape)}"
    if m.bias is not None and m.bias.numel() != o:
        return f"bias has {m.bias.numel()} values for {o} channels"
    return None


def check_bn(m: nn.BatchNorm2d) -> str | None:
    """num_features agrees with every per-channel tensor."""
    sizes = {m.num_features, m.weight.numel(), m.bias.numel(), m.running_mean.numel(), m.running_var.numel()}
    return None if len(sizes) == 1 else f"num_features {m.num_features} vs parameter sizes {sorted(sizes)}"


def check_split_block(m: C2f | C2PSA | PSA) -> str | None:
    """``self.c`` is half of cv1's output: export's ``forward_split`` splits by it."""
    out = m.cv1.conv.out_channels
    return None if out == 2 * m.c else f"cv1 has {out} output channels but self.c = {m.c} (forward_split needs 2c)"


def check_attention(m: Attention) -> str | None:
    """Heads x head_dim match the projection, and qkv holds queries, keys and values for every head."""
    nh, hd, kd = m.num_heads, m.head_dim, m.key_dim
    qkv, dim = m.qkv.conv.out_channels, m.proj.conv.in_channels
    if nh * hd != dim or qkv != nh * (2 * kd + hd) or m.pe.conv.out_channels != dim:
        return f"heads {nh} x head_dim {hd} != proj in {dim}, or qkv {qkv} != heads x (2 x key_dim {kd} + head_dim)"
    return None


def check_context_aggregation(m: ContextAggregation) -> str | None:
    """Gate and key convs keep their single output channel."""
    gates = (m.a.out_channels, m.k.out_channels)
    return None if gates == (1, 1) else f"gate/key convs must keep one output channel, have {gates}"


def prediction_tensors(out: object) -> list[torch.Tensor]:
    """Every prediction tensor in a (nested) model output, in a fixed order; ``feats`` (the pruned neck) left out."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) if k != "feats" for t in prediction_tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in prediction_tensors(o)]
    return []


def _flat_shapes(out: object) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in prediction_tensors(out)]


# Two small non-square inputs in both orientations: channel consistency does not depend on the input size, and the
# full-size forward that counts MACs after pruning exercises the user's size as well.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((64, 96), (96, 64))

#: (mode, input size) pairs the validator runs. Training mode too, on a copy: some head layers run only there
#: (YOLO26's keypoint sigmas and semantic-segmentation logits, every one-to-one branch's raw output), and a pruning
#: that broke them would otherwise pass and fail at the first fine-tuning step.
CHECK_RUNS: tuple[tuple[str, tuple[int, int]], ...] = (*(("eval", s) for s in CHECK_SIZES), ("train", CHECK_SIZES[0]))


def _forward(model: nn.Module, mode: str, size: tuple[int, int]) -> object:
    """The model's output in ``mode``; a training-mode forward runs on a copy (it would update BN statistics)."""
    if mode == "train":
        return copy.deepcopy(model).train()(torch.rand(1, 3, *size))
    return model.eval()(torch.rand(1, 3, *size))


@torch.no_grad()
def output_shapes(model: nn.Module) -> dict[tuple[str, tuple[int, int]], list[tuple[int, ...]]]:
    """Shapes of every prediction tensor, per (mode, input size) of :data:`CHECK_RUNS` (recorded before pruning)."""
    shapes = {run: _flat_shapes(_forward(model, *run)) for run in CHECK_RUNS}
    model.eval()
    return shapes


@torch.no_grad()
def check_model(model: nn.Module, expected: dict[tuple[str, tuple[int, int]], list[tuple[int, ...]]]) -> None:
    """Raise :class:`PrunedModelError` naming the first inconsistent layer or output."""
    for name, m in model.named_modules():
        for check in checks_for(type(m)):  # the spec table's checks for the class and its bases
            if problem := check(m):
                raise PrunedModelError(f"Pruned layer {name} ({type(m).__name__}) is inconsistent: {problem}.")
    for (mode, size), shapes in expected.items():
        where = f"input {size}" + (" in training mode" if mode == "train" else "")
        try:
            out = _forward(model, mode, size)
        except Exception as e:
            raise PrunedModelError(f"Pruned model fails forward at {where}: {type(e).__name__}: {e}") from e
        got = _flat_shapes(out)
        if got != shapes:
            raise PrunedModelError(f"Pruned model output shapes at {where} changed: {got} != {shapes}.")
        if not all(torch.isfinite(t).all() for t in prediction_tensors(out)):
            raise PrunedModelError(f"Pruned model gives non-finite outputs at {where}.")
    model.eval()


def count_after(model: nn.Module, example: torch.Tensor) -> tuple[float, float]:
    """MACs and params of the pruned model at the user's input size; a failure there is a validation failure."""
    try:
        return tp.utils.count_ops_and_params(model, example)
    except Exception as e:
        raise PrunedModelError(f"Pruned model fails forward at input {tuple(example.shape[2:])}: {e}") from e
