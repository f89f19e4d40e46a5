"""End-to-end latency of whole networks on a backend, measured side by side.

Networks that are compared are timed in one process, round after round, each round starting with a different one,
so load from other processes and clock changes hit all of them alike; what is reported are medians and their ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from yolo_ext.latency.backends import Backend, Runner, get_backend
from yolo_ext.latency.deploy import Deployment, deployed_copy


def interleaved_ms(runners: Sequence[Runner], runs: int = 20, warmup: int = 3) -> list[float]:
    """Median ms per inference of each runner; round r starts at runner r mod n. A runner that returns its own
    time (e.g. from device events) is taken at its word; otherwise the wall clock around the call is used."""
    n = len(runners)
    times: list[list[float]] = [[] for _ in runners]
    for r in range(warmup + runs):
        for j in range(n):
            i = (r + j) % n
            t = time.perf_counter()
            own = runners[i]()
            if r >= warmup:
                times[i].append(own if own is not None else 1000 * (time.perf_counter() - t))
    return [statistics.median(t) for t in times]


@dataclass
class Latency:
    """Measured latency of networks compared side by side on one backend."""

    backend: str
    deployment: Deployment
    ms: list[float]

    def speedup(self, i: int = 1, base: int = 0) -> float:
        """How many times faster network ``i`` runs than network ``base``."""
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
        return Latency(backend.name, deployment, interleaved_ms(runners, runs, warmup))
    finally:
        for r in runners:
            r.close()
