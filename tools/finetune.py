"""Fine-tune a pruned checkpoint with the Ultralytics trainer, keeping the pruned architecture.

tools/finetune.py --model-path best-pruned40.pt --data data.yaml --epochs 30 [--teacher best.pt] [--resume last.pt]
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (registers yolo_ext modules so their checkpoints load)
from yolo_ext.finetune import FinetuneError, finetune, resume
from yolo_ext.cli_options import ArgumentParser


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", help="pruned checkpoint written by tools/prune.py")
    p.add_argument("--data", help="data YAML (the data set the model was trained on)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default="cpu", help="cpu, 0, 0,1 (DDP), ...")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--optimizer", default="AdamW", help="Ultralytics optimizer ('auto' ignores --lr0)")
    p.add_argument("--lr0", type=float, default=0.001, help="fine-tuning wants a smaller start LR than training")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="short warm-up: the weights are trained already")
    p.add_argument("--teacher", help="unpruned checkpoint to distil from (Ultralytics distill_model)")
    p.add_argument("--project", default="runs/finetune")
    p.add_argument("--name", default="exp")
    p.add_argument("--resume", metavar="LAST_PT", help="continue an interrupted fine-tuning from its last.pt")
    p.add_argument("--allow-unpruned", action="store_true", help="fine-tune a checkpoint without a pruning record")
    return p


def main(args: argparse.Namespace) -> int:
    try:
        if args.resume:
            model = resume(args.resume)
        else:
            if not args.model_path or not args.data:
                raise FinetuneError("--model-path and --data are required (or --resume path/to/last.pt).")
            extra = {"distill_model": args.teacher} if args.teacher else {}
            model = finetune(
                args.model_path, args.data, require_pruned=not args.allow_unpruned, epochs=args.epochs,
                batch=args.batch_size, imgsz=args.imgsz, device=args.device, workers=args.workers, lr0=args.lr0,
                optimizer=args.optimizer, warmup_epochs=args.warmup_epochs,
                project=args.project, name=args.name, **extra,
            )
    except FinetuneError as e:
        print(f"finetune: error: {e}", file=sys.stderr)
        return 2
    print(f"Fine-tuned weights: {model.trainer.best}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
