"""End-to-end demo on the BCCD subset shipped with yolo_ext: build, train, prune, fine-tune, compare.

The options and the work live in :mod:`yolo_ext.cli.commands.demo`.
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.demo import get_args_parser, main

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
