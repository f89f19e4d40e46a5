"""Compare checkpoints in one table: box mAP50, mAP50-95, P, R (+ mask / pose mAP50-95), params, GFLOPs, latency on
the deployment runtime (--backend), speed-up and efficiency.

tools/val.py --data data.yaml --imgsz 640 best.pt best-pruned40.pt runs/finetune/exp/weights/best.pt
yolo-ext compare data=data.yaml imgsz=640 checkpoints=[best.pt,best-pruned40.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yolo_ext  # noqa: F401  (installs the integration so yolo_ext checkpoints load)
from yolo_ext import checks
from yolo_ext.cli.options import ArgumentParser
from yolo_ext.evaluate import check_comparison_inputs, compare_checkpoints, format_comparison
from yolo_ext.prune import CheckpointError, PruningError
from yolo_ext.prune.budget import resolve_backend


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoints to compare; the first is the reference")
    p.add_argument("--data", required=True, help="data YAML to validate on")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--latency-runs", type=int, default=20,
                   help="interleaved runs per model on --backend (fused, export mode, batch 1; 0: skip)")
    p.add_argument("--backend", help="runtime latency is measured on (default: ort-cpu, or torch-cpu where ONNX "
                                     "Runtime is not installed)")
    p.add_argument("--threads", type=int, default=1, help="threads the backend runs on")
    p.add_argument("--device", help="device to validate on: cpu, 0, ... (default: Ultralytics' choice, the first GPU "
                                     "if there is one, else the CPU)")
    p.add_argument("--project", help="folder for each checkpoint's validation plots (project/<checkpoint name>); "
                                     "default: none, nothing is written")
    return p


def main(args: argparse.Namespace) -> int:
    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        print(f"val: error: checkpoint(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        checks.check_imgsz(args.imgsz)
        checks.check_positive_int(args.batch, "--batch")
        if args.latency_runs < 0:
            raise checks.InputError(f"--latency-runs must be >= 0 (0: skip timing), got {args.latency_runs}.")
        checks.check_device(args.device)
        if args.project:
            checks.check_folder(args.project, "--project")
        check_comparison_inputs(args.checkpoints, args.data)
        if args.latency_runs:
            resolve_backend(args.backend)
            checks.check_positive_int(args.threads, "--threads")
        rows = compare_checkpoints(args.checkpoints, args.data, args.imgsz, args.batch, args.latency_runs,
                                   args.device, args.project, args.backend, args.threads)
    except (CheckpointError, PruningError, checks.InputError) as e:
        print(f"val: error: {e}", file=sys.stderr)
        return 2
    print(format_comparison(rows, args.imgsz))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
