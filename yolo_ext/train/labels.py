"""Label files that cannot train the model they are given to, found before training starts.

Ultralytics finds these late: a label whose class index is not one of the data YAML's classes makes its image
"corrupt" and silently drops it (or every image, then fails), and a segmentation or pose model given labels without
polygons or keypoints fails in its loss, after the run folder was made. :func:`check_labels` reads the label files of
the train and val splits (plain text, one object per line) the way Ultralytics finds them (``images`` -> ``labels``,
image suffix -> ``.txt``) and names the first line that cannot work.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ultralytics.data.utils import IMG_FORMATS, img2label_paths

__all__ = ["LabelError", "check_labels", "label_files"]


class LabelError(ValueError):
    """A label line the model cannot train on; the message names the file, the line and what to change."""


def _image_files(source: Any) -> list[str]:
    """Image paths of a data YAML split (a folder, a list file or a list of either), as Ultralytics reads them."""
    found: list[str] = []
    for entry in source if isinstance(source, (list, tuple)) else [source]:
        path = Path(entry)
        if path.is_dir():
            found += [str(p) for p in path.rglob("*.*") if p.suffix[1:].lower() in IMG_FORMATS]
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if line:
                    found.append(str(path.parent / line[2:]) if line.startswith("./") else line)
    return sorted(found)


def label_files(info: dict) -> Iterator[Path]:
    """Every existing label file of the train and val splits of a checked data dict (``check_det_dataset``)."""
    for split in ("train", "val"):
        if info.get(split):
            for label in img2label_paths(_image_files(info[split])):
                path = Path(label)
                if path.is_file():
                    yield path


def check_labels(info: dict, task: str, kpt_shape: Sequence[int] | None = None, data: Any = None) -> None:
    """Refuse label lines a ``task`` model cannot train on: class indices outside the data's ``names``, boxes without
    polygons for segmentation, and keypoint counts other than the model's for pose.

    Args:
        info: the data dict from ``check_det_dataset`` (``nc``, ``train``, ``val``).
        task: the model's task (``detect``, ``segment``, ``pose``, ``obb``).
        kpt_shape: a pose model's keypoint layout (keypoints, values per keypoint).
        data: the data YAML, named in the message.

    Raises:
        LabelError: naming the first line that cannot work, and what to do.
    """
    nc, name = int(info["nc"]), f" ({data})" if data else ""
    values_per_pose = 5 + math.prod(kpt_shape) if task == "pose" and kpt_shape else None
    for path in label_files(info):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            values = line.split()
            if not values:
                continue
            where = f"{path} line {number}"
            try:
                cls = float(values[0])
            except ValueError:
                cls = -1.0
            if not (cls.is_integer() and 0 <= cls < nc):
                raise LabelError(f"{where}: class {values[0]}, but the data YAML{name} names {nc} classes "
                                 f"(0..{nc - 1}). Fix the label, or add the class to the data YAML's names.")
            if task == "segment" and len(values) < 7:
                raise LabelError(f"{where} is a box ({len(values)} values), but a segment model needs polygon labels "
                                 "(class x1 y1 x2 y2 x3 y3 ...). Fine-tune it on segmentation data, or fine-tune a "
                                 "detection model on this data.")
            if values_per_pose is not None and len(values) != values_per_pose:
                raise LabelError(f"{where} has {len(values)} values, but the pose model needs {values_per_pose} "
                                 f"(class, box and {kpt_shape[0]} keypoints of {kpt_shape[1]} values). Fine-tune it on "
                                 "data with its keypoints.")
