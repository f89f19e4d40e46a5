"""Which channel counts a backend runs fast, found by timing it: the multiple pruning snaps widths to.

CPU kernels work on blocks of channels (oneDNN and ONNX Runtime's NCHWc layout: 8 on AVX2, 16 on AVX-512), GPUs on
tensor-core tiles (8 for FP16), so a conv with a few channels more can run faster than one with fewer. The probe
times a 3x3 conv followed by a 1x1 conv (c -> c -> c) for c from 36 to 100 in steps of 4, all side by side, and
picks the largest multiple m (of 4, 8, 16, 32) up to which rounding a width costs nothing, within the noise, in all
but a few cases: the block the runtime computes channels in. Widths that are multiples of m are then the only ones
pruning leaves, so no layer ends at a count that is slower than a wider one. Cached like the
latency table (:mod:`yolo_ext.latency.table`), without the architecture in the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from yolo_ext.latency.backends import Backend
from yolo_ext.latency.deploy import Deployment
from yolo_ext.latency.measure import interleaved_ms
from yolo_ext.latency.table import FORMAT, machine_id, read_cache, write_cache

CANDIDATES = (4, 8, 16, 32)
WIDTHS = tuple(range(36, 101, 4))
#: rounding up may cost this much (timing noise) and still count as free
TOLERANCE = 0.04
#: share of widths allowed to break the rule (one noisy sample must not decide)
ALLOWED_MISSES = 0.2
#: what to snap to when no backend can be timed: the block of AVX-512 CPUs and of FP16 tensor cores' common multiple
FALLBACK = 16


class _Probe(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.act(self.a(x))))


@dataclass
class Multiple:
    """The chosen multiple and the timings it was chosen from (ms per width)."""

    multiple: int
    ms: dict[int, float]
    cached: bool = False


def choose_multiple(ms: dict[int, float], candidates=CANDIDATES, tolerance=TOLERANCE, allowed=ALLOWED_MISSES) -> int:
    """The largest candidate m up to which rounding a width costs nothing: t(next multiple of m) <= t(c) within
    ``tolerance``, for all but ``allowed`` of the widths c timed. That is the block the runtime computes channels in:
    any width inside a block costs as much as the full block, so pruning keeps whole blocks.

    >>> choose_multiple({36: 9.0, 40: 9.1, 44: 9.0, 48: 9.0, 52: 12.0, 56: 12.1, 60: 12.0, 64: 12.0})
    16
    """
    for m in sorted(candidates, reverse=True):
        cases = [(c, m * math.ceil(c / m)) for c in ms if c % m and m * math.ceil(c / m) in ms]
        misses = sum(ms[up] > ms[c] * (1 + tolerance) for c, up in cases)
        if cases and misses <= allowed * len(cases):
            return m
    return min(candidates)


def measure_multiple(backend: Backend, deployment: Deployment, runs: int = 25, use_cache: bool = True) -> Multiple:
    """Time the probe on ``backend`` (map size 1/16 of the input, as at YOLO's P4 level) and choose the multiple."""
    side = max(8, deployment.imgsz[0] // 16), max(8, deployment.imgsz[1] // 16)
    key = {
        "format": FORMAT, "kind": "multiple", "backend": backend.name, "runtime": backend.version(),
        "machine": machine_id(), "batch": deployment.batch, "threads": deployment.threads, "map": list(side),
        "widths": list(WIDTHS),
    }
    if use_cache:
        cached = read_cache(key, "multiple")
        try:  # the timings are what is cached; the choice is made again (it may have been improved since)
            ms = {int(k): float(v) for k, v in cached["ms"].items()}
            return Multiple(choose_multiple(ms), ms, True)
        except (TypeError, KeyError, ValueError, AttributeError):
            pass
    runners = []
    torch.manual_seed(0)
    try:
        for c in WIDTHS:
            runners.append(backend.runner(_Probe(c).eval(), Deployment(side, deployment.batch, deployment.threads, c)))
        ms = dict(zip(WIDTHS, interleaved_ms(runners, runs, warmup=2)))
    finally:
        for r in runners:
            r.close()
    multiple = choose_multiple(ms)
    write_cache(key, {"multiple": multiple, "ms": {str(k): round(v, 5) for k, v in ms.items()}}, "multiple")
    return Multiple(multiple, ms)
