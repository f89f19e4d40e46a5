"""Iterative pruning in one command: prune a step, fine-tune briefly, repeat until the target.

tools/iterative_prune.py --model-path best.pt --data data.yaml --target-params 0.5 --rounds 3 --epochs 10
yolo-ext iterative model=best.pt data=data.yaml target_params=0.5 rounds=3 epochs=10

With no ratio and no target, the rounds together make the default cut of ``tools/prune.py``
(:mod:`yolo_ext.prune.defaults`), each round a share of it.
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (installs the integration so yolo_ext checkpoints load)
from yolo_ext.cli.options import ArgumentParser
from yolo_ext.prune import CRITERIA, CheckpointError, PrunedModelError, PruningError
from yolo_ext.prune.defaults import BY_REQUEST, DEFAULT_RATIO, default_fields
from yolo_ext.prune.engine import PruneConfig
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.iterative import iterative_prune
from yolo_ext.train.recipe import DEFAULT_TEACHER, teacher_option


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", "--model", required=True, help="trained Ultralytics detection checkpoint")
    p.add_argument("--data", required=True, help="data YAML it was trained on")
    by_request = "; ".join(f"{k.replace('_', '-')}: {v['criterion']}" for k, v in BY_REQUEST.items()
                           if k != "target_latency")
    p.add_argument("--prune-type", choices=sorted(set(CRITERIA) - {"taylor"}),
                   help=f"criterion (default by request, as tools/prune.py: {by_request})")
    p.add_argument("--prune-ratio", "--ratio", type=float,
                   help=f"total fraction of channels removed (not with --target-*); default when no target is "
                        f"given: {DEFAULT_RATIO}, as tools/prune.py")
    p.add_argument("--target-params", type=float, help="instead of a ratio: total fraction of parameters removed")
    p.add_argument("--target-macs", type=float, help="instead of a ratio: total fraction of MACs removed")
    p.add_argument("--rounds", type=int, default=3, deprecated=["--steps"], help="prune + fine-tune rounds")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per round")
    recipe = "default: the base network's, from the checkpoint (as tools/finetune.py)"
    p.add_argument("--batch-size", "--batch", type=int, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--imgsz", type=int, default=argparse.SUPPRESS,
                   help=recipe + "; MACs are counted at the size the checkpoint was trained at then")
    p.add_argument("--device", help="cpu, 0, 0,1 (DDP), ... (default: Ultralytics' choice, the first GPU if there is "
                                    "one, else the CPU)")
    p.add_argument("--lr0", type=float, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--teacher", default=DEFAULT_TEACHER, type=teacher_option,
                   help="distil each round from this checkpoint; 'auto': the unpruned network, when it is there "
                        "(detection only); default: none (no teacher)")
    p.add_argument("--out", default="runs/iterative", help="folder for every round's checkpoints")
    return p


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The PruneConfig of the whole pruning (the rounds split it); no ratio and no target: the tools' default cut."""
    target = next((f"--target-{k}" for k in ("params", "macs") if getattr(args, f"target_{k}") is not None), None)
    if target and args.prune_ratio is not None:
        raise PruningError(f"--prune-ratio {args.prune_ratio:g} and {target} both say how much to remove: give "
                           f"one ({target} searches the ratio that reaches it).")
    fields = default_fields(target_params=args.target_params, target_macs=args.target_macs)
    if args.prune_ratio is not None:
        fields["ratio"] = args.prune_ratio
    if args.prune_type:
        fields["criterion"] = args.prune_type
    return PruneConfig(**fields, imgsz=getattr(args, "imgsz", None))


def main(args: argparse.Namespace) -> int:
    given = {train: getattr(args, opt) for opt, train in (("batch_size", "batch"), ("imgsz", "imgsz"), ("lr0", "lr0"))
             if hasattr(args, opt)}  # the rest of each round's recipe is the base network's
    try:
        config = config_from_args(args)
        results = iterative_prune(args.model_path, args.data, config, args.rounds, args.out, epochs=args.epochs,
                                  device=args.device, teacher=args.teacher, **given)
    except (PruningError, CheckpointError, PrunedModelError, FinetuneError) as e:
        print(f"iterative_prune: error: {e}", file=sys.stderr)
        return 2
    print("Rounds:\n" + "\n".join(str(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
