"""``yolo-ext``: Ultralytics' ``yolo`` command with the yolo_ext modules registered.

Same syntax and modes as ``yolo`` (``yolo-ext train model=yolo11n-coordatt.yaml data=... epochs=1``). Additions: a
``model=`` naming a YAML shipped with yolo_ext is resolved to its packaged path; ``train`` on a pruned checkpoint keeps
the pruned network (:mod:`yolo_ext.keep_pruned`); and yolo_ext's own errors (a bad model YAML, a pruned head that
cannot take the data's classes) are printed as one message with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

import yolo_ext  # noqa: F401  (registers the modules before Ultralytics parses anything)
from yolo_ext.cfg_paths import model_yaml
from yolo_ext.registry import ModelYAMLError


def _resolve_model_arg(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if key != "model" or not sep or not value.endswith((".yaml", ".yml")):
        return arg
    try:
        return f"model={model_yaml(value)}"
    except FileNotFoundError:
        return arg  # let Ultralytics report it with its own search rules


def main(argv: list[str] | None = None) -> None:
    """Run Ultralytics' CLI entrypoint on ``argv`` (default ``sys.argv``) with yolo_ext registered."""
    from ultralytics import cfg

    argv = list(sys.argv if argv is None else argv)
    # Ultralytics reads the argv it captured at import time; hand it ours instead of a space-joined debug string.
    # Put back what was there afterwards: main() may be called in-process (tests, notebooks).
    from yolo_ext.finetune import FinetuneError
    from yolo_ext.prune.errors import CheckpointError, PruningError

    previous, cfg.ARGV = cfg.ARGV, [argv[0] if argv else "yolo-ext", *map(_resolve_model_arg, argv[1:])]
    try:
        cfg.entrypoint()
    except (ModelYAMLError, FinetuneError, CheckpointError, PruningError) as e:
        print(f"yolo-ext: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        cfg.ARGV = previous


if __name__ == "__main__":
    main()
