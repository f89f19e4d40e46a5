"""Ultralytics' YAML loader, taught the scale letter ``b`` and to find the unscaled file by file name: what
:mod:`yolo_ext.integration` installs as ``yaml_model_load`` (see :mod:`yolo_ext.cfg` for the shipped files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from yolo_ext.cfg import SCALED, unscaled


def read_extra_scale(load: Callable[[str | Path], dict]) -> Callable[[str | Path], dict]:
    """Wrap Ultralytics' ``yaml_model_load`` so that the scale letter of a file name is read from the file name alone,
    ``b`` included.

    Two gaps in Ultralytics' loader: its scale guess knows only n/s/m/l/x, so for ``yolov10b-coordatt.yaml`` (or its own
    ``yolov10b.yaml``) the parser falls back to the YAML's first scale with a warning; and it maps a scaled name to the
    unscaled file (``yolo11n-coordatt.yaml`` -> ``yolo11-coordatt.yaml``) with a regex over the whole path string, which
    a folder such as ``v10s/`` or ``run2l/`` in the path derails (it edits the folder, then finds no file). Here the
    unscaled file is looked up by file name when Ultralytics finds none, and the name's letter becomes the scale when
    Ultralytics guessed none. Names without a scale letter go to ``load`` untouched.
    """

    def yaml_model_load(path: str | Path) -> dict:
        """Ultralytics' YAML loader; the scale letter is taken from the file name only, ``b`` included."""
        p = Path(path)
        match = SCALED.match(p.name)
        if match is None:
            return load(path)
        try:
            d = load(path)
        except FileNotFoundError as missing:
            try:
                d = load(p.with_name(unscaled(p.name)))
            except FileNotFoundError:
                raise missing from None
            d["yaml_file"] = str(path)
        if not d.get("scale") and match[2] in (d.get("scales") or {}):
            d["scale"] = match[2]
        return d

    yaml_model_load.__wrapped__ = load  # type: ignore[attr-defined]
    yaml_model_load.yolo_ext = True  # type: ignore[attr-defined]
    return yaml_model_load
