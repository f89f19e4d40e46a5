"""End-to-end latency of whole networks on a backend, measured side by side.

Networks that are compared are timed in one process, round after round, each round starting with a different one,
so load from other processes and clock changes hit all of them alike. What is reported are medians, and speed-ups
as the median over rounds of each round's own ratio: two networks timed back to back share the machine's state of
that moment, so a paired ratio cancels load that drifts over the measurement, which a ratio of medians does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from yolo_ext.latency.backends import Backend, Runner, get_backend
from yolo_ext.latency.deploy import Deployment, deployed_copy


def interleaved_times(runners: Sequence[Runner], runs: int = 20, warmup: int = 3) -> list[list[float]]:
    """ms of every timed round of each runner (``[runner][round]``); round r starts at runner r mod n. A runner that
    returns its own time (e.g. from device events) is taken at its word; otherwise the wall clock around the call."""
    n = len(runners)
    times: list[list[float]] = [[] for _ in runners]
    for r in range(warmup + runs):
        for j in range(n):
            i = (r + j) % n
            t = time.perf_counter()
            own = runners[i]()
            if r >= warmup:
                times[i].append(own if own is not None else 1000 * (time.perf_counter() - t))
    return times


def interleaved_ms(runners: Sequence[Runner], runs: int = 20, warmup: int = 3) -> list[float]:
    """Median ms per inference of each runner, timed side by side (:func:`interleaved_times`)."""
    return [statistics.median(t) for t in interleaved_times(runners, runs, warmup)]


def paired_ratio(times: Sequence[Sequence[float]], i: int, base: int = 0) -> float:
    """Median over rounds of runner ``i``'s time over runner ``base``'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[i], times[base]))


def ratio_spread(times: Sequence[Sequence[float]], i: int, base: int = 0) -> float:
    """Half the interquartile range of the per-round ratios, relative to their median: how far one could be off."""
    ratios = sorted(a / b for a, b in zip(times[i], times[base]))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    return (q3 - q1) / 2 / statistics.median(ratios)


def timed_pair(base: Runner, other: Runner, runs: int = 15, max_runs: int = 60, warmup: int = 2,
               spread: float = 0.02) -> tuple[float, float, float]:
    """(base ms, other ms, other / base as a paired ratio), timing more rounds (up to ``max_runs``) while the
    per-round ratios spread more than ``spread``: a loaded machine gets more samples, a quiet one few."""
    times = interleaved_times([base, other], runs, warmup)
    while len(times[0]) < max_runs and ratio_spread(times, 1) > spread:
        more = interleaved_times([base, other], runs, 0)
        times = [a + b for a, b in zip(times, more)]
    return statistics.median(times[0]), statistics.median(times[1]), paired_ratio(times, 1)


@dataclass
class Latency:
    """Measured latency of networks compared side by side on one backend: medians (``ms``) and, for each network,
    its paired ratio to the first (``ratios``)."""

    backend: str
    deployment: Deployment
    ms: list[float]
    ratios: list[float] | None = None

    def speedup(self, i: int = 1, base: int = 0) -> float:
        """How many times faster network ``i`` runs than network ``base`` (from paired ratios when measured)."""
        if self.ratios is not None and base == 0:
            return 1 / self.ratios[i]
        return self.ms[base] / self.ms[i]

    def label(self) -> str:
        return f"{self.backend} ({self.deployment.describe()})"


def measure_latency(
    models: Sequence[nn.Module], backend: str | Backend = "ort-cpu", deployment: Deployment | None = None,
    runs: int = 20, warmup: int = 3,
) -> Latency:
    """Deploy each network (fused, export mode) on ``backend`` and time them side by side."""
    deployment = deployment or Deployment()
    deployment.check()
    backend = get_backend(backend)
    runners = []
    try:
        for m in models:
            runners.append(backend.runner(deployed_copy(m), deployment))
        times = interleaved_times(runners, runs, warmup)
        return Latency(backend.name, deployment, [statistics.median(t) for t in times],
                       [paired_ratio(times, i) for i in range(len(times))])
    finally:
        for r in runners:
            r.close()
