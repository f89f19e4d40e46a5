"""Params and GFLOPs of every shipped model YAML next to the stock Ultralytics model of the same family and scale.

Usage: python benchmarks/modules_table.py [--scale n] [--imgsz 640]
Prints a Markdown table (the README's module table comes from this script). Runs in seconds; no weights needed.
"""

from __future__ import annotations

import argparse

import harness  # noqa: I001 (first: sets YOLO_OFFLINE before Ultralytics is imported)
from ultralytics.utils.torch_utils import get_flops

import yolo_ext


def stats(cfg: str, imgsz: int) -> tuple[int, float, int]:
    """(params, GFLOPs, params of the Detect head): the head is the part pruning leaves alone."""
    model = harness.build_model(cfg)
    return harness.n_params(model), get_flops(model, imgsz), harness.n_params(model.model[-1])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n", choices=list("nsmblx"))  # b: YOLOv10 only
    parser.add_argument("--imgsz", type=int, default=640)
    return parser


def main(args: argparse.Namespace) -> None:
    rows = []
    for ours in yolo_ext.model_names(args.scale):  # YOLOv10 ships one file per scale: only this scale's
        p, g, d = stats(str(yolo_ext.model_yaml(ours)), args.imgsz)
        p0, g0, _ = stats(f"{ours.split('-')[0]}.yaml", args.imgsz)  # yolo11n-coordatt.yaml -> yolo11n.yaml
        rows.append([ours, f"{p:,}", f"{g:.2f}", f"{100 * (p / p0 - 1):+.1f}%", f"{100 * (g / g0 - 1):+.1f}%",
                     f"{d:,}"])
    print(harness.markdown_table(
        [f"model ({args.scale}, imgsz {args.imgsz})", "params", "GFLOPs", "vs stock params", "vs stock GFLOPs",
         "Detect params"], "lrrrrr", rows))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
