"""Iterative (gradual) pruning: prune a step, fine-tune briefly, repeat until the target, in one call.

Each step loads the network the trainer wrote (``best.pt``) and builds a new pruner on it: the trainer replaces the
model object during training, and a pruner kept from before would hold, and prune, the stale one.

Every input (checkpoint, data, training arguments, the output folder) is checked before the first step, so a mistake
neither costs a pruning nor leaves a ``step1-pruned.pt`` behind.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from yolo_ext.prune.checkpoint import prune_checkpoint
from yolo_ext.prune.engine import PruneConfig
from yolo_ext.prune.errors import PruningError
from yolo_ext.train.finetune import finetune
from yolo_ext.train.inputs import check_distillable, check_finetune_inputs, check_train_args


def step_ratio(total: float, steps: int) -> float:
    """Per-step fraction so that ``steps`` prunings remove ``total``: 1 - (1 - total)^(1/steps).

    It applies to a channel ratio and, since each step's params/MACs target is relative to the network it prunes,
    to those targets as well.
    """
    return 1 - (1 - total) ** (1 / steps)


def check_out_folder(out: Path) -> None:
    """``out`` must be new or empty: earlier rounds' checkpoints and runs in it are never replaced."""
    if out.exists() and not out.is_dir():
        raise PruningError(f"--out {str(out)!r} is a file; pass a folder for the rounds' checkpoints.")
    if out.is_dir() and any(out.iterdir()):
        raise PruningError(
            f"--out {str(out)!r} already holds files (an earlier run?); they are never replaced. "
            "Choose another --out, or move that folder away."
        )


def step_config(config: PruneConfig, steps: int) -> PruneConfig:
    """The config of one of ``steps`` equal steps that together do what ``config`` asks."""
    if config.target_params is not None:
        return replace(config, target_params=step_ratio(config.target_params, steps))
    if config.target_macs is not None:
        return replace(config, target_macs=step_ratio(config.target_macs, steps))
    return replace(config, ratio=step_ratio(config.ratio, steps))


def iterative_prune(
    checkpoint: str | Path, data: str | Path, config: PruneConfig, steps: int, out: str | Path, **train_args: Any
) -> list[Path]:
    """Reach ``config``'s ratio or params/MACs target in ``steps`` prune + fine-tune rounds (gradual pruning);
    returns each round's fine-tuned checkpoint. ``train_args`` go to every round's :func:`finetune`."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PruningError(f"--rounds (steps) must be a whole number >= 1, got {steps!r}: 3 prunes and fine-tunes "
                           "three times.")
    config.check()
    check_train_args(train_args)
    _, model = check_finetune_inputs(checkpoint, data, require_pruned=False)
    if train_args.get("teacher") not in (None, "auto") or train_args.get("distill_model"):
        check_distillable(model, repr(str(checkpoint)))  # before step one, not after its pruning
    out = Path(out)
    check_out_folder(out)
    current, results = Path(checkpoint), []
    for i in range(1, steps + 1):
        report = prune_checkpoint(current, step_config(config, steps), out / f"step{i}-pruned.pt", latency_runs=0)
        tuned = finetune(report.output, data, project=str(out), name=f"step{i}", **train_args)
        current = Path(tuned.trainer.best)
        results.append(current)
    return results
