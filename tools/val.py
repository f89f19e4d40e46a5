"""Compare checkpoints in one table: box mAP50, mAP50-95, P, R (+ mask / pose mAP50-95), params, GFLOPs, latency on

The options and the work live in :mod:`yolo_ext.cli.commands.val`.
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.val import get_args_parser, main

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
