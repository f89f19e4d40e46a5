"""Pruning to a cost budget: the budget itself, the backend and channel multiple a config resolves to, and pruning
to a measured latency target.

A latency target is reached the HALP / NetAdapt way. The per-layer latency table of the network on the backend
(:mod:`yolo_ext.latency.table`, cached) prices every channel; the allocation (:mod:`.allocate`) keeps the most
importance per predicted millisecond; then the pruned network is deployed and timed side by side with the original,
and the budget is corrected (secant between the two closest tries, else in proportion) until the measured latency
is within a fraction of the tolerance of the target. The table only guides; what is reported is measured.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torch import nn

from yolo_ext.latency import DEFAULT_BACKEND, Backend, LatencyError, deployed_copy, get_backend, interleaved_ms
from yolo_ext.latency.backends import BACKENDS
from yolo_ext.latency.costs import CostModel, conv_shapes
from yolo_ext.latency.multiples import measure_multiple
from yolo_ext.latency.table import load_or_build_table
from yolo_ext.prune.errors import PruningError

if TYPE_CHECKING:  # engine imports this module; the names are only needed for annotations
    from yolo_ext.prune.engine import PruneConfig, PruneResult

#: widths of the table's probe networks (fractions of every prunable group's channels)
PROBE_FRACTIONS = (1.0, 0.75, 0.5, 0.375, 0.25)
#: corrections of the budget before the closest try is taken
MAX_TRIES = 6
#: interleaved timing rounds per try (original and candidate)
RUNS = 15
#: the search stops this close to the target (a share of the tolerance), leaving room for a re-measurement's noise
SEARCH_SHARE = 0.6
#: backend used when none is named and ONNX Runtime is not installed
FALLBACK_BACKEND = "torch-cpu"


@dataclass(frozen=True)
class Budget:
    """How much a cost-aware allocation may keep: a fraction of the cost to remove, or an absolute cost."""

    cost: CostModel
    fraction: float | None = None
    absolute: float | None = None


def resolve_backend(name: str | Backend | None) -> Backend:
    """The named backend, checked to run here; None: ONNX Runtime, or PyTorch when ONNX Runtime is missing."""
    try:
        if name is None:
            default = BACKENDS[DEFAULT_BACKEND]
            return get_backend(default if default.unavailable() is None else FALLBACK_BACKEND)
        return get_backend(name)
    except LatencyError as e:
        raise PruningError(str(e)) from None


def resolve_multiple(config: PruneConfig) -> PruneConfig:
    """``config`` with ``round_to="auto"`` (or unset, for a latency target) replaced by the measured multiple."""
    if config.round_to == "auto" or (config.round_to is None and config.target_latency is not None):
        backend = resolve_backend(config.backend)
        return replace(config, round_to=measure_multiple(backend, config.deployment).multiple)
    return config


def _probes(model: nn.Module, config: PruneConfig, prune_once: Callable) -> list[nn.Module]:
    """The network at :data:`PROBE_FRACTIONS` of its prunable channels (uniform L1, at the channel multiple)."""
    probes = [model]
    for fraction in PROBE_FRACTIONS[1:]:
        probe = copy.deepcopy(model)
        probe_config = replace(
            config, ratio=1 - fraction, criterion="l1", global_pruning=False, allocation="ratio",
            target_latency=None, target_params=None, target_macs=None, iterative_steps=1,
            max_layer_ratio=max(0.8, 1 - fraction),
        )
        prune_once(probe, probe_config, None)
        probes.append(probe)
    return probes


def _next_budget(tries: list[tuple[float, float]], goal: float, full: float) -> float:
    """Secant between the two tries closest to ``goal`` on either side, else a proportional correction."""
    below = [t for t in tries if t[1] <= goal]
    above = [t for t in tries if t[1] > goal]
    if below and above:
        (b0, r0), (b1, r1) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
        return b0 + (goal - r0) * (b1 - b0) / (r1 - r0) if r1 != r0 else (b0 + b1) / 2
    budget, ratio = tries[-1]
    return min(max(budget * goal / ratio, 0.02 * full), full)


def prune_to_latency(
    model: nn.Module, config: PruneConfig, gradient_fn: Callable | None, prune_once: Callable
) -> PruneResult:
    """Prune ``model`` in place until its measured latency on the backend is ``1 - config.target_latency`` of what
    it was (within ``config.latency_tolerance``, or as close as the tries got: ``result.latency`` says)."""
    backend = resolve_backend(config.backend)
    deployment = config.deployment
    multiple = config.round_to or 1
    goal = 1 - config.target_latency
    try:
        table, cached = load_or_build_table(model, backend, deployment, multiple,
                                            lambda: _probes(model, config, prune_once))
        cost = table.cost_model()
        full = cost.total(conv_shapes(deployed_copy(model), deployment.imgsz))
        base = backend.runner(deployed_copy(model), deployment)
        try:
            def timed(network: nn.Module) -> tuple[float, float]:
                runner = backend.runner(deployed_copy(network), deployment)
                try:
                    return tuple(interleaved_ms([base, runner], RUNS, warmup=2))
                finally:
                    runner.close()

            tries: list[tuple[float, float]] = []
            log, best, budget = [], None, full * goal
            for _ in range(MAX_TRIES):
                candidate = copy.deepcopy(model)
                try:
                    found = prune_once(candidate, replace(config, allocation="cost"), gradient_fn,
                                       Budget(cost, absolute=budget))
                except PruningError:
                    if best is None:
                        raise
                    break  # the groups cannot shrink further: keep the closest try
                base_ms, ms = timed(candidate)
                tries.append((budget, ms / base_ms))
                log.append({"budget_ms": round(budget, 3), "base_ms": round(base_ms, 3), "ms": round(ms, 3)})
                if best is None or abs(ms / base_ms - goal) < abs(best[2] / best[1] - goal):
                    best = (budget, base_ms, ms, found.channels_after)
                if abs(ms / base_ms / goal - 1) <= config.latency_tolerance * SEARCH_SHARE:
                    break
                budget = _next_budget(tries, goal, full)
            budget, base_ms, ms, channels = best
            # the caller's network, pruned the same way (the allocation is deterministic for a fixed importance)
            result = prune_once(model, replace(config, allocation="cost"), gradient_fn, Budget(cost, absolute=budget))
            if result.channels_after != channels:  # a gradient criterion saw other batches: time what we have
                base_ms, ms = timed(model)
        finally:
            base.close()
    except LatencyError as e:
        raise PruningError(str(e)) from None
    result.latency = {
        "backend": backend.name, "runtime": backend.version(), "imgsz": list(deployment.imgsz),
        "batch": deployment.batch, "threads": deployment.threads, "multiple": multiple,
        "target": config.target_latency, "base_ms": round(base_ms, 3), "ms": round(ms, 3),
        "speedup": round(base_ms / ms, 4), "off_target": round(ms / base_ms / goal - 1, 4),
        "table": "cached" if cached else "measured", "tries": log,
    }
    return result
