"""One comparison table for several checkpoints: accuracy, size, compute and latency, measured the same way.

Latency is measured on the runtime users deploy to (``backend``: ONNX Runtime CPU by default, see
:mod:`yolo_ext.latency`), every checkpoint side by side in one process; speed-up and efficiency (speed-up divided
by the MACs ratio) are relative to the first checkpoint.

Every task yolo_ext prunes is compared by its box metrics (for OBB models: the oriented boxes); segmentation and pose
checkpoints add their task's own mAP50-95 (:data:`TASK_METRICS`). The checkpoints of one table share a task, since
they are validated on one data set.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset

from yolo_ext.latency import Deployment, LatencyError, deployed_copy, measure_latency
from yolo_ext.prune.budget import resolve_backend
from yolo_ext.prune.checkpoint import load_prunable_checkpoint
from yolo_ext.prune.engine import image_size
from yolo_ext.prune.errors import CheckpointError, PruningError
from yolo_ext.prune.heads import check_supported_model


@dataclass
class Measurement:
    """One checkpoint's row in the comparison."""

    name: str
    map50: float
    map50_95: float
    precision: float
    recall: float
    params: int
    gflops: float
    latency_ms: float
    backend: str = ""
    task: str = "detect"
    task_map50_95: float | None = None  # the task's own mAP50-95 (masks, keypoints), where it has one


#: task -> (attribute of Ultralytics' validation metrics, column name) for the tasks with a metric beyond boxes
TASK_METRICS = {"segment": ("seg", "mask mAP50-95"), "pose": ("pose", "pose mAP50-95")}


def check_comparison_inputs(paths: list[str | Path], data: str | Path) -> None:
    """Before any model is timed or validated: every path is a checkpoint of a task yolo_ext prunes, all of one
    task, and the data YAML is usable.

    Raises:
        CheckpointError: naming the first unusable checkpoint or the data YAML, and what to pass instead.
    """
    tasks: dict[str, list[str]] = {}
    for path in paths:
        try:
            model = load_prunable_checkpoint(path, purpose="tools/val.py compares")[1]
        except PruningError as e:  # another task's model: a checkpoint problem here, not a pruning one
            raise CheckpointError(str(e)) from e
        tasks.setdefault(check_supported_model(model).task, []).append(str(path))
    if len(tasks) > 1:
        mixed = "; ".join(f"{task}: {', '.join(names)}" for task, names in tasks.items())
        raise CheckpointError(f"The checkpoints are of different tasks ({mixed}); one table validates one task on one "
                              "data set. Compare each task's checkpoints separately.")
    try:
        check_det_dataset(str(data), autodownload=False)
    except Exception as e:
        raise CheckpointError(f"Data YAML {str(data)!r} cannot be used: {e}") from e


def compare_checkpoints(
    paths: list[str | Path], data: str | Path, imgsz: int = 640, batch: int = 16, latency_runs: int = 20,
    device: str | None = None, project: str | Path | None = None, backend: str | None = None, threads: int = 1,
) -> list[Measurement]:
    """Validate every checkpoint on ``data`` and time them side by side on ``backend`` (batch 1, ``imgsz``,
    ``threads``; None: ONNX Runtime CPU, or PyTorch CPU where it is not installed).

    Ultralytics' validator makes a run folder (under its global ``runs/`` for a relative or missing ``project``) even
    with nothing to put in it. Here validation writes into a temporary folder that is removed, unless ``project`` is
    given: then each checkpoint's plots (confusion matrix, PR curves) go to ``project/<checkpoint name>``, relative
    to the current folder.
    """
    timing = (latency_runs, backend, threads)
    if project is None:
        with tempfile.TemporaryDirectory(prefix="yolo_ext-val-") as scratch:
            return _compare(paths, data, imgsz, batch, timing, device, Path(scratch), plots=False)
    return _compare(paths, data, imgsz, batch, timing, device, Path(project).resolve(), plots=True)


def _compare(
    paths: list[str | Path], data: str | Path, imgsz: int, batch: int, timing: tuple[int, str | None, int],
    device: str | None, project: Path, plots: bool,
) -> list[Measurement]:
    latency_runs, backend, threads = timing
    models = [YOLO(str(p)) for p in paths]
    size = image_size(imgsz)
    example = torch.rand(1, 3, *size)
    latencies, name = [float("nan")] * len(models), ""
    if latency_runs:
        runtime = resolve_backend(backend)
        try:
            latency = measure_latency([m.model for m in models], runtime, Deployment(size, 1, threads), latency_runs)
        except LatencyError as e:
            raise PruningError(str(e)) from None
        latencies, name = latency.ms, latency.label()
    rows = []
    for path, model, ms in zip(paths, models, latencies):
        macs, params = tp.utils.count_ops_and_params(deployed_copy(model.model), example)
        # the head decides: Ultralytics guesses "detect" for a network saved without its task (no train args)
        model.task = check_supported_model(model.model).task
        metrics = model.val(data=str(data), imgsz=imgsz, batch=batch, device=device, workers=0, plots=plots,
                            verbose=False, project=str(project), name=Path(path).stem)
        box = metrics.box
        extra = TASK_METRICS.get(model.task)
        task_map = getattr(metrics, extra[0]).map if extra else None
        rows.append(Measurement(str(path), box.map50, box.map, box.mp, box.mr, int(params), 2 * macs / 1e9, ms,
                                name, model.task, task_map))
    return rows


def format_comparison(rows: list[Measurement], imgsz: int) -> str:
    """Markdown table; the first row is the reference for the relative columns. Box metrics first; the task's own
    mAP50-95 (:data:`TASK_METRICS`) follows the box recall for segmentation and pose. Speed-up is the first row's
    latency over this row's; efficiency is the speed-up over the MACs ratio (1.0: time fell as much as compute)."""
    ref = rows[0]
    extra = TASK_METRICS.get(ref.task)
    backend = ref.backend.split(" (")[0] or "latency"
    lines = [
        f"| checkpoint | mAP50 | mAP50-95 | P | R | {extra[1] + ' | ' if extra else ''}params | GFLOPs@{imgsz} | "
        f"{backend} ms | params vs first | speed-up | efficiency |",
        "|---|" + "---:|" * (10 + bool(extra)),
    ]
    for r in rows:
        task_cell = f"{r.task_map50_95:.3f} | " if extra else ""
        speedup = ref.latency_ms / r.latency_ms
        lines.append(
            f"| {r.name} | {r.map50:.3f} | {r.map50_95:.3f} | {r.precision:.3f} | {r.recall:.3f} | {task_cell}"
            f"{r.params:,} | {r.gflops:.2f} | {r.latency_ms:.1f} | {r.params / ref.params:.2f}x | {speedup:.2f}x | "
            f"{speedup * r.gflops / ref.gflops:.2f} |"
        )
    if ref.backend:
        lines.append(f"\nLatency: {ref.backend}, every checkpoint side by side (fused, export mode).")
    return "\n".join(lines)
