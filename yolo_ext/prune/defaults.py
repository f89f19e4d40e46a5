"""What pruning does when the user only names a checkpoint: the one place ``tools/prune.py``, ``yolo-ext prune``, the
demo and the benchmarks take it from.

Users prune to run faster on the runtime they ship to, so the default removes 45% of the MACs, spending the cut
where channels carry the least importance per MAC (global LAMP scores, :mod:`yolo_ext.prune.allocate`), at channel
counts the runtime computes in whole blocks (the measured multiple, :mod:`yolo_ext.latency.multiples`). Why these
numbers, from ``benchmarks/prune_latency.py`` and ``benchmarks/accuracy.py`` (``benchmarks/RESULTS.md``, issue 15):
the previous default (global LAMP at ratio 0.4, widths left as they fell) ran only 1.2x faster in ONNX Runtime; this
one runs about 1.6x faster on the same checkpoint, at a prune time under 2 s for n/s models, and needs no latency
measurement (``--target-latency`` measures).

This is the tools' default only: ``PruneConfig()``'s own field defaults (uniform L1 at ratio 0.4) are the plain
API's; ``PruneConfig(**default_fields())`` prunes as the tools do. Device and teacher defaults, by contrast, are the
same in the API and on every command line (Ultralytics' device choice; no teacher).
"""

from __future__ import annotations

from typing import Any

from yolo_ext.prune.importance import DEFAULT_CRITERION

#: the cut when no ratio or target is given
DEFAULT_TARGET: dict[str, Any] = {"target_macs": 0.45}
#: channel counts: the multiple the backend runs fast, measured once per machine and runtime (cached)
DEFAULT_ROUND_TO = "auto"


def default_fields() -> dict[str, Any]:
    """PruneConfig fields of the default pruning."""
    return {"criterion": DEFAULT_CRITERION, "allocation": "cost", "round_to": DEFAULT_ROUND_TO, **DEFAULT_TARGET}


def default_allocation(target_params: float | None, target_macs: float | None, target_latency: float | None) -> str:
    """``cost`` for a MACs or latency target (spend the cut where it buys the most time), ``ratio`` otherwise (a
    params target keeps today's global ranking, which kept the most accuracy at equal params)."""
    return "cost" if target_macs is not None or target_latency is not None else "ratio"
