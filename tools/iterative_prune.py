"""Iterative pruning in one command: prune a step, fine-tune briefly, repeat until the target.

The options and the work live in :mod:`yolo_ext.cli.commands.iterative`.
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.iterative import get_args_parser, main

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
