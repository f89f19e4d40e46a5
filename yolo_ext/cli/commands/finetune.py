"""Fine-tune a pruned checkpoint with the Ultralytics trainer of its task, keeping the pruned architecture.

tools/finetune.py --model-path best-pruned40.pt --data data.yaml [--epochs 30] [--teacher none] [--resume last.pt]
yolo-ext finetune model=best-pruned40.pt data=data.yaml [epochs=30] [teacher=none] [resume=last.pt]

With no options it uses the recipe that won in benchmarks/accuracy.py: the base network's own optimizer, schedule,
image size and batch (from the checkpoint), for 30% of its epochs, without a teacher (``--teacher auto`` distils from
the network it was pruned from; detection only).
"""

from __future__ import annotations

import argparse
import sys

import yolo_ext  # noqa: F401  (registers yolo_ext modules so their checkpoints load)
from yolo_ext.cli.options import ArgumentParser
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.finetune import finetune, resume
from yolo_ext.train.recipe import DEFAULT_TEACHER, teacher_option


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", "--model", help="pruned checkpoint written by tools/prune.py")
    p.add_argument("--data", help="data YAML (another number of classes rebuilds the class outputs only)")
    recipe = "default: the base network's, from the checkpoint"
    p.add_argument("--epochs", type=int, default=argparse.SUPPRESS, help="default: 30%% of the base network's epochs")
    p.add_argument("--batch-size", "--batch", type=int, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--imgsz", type=int, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--device", help="cpu, 0, 0,1 (DDP), ... (default: Ultralytics' choice, the first GPU if there is "
                                    "one, else the CPU; as finetune())")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--optimizer", default=argparse.SUPPRESS, help=recipe + " (Ultralytics' 'auto' ignores --lr0)")
    p.add_argument("--lr0", type=float, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--warmup-epochs", type=float, default=argparse.SUPPRESS, help=recipe)
    p.add_argument("--teacher", default=DEFAULT_TEACHER, type=teacher_option,
                   help="checkpoint to distil from (a network the model was pruned from); 'auto': the one it was "
                        "pruned from, when that file is still there (detection only); default: none (no teacher)")
    plots = p.add_mutually_exclusive_group()
    plots.add_argument("--plots", dest="plots", action="store_true", default=True,
                       help="save Ultralytics' plots in the run folder (default)")
    plots.add_argument("--no-plots", dest="plots", action="store_false",
                       help="no plots (offline machines: Ultralytics would look for a font online)")
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
            names = {"epochs": "epochs", "batch_size": "batch", "imgsz": "imgsz", "lr0": "lr0",
                     "optimizer": "optimizer", "warmup_epochs": "warmup_epochs"}  # given; the rest: the base's recipe
            chosen = {train: getattr(args, opt) for opt, train in names.items() if hasattr(args, opt)}
            model = finetune(
                args.model_path, args.data, require_pruned=not args.allow_unpruned, teacher=args.teacher,
                device=args.device, workers=args.workers, project=args.project, name=args.name, plots=args.plots,
                **chosen,
            )
    except FinetuneError as e:
        print(f"finetune: error: {e}", file=sys.stderr)
        return 2
    print(f"Fine-tuned weights: {model.trainer.best}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
