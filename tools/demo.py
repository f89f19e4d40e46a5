"""End-to-end demo on the BCCD subset shipped with yolo_ext: build a custom-module model, train briefly, report.

Usage: python tools/demo.py [--model yolo11n-coordatt.yaml] [--epochs 5] [--imgsz 320] [--project runs/demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yolo_ext
from ultralytics import YOLO

DEMO_DATA = Path(yolo_ext.__file__).parent / "data" / "bccd_demo" / "data.yaml"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo11n-coordatt.yaml", help="a cfg/models YAML name or path")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--project", default="runs/demo", help="output folder; each run gets a new subfolder")
    return parser


def main(args: argparse.Namespace) -> None:
    model = YOLO(yolo_ext.model_yaml(args.model))
    common = dict(data=str(DEMO_DATA), imgsz=args.imgsz, batch=args.batch, device="cpu", workers=0, plots=False)
    model.train(epochs=args.epochs, project=str(Path(args.project).resolve()), name="train", **common)
    metrics = model.val(**common, verbose=False)
    params = sum(p.numel() for p in model.model.parameters())
    print(f"\n{args.model}: params {params:,}  mAP50 {metrics.box.map50:.3f}  mAP50-95 {metrics.box.map:.3f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
