"""Train a stock Ultralytics model (train_ori) or a yolo_ext model YAML (train_ch), or report a checkpoint's metrics.

The options and the work live in :mod:`yolo_ext.cli.commands.train`.
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.train import get_args_parser, main

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
