"""Prune an Ultralytics checkpoint file: load with clear errors, prune, validate, write a new file atomically, report.

The input file is only read. Every output (checkpoint, report, plot) is written to a temporary file beside it and
moved into place in one step (:mod:`yolo_ext.io.atomic`), so an interrupted run leaves either nothing or a complete file
under each final name, and an existing file is never replaced unless asked. Everything that can be checked about the
output (its name, folder, writability) is checked before any pruning work.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel

from yolo_ext._version import __version__
from yolo_ext.io.atomic import folder_lock, publish, remove_stale_temps, temp_path, writing
from yolo_ext.io.checkpoints import read_checkpoint
from yolo_ext.latency import BACKENDS, DEFAULT_BACKEND, LatencyError, measure_latency
from yolo_ext.prune.budget import resolve_backend
from yolo_ext.prune.engine import PruneConfig, PruneResult, protected_layers, prune_model
from yolo_ext.prune.errors import CheckpointError, PruningError
from yolo_ext.prune.heads import check_supported_model
from yolo_ext.prune.record import append, base_train_args
from yolo_ext.prune.report import Row, format_table, latency_lines, plot_channels


def check_checkpoint_path(path: str | Path) -> Path:
    """``path`` is an existing file (a folder gets the names of the checkpoints inside it)."""
    path = Path(path)
    if path.is_dir():
        found = [*sorted(path.glob("*.pt")), *sorted(path.glob("weights/*.pt"))][:2]
        hint = f", e.g. {' or '.join(repr(str(p)) for p in found)}" if found else ""
        raise CheckpointError(f"{str(path)!r} is a folder, not a checkpoint. Pass the .pt file itself{hint}.")
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Pass the .pt file training wrote, "
            "e.g. runs/detect/train/weights/best.pt."
        )
    return path


def unreadable(path: str | Path, e: Exception) -> CheckpointError:
    """The error for a file the loader could not read."""
    return CheckpointError(
        f"{str(path)!r} is not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
        "Pass a .pt file written by Ultralytics (training, YOLO.save or tools/prune.py)."
    )


def prunable_network(ckpt: object, path: str | Path, purpose: str = "yolo_ext prunes") -> DetectionModel:
    """The network of a loaded checkpoint (``ema`` preferred, as Ultralytics does), if it is a model yolo_ext prunes
    (a distillation run's: its student); refused otherwise with "<purpose> these models only: ..."."""
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"{str(path)!r} is not an Ultralytics YOLO checkpoint (no 'model' or 'ema' network inside). "
            "Pass a .pt file written by Ultralytics training or YOLO.save()."
        )
    if isinstance(model, DistillationModel):  # last.pt of a distillation run: the network is its student
        model = model.student_model
    check_supported_model(model, purpose, source=str(path))
    return model


def load_prunable_checkpoint(path: str | Path, purpose: str = "yolo_ext prunes") -> tuple[dict, DetectionModel]:
    """Read an Ultralytics checkpoint of a model yolo_ext prunes (``ema`` preferred, as Ultralytics does) as FP32.

    Every task of :data:`yolo_ext.prune.heads.HEADS` is accepted (detect, segment, pose, obb: all ``DetectionModel``
    subclasses); anything else is refused with a message whose second half is "<purpose> these models only: ...".
    The file is read as Ultralytics reads it (:func:`yolo_ext.io.checkpoints.read_checkpoint`: restricted under
    ``ULTRALYTICS_SAFE_LOAD=1``).
    """
    path = check_checkpoint_path(path)
    try:
        ckpt = read_checkpoint(path)
    except Exception as e:
        raise unreadable(path, e) from e
    return ckpt, prunable_network(ckpt, path, purpose).float()


def network_digest(model: nn.Module) -> str:
    """SHA-256 of a network's tensors (names, shapes and FP32 values of every weight and buffer).

    The pruning record keeps the digest of the network each pruning started from (``source_sha256``), so a teacher
    can be checked to be that network, wherever its file is now and however it was re-saved.
    """
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def written_files(output: Path) -> list[Path]:
    """The checkpoint and the report and plot written beside it."""
    return [output, output.with_suffix(".txt"), output.with_suffix(".png")]


def output_candidates(source: Path, config: PruneConfig) -> Iterator[Path]:
    """``best.pt`` -> ``best-pruned40.pt``, ``best-pruned40-2.pt``, ... (``-params50`` / ``-macs45`` /
    ``-latency40`` for targets)."""
    targets = [(m, getattr(config, f"target_{m}")) for m in ("params", "macs", "latency")]
    targets = [(m, v) for m, v in targets if v is not None]
    if targets:
        metric, value = targets[0]
        stem = f"{source.stem}-{metric}{round(100 * value)}"
    else:
        stem = f"{source.stem}-pruned{round(100 * config.ratio)}"
    yield source.with_name(f"{stem}.pt")
    n = 2
    while True:
        yield source.with_name(f"{stem}-{n}.pt")
        n += 1


def _free(output: Path) -> bool:
    return not any(p.exists() or p.is_symlink() for p in written_files(output))


def default_output(source: Path, config: PruneConfig) -> Path:
    """The first of :func:`output_candidates` with none of its files (checkpoint, report, plot) existing."""
    return next(out for out in output_candidates(source, config) if _free(out))


def check_writable(folder: Path) -> None:
    """``folder`` exists and takes new files, or can be created: checked with a probe that is removed at once."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CheckpointError(f"Cannot create the folder {str(folder)!r}: {str(existing)!r} is a file. "
                              "Choose another --output.")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise CheckpointError(f"Cannot create the folder {str(folder)!r}: {str(existing)!r} is not writable. "
                                  "Choose another --output.")
        return
    probe = temp_path(folder / ".write-probe")
    try:
        probe.touch(exist_ok=False)
    except OSError as e:
        raise CheckpointError(f"Cannot write to the folder {str(folder)!r} ({e.strerror or e}). "
                              "Choose another --output.") from e
    probe.unlink(missing_ok=True)


def check_output(source: Path, output: Path, overwrite: bool = False) -> None:
    """Before any work: the input is never written, the checkpoint's name cannot be taken by its own report or plot,
    the folder takes files, and existing outputs (checkpoint, report, plot) are replaced only with ``overwrite``."""
    if output.resolve() == source.resolve():
        raise CheckpointError(f"Refusing to overwrite the input checkpoint {str(source)!r}; choose another --output.")
    if output.suffix.lower() in {".txt", ".png"}:
        raise CheckpointError(
            f"--output {str(output)!r} ends in {output.suffix}: the report ({output.with_suffix('.txt').name}) and "
            "plot "
            f"({output.with_suffix('.png').name}) written beside the checkpoint would replace it. "
            f"Name the checkpoint .pt, e.g. {str(output.with_suffix('.pt'))!r}."
        )
    folders = [str(p) for p in written_files(output) if p.is_dir()]
    if folders:
        raise CheckpointError(
            f"--output {str(output)!r}: {', '.join(folders)} is a folder. Pass a file name, e.g. "
            f"{str(output / 'pruned.pt') if output.is_dir() else str(output.with_name(output.stem + '-pruned.pt'))!r}."
        )
    existing = [str(p) for p in written_files(output) if p.exists()]
    if existing and not overwrite:
        raise CheckpointError(f"{', '.join(existing)} already exist(s); choose another --output or pass --overwrite.")
    check_writable(output.parent)


def save_pruned(
    ckpt: dict, result: PruneResult, source: Path, output: Path, overwrite: bool = False,
    candidates: Iterator[Path] | None = None, source_sha256: str | None = None,
) -> Path:
    """Write a loadable Ultralytics checkpoint holding the pruned model (FP32) and the pruning record, atomically.

    Without ``overwrite`` an existing file is never replaced. If ``output`` appears meanwhile (a concurrent run with
    the same default name), the next free name from ``candidates`` is taken; without candidates that is an error.
    ``source_sha256`` is the :func:`network_digest` of the network before pruning; the record keeps it as the
    source's identity (what ``--teacher auto`` checks). Without it, the source file is read again to compute it.
    Returns the name written.
    """
    if candidates is not None and not _free(output):
        output = next(c for c in candidates if _free(c))  # another run took this default name while we pruned
    check_output(source, output, overwrite)
    if source_sha256 is None:
        source_sha256 = network_digest(load_prunable_checkpoint(source)[1])
    record = replace(
        result.record(), source=str(source.resolve()), source_sha256=source_sha256,
        date=datetime.now().isoformat(timespec="seconds"),
        # how the unpruned network was trained: the fine-tuning recipe starts from it, however often it was pruned
        base_train_args=base_train_args(ckpt, result.model),
    )
    # The history lives on the network, so every checkpoint holding it (fine-tuned best.pt, EMA copies) keeps it.
    append(result.model, record)
    model = copy.deepcopy(result.model).float()
    for attr in ("criterion", "pt_path"):
        model.__dict__.pop(attr, None)  # a loss holding the old model, a path of the input: neither belongs here
    # Ultralytics takes a loaded network's task from this attribute, else guesses it from train args (default
    # "detect"): say it, so that a segmentation, pose or OBB result never loads as a detector
    model.task = check_supported_model(model).task
    out = {
        **{k: v for k, v in ckpt.items() if k in {"train_args", "train_metrics", "date", "version", "license", "docs"}},
        "model": model,
        "ema": None,
        "optimizer": None,
        "epoch": -1,  # not resumable: fine-tune it instead
        "yolo_ext_version": __version__,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output.parent)
    tmp = temp_path(output)
    try:
        torch.save(out, tmp)
        while True:
            try:
                publish(tmp, output, overwrite)
                break
            except FileExistsError:
                if candidates is None:
                    raise CheckpointError(
                        f"{str(output)!r} was created by another program while pruning; it was left as it is and "
                        "nothing was written. Run again with another --output."
                    ) from None
                output = next(c for c in candidates if _free(c))  # another run took this default name first
    finally:
        tmp.unlink(missing_ok=True)
    return output


@dataclass
class PruneReport:
    """What ``prune_checkpoint`` wrote and measured; ``notes`` say where the result differs from the request."""

    output: Path
    text: Path
    plot: Path
    table: str
    result: PruneResult
    notes: list[str] = field(default_factory=list)


def prunable_channels(result: PruneResult) -> tuple[int, int]:
    """Output channels (before, after) summed over the convs pruning may change (not Detect outputs, DFL, --protect)."""
    fixed = {
        id(m) for layer in protected_layers(result.model, result.config.protect) for m in layer.modules()
    }
    names = [n for n, m in result.model.named_modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in fixed]
    return sum(result.channels_before[n] for n in names), sum(result.channels_after[n] for n in names)


def check_removed(requested: PruneConfig, result: PruneResult) -> list[str]:
    """Refuse a request that removed nothing (a ratio of 0 excepted); return notes when the removal differs from
    the request, so an odd option combination never passes silently."""
    before, after = prunable_channels(result)
    removed = 1 - after / before if before else 0.0
    params = 1 - result.params_after / result.params_before
    summary = (f"removed {removed:.1%} of the prunable conv channels ({before:,} -> {after:,}), {params:.1%} of the "
               f"params, {1 - result.macs_after / result.macs_before:.1%} of the MACs")
    targeted = any(getattr(requested, f"target_{m}") is not None for m in ("params", "macs", "latency"))
    if result.params_after >= result.params_before and (targeted or requested.ratio > 0):
        asked = "the target" if targeted else f"ratio {requested.ratio:g}"
        limits, advice = [f"max_layer_ratio {requested.max_layer_ratio:g}"], []
        if requested.round_to:
            limits.append(f"--round-to {requested.round_to} (wider than the layers it applies to)")
            advice.append("a smaller --round-to such as 8")
        if requested.protect:
            limits.append(f"--protect {' '.join(requested.protect)}")
            advice.append("fewer --protect modules")
        if not targeted and requested.ratio < 0.4:
            advice.append("a larger ratio such as 0.4")
        if not advice:
            advice.append("a larger --max-layer-ratio")
        raise PruningError(
            f"Nothing was pruned: {asked} {summary}, so nothing was written. Torch-Pruning skips every layer group "
            f"it cannot prune as asked within {' and '.join(limits)}. Try {' and '.join(advice)}."
        )
    if targeted or requested.ratio == 0:
        return []
    if abs(removed - requested.ratio) > max(0.005, 0.1 * requested.ratio):
        return [f"asked for ratio {requested.ratio:g} of the channels, {summary}."]
    return []


def checkpoint_imgsz(ckpt: dict, default: int = 640) -> int:
    """The input size the checkpoint was trained at (its train args), else ``default``."""
    size = (ckpt.get("train_args") or {}).get("imgsz")
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 32 and size % 32 == 0 else default


def prune_checkpoint(
    source: str | Path,
    config: PruneConfig,
    output: str | Path | None = None,
    overwrite: bool = False,
    latency_runs: int = 20,
    gradient_fn: Callable[[nn.Module], None] | None = None,
) -> PruneReport:
    """Load ``source``, prune it with ``config``, write ``output`` plus ``<output>.txt`` report and ``<output>.png``.

    With no ``output``, the first free ``<source>-pruned<ratio>.pt`` beside the input is used; a run that finds its
    name taken at the end (a concurrent run) takes the next free one. Nothing is written when the request removes no
    channel (unless the ratio is 0) or when any check fails. ``config.imgsz`` None is the size the checkpoint was
    trained at. With ``latency_runs`` the original and the pruned network are timed side by side on
    ``config.backend`` for the report.
    """
    config.check()
    source = Path(source)
    candidates = None if output else output_candidates(source, config)
    output = Path(output) if output else default_output(source, config)
    check_output(source, output, overwrite)  # before any work
    backend = resolve_backend(config.backend) if latency_runs > 0 or config.target_latency is not None else None
    ckpt, model = load_prunable_checkpoint(source)
    if config.imgsz is None:
        config = replace(config, imgsz=checkpoint_imgsz(ckpt))
    digest = network_digest(model)  # the source's identity, for the record
    original = copy.deepcopy(model)
    result = prune_model(model, config, gradient_fn=gradient_fn)
    notes = check_removed(config, result)
    if backend is not None and config.backend is None and backend.name != DEFAULT_BACKEND:
        notes.append(f"{DEFAULT_BACKEND} is not available here ({BACKENDS[DEFAULT_BACKEND].unavailable()}): latency "
                     f"was measured with {backend.name}. {BACKENDS[DEFAULT_BACKEND].install}")
    channels = prunable_channels(result)
    size = result.config.size
    rows = [
        Row("params", result.params_before, result.params_after),
        Row("conv channels", *channels),
        Row(f"GFLOPs@{size[0]}", 2 * result.macs_before / 1e9, 2 * result.macs_after / 1e9, "{:.2f}"),
    ]
    extra: list[str] = []
    if latency_runs > 0:
        try:
            latency = measure_latency([original, result.model], backend, result.config.deployment, runs=latency_runs)
        except LatencyError as e:
            raise PruningError(str(e)) from None
        rows.append(Row(f"{backend.name} ms", latency.ms[0], latency.ms[1], "{:.1f}"))
        extra = latency_lines(latency, result.macs_before / result.macs_after, result.config, result.latency)
    done = result.config  # the ratio a params/MACs target resolved to
    task = check_supported_model(result.model).task
    output.parent.mkdir(parents=True, exist_ok=True)
    # The checkpoint, its report and its plot are one set: runs writing the same names (--overwrite) take turns, so
    # the three files always come from one run.
    with folder_lock(output.parent):
        output = save_pruned(ckpt, result, source, output, overwrite, candidates, digest)
        title = f"{source.name} -> {output.name} ({task}): {describe(done)}"
        table = format_table(rows, title) + "".join(f"\n{line}" for line in extra) + "".join(
            f"\nNote: {n}" for n in notes)
        text = output.with_suffix(".txt")
        with writing(text, overwrite) as tmp:
            tmp.write_text(table + "\n")
        plot = output.with_suffix(".png")
        with writing(plot, overwrite) as tmp:
            plot_channels(result.channels_before, result.channels_after, tmp, title,
                          summary=[*rows_summary(rows), *extra])
    return PruneReport(output, text, plot, table, result, notes)


def describe(config: PruneConfig) -> str:
    """How a pruning was done, for titles: criterion, and the ratio or the cost-aware target."""
    target = [(m, getattr(config, f"target_{m}")) for m in ("latency", "macs", "params")]
    target = [(m, v) for m, v in target if v is not None]
    if config.allocation == "cost" and target:
        metric = target[0][0]
        per = {"latency": "ms", "macs": "MAC", "params": "parameter"}[metric]
        how = f"-{target[0][1]:.0%} {'MACs' if metric == 'macs' else metric}, most importance kept per {per}"
    else:
        how = f"ratio {config.ratio:.3g}" + (", global" if config.is_global else "")
    multiple = f", channels x{config.multiple}" if config.multiple > 1 else ""
    if multiple and config.round_mode != "down":
        multiple += f" ({config.round_mode})"
    return f"{config.criterion}, {how}{multiple}"


def rows_summary(rows: list[Row]) -> list[str]:
    return [f"{r.name}: {r.fmt.format(r.before)} -> {r.fmt.format(r.after)} (-{r.change:.1f}%)" for r in rows]
