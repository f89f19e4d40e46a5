"""Pruning to a cost budget: the budget itself, the backend and channel multiple a config resolves to, and pruning
to a measured latency target.

A latency target is reached the NetAdapt way: prune, deploy, time the pruned network side by side with the original
on the backend, and correct (secant between the two closest tries, else by a power law) until the measured latency
is within a fraction of the tolerance of the target. What is corrected depends on the allocation. With ``cost``
(HALP-style), the per-layer latency table of the network on the backend (:mod:`yolo_ext.latency.table`, cached)
prices every channel and the greedy allocation (:mod:`.allocate`) keeps the most importance per predicted
millisecond within a budget, which the search corrects. With ``ratio``, the ratio of Torch-Pruning's ranking
(uniform per group, or global) is searched; no table is needed. The table only guides; what is reported is measured.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torch import nn

from yolo_ext.latency import DEFAULT_BACKEND, Backend, LatencyError, deployed_copy, get_backend
from yolo_ext.latency.backends import BACKENDS
from yolo_ext.latency.costs import CostModel, conv_shapes
from yolo_ext.latency.measure import timed_pair
from yolo_ext.latency.multiples import measure_multiple
from yolo_ext.latency.table import load_or_build_table, read_cache, table_key, write_cache
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


def _miss(ratio: float, goal: float) -> float:
    """How far a measured latency ratio is from the goal, relative to it (what the tolerance bounds)."""
    return abs(ratio / goal - 1)


def _bracket(tries: list[tuple[float, float]], goal: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The closest tries (knob, measured ratio) on either side of ``goal``, or None. Of tries that measured the same,
    the one nearest the other side in knob value: latency moves in steps, and the step edge is what matters."""
    below = [t for t in tries if t[1] <= goal]
    above = [t for t in tries if t[1] > goal]
    if not below or not above:
        return None
    hi = min(r for _, r in above)
    lo = max(r for _, r in below)
    x_hi = [x for x, r in above if r == hi]
    x_lo = [x for x, r in below if r == lo]
    a = min(x_lo, key=lambda x: min(abs(x - y) for y in x_hi))
    b = min(x_hi, key=lambda y: abs(a - y))
    return (a, lo), (b, hi)


def _next(tries: list[tuple[float, float]], goal: float, fallback: Callable[[float, float], float]) -> float:
    """Secant between the two tries closest to ``goal`` on either side, else ``fallback(knob, measured ratio)``."""
    bracket = _bracket(tries, goal)
    if bracket is None:
        return fallback(*tries[-1])
    (x0, r0), (x1, r1) = bracket
    return x0 + (goal - r0) * (x1 - x0) / (r1 - r0) if r1 != r0 else (x0 + x1) / 2


def _midpoint(tries: list[tuple[float, float]], goal: float) -> float | None:
    """Halfway between the tries that bracket ``goal``; None when there is no bracket or it is too narrow to hold an
    untried knob value (the latency jumps there: no knob lands between)."""
    bracket = _bracket(tries, goal)
    if bracket is None:
        return None
    (x0, _), (x1, _) = bracket
    mid = (x0 + x1) / 2
    return mid if abs(x1 - x0) > 2e-3 and all(abs(mid - t) >= 1e-4 for t, _ in tries) else None


@dataclass
class _Knob:
    """What the search turns: a predicted-ms budget (``cost`` allocation, from the latency table) or the ratio of
    Torch-Pruning's ranking (``ratio``). ``prune(network, x)`` prunes it in place; ``first`` is where to start;
    ``fallback(x, measured)`` corrects x when the tries do not yet bracket the goal."""

    prune: Callable[[nn.Module, float], PruneResult]
    first: float
    fallback: Callable[[float, float], float]
    table: str


def _knob(model: nn.Module, config: PruneConfig, gradient_fn: Callable | None, prune_once: Callable, backend: Backend,
          goal: float) -> _Knob:
    if config.allocation == "cost":
        table, cached = load_or_build_table(model, backend, config.deployment, config.multiple,
                                            lambda: _probes(model, config, prune_once))
        cost = table.cost_model()
        full = cost.total(conv_shapes(deployed_copy(model), config.deployment.imgsz))
        return _Knob(
            lambda net, x: prune_once(net, config, gradient_fn, Budget(cost, absolute=x)),
            full * goal, lambda x, r: min(max(x * goal / r, 0.02 * full), full), "cached" if cached else "measured",
        )
    # compute scales with the square of the kept fraction of channels: start there, correct by the same law
    return _Knob(
        lambda net, x: prune_once(net, replace(config, ratio=x), gradient_fn),
        1 - goal**0.5, lambda x, r: min(max(1 - (1 - x) * (goal / r) ** 0.5, 0.0), 0.94), "not used (ratio allocation)",
    )


@dataclass
class _Search:
    """Where one search ended: the knob value closest to the goal, what it measured, and every try."""

    knob: _Knob
    x: float
    base_ms: float
    ms: float
    ratio: float
    channels: dict
    resumed: bool
    log: list[dict]


def _search(model: nn.Module, config: PruneConfig, gradient_fn: Callable | None, prune_once: Callable,
            backend: Backend, goal: float, timed: Callable, log: list[dict] | None = None) -> _Search:
    """Turn the knob until the measured latency ratio is within the search's share of the tolerance (or
    :data:`MAX_TRIES` are spent), on copies of ``model``; tries are appended to ``log``."""
    knob = _knob(model, config, gradient_fn, prune_once, backend, goal)
    # where the last search of this network and request ended: the first try of this one (a uniform ratio
    # prunes the same widths whatever the weights, so it usually lands at once)
    search_key = {**table_key(model, backend, config.deployment, config.multiple), "kind": "search",
                  "target": config.target_latency, "allocation": config.allocation, "criterion": config.criterion,
                  "global": config.is_global, "max_layer_ratio": config.max_layer_ratio,
                  "protect": sorted(config.protect), "round_mode": config.round_mode}
    previous = read_cache(search_key, "search")
    resumed = previous is not None and isinstance(previous.get("knob"), (int, float))
    if resumed:
        knob.first = float(previous["knob"])
    log = [] if log is None else log
    tries: list[tuple[float, float]] = []
    best, x = None, knob.first
    for _ in range(MAX_TRIES):
        candidate = copy.deepcopy(model)
        try:
            found = knob.prune(candidate, x)
        except PruningError:
            if best is None:
                raise
            break  # the groups cannot shrink further: keep the closest try
        base_ms, ms, ratio = timed(candidate)
        tries.append((x, ratio))
        log.append({"knob": round(x, 4), "base_ms": round(base_ms, 3), "ms": round(ms, 3), "ratio": round(ratio, 4),
                    **({"round_mode": config.round_mode} if config.round_mode != "down" else {})})
        if best is None or _miss(ratio, goal) < _miss(best.ratio, goal):
            best = _Search(knob, x, base_ms, ms, ratio, found.channels_after, resumed, log)
        if _miss(ratio, goal) <= config.latency_tolerance * SEARCH_SHARE:
            break
        x = _next(tries, goal, knob.fallback)
        if any(abs(x - t) < 1e-4 for t, _ in tries):  # a step between two tries: halve it, or stop when it is gone
            x = _midpoint(tries, goal)
            if x is None:
                break
    write_cache(search_key, {"knob": best.x}, "search")
    return best


def prune_to_latency(
    model: nn.Module, config: PruneConfig, gradient_fn: Callable | None, prune_once: Callable
) -> PruneResult:
    """Prune ``model`` in place until its measured latency on the backend is ``1 - config.target_latency`` of what
    it was (within ``config.latency_tolerance``, or as close as the tries got: ``result.latency`` says).

    ``config.allocation`` decides what is searched: ``cost`` spends a predicted-ms budget with the latency table
    (importance per ms), ``ratio`` searches the ratio of Torch-Pruning's ranking (uniform, or global)."""
    backend = resolve_backend(config.backend)
    deployment = config.deployment
    goal = 1 - config.target_latency
    try:
        base = backend.runner(deployed_copy(model), deployment)
        try:
            def timed(network: nn.Module) -> tuple[float, float, float]:
                runner = backend.runner(deployed_copy(network), deployment)
                try:
                    return timed_pair(base, runner, RUNS)
                finally:
                    runner.close()

            search = _search(model, config, gradient_fn, prune_once, backend, goal, timed)
            if (_miss(search.ratio, goal) > config.latency_tolerance and config.allocation == "ratio"
                    and config.round_mode == "down" and config.multiple > 1):
                # rounding every layer down to the multiple makes the ratio jump over the goal: round to nearest
                nearest = _search(model, replace(config, round_mode="nearest"), gradient_fn, prune_once, backend,
                                  goal, timed, search.log)
                search = min(search, nearest, key=lambda s: _miss(s.ratio, goal))
            # the caller's network, pruned the same way (the pruning is deterministic for a fixed importance)
            result = search.knob.prune(model, search.x)
            base_ms, ms, ratio = search.base_ms, search.ms, search.ratio
            if result.channels_after != search.channels:  # a gradient criterion saw other batches: time what we have
                base_ms, ms, ratio = timed(model)
        finally:
            base.close()
    except LatencyError as e:
        raise PruningError(str(e)) from None
    result.latency = {
        "backend": backend.name, "runtime": backend.version(), "imgsz": list(deployment.imgsz),
        "batch": deployment.batch, "threads": deployment.threads, "multiple": config.multiple,
        "allocation": config.allocation, "round_mode": result.config.round_mode, "target": config.target_latency,
        "base_ms": round(base_ms, 3), "ms": round(ms, 3), "speedup": round(1 / ratio, 4),
        "off_target": round(ratio / goal - 1, 4), "table": search.knob.table,
        "first_try": "where the last search ended" if search.resumed else "estimated", "tries": search.log,
    }
    return result
