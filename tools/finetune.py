"""Fine-tune a pruned checkpoint: tools/finetune.py --model-path best-pruned40.pt --data data.yaml [--epochs 30]

The options and the work live in :mod:`yolo_ext.cli.commands.finetune` (shared with ``yolo-ext finetune key=value``).
"""

from __future__ import annotations

import sys

from yolo_ext.cli.commands.finetune import get_args_parser, main

__all__ = ["get_args_parser", "main"]

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
