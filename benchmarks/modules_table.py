"""Params and GFLOPs of every shipped model YAML next to the stock Ultralytics model of the same family and scale.

Usage: python benchmarks/modules_table.py [--scale n] [--imgsz 640]
Prints a Markdown table (the README's module table comes from this script). Runs in seconds; no weights needed.
"""

from __future__ import annotations

import argparse

import torch
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import get_flops

import yolo_ext
from yolo_ext.cfg_paths import scaled_name


def stats(cfg: str, imgsz: int) -> tuple[int, float, int]:
    model = DetectionModel(cfg, verbose=False)
    params = sum(p.numel() for p in model.parameters())
    detect = sum(p.numel() for p in model.model[-1].parameters())
    return params, get_flops(model, imgsz), detect


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n", choices=list("nslmx"))
    parser.add_argument("--imgsz", type=int, default=640)
    return parser


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    print(f"| model ({args.scale}, imgsz {args.imgsz}) | params | GFLOPs | vs stock params | vs stock GFLOPs | Detect params |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in yolo_ext.model_yamls():
        family = path.name.split("-")[0]
        ours = scaled_name(path.name, args.scale)
        p, g, d = stats(str(yolo_ext.model_yaml(ours)), args.imgsz)
        p0, g0, _ = stats(scaled_name(f"{family}.yaml", args.scale), args.imgsz)
        print(f"| {ours} | {p:,} | {g:.2f} | {100 * (p / p0 - 1):+.1f}% | {100 * (g / g0 - 1):+.1f}% | {d:,} |")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
