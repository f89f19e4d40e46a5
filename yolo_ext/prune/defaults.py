"""What pruning does when the user does not say: the one place ``tools/prune.py``, ``yolo-ext prune``, the demo and
the benchmarks take it from.

Users prune to run faster on the runtime they ship to. Measured on BCCD (``benchmarks/prune_latency.py`` for speed,
``benchmarks/accuracy.py`` for mAP50-95 after the default fine-tuning, two seeds; ``benchmarks/RESULTS.md``,
issue 15), at the same compute (0.87-0.88 GFLOPs at 320, about 1.6x faster in ONNX Runtime at 640):

- the same fraction of every group's channels, least L1 first, at channel counts the runtime computes in whole
  blocks, kept 100.3% of the unpruned model (0.5769, spread 0.0010);
- spending a MACs budget where channels carry the least importance per MAC (global LAMP scores, the HALP-style
  greedy of :mod:`.allocate`) kept 97.9% (0.5626, spread 0.0033): it empties the high-resolution layers first;
- the previous default, global LAMP at ratio 0.4 with widths left as they fell, ran only 1.2x faster.

So with no ratio and no target the default is uniform L1 at ratio 0.25 with widths at the backend's measured channel
multiple (:mod:`yolo_ext.latency.multiples`), and a latency or MACs target searches that same uniform ratio. A params
target keeps global LAMP: at -50% params it kept 1.6 points more than uniform L1.

This is the tools' default only: ``PruneConfig()``'s own field defaults (uniform L1 at ratio 0.4, widths as they
fall) are the plain API's; ``PruneConfig(**default_fields())`` prunes as the tools do. Device and teacher defaults,
by contrast, are the same in the API and on every command line (Ultralytics' device choice; no teacher).
"""

from __future__ import annotations

from typing import Any

#: the cut when no ratio or target is given
DEFAULT_RATIO = 0.25
#: channel counts: the multiple the backend runs fast, measured once per machine and runtime (cached)
DEFAULT_ROUND_TO = "auto"

#: criterion and allocation by what is asked for (the first target given, else "ratio")
BY_REQUEST: dict[str, dict[str, Any]] = {
    "ratio": {"criterion": "l1", "allocation": "ratio"},
    "target_latency": {"criterion": "l1", "allocation": "ratio"},
    "target_macs": {"criterion": "l1", "allocation": "ratio"},
    "target_params": {"criterion": "lamp", "allocation": "ratio"},
}


def request_kind(target_params: float | None = None, target_macs: float | None = None,
                 target_latency: float | None = None) -> str:
    """Which entry of :data:`BY_REQUEST` a request is."""
    given = {"target_params": target_params, "target_macs": target_macs, "target_latency": target_latency}
    return next((k for k, v in given.items() if v is not None), "ratio")


def default_fields(**request: float | None) -> dict[str, Any]:
    """PruneConfig fields for a request (``target_latency=0.4``, ...; none: the default cut)."""
    kind = request_kind(**request)
    fields = {**BY_REQUEST[kind], "round_to": DEFAULT_ROUND_TO}
    if kind == "ratio":
        fields["ratio"] = DEFAULT_RATIO
    return {**fields, **{k: v for k, v in request.items() if v is not None}}
