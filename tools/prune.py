"""Prune a trained YOLO checkpoint (detect, segment, pose, obb): tools/prune.py --model-path best.pt

The options and the work live in :mod:`yolo_ext.cli.commands.prune` (shared with ``yolo-ext prune key=value``).
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.prune import config_from_args, get_args_parser, main

__all__ = ["config_from_args", "get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
