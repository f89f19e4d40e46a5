"""Measured latency on the runtime users deploy to: backends, side-by-side timing, per-layer tables, channel multiples.

``measure_latency([base, pruned], "ort-cpu")`` times networks as deployed (fused, export mode) on one runtime,
interleaved, as medians. :mod:`.table` builds and caches the per-layer latency table pruning allocates with;
:mod:`.multiples` finds the channel multiple a runtime runs fast. Runtimes are registered by name in :mod:`.backends`.
"""

from yolo_ext.latency.backends import BACKENDS, DEFAULT_BACKEND, Backend, Runner, get_backend, register_backend
from yolo_ext.latency.deploy import Deployment, deployed_copy
from yolo_ext.latency.errors import LatencyError
from yolo_ext.latency.measure import Latency, interleaved_ms, measure_latency

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "Backend", "Deployment", "Latency", "LatencyError", "Runner", "deployed_copy",
    "get_backend", "interleaved_ms", "measure_latency", "register_backend",
]
