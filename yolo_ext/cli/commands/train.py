"""Train a stock Ultralytics model (train_ori) or a yolo_ext model YAML (train_ch), or report a checkpoint's metrics.

tools/train.py train_ch --yaml yolo11n-coordatt.yaml --data data.yaml --epochs 100
tools/train.py train_ori --yaml yolo11n.yaml --data data.yaml
tools/train.py val --model-path runs/train/exp/weights/best.pt --data data.yaml

The options are spelled as in the other tools (``--data``, ``--epochs``, ``--batch-size``); the old names
(``--data-path``, ``--epoch``, ``--yaml-path``) still work, with a note. There is no ``yolo-ext train`` mode of ours:
``yolo-ext train`` is Ultralytics' own training, with the yolo_ext modules and the keep-pruned hooks installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ultralytics import YOLO

import yolo_ext
from yolo_ext import checks
from yolo_ext.cli.options import ArgumentParser
from yolo_ext.train.sparse import sparse_trainer


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["train_ori", "train_ch", "val"])
    p.add_argument("--yaml", deprecated=["--yaml-path"],
                   help="model YAML: an Ultralytics name (train_ori) or a shipped yolo_ext name or path (train_ch)")
    p.add_argument("--model-path", "--model", help="checkpoint for val, or initial weights for training")
    p.add_argument("--data", deprecated=["--data-path"], required=True, help="data YAML")
    p.add_argument("--epochs", type=int, default=100, deprecated=["--epoch"])
    p.add_argument("--batch-size", "--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", help="cpu, 0, 0,1 (DDP), ... (default: Ultralytics' choice, the first GPU if there is "
                                    "one, else the CPU)")
    p.add_argument("--project", default="runs/train", help="run folders go to project/name, relative to the current "
                   "folder (Ultralytics would put a relative one under its global runs/ folder)")
    p.add_argument("--name", default="exp")
    p.add_argument("--bn-l1", type=float, help="sparse training for network slimming: L1 penalty on BN scales "
                   "(e.g. 1e-4); prune afterwards with tools/prune.py --prune-type bn")
    return p


def main(args: argparse.Namespace) -> int:
    if not Path(args.data).is_file():
        print(f"train: error: data YAML {args.data!r} not found.", file=sys.stderr)
        return 2
    common = dict(data=args.data, imgsz=args.imgsz, batch=args.batch_size, device=args.device, workers=args.workers)
    try:
        checks.check_imgsz(args.imgsz)
        checks.check_positive_int(args.batch_size, "--batch-size")
        checks.check_positive_int(args.epochs, "--epochs")
        checks.check_device(args.device)
        if args.mode != "val":
            checks.check_folder(args.project, "--project")
        yolo_ext.checkpointing_enabled()
        if args.mode == "val":
            if not args.model_path or not Path(args.model_path).is_file():
                raise ValueError(f"val needs an existing --model-path, got {args.model_path!r}.")
            with tempfile.TemporaryDirectory(prefix="yolo_ext-val-") as scratch:  # Ultralytics' empty run folder
                box = YOLO(args.model_path).val(**common, plots=False, project=scratch).box
            print(f"mAP50 {box.map50:.4f}  mAP50-95 {box.map:.4f}  P {box.mp:.4f}  R {box.mr:.4f}")
            return 0
        if not args.yaml:
            raise ValueError(f"{args.mode} needs --yaml.")
        cfg = str(yolo_ext.model_yaml(args.yaml)) if args.mode == "train_ch" else args.yaml
        model = YOLO(cfg)
        if args.model_path:
            model.load(args.model_path)
        extra = {"trainer": sparse_trainer(args.bn_l1, keep_given_model=False)} if args.bn_l1 else {}
        model.train(**common, epochs=args.epochs, project=str(Path(args.project).resolve()),
                    name=args.name, **extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
