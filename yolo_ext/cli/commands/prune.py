"""Prune a trained YOLO checkpoint (detect, segment, pose, obb): tools/prune.py --model-path best.pt
(or yolo-ext prune model=best.pt).

With no ratio or target it removes the weakest 25% of every layer's channels, at channel counts the runtime runs fast
(yolo_ext.prune.defaults); --target-latency 0.4 removes 40% of the latency measured on --backend.
Writes <output>.pt (an Ultralytics checkpoint: YOLO("<output>.pt") loads it), <output>.txt (params, GFLOPs, latency on
the backend before -> after, speed-up, efficiency) and <output>.png (channels per layer). The input is never modified.
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (registers yolo_ext modules so their checkpoints load)
from yolo_ext.cli.options import ArgumentParser
from yolo_ext.latency import BACKENDS, DEFAULT_BACKEND
from yolo_ext.prune import CRITERIA, CheckpointError, PruneConfig, PrunedModelError, PruningError
from yolo_ext.prune.checkpoint import prune_checkpoint
from yolo_ext.prune.defaults import BY_REQUEST, DEFAULT_RATIO, DEFAULT_ROUND_TO, request_kind
from yolo_ext.prune.engine import ALLOCATIONS
from yolo_ext.prune.importance import NEEDS_GRADIENTS
from yolo_ext.train.grad_checkpoint import checkpointing_enabled


def round_to_option(value: str) -> int | str:
    """``--round-to``: a positive integer, or ``auto`` (the backend's measured channel multiple)."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", "--model", required=True,
                   help="trained Ultralytics detection, segmentation, pose or OBB checkpoint (.pt)")
    by_request = "; ".join(f"{k.replace('_', '-')}: {v['criterion']}" for k, v in BY_REQUEST.items())
    p.add_argument("--prune-type", choices=sorted(CRITERIA),
                   help="criterion (default by request: " + by_request + "): "
                        + "; ".join(f"{k}: {d}" for k, (_, d) in CRITERIA.items()))
    p.add_argument("--prune-ratio", "--ratio", type=float,
                   help=f"fraction of channels removed per layer group (uniform) or overall (global); not with "
                        f"--target-*; default when no target is given: {DEFAULT_RATIO}")
    p.add_argument("--target-params", type=float, help="instead of a ratio: fraction of parameters to remove")
    p.add_argument("--target-macs", type=float, help="instead of a ratio: fraction of MACs to remove")
    p.add_argument("--target-latency", type=float,
                   help="instead of a ratio: fraction of the latency measured on --backend to remove (0.5: twice as "
                        "fast); prunes, measures and corrects until within 5%%")
    p.add_argument("--allocation", choices=ALLOCATIONS,
                   help="ratio (default): Torch-Pruning's ranking at a ratio (searched for a target); cost: keep the "
                        "most importance per ms (from a per-layer latency table, measured once and cached), per MAC "
                        "or per param removed")
    p.add_argument("--backend", help=f"runtime latency is measured on: {', '.join(BACKENDS)} (default: "
                                     f"{DEFAULT_BACKEND}, or torch-cpu where ONNX Runtime is not installed)")
    p.add_argument("--threads", type=int, default=1, help="threads the backend runs on (deployment setting)")
    p.add_argument("--deploy-batch", type=int, default=1, help="batch size latency is measured at")
    ranking = p.add_mutually_exclusive_group()
    ranking.add_argument("--global", dest="global_pruning", action="store_true", default=None,
                         help="rank channels across all layers (default for lamp and bn)")
    ranking.add_argument("--uniform", dest="global_pruning", action="store_false",
                         help="remove the same fraction from every layer (default for l1, l2, random, taylor)")
    p.add_argument("--max-layer-ratio", type=float, default=0.8, help="no layer loses more than this fraction")
    p.add_argument("--round-to", type=round_to_option, default=DEFAULT_ROUND_TO,
                   help="keep channel counts multiples of this; auto: the multiple the backend runs fast (measured "
                        "once, cached); 1: any count")
    p.add_argument("--iterative-steps", type=int, default=1, deprecated=["--steps"],
                   help="reach the ratio in this many pruning steps, without training in between")
    p.add_argument("--protect", nargs="*", default=[], help="module names whose channels stay, e.g. model.9 model.10")
    p.add_argument("--imgsz", type=int,
                   help="deployment input size for GFLOPs and latency (default: the size the checkpoint was trained "
                        "at)")
    p.add_argument("--data", help="data YAML; required by --prune-type taylor (gradients on a few train batches)")
    p.add_argument("--batches", type=int, default=4, help="batches of --data for taylor")
    p.add_argument("--batch-size", "--batch", type=int, default=8, help="batch size for taylor")
    p.add_argument("--output", help="output .pt (default: <model>-pruned<ratio>.pt beside the input, never reused)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --output (never the input)")
    p.add_argument("--latency-runs", type=int, default=20,
                   help="interleaved runs per model on --backend for the report (0: skip)")
    return p


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The PruneConfig the options ask for; no ratio and no target is the default cut (:mod:`.defaults`)."""
    targets = {k: getattr(args, k) for k in ("target_params", "target_macs", "target_latency")}
    defaults = BY_REQUEST[request_kind(**targets)]
    allocation = args.allocation or defaults["allocation"]
    return PruneConfig(
        ratio=DEFAULT_RATIO if args.prune_ratio is None else args.prune_ratio,
        criterion=args.prune_type or defaults["criterion"],
        global_pruning=args.global_pruning, max_layer_ratio=args.max_layer_ratio,
        round_to=None if args.round_to == 1 else args.round_to, iterative_steps=args.iterative_steps,
        imgsz=args.imgsz, protect=args.protect, allocation=allocation, backend=args.backend, threads=args.threads,
        batch=args.deploy_batch, **targets,
    )


def check_option_values(args: argparse.Namespace) -> None:
    """Option combinations and values the config does not see: an explicit ratio beside a target (which one would
    win?), --data for a criterion that reads no data, taylor's batch counts, the checkpointing switch."""
    target = next((f"--target-{k}" for k in ("params", "macs", "latency") if getattr(args, f"target_{k}") is not None),
                  None)
    if target and args.prune_ratio is not None:
        raise PruningError(f"--prune-ratio {args.prune_ratio:g} and {target} both say how much to remove: give one "
                           f"({target} finds the pruning that reaches it).")
    criterion = args.prune_type or BY_REQUEST[request_kind(args.target_params, args.target_macs,
                                                           args.target_latency)]["criterion"]
    if args.data and criterion not in NEEDS_GRADIENTS:
        raise PruningError(f"--data is read only by --prune-type taylor (gradients on real images); "
                           f"{criterion} ranks channels by their weights alone. Drop --data, or add "
                           "--prune-type taylor.")
    for option in ("batches", "batch_size", "threads", "deploy_batch"):
        value = getattr(args, option)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PruningError(f"--{option.replace('_', '-')} must be a whole number >= 1, got {value!r}.")
    try:
        checkpointing_enabled()
    except ValueError as e:
        raise PruningError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    try:
        check_option_values(args)
        config = config_from_args(args)
        config.check()
        gradient_fn = None
        if config.criterion == "taylor":
            if not args.data:
                raise PruningError("--prune-type taylor needs --data <data.yaml> (it uses gradients on real images).")
            from yolo_ext.prune.gradients import loss_gradients

            gradient_fn = loss_gradients(args.data, args.imgsz or 640, args.batches, args.batch_size)
        report = prune_checkpoint(args.model_path, config, args.output, args.overwrite, args.latency_runs, gradient_fn)
    except (PruningError, CheckpointError, PrunedModelError) as e:
        print(f"prune: error: {e}", file=sys.stderr)
        return 2
    print(report.table)
    print(f"Saved {report.output}\nReport {report.text}\nPlot {report.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
