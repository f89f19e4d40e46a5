"""Structured channel pruning of Ultralytics YOLO models (the heads of :mod:`.heads`) on Torch-Pruning's graph.

What Torch-Pruning lacks for YOLO is added around it, never inside it: C2f-family ``cv1`` splits (:mod:`.split`),
channel-preserving attention leaves and a Detect stand-in (:mod:`.leaves`), protected head outputs, and a validator
that runs after every pruning (:mod:`.validate`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from yolo_ext.checks import MAX_IMGSZ
from yolo_ext.latency import Deployment, LatencyError
from yolo_ext.latency.costs import MacsCost, ParamsCost, conv_shapes
from yolo_ext.prune.allocate import allocate, apply_allocation, prunable_groups
from yolo_ext.prune.budget import Budget, prune_to_latency, resolve_multiple
from yolo_ext.prune.errors import PruningError
from yolo_ext.prune.heads import check_supported_model, output_layers
from yolo_ext.prune.importance import GLOBAL_BY_DEFAULT, NEEDS_GRADIENTS, make_importance
from yolo_ext.prune.leaves import leaf_pruners, trace_stand_ins
from yolo_ext.prune.record import FeatureChannels, LatencyEntry, PruningRecord
from yolo_ext.prune.split import split_blocks
from yolo_ext.prune.tracking import FeatureTaps, LayerCap, check_layer_cap
from yolo_ext.prune.validate import CHECK_SIZES, check_model, count_after, output_shapes

#: how channels are spread over the groups (see PruneConfig.allocation)
ALLOCATIONS = ("ratio", "cost")
#: how a layer's kept width is snapped to ``round_to``: down (Torch-Pruning's way) or to the nearest multiple
ROUND_MODES = ("down", "nearest")
#: how far a params/MACs target may land when widths move in whole blocks of the channel multiple
BLOCK_TOLERANCE = 0.05


class NearestMultiplePruner(tp.pruner.BasePruner):
    """Torch-Pruning's pruner with each layer's kept width rounded to the nearest multiple of ``round_to`` (at least
    one multiple) instead of down. Rounding down makes a ratio search jump: at x16 any ratio above 0 takes a 32-channel
    layer to 16, so on a network of narrow layers the latencies between 0 and about -30% cannot be reached. (Rounding
    down dates from VainF/Torch-Pruning#38/#49, where the point was fast widths, not reachable budgets; its docstring
    says "nearest".)"""

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        kept = max(round_to, math.floor((current_channels - n_pruned) / round_to + 0.5) * round_to)
        return max(current_channels - kept, 0)


@dataclass
class PruneConfig:
    """What to prune and how. ``ratio`` is the fraction of channels removed from each prunable group.

    Args:
        ratio: channels removed per group (uniform) or over all groups (``global_pruning``), in [0, 1).
        criterion: importance name from :data:`yolo_ext.prune.importance.CRITERIA`.
        global_pruning: rank channels across layers instead of the same ratio in each; None (the default) lets the
            criterion decide: scale-free criteria (``lamp``, ``bn``) rank globally, magnitudes per layer.
        max_layer_ratio: no layer loses more than this fraction (keeps global pruning from emptying a layer).
        round_to: keep channel counts multiples of this (hardware-friendly widths), or None.
        iterative_steps: reach ``ratio`` in this many equal steps (importance re-estimated after each).
        imgsz: (h, w) or one int; the input size MACs and latency are counted at (the graph is traced on a small
            input); None: 640 (``prune_checkpoint``: the size the checkpoint was trained at).
        protect: module names (``model.22``, ``model.9.m.0``) whose channels must not change.
        target_params / target_macs: instead of ``ratio``, the fraction of parameters / MACs to remove; the ratio
            is searched on copies of the model until the reduction is within ``target_tolerance`` (or, with
            ``allocation="cost"``, channels are removed where they cost most per importance until it is reached).
        target_latency: instead of ``ratio``, the fraction of the measured latency on ``backend`` to remove (0.5
            halves it): allocated with a per-layer latency table measured on the backend (cached), then the whole
            pruned network is measured and the allocation corrected until it lands within ``latency_tolerance``.
        allocation: ``"ratio"``: Torch-Pruning's ranking at ``ratio`` (per group, or global); ``"cost"``: keep the
            most importance per unit of cost removed (HALP-style greedy; cost is ms, MACs or params from the target).
        backend: runtime the latency is measured on (:data:`yolo_ext.latency.BACKENDS`; None: ``ort-cpu`` when
            installed, else ``torch-cpu``); ``batch`` / ``threads``: the deployment it is measured at.
        round_to: an int, or ``"auto"``: the channel multiple the backend runs fast, measured
            (:mod:`yolo_ext.latency.multiples`, cached).
        round_mode: ``"down"``: each layer keeps its width rounded down to the multiple, as Torch-Pruning does (so
            any ratio above 0 halves a 32-channel layer at x16); ``"nearest"``: to the nearest multiple, at least
            one (a small ratio then leaves narrow layers whole). A latency search that cannot land with ``down``
            tries ``nearest``.
    """

    ratio: float = 0.4
    criterion: str = "l1"
    global_pruning: bool | None = None
    max_layer_ratio: float = 0.8
    round_to: int | None = None
    iterative_steps: int = 1
    imgsz: int | tuple[int, int] | None = 640
    protect: list[str] = field(default_factory=list)
    target_params: float | None = None
    target_macs: float | None = None
    target_tolerance: float = 0.01
    target_latency: float | None = None
    latency_tolerance: float = 0.05
    allocation: str = "ratio"
    backend: str | None = None
    batch: int = 1
    threads: int = 1
    round_mode: str = "down"

    def check(self) -> None:
        """Reject impossible options before any work is done."""
        targets = [n for n in ("target_params", "target_macs", "target_latency") if getattr(self, n) is not None]
        if len(targets) > 1:
            raise PruningError(f"Give one target, not {' and '.join(targets)}: each sets how much to remove.")
        for name in ("target_params", "target_macs", "target_latency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < 0.95):
                raise PruningError(f"{name} must be in (0, 0.95), got {value!r}: 0.5 removes half of them.")
        if self.allocation not in ALLOCATIONS:
            raise PruningError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}.")
        if self.allocation == "cost" and not targets:
            raise PruningError("allocation='cost' needs a target (target_latency, target_macs or target_params): "
                               "it removes channels until that much is gone.")
        if self.round_mode not in ROUND_MODES:
            raise PruningError(f"round_mode must be one of {', '.join(ROUND_MODES)}, got {self.round_mode!r}.")
        if not 0 < self.latency_tolerance < 0.5:
            raise PruningError(f"latency_tolerance must be in (0, 0.5), got {self.latency_tolerance!r}.")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio < 1:
            raise PruningError(f"Pruning ratio must be in [0, 1), got {self.ratio!r}: 0.4 removes 40% of the channels.")
        if not 0 < self.max_layer_ratio <= 1:
            raise PruningError(f"max_layer_ratio must be in (0, 1], got {self.max_layer_ratio!r}.")
        if self.round_to is not None and self.round_to != "auto" and (
                isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1):
            raise PruningError(f"round_to must be a positive integer such as 16, or 'auto', got {self.round_to!r}.")
        if not isinstance(self.iterative_steps, int) or self.iterative_steps < 1:
            raise PruningError(f"iterative_steps must be an integer >= 1, got {self.iterative_steps!r}.")
        size = self.size
        if len(size) != 2 or any(not isinstance(s, int) or not 32 <= s <= MAX_IMGSZ or s % 32 for s in size):
            raise PruningError(f"imgsz must be a multiple of 32 (the largest stride) from 32 to {MAX_IMGSZ}, e.g. 640 "
                               f"or 320, got {self.imgsz!r}.")
        make_importance(self.criterion)
        try:
            self.deployment.check()
        except LatencyError as e:
            raise PruningError(str(e)) from None

    @property
    def deployment(self) -> Deployment:
        """Where latency is measured: the pruning's input size, ``batch`` and ``threads``."""
        return Deployment(tuple(self.size), self.batch, self.threads)

    @property
    def multiple(self) -> int:
        """The channel multiple widths snap to: ``round_to`` once resolved to an int, else 1 (any width)."""
        return self.round_to if isinstance(self.round_to, int) and self.round_to > 1 else 1

    @property
    def is_global(self) -> bool:
        """Whether channels are ranked across layers (``global_pruning``, or the criterion's own default)."""
        if self.global_pruning is None:
            return self.criterion in GLOBAL_BY_DEFAULT
        return bool(self.global_pruning)

    @property
    def size(self) -> tuple[int, int]:
        """``imgsz`` as (h, w)."""
        return image_size(640 if self.imgsz is None else self.imgsz)


def image_size(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, ...]:
    """``640`` -> ``(640, 640)``; an (h, w) pair as a tuple. The one place an image size is normalised."""
    return (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)


@dataclass
class PruneResult:
    """The pruned model and what was done to it (``record()`` is what checkpoints and reports store)."""

    model: DetectionModel
    config: PruneConfig
    params_before: int
    params_after: int
    macs_before: float
    macs_after: float
    channels_before: dict[str, int]
    channels_after: dict[str, int]
    seconds: float
    # which input channels of each Detect level survived (indices into the network before this pruning): what
    # distillation needs to compare the student's features with the teacher's kept channels
    feature_channels: FeatureChannels = field(default_factory=FeatureChannels)
    latency: dict | None = None  # what a latency target measured (backend, ms before/after, iterations)

    def record(self) -> PruningRecord:
        """What checkpoints keep (:mod:`.record`): method, ratio, per-layer output channels before/after, params and
        MACs, kept Detect inputs, and what a latency target measured."""
        return PruningRecord(
            config={**asdict(self.config), "global_pruning": self.config.is_global},
            params=(self.params_before, self.params_after),
            macs=(self.macs_before, self.macs_after),
            channels={k: (v, self.channels_after.get(k, 0)) for k, v in self.channels_before.items()},
            seconds=round(self.seconds, 3),
            feature_channels=self.feature_channels,
            latency=LatencyEntry.from_dict(self.latency) if self.latency else None,
        )


def conv_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv, by module name: what the report plots and the checkpoint records."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def protected_layers(model: DetectionModel, names: Iterable[str] = ()) -> list[nn.Module]:
    """Layers whose output channels never change: every head output (:mod:`.heads`), DFL, and ``names``."""
    layers = output_layers(model)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise PruningError(f"Cannot protect {name!r}: no such module. Names look like 'model.9' or 'model.22.m.0'.")
        layers.append(modules[name])
    return layers


def _check_something_prunable(model: DetectionModel, config: PruneConfig) -> None:
    """Refuse a request to remove channels when the protected layers (head outputs, DFL, ``config.protect``) hold
    every conv of the model: nothing could be pruned, and the search or pruning would only say so afterwards."""
    targeted = config.target_params is not None or config.target_macs is not None
    if not config.protect or not (targeted or config.ratio > 0):
        return
    fixed = {id(m) for layer in protected_layers(model, config.protect) for m in layer.modules()}
    if all(id(m) in fixed for m in model.modules() if isinstance(m, nn.Conv2d)):
        raise PruningError(
            f"--protect {' '.join(config.protect)} covers every layer of the model, so nothing can be pruned. Protect "
            "only the modules whose channels must stay, e.g. --protect model.9 model.10."
        )


@contextmanager
def _all_trainable(model: nn.Module) -> Iterator[None]:
    """Torch-Pruning traces through autograd, so a frozen weight (DFL, a frozen backbone) would cut the graph.
    Frozen is restored by name afterwards: pruning replaces the Parameter objects."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    model.requires_grad_(True)
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(n not in frozen)


def prune_model(
    model: DetectionModel,
    config: PruneConfig | None = None,
    gradient_fn: Callable[[nn.Module], None] | None = None,
) -> PruneResult:
    """Prune ``model`` in place and validate it.

    Args:
        model: an Ultralytics ``DetectionModel``, ``SegmentationModel``, ``PoseModel`` or ``OBBModel`` (YOLOv8 /
            YOLOv10 / YOLO11 / YOLO26 families, with or without yolo_ext layers; the heads of :mod:`.heads`).
        config: what to prune; defaults to ``PruneConfig()`` (L1, ratio 0.4).
        gradient_fn: for gradient criteria (``taylor``): accumulates ``.grad`` on the model's weights from real
            data; called before every pruning step, on the model being pruned.

    Returns:
        PruneResult with the (same, now pruned) model and before/after numbers (and, for a latency target, what
        was measured: ``result.latency``).
    """
    config = config or PruneConfig()
    config.check()
    check_supported_model(model)
    if config.criterion in NEEDS_GRADIENTS and gradient_fn is None:
        raise PruningError(f"Criterion {config.criterion!r} needs data: pass gradient_fn (tools/prune.py: --data).")
    _check_something_prunable(model, config)
    start = time.perf_counter()
    model.float().eval()
    config = resolve_multiple(config)
    if config.target_latency is not None:
        result = prune_to_latency(model, config, gradient_fn, _prune)
    elif config.allocation == "cost":
        metric = "params" if config.target_params is not None else "macs"
        cost = ParamsCost() if metric == "params" else MacsCost()
        result = _prune(model, config, gradient_fn, Budget(cost, fraction=getattr(config, f"target_{metric}")))
    else:
        if config.target_params is not None or config.target_macs is not None:
            config = _config_for_target(model, config, gradient_fn)
        result = _prune(model, config, gradient_fn)
    result.seconds = time.perf_counter() - start
    return result


def _prune(
    model: DetectionModel, config: PruneConfig, gradient_fn: Callable | None, budget: Budget | None = None,
) -> PruneResult:
    """One pruning of ``model`` in place: Torch-Pruning's ranking at ``config.ratio``, or, with a ``budget``, the
    cost-aware allocation (:mod:`.allocate`) until the budget's cost is reached."""
    start = time.perf_counter()
    model.float().eval()
    example = torch.rand(1, 3, *config.size)
    shapes = output_shapes(model)
    channels_before = conv_channels(model)
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    pruners = leaf_pruners()
    with _all_trainable(model), split_blocks(model):  # restore flags by name after the halves are merged
        with trace_stand_ins(model, pruners):
            pruner = (NearestMultiplePruner if config.round_mode == "nearest" else tp.pruner.BasePruner)(
                model,
                torch.rand(1, 3, *CHECK_SIZES[0]),  # the graph does not depend on the input size: trace a small one
                importance=make_importance(config.criterion),
                pruning_ratio=config.ratio,
                global_pruning=config.is_global,
                max_pruning_ratio=config.max_layer_ratio,
                round_to=config.round_to,
                iterative_steps=config.iterative_steps,
                ignored_layers=protected_layers(model, config.protect),
                customized_pruners=pruners,
            )
        taps = FeatureTaps(model)
        if budget is None:
            cap = LayerCap(pruner, config.max_layer_ratio, config.round_to)
        else:
            convs = conv_shapes(model, config.size)
            total = budget.cost.total(convs)
            final = budget.absolute if budget.absolute is not None else total * (1 - budget.fraction)
            initial_out = {n: s.cout for n, s in convs.items()}
        for step in range(config.iterative_steps):
            if gradient_fn is not None:
                model.zero_grad(set_to_none=True)
                gradient_fn(model)
            if budget is None:
                for group in pruner.step(interactive=True):
                    group = cap.limit(group)
                    if group is not None:
                        taps.record(group, pruner.DG)
                        group.prune()
                continue
            if step:
                convs = conv_shapes(model, config.size)
            groups = prunable_groups(pruner, model, convs, config.multiple, config.max_layer_ratio, initial_out)
            goal = total - (total - final) * (step + 1) / config.iterative_steps
            apply_allocation(pruner, groups, allocate(groups, convs, budget.cost, goal), taps)
        model.zero_grad(set_to_none=True)
    model.eval()
    check_model(model, shapes)
    channels_after = conv_channels(model)
    check_layer_cap(channels_before, channels_after, config.max_layer_ratio)
    macs_after, params_after = count_after(model, example)
    return PruneResult(
        model, config, int(params_before), int(params_after), float(macs_before), float(macs_after),
        channels_before, channels_after, time.perf_counter() - start, taps.feature_channels(),
    )


def _config_for_target(model: DetectionModel, config: PruneConfig, gradient_fn: Callable | None) -> PruneConfig:
    """The config (ratio, and global ranking if needed) that removes the targeted fraction of params or MACs.

    A uniform ratio moves in jumps: layer widths are multiples of each other, so one ratio step rounds many layers
    at once, and with a channel multiple (``round_to``) whole blocks go at once. Without a multiple, when no uniform
    ratio lands within the tolerance, channels are ranked globally instead, which removes them one at a time. With a
    multiple the ranking stays as asked (blocks jump either way) and the closest ratio is taken if it is within
    :data:`BLOCK_TOLERANCE`; the returned config says which was used, the report what was removed.
    """
    metric = "params" if config.target_params is not None else "macs"
    target = config.target_params if metric == "params" else config.target_macs
    base = replace(config, target_params=None, target_macs=None)
    blocks = config.multiple > 1
    errors = []
    for global_pruning in [config.is_global] if blocks else sorted({config.is_global, True}):
        error, ratio = _search_ratio(model, replace(base, global_pruning=global_pruning), metric, target, gradient_fn)
        if error <= (BLOCK_TOLERANCE if blocks else config.target_tolerance):
            return replace(config, ratio=ratio, global_pruning=global_pruning)
        errors.append(error)
    error = min(errors)
    raise PruningError(
        f"Could not reach a {metric} reduction of {target:.0%} (closest: off by {error:.1%}); protected layers, "
        "max_layer_ratio and the channel multiple limit how much can be removed. Lower the target, raise "
        "max_layer_ratio, or pass --round-to 1."
    )


def _search_ratio(
    model: DetectionModel, config: PruneConfig, metric: str, target: float, gradient_fn: Callable | None
) -> tuple[float, float]:
    """(error, ratio) of the best ratio found for ``target``, pruning copies of the model (usually 2-4 tries).

    Removing a fraction r of the channels on both sides of most convs removes about 1 - (1 - r)^2 of their weights,
    so the search starts there and then corrects with the same power law inside a shrinking bracket.
    """
    lo, hi, ratio = 0.0, 0.95, 1 - (1 - target) ** 0.5
    best = (float("inf"), ratio)
    for _ in range(10):
        result = prune_model(copy.deepcopy(model), replace(config, ratio=ratio), gradient_fn)
        before, after = (result.params_before, result.params_after) if metric == "params" else (
            result.macs_before, result.macs_after)
        got = 1 - after / before
        best = min(best, (abs(got - target), ratio))
        if best[0] <= config.target_tolerance or hi - lo < 1e-3:
            break
        lo, hi = (ratio, hi) if got < target else (lo, ratio)
        guess = 1 - (1 - ratio) * ((1 - target) / max(1 - got, 1e-6)) ** 0.5
        ratio = guess if lo < guess < hi else (lo + hi) / 2
    return best
