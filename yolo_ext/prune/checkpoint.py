"""Prune an Ultralytics checkpoint file: load with clear errors, prune, validate, write a new file atomically, report.

The input file is only read. The output is written to a temporary file beside it and renamed, so an interrupted run
leaves either nothing or a complete checkpoint, and an existing file is never replaced unless asked.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.patches import torch_load

import yolo_ext
from yolo_ext.prune.engine import PruneConfig, PruneResult, prune_model
from yolo_ext.prune.errors import CheckpointError, PruningError
from yolo_ext.prune.report import LATENCY_THREADS, Row, format_table, fused_copy, interleaved_latency_ms, plot_channels


def load_detection_checkpoint(path: str | Path) -> tuple[dict, DetectionModel]:
    """Read an Ultralytics detection checkpoint (``ema`` preferred, as Ultralytics does) as an FP32 model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Pass the .pt file training wrote, "
            "e.g. runs/detect/train/weights/best.pt."
        )
    try:
        ckpt = torch_load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"{str(path)!r} is not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "Pass a .pt file written by Ultralytics (training, YOLO.save or tools/prune.py)."
        ) from e
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"{str(path)!r} is not an Ultralytics YOLO checkpoint (no 'model' or 'ema' network inside). "
            "Pass a .pt file written by Ultralytics training or YOLO.save()."
        )
    if type(model) is not DetectionModel:  # its subclasses are segmentation, pose, OBB models
        task = getattr(model, "task", None) or type(model).__name__
        raise PruningError(
            f"{str(path)!r} holds a {task} model ({type(model).__name__}); yolo_ext prunes detection models only. "
            "Classification, segmentation, pose and OBB checkpoints are not supported yet."
        )
    return ckpt, model.float()


def pruning_history(model: nn.Module) -> list[dict]:
    """Every pruning applied to ``model``, oldest first (empty for a network that was never pruned)."""
    return list(getattr(model, "yolo_ext_pruning", []))


def base_train_args(ckpt: dict, model: nn.Module) -> dict:
    """Train args of the network before its first pruning (a fine-tuned checkpoint's own args describe the
    fine-tuning, not the base training)."""
    for record in pruning_history(model):
        if record.get("base_train_args"):
            return dict(record["base_train_args"])
    return dict(ckpt.get("train_args") or {})


def written_files(output: Path) -> list[Path]:
    """The checkpoint and the report and plot written beside it."""
    return [output, output.with_suffix(".txt"), output.with_suffix(".png")]


def default_output(source: Path, config: PruneConfig) -> Path:
    """``best.pt`` -> ``best-pruned40.pt`` (``-params50`` / ``-macs50`` for targets) beside it, numbered so that
    no existing file is reused."""
    if config.target_params is not None or config.target_macs is not None:
        metric, value = ("params", config.target_params) if config.target_params is not None else ("macs", config.target_macs)
        stem = f"{source.stem}-{metric}{round(100 * value)}"
    else:
        stem = f"{source.stem}-pruned{round(100 * config.ratio)}"
    out, n = source.with_name(f"{stem}.pt"), 2
    while any(p.exists() for p in written_files(out)):
        out, n = source.with_name(f"{stem}-{n}.pt"), n + 1
    return out


def check_output(source: Path, output: Path, overwrite: bool = False) -> None:
    """The input is never written; existing outputs (checkpoint, report, plot) only with ``overwrite``."""
    if output.resolve() == source.resolve():
        raise CheckpointError(f"Refusing to overwrite the input checkpoint {str(source)!r}; choose another --output.")
    existing = [str(p) for p in written_files(output) if p.exists()]
    if existing and not overwrite:
        raise CheckpointError(f"{', '.join(existing)} already exist(s); choose another --output or pass --overwrite.")


def save_pruned(ckpt: dict, result: PruneResult, source: Path, output: Path, overwrite: bool = False) -> Path:
    """Write a loadable Ultralytics checkpoint holding the pruned model (FP32) and the pruning record, atomically."""
    check_output(source, output, overwrite)
    record = {**result.record(), "source": str(source), "date": datetime.now().isoformat(timespec="seconds")}
    # how the unpruned network was trained: the fine-tuning recipe starts from it, however often it was pruned since
    record["base_train_args"] = base_train_args(ckpt, result.model)
    # The history lives on the network, so every checkpoint holding it (fine-tuned best.pt, EMA copies) keeps it.
    result.model.yolo_ext_pruning = [*pruning_history(result.model), record]
    model = copy.deepcopy(result.model).float()
    for attr in ("criterion", "pt_path"):
        model.__dict__.pop(attr, None)  # a loss holding the old model, a path of the input: neither belongs here
    out = {
        **{k: v for k, v in ckpt.items() if k in {"train_args", "train_metrics", "date", "version", "license", "docs"}},
        "model": model,
        "ema": None,
        "optimizer": None,
        "epoch": -1,  # not resumable: fine-tune it instead
        "yolo_ext_version": yolo_ext.__version__,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        torch.save(out, tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


@dataclass
class PruneReport:
    """What ``prune_checkpoint`` wrote and measured."""

    output: Path
    text: Path
    plot: Path
    table: str
    result: PruneResult


def prune_checkpoint(
    source: str | Path,
    config: PruneConfig,
    output: str | Path | None = None,
    overwrite: bool = False,
    latency_runs: int = 10,
    gradient_fn: Callable[[nn.Module], None] | None = None,
) -> PruneReport:
    """Load ``source``, prune it with ``config``, write ``output`` plus ``<output>.txt`` report and ``<output>.png``."""
    config.check()
    source = Path(source)
    output = Path(output) if output else default_output(source, config)
    check_output(source, output, overwrite)  # before any work
    ckpt, model = load_detection_checkpoint(source)
    original = copy.deepcopy(model)
    result = prune_model(model, config, gradient_fn=gradient_fn)
    save_pruned(ckpt, result, source, output, overwrite)
    rows = [
        Row("params", result.params_before, result.params_after),
        Row(f"GFLOPs@{config.size[0]}", 2 * result.macs_before / 1e9, 2 * result.macs_after / 1e9, "{:.2f}"),
    ]
    if latency_runs > 0:
        models = [fused_copy(original), fused_copy(result.model)]
        before_ms, after_ms = interleaved_latency_ms(models, config.size, runs=latency_runs)
        rows.append(Row(f"CPU ms ({LATENCY_THREADS} thr)", before_ms, after_ms, "{:.1f}"))
    done = result.config  # the ratio a params/MACs target resolved to
    title = f"{source.name} -> {output.name}: {done.criterion}, ratio {done.ratio:.3g}" + (
        ", global" if done.global_pruning else ""
    )
    table = format_table(rows, title)
    text = output.with_suffix(".txt")
    text.write_text(table + "\n")
    plot = plot_channels(result.channels_before, result.channels_after, output.with_suffix(".png"), title)
    return PruneReport(output, text, plot, table, result)
