"""Iterative pruning in one command: prune a step, fine-tune briefly, repeat until the target ratio.

tools/iterative_prune.py --model-path best.pt --data data.yaml --prune-ratio 0.6 --rounds 3 --epochs 10
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (registers yolo_ext modules so their checkpoints load)
from yolo_ext.finetune import DEFAULT_TEACHER, FinetuneError, teacher_option
from yolo_ext.iterative import iterative_prune
from yolo_ext.prune import CRITERIA, DEFAULT_CRITERION, CheckpointError, PruneConfig, PrunedModelError, PruningError
from yolo_ext.cli_options import ArgumentParser
from yolo_ext.commands.prune import DEFAULT_RATIO


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", required=True, help="trained Ultralytics detection checkpoint")
    p.add_argument("--data", required=True, help="data YAML it was trained on")
    p.add_argument("--prune-type", default=DEFAULT_CRITERION, choices=sorted(set(CRITERIA) - {"taylor"}))
    p.add_argument("--prune-ratio", type=float, default=None,
                   help=f"total fraction of channels removed (default {DEFAULT_RATIO}; not with --target-*)")
    p.add_argument("--target-params", type=float, help="instead of a ratio: total fraction of parameters removed")
    p.add_argument("--target-macs", type=float, help="instead of a ratio: total fraction of MACs removed")
    p.add_argument("--rounds", type=int, default=3, deprecated=["--steps"], help="prune + fine-tune rounds")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per round")
    recipe = "default: the base network's, from the checkpoint (as tools/finetune.py)"
    p.add_argument("--batch-size", type=int, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--imgsz", type=int, default=argparse.SUPPRESS, help=recipe + "; MACs are counted at 640 then")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lr0", type=float, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--teacher", default=DEFAULT_TEACHER, type=teacher_option,
                   help="distil each round from this checkpoint; 'auto': the unpruned network, when it is there "
                        "(detection only); default: none (no teacher)")
    p.add_argument("--out", default="runs/iterative", help="folder for every round's checkpoints")
    return p


def main(args: argparse.Namespace) -> int:
    given = {train: getattr(args, opt) for opt, train in (("batch_size", "batch"), ("imgsz", "imgsz"), ("lr0", "lr0"))
             if hasattr(args, opt)}  # the rest of each round's recipe is the base network's
    try:
        target = next((f"--target-{k}" for k in ("params", "macs") if getattr(args, f"target_{k}") is not None), None)
        if target and args.prune_ratio is not None:
            raise PruningError(f"--prune-ratio {args.prune_ratio:g} and {target} both say how much to remove: give "
                               f"one ({target} searches the ratio that reaches it).")
        ratio = DEFAULT_RATIO if args.prune_ratio is None else args.prune_ratio
        config = PruneConfig(ratio=ratio, criterion=args.prune_type, imgsz=getattr(args, "imgsz", 640),
                             target_params=args.target_params, target_macs=args.target_macs)
        results = iterative_prune(args.model_path, args.data, config, args.rounds, args.out, epochs=args.epochs,
                                  device=args.device, teacher=args.teacher, **given)
    except (PruningError, CheckpointError, PrunedModelError, FinetuneError) as e:
        print(f"iterative_prune: error: {e}", file=sys.stderr)
        return 2
    print("Rounds:\n" + "\n".join(str(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
