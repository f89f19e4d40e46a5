"""Checks of option values that Ultralytics would only trip over after setup (a traceback, a half-made run folder).

Each check raises :class:`InputError` with one line that names the option, the value and what to write instead. The
tools call them before any work; :mod:`yolo_ext.train.inputs` turns them into its own ``FinetuneError``.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MAX_IMGSZ", "OPTIMIZERS", "InputError", "check_device", "check_folder", "check_imgsz", "check_lr",
    "check_optimizer", "check_positive_int",
]

#: The largest image size accepted. Ultralytics' largest models train at 1280; 4096 keeps 16x the pixels of 1024, and
#: one image of 100000 x 100000 would need 120 GB for its input tensor alone.
MAX_IMGSZ = 4096
#: Optimizer names Ultralytics' ``BaseTrainer.build_optimizer`` knows (case is ignored there, and here).
OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "auto")


class InputError(ValueError):
    """An option value that cannot work; nothing was run. The message says what to write instead."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(value: Any, option: str) -> None:
    """``value`` is a whole number >= 1 (a batch size, a number of batches or epochs)."""
    if not _is_int(value) or value < 1:
        raise InputError(f"{option} must be a whole number >= 1, got {value!r}.")


def check_imgsz(value: Any, option: str = "--imgsz") -> None:
    """``value`` is an image size Ultralytics can train or validate at: a whole number in [32, :data:`MAX_IMGSZ`]."""
    if not _is_int(value) or not 32 <= value <= MAX_IMGSZ:
        raise InputError(f"{option} must be a whole number of pixels from 32 to {MAX_IMGSZ} (640 is usual), "
                         f"got {value!r}.")


def check_lr(value: Any, option: str = "--lr0") -> None:
    """A learning rate: a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{option} must be a learning rate > 0 such as 0.01, got {value!r}.")


def check_optimizer(value: Any, option: str = "--optimizer") -> None:
    """One of :data:`OPTIMIZERS` (any case), with the nearest name suggested."""
    if str(value).lower() in {o.lower() for o in OPTIMIZERS}:
        return
    close = difflib.get_close_matches(str(value).lower(), [o.lower() for o in OPTIMIZERS], n=1)
    maybe = f" Did you mean {next(o for o in OPTIMIZERS if o.lower() == close[0])}?" if close else ""
    raise InputError(f"{option} {value!r} is not an optimizer Ultralytics knows.{maybe} Choose one of: "
                     f"{', '.join(OPTIMIZERS)}.")


def check_device(device: Any, option: str = "--device") -> None:
    """``device`` is one this machine has: cpu, '' (Ultralytics picks), mps, cuda / cuda:N / N / N,M (DDP) / -1.

    Ultralytics would fail with a traceback after setup for a missing CUDA GPU or an unknown word, and train on the
    CPU without a word for ``mps`` on a machine without it. NPU and XPU devices are left to Ultralytics.
    """
    if device is None:
        return
    text = str(device).strip().lower().replace(" ", "")
    if text in {"", "cpu"} or text.startswith(("npu", "xpu")):
        return
    n = torch.cuda.device_count()
    have = "no CUDA GPU" if n == 0 else f"{n} CUDA GPU(s), numbered 0..{n - 1}"
    instead = "Use --device cpu" + (" or 0." if n else ".")
    if text in {"mps", "mps:0"}:
        if not torch.backends.mps.is_available():
            raise InputError(f"{option} {device}: this machine has no Apple MPS GPU (and {have}). {instead}")
        return
    if text == "cuda":
        text = "0"
    parts = text.replace("cuda:", "").split(",")
    if not all(p.isdigit() or p == "-1" for p in parts):
        raise InputError(f"{option} {device!r} is not a device: write cpu, mps, a CUDA GPU number such as 0, or 0,1 "
                         f"for several (this machine has {have}).")
    if (n == 0 and "-1" in parts) or any(p.isdigit() and int(p) >= n for p in parts):
        raise InputError(f"{option} {device}: this machine has {have}. {instead}")


def check_folder(folder: str | Path, option: str) -> None:
    """``folder`` is a folder, or can be created: no part of it is a file, and the nearest existing part is writable."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({str(existing)!r} is a file)"
        raise InputError(f"{option} {str(folder)!r}{' is a file' if existing == folder else ''}{where}: pass a folder "
                         "for the results, e.g. runs/finetune.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {str(folder)!r}: {str(existing)!r} is not writable. Choose another folder.")
