"""Which allocation makes a pruned YOLO faster on the runtime it ships to? Speed-up and efficiency per variant.

Each model (`--models`: a checkpoint path, or a YAML name built with fixed random weights) is pruned by every variant
(`--variants`, see VARIANTS), and the original and all prunings are deployed (fused, export mode) on each backend
(`--backends`) and timed side by side in one round-robin per backend (`yolo_ext.latency.interleaved_ms`). Reported:
GMACs, MACs ratio, params, prune seconds, and per backend the median ms, speed-up and efficiency = speed-up / MACs
ratio. Variants that take a latency target are timed again, so the table also shows how far
the target landed when re-measured: all timing happens in a fresh process that loads the saved networks.

  python benchmarks/prune_latency.py --models benchmarks/bccd_yolo11n_base.pt --backends ort-cpu openvino-cpu
  python benchmarks/prune_latency.py --models yolo11s yolov8n yolo26n --variants default lamp40 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # noqa: I001  (first: sets YOLO_OFFLINE before Ultralytics is imported)
import torch
from harness import log, markdown_table, write_json

from yolo_ext.latency import Deployment, deployed_copy, get_backend
from yolo_ext.latency.measure import interleaved_times, paired_ratio
from yolo_ext.prune import PruneConfig, prune_model
from yolo_ext.prune.checkpoint import load_prunable_checkpoint

#: name -> PruneConfig fields ("default" is what tools/prune.py does with no options)
VARIANTS: dict[str, dict[str, Any]] = {
    "lamp40": {"criterion": "lamp", "ratio": 0.4},  # the default until issue 15
    "lamp40-r": {"criterion": "lamp", "ratio": 0.4, "round_to": "auto"},
    "l1-25-r": {"criterion": "l1", "ratio": 0.25, "round_to": "auto"},
    "l1-40-r": {"criterion": "l1", "ratio": 0.4, "round_to": "auto"},
    "macs40": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.40, "round_to": "auto"},
    "macs45": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.45, "round_to": "auto"},
    "macs50": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.50, "round_to": "auto"},
    "macs50-l1": {"criterion": "l1", "allocation": "cost", "target_macs": 0.50, "round_to": "auto"},
    "lat35": {"criterion": "lamp", "allocation": "cost", "target_latency": 0.35},
    "lat50": {"criterion": "lamp", "allocation": "cost", "target_latency": 0.50},
    # what tools/prune.py --target-latency does by default: the uniform L1 ratio searched by measurement
    "lat40-u": {"criterion": "l1", "target_latency": 0.40, "round_to": "auto"},
}


def load(name: str) -> torch.nn.Module:
    if name.endswith(".pt"):
        return load_prunable_checkpoint(name)[1]
    return harness.build_model(name)


def run_model(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    base = load(name).eval()
    rows: list[dict[str, Any]] = []
    models = [base]
    for variant in args.variants:
        if variant == "default":
            from yolo_ext.prune.defaults import default_fields

            fields = default_fields()
        else:
            fields = VARIANTS[variant]
        config = PruneConfig(**{**fields, "imgsz": args.imgsz, "threads": args.threads,
                                **({"backend": args.backends[0]} if "target_latency" in fields else {})})
        model = copy.deepcopy(base)
        t = time.perf_counter()
        result = prune_model(model, config)
        seconds = time.perf_counter() - t
        rows.append({"variant": variant, "macs": result.macs_after, "params": result.params_after, "prune_s": seconds,
                     "target_latency": config.target_latency, "search": result.latency,
                     "multiple": result.config.round_to})
        models.append(model)
        log(f"{name} {variant}: {seconds:.1f} s, {result.macs_before / result.macs_after:.2f}x fewer MACs")
    base_macs, base_params = result.macs_before, result.params_before
    rows.insert(0, {"variant": "original", "macs": base_macs, "params": base_params, "prune_s": 0.0,
                    "target_latency": None, "search": None, "multiple": None})
    # timed in a fresh process, as a user's deployment would be: nothing left over from pruning and the searches
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, m in enumerate(models):
            files.append(str(Path(tmp) / f"{i}.pt"))
            torch.save({"model": m}, files[-1])
        job = {"files": files, "backends": args.backends, "imgsz": args.imgsz, "threads": args.threads,
               "runs": args.runs}
        out = subprocess.run([sys.executable, __file__, "--time-files", json.dumps(job)], capture_output=True,
                             text=True, check=True).stdout
    for backend_name, timed in json.loads(out.splitlines()[-1]).items():
        for row, t, ratio in zip(rows, timed["ms"], timed["ratios"]):
            row[backend_name], row[f"{backend_name} ratio"] = t, ratio
    for row in rows:
        row["model"] = Path(name).stem
        row["macs_ratio"] = base_macs / row["macs"]
    return rows


def time_files(job: dict[str, Any]) -> dict[str, list[float]]:
    """(In the fresh process) ms of every saved network on every backend, side by side per backend."""
    harness.setup(1)
    deployment = Deployment((job["imgsz"], job["imgsz"]), 1, job["threads"])
    models = [torch.load(f, weights_only=False)["model"].float().eval() for f in job["files"]]
    out = {}
    for backend_name in job["backends"]:
        backend = get_backend(backend_name)
        runners = [backend.runner(deployed_copy(m), deployment) for m in models]
        try:
            times = interleaved_times(runners, job["runs"], warmup=3)
        finally:
            for r in runners:
                r.close()
        out[backend_name] = {"ms": [statistics.median(t) for t in times],
                             "ratios": [paired_ratio(times, i) for i in range(len(times))]}
    return out


def table(rows: list[dict[str, Any]], backends: list[str]) -> str:
    columns = ["model", "variant", "multiple", "params", "GMACs", "MACs ratio", "prune s"]
    for b in backends:
        columns += [f"{b} ms", f"{b} speed-up", f"{b} eff."]
    columns.append("target landed")
    out = []
    for r in rows:
        cells = [r["model"], r["variant"], r["multiple"] or "", f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e9:.2f}",
                 f"{r['macs_ratio']:.2f}x", f"{r['prune_s']:.1f}"]
        for b in backends:
            speedup = 1 / r[f"{b} ratio"]  # the median of per-round ratios to the original
            cells += [f"{r[b]:.1f}", f"{speedup:.2f}x", f"{speedup / r['macs_ratio']:.2f}"]
        if r["target_latency"]:
            goal = 1 - r["target_latency"]
            cells.append(f"{r[f'{backends[0]} ratio'] / goal - 1:+.1%} (search {r['search']['off_target']:+.1%})")
        else:
            cells.append("")
        out.append(cells)
    return markdown_table(columns, "ll" + "r" * (len(columns) - 3) + "l", out)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["benchmarks/bccd_yolo11n_base.pt"])
    p.add_argument("--variants", nargs="+", default=["default", *VARIANTS], choices=["default", *VARIANTS])
    p.add_argument("--backends", nargs="+", default=["ort-cpu", "openvino-cpu"])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", type=Path)
    p.add_argument("--time-files", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> int:
    if args.time_files:
        print(json.dumps(time_files(json.loads(args.time_files))))
        return 0
    harness.setup(1)
    clock = harness.RunClock()
    rows = []
    with harness.other_load() as load:
        for name in args.models:
            rows += run_model(name, args)
    print(table(rows, args.backends))
    print(f"\n{clock.summary()} Other processes kept {load.cores:.2f} cores busy.")
    if args.json:
        write_json(args.json, {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
