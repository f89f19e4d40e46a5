"""``yolo-ext``: Ultralytics' ``yolo`` command with the yolo_ext integration installed, plus modes of its own.

Same syntax and modes as ``yolo`` (``yolo-ext train model=yolo11n-coordatt.yaml data=... epochs=1``). Additions: a
``model=`` naming a YAML shipped with yolo_ext is resolved to its packaged path; ``train`` on a pruned checkpoint keeps
the pruned network (:mod:`yolo_ext.train.keep_pruned`); and yolo_ext's own errors (a bad model YAML, a checkpoint that
cannot be fine-tuned) are printed as one message with exit code 2 instead of a traceback.

Four modes are yolo_ext's own, in the same ``key=value`` style: ``yolo-ext prune model=best.pt ratio=0.4``,
``yolo-ext finetune model=best-pruned40.pt data=data.yaml epochs=10``, ``yolo-ext iterative model=best.pt
data=data.yaml target_params=0.5`` and ``yolo-ext compare data=data.yaml checkpoints=[best.pt,best-pruned40.pt]``.
They are ``tools/prune.py``, ``tools/finetune.py``, ``tools/iterative_prune.py`` and ``tools/val.py`` under another
syntax: the same parser (:mod:`yolo_ext.cli.commands`), so the keys are the options' names (``prune_type=`` or
``prune-type=``), and the same ``main``. ``yolo-ext prune help`` lists the keys. ``yolo-ext train`` and ``yolo-ext
val`` stay Ultralytics' training and validation.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
import sys
from dataclasses import dataclass

from ultralytics.utils import LOGGER

import yolo_ext  # noqa: F401  (installs the integration before Ultralytics parses anything)
from yolo_ext.cfg import ScaleLetterNeeded, model_yaml
from yolo_ext.cli.options import OptionError, describe_keys, parse_key_values
from yolo_ext.integration import ModelYAMLError
from yolo_ext.train.grad_checkpoint import checkpointing_enabled


@dataclass(frozen=True)
class Mode:
    """A yolo_ext mode: the module holding its ``get_args_parser`` / ``main``, and keys needed beyond the parser's."""

    module: str
    example: str
    required: tuple[str, ...] = ()
    unless: str | None = None


#: mode name -> Mode. Ultralytics has no modes of these names; everything else goes to its entrypoint.
MODES = {
    "prune": Mode("yolo_ext.cli.commands.prune", "yolo-ext prune model=best.pt ratio=0.4"),
    "finetune": Mode("yolo_ext.cli.commands.finetune",
                     "yolo-ext finetune model=best-pruned40.pt data=data.yaml epochs=10",
                     required=("model_path", "data"), unless="resume"),
    "iterative": Mode("yolo_ext.cli.commands.iterative",
                      "yolo-ext iterative model=best.pt data=data.yaml target_params=0.5 rounds=3"),
    # tools/val.py; not "val", which stays Ultralytics' validation of one model (yolo-ext val model=best.pt data=...)
    "compare": Mode("yolo_ext.cli.commands.val", "yolo-ext compare data=data.yaml checkpoints=[a.pt,b.pt]"),
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


class UsageError(ValueError):
    """A ``yolo-ext`` command line that cannot run; printed as one line with exit code 2."""


def _resolve_model_arg(arg: str) -> str:
    """``model=<shipped YAML name>`` -> its packaged path; Ultralytics' own YAML names are left to Ultralytics."""
    key, sep, value = arg.partition("=")
    if key != "model" or not sep or not value.endswith((".yaml", ".yml")):
        return arg
    try:
        return f"model={model_yaml(value)}"
    except ScaleLetterNeeded as e:  # yolov10-coordatt.yaml: name the per-scale files
        raise UsageError(str(e)) from None
    except FileNotFoundError as e:
        from ultralytics.nn import tasks

        try:
            tasks.yaml_model_load(value)  # one of Ultralytics' YAMLs (yolo11n.yaml): it finds them by name
        except FileNotFoundError:
            raise UsageError(f"{e} Ultralytics' own YAMLs (yolo11n.yaml, yolov8s.yaml, ...) work too.") from None
        return arg


#: Words Ultralytics' CLI takes without '=' besides tasks, modes and boolean keys (ultralytics.cfg.entrypoint's
#: ``special``, with the singular, first-letter and dashed forms it also accepts).
_SPECIAL = {"help", "checks", "version", "settings", "cfg", "login", "logout", "copy-cfg", "solutions"}
_SPECIAL |= {k[0] for k in _SPECIAL} | {k[:-1] for k in _SPECIAL if k.endswith("s")}
_SPECIAL |= {f"-{k}" for k in _SPECIAL} | {f"--{k}" for k in _SPECIAL}


def _check_words(words: list[str]) -> None:
    """A bare word that is no mode, task or Ultralytics command is a typo: suggest the nearest (prune for 'prun')."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, TASKS
    from ultralytics.cfg import MODES as UL_MODES

    for word in words:
        bare = word[2:] if word.startswith("--") else word  # Ultralytics drops leading dashes and a trailing comma
        bare = bare[:-1] if bare.endswith(",") else bare
        if bare.lower() in _SPECIAL or word.lower() in _SPECIAL:
            return  # Ultralytics runs it and reads the words after it itself (settings reset, solutions inference)
        if bare in {*UL_MODES, *TASKS, *MODES, *DEFAULT_CFG_DICT, "half", "int8", "end2end", "nms"}:
            continue
        close = difflib.get_close_matches(bare.lower(), [*MODES, *UL_MODES, *TASKS], n=1, cutoff=0.6)
        maybe = f" Did you mean {close[0]}?" if close else ""
        raise UsageError(f"{word!r} is not a yolo-ext mode, task or key=value argument.{maybe} Modes: "
                         f"{', '.join(UL_MODES)} (Ultralytics), {', '.join(MODES)} (yolo_ext); yolo-ext help lists "
                         "them.")


def _print_help() -> None:
    """yolo_ext's modes, printed before Ultralytics' help."""
    print("yolo-ext: Ultralytics' yolo command with the yolo_ext modules registered, plus modes of its own:\n"
          + "".join(f"  yolo-ext {name:<9} {mode.example[len('yolo-ext ' + name) + 1:]:<55} "
                    f"(yolo-ext {name} help: every key)\n" for name, mode in MODES.items())
          + "Everything else is Ultralytics':", flush=True)


def _first_paragraph(error: BaseException) -> str:
    """Ultralytics' SyntaxError message without the CLI help it appends and without colour codes, on one line."""
    from ultralytics.cfg import CLI_HELP_MSG

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error).replace(CLI_HELP_MSG, ""))
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> None:
    """Run ``argv`` (default ``sys.argv``): a yolo_ext mode, or Ultralytics' CLI entrypoint with yolo_ext registered."""
    from ultralytics import cfg

    argv = list(sys.argv if argv is None else argv)
    try:
        checkpointing_enabled()  # YOLO_EXT_CHECKPOINT is read at the first batch; a bad value is refused at start
    except ValueError as e:
        print(f"yolo-ext: error: {e}", file=sys.stderr)
        sys.exit(2)
    if len(argv) > 1 and argv[1] in MODES:
        sys.exit(run_mode(argv[1], argv[2:]))
    words = [a for a in cfg.merge_equals_args(argv[1:]) if "=" not in a]
    help_asked = not argv[1:] or any(w.lstrip("-").lower() in {"help", "h"} for w in words)
    if help_asked:
        _print_help()
    try:
        _check_words(words)
        ultralytics_argv = [argv[0] if argv else "yolo-ext", *map(_resolve_model_arg, argv[1:])]
    except UsageError as e:
        print(f"yolo-ext: error: {e}", file=sys.stderr)
        sys.exit(2)
    # Ultralytics reads the argv it captured at import time; hand it ours instead of a space-joined debug string.
    # Put back what was there afterwards: main() may be called in-process (tests, notebooks).
    from yolo_ext.prune.errors import CheckpointError, PruningError
    from yolo_ext.train.errors import FinetuneError

    previous, cfg.ARGV = cfg.ARGV, ultralytics_argv
    quiet = None if help_asked else _DropHelp(cfg.CLI_HELP_MSG)  # it logs its whole help before a SyntaxError
    if quiet is not None:
        LOGGER.addFilter(quiet)
    try:
        cfg.entrypoint()
    except (ModelYAMLError, FinetuneError, CheckpointError, PruningError, FileNotFoundError) as e:
        print(f"yolo-ext: error: {e}", file=sys.stderr)
        sys.exit(2)
    except SyntaxError as e:  # Ultralytics' "'x' is not a valid YOLO argument", followed by its whole help
        print(f"yolo-ext: error: {_first_paragraph(e)} (yolo-ext help lists the modes and keys)", file=sys.stderr)
        sys.exit(2)
    finally:
        cfg.ARGV = previous
        if quiet is not None:
            LOGGER.removeFilter(quiet)


class _DropHelp(logging.Filter):
    """Drops Ultralytics' CLI help from its log: the one-line error names the mistake, ``yolo-ext help`` the rest."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.text


if __name__ == "__main__":
    main()
