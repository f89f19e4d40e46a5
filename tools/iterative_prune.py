"""Iterative pruning in one command: prune a step, fine-tune briefly, repeat until the target ratio.

tools/iterative_prune.py --model-path best.pt --data data.yaml --prune-ratio 0.6 --rounds 3 --epochs 10
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (registers yolo_ext modules so their checkpoints load)
from yolo_ext.finetune import FinetuneError
from yolo_ext.iterative import iterative_prune
from yolo_ext.prune import CRITERIA, CheckpointError, PruneConfig, PrunedModelError, PruningError
from yolo_ext.cli_options import ArgumentParser


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", required=True, help="trained Ultralytics detection checkpoint")
    p.add_argument("--data", required=True, help="data YAML it was trained on")
    p.add_argument("--prune-type", default="l1", choices=sorted(set(CRITERIA) - {"taylor"}))
    p.add_argument("--prune-ratio", type=float, default=0.4, help="total fraction of channels removed")
    p.add_argument("--rounds", type=int, default=3, deprecated=["--steps"], help="prune + fine-tune rounds")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per round")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lr0", type=float, default=0.001, help="AdamW start LR of each fine-tuning round")
    p.add_argument("--out", default="runs/iterative", help="folder for every round's checkpoints")
    return p


def main(args: argparse.Namespace) -> int:
    config = PruneConfig(ratio=args.prune_ratio, criterion=args.prune_type, imgsz=args.imgsz)
    try:
        results = iterative_prune(args.model_path, args.data, config, args.rounds, args.out, epochs=args.epochs,
                                  batch=args.batch_size, imgsz=args.imgsz, device=args.device, lr0=args.lr0,
                                  optimizer="AdamW", warmup_epochs=1)
    except (PruningError, CheckpointError, PrunedModelError, FinetuneError) as e:
        print(f"iterative_prune: error: {e}", file=sys.stderr)
        return 2
    print("Rounds:\n" + "\n".join(str(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
