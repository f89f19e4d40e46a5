"""Reading checkpoint files: the one place yolo_ext unpickles a file, always the way Ultralytics would.

- :func:`read_checkpoint` loads a file the user asked yolo_ext to work on (prune it, fine-tune it, compare it). With
  ``ULTRALYTICS_SAFE_LOAD=1`` it goes through Ultralytics' own restricted loader (``torch.load(weights_only=True)``
  with Ultralytics' allow-list, plus yolo_ext's classes, which :mod:`yolo_ext.integration` puts on torch's safe
  globals); otherwise through the full unpickler, as ``YOLO(path)`` does.
- :func:`has_pruning_record` tells whether a checkpoint's network carries a pruning record without unpickling
  anything (it reads the names in the pickle stream), for code that must decide before Ultralytics loads the file
  itself: the keep-pruned callback never opens a file Ultralytics is about to open.
"""

from __future__ import annotations

import inspect
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from yolo_ext.prune.record import ATTRIBUTE

__all__ = ["SAFE_LOAD_VAR", "has_pruning_record", "read_checkpoint", "safe_load_requested"]

#: Ultralytics' switch for restricted (``weights_only=True``) loading
SAFE_LOAD_VAR = "ULTRALYTICS_SAFE_LOAD"
_TRUE = {"1", "true", "yes", "on", "y", "t"}  # the words Ultralytics' env_bool reads as on


def safe_load_requested() -> bool:
    """Whether ``ULTRALYTICS_SAFE_LOAD`` asks for restricted loading (read now, with Ultralytics' words for on)."""
    return os.environ.get(SAFE_LOAD_VAR, "").strip().lower() in _TRUE


def read_checkpoint(path: str | Path) -> Any:
    """The object saved in ``path`` (an Ultralytics checkpoint is a dict), on the CPU.

    With ``ULTRALYTICS_SAFE_LOAD=1``: Ultralytics' ``torch_safe_load(..., safe_only=True)``, which unpickles only
    allow-listed classes (on torch older than 2.6 Ultralytics itself falls back to a full load). Otherwise the full
    unpickler, as Ultralytics' loader uses by default.

    Raises:
        whatever the loader raises for a file it cannot read (callers turn it into their own message).
    """
    if safe_load_requested():
        from ultralytics.nn.tasks import torch_safe_load

        if "safe_only" in inspect.signature(torch_safe_load).parameters:
            return torch_safe_load(str(path), safe_only=True)[0]
        return torch_safe_load(str(path))[0]  # an Ultralytics without the switch reads the variable itself
    from ultralytics.utils.patches import torch_load

    return torch_load(str(path), map_location="cpu", weights_only=False)


def _pickle_bytes(path: Path) -> bytes | None:
    """The pickle stream of a ``torch.save`` zip archive (``<name>/data.pkl``), or None for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.rpartition("/")[2] == "data.pkl"), None)
            return None if name is None else archive.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None


def has_pruning_record(path: str | Path) -> bool:
    """Whether the network in checkpoint ``path`` carries a pruning record, read without unpickling: the stream
    names the record's attribute only when some network in it has one (the record module never stores an empty one).

    False for anything that is not a readable ``torch.save`` archive (Ultralytics will say what is wrong with it).
    """
    path = Path(path)
    if not path.is_file():
        return False
    data = _pickle_bytes(path)
    if data is None or ATTRIBUTE.encode() not in data:  # cheap test first; the walk below rules out look-alikes
        return False
    try:
        return any(isinstance(arg, str) and arg == ATTRIBUTE for _, arg, _ in pickletools.genops(data))
    except Exception:  # a damaged stream: not ours to judge
        return False
