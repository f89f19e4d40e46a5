"""End-to-end demo on the BCCD subset shipped with yolo_ext: build a custom-module model, train briefly, prune it as
tools/prune.py does by default, fine-tune briefly, print the before/after table (accuracy, size, latency).

Usage: python tools/demo.py [--model yolo11n-coordatt.yaml] [--epochs 30] [--finetune-epochs 15] [--out runs/demo-N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from yolo_ext.cli.options import ArgumentParser
from yolo_ext.demo import run_demo


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolo11n-coordatt.yaml", help="a shipped model YAML name, or a path")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=15)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--ratio", type=float, help="prune this ratio (global LAMP) instead of the default cut")
    p.add_argument("--out", help="new output folder (default: runs/demo-<timestamp>)")
    return p


def main(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    start = time.perf_counter()
    table = run_demo(out, args.model, args.epochs, args.finetune_epochs, args.imgsz, args.ratio)
    print(f"\n{table}\n\nDemo finished in {(time.perf_counter() - start) / 60:.1f} min; everything is in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
