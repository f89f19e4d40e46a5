"""``yolo-ext``: Ultralytics' ``yolo`` command with the yolo_ext modules registered, plus ``prune`` and ``finetune``.

Same syntax and modes as ``yolo`` (``yolo-ext train model=yolo11n-coordatt.yaml data=... epochs=1``). Additions: a
``model=`` naming a YAML shipped with yolo_ext is resolved to its packaged path; ``train`` on a pruned checkpoint keeps
the pruned network (:mod:`yolo_ext.keep_pruned`); and yolo_ext's own errors (a bad model YAML, a checkpoint that
cannot be fine-tuned) are printed as one message with exit code 2 instead of a traceback.

Two modes are yolo_ext's own, in the same ``key=value`` style: ``yolo-ext prune model=best.pt ratio=0.4`` and
``yolo-ext finetune model=best-pruned40.pt data=data.yaml epochs=10``. They are ``tools/prune.py`` and
``tools/finetune.py`` under another syntax: the same parser (:mod:`yolo_ext.commands`), so the keys are the options'
names (``prune_type=`` or ``prune-type=``), and the same ``main``. ``yolo-ext prune help`` lists the keys.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import yolo_ext  # noqa: F401  (registers the modules before Ultralytics parses anything)
from yolo_ext.cfg_paths import model_yaml
from yolo_ext.cli_options import OptionError, describe_keys, parse_key_values
from yolo_ext.registry import ModelYAMLError


@dataclass(frozen=True)
class Mode:
    """A yolo_ext mode: the module holding its ``get_args_parser`` / ``main``, and keys needed beyond the parser's."""

    module: str
    example: str
    required: tuple[str, ...] = ()
    unless: str | None = None


#: mode name -> Mode. Ultralytics has no modes of these names; everything else goes to its entrypoint.
MODES = {
    "prune": Mode("yolo_ext.commands.prune", "yolo-ext prune model=best.pt ratio=0.4"),
    "finetune": Mode("yolo_ext.commands.finetune", "yolo-ext finetune model=best-pruned40.pt data=data.yaml epochs=10",
                     required=("model_path", "data"), unless="resume"),
}


def run_mode(name: str, tokens: list[str]) -> int:
    """Run yolo_ext mode ``name`` on its ``key=value`` tokens; the exit code (2: refused, nothing written)."""
    mode = MODES[name]
    module = importlib.import_module(mode.module)
    parser = module.get_args_parser()
    parser.prog = f"yolo-ext {name}"
    try:
        args = parse_key_values(parser, tokens, mode.required, mode.unless)
    except OptionError as e:
        print(f"yolo-ext {name}: error: {e}", file=sys.stderr)
        return 2
    if args is None:
        print(describe_keys(parser, f"usage: {mode.example}"))
        return 0
    return module.main(args)


def _resolve_model_arg(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if key != "model" or not sep or not value.endswith((".yaml", ".yml")):
        return arg
    try:
        return f"model={model_yaml(value)}"
    except FileNotFoundError:
        return arg  # let Ultralytics report it with its own search rules


def main(argv: list[str] | None = None) -> None:
    """Run ``argv`` (default ``sys.argv``): a yolo_ext mode, or Ultralytics' CLI entrypoint with yolo_ext registered."""
    from ultralytics import cfg

    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in MODES:
        sys.exit(run_mode(argv[1], argv[2:]))
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
