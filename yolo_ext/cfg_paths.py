"""Find the model YAMLs shipped with yolo_ext by name, as Ultralytics finds its own (scale letter in the name).

Two layouts ship, as in Ultralytics. Most families are one file with a ``scales:`` block (``yolo11-coordatt.yaml``);
Ultralytics reads the scale from the name it is given (``yolo11n-coordatt.yaml`` -> ``n``) and, finding no such
file, loads the unscaled one. YOLOv10 changes its layout with the scale (C2f or C2fCIB per layer), so it ships one file
per scale (``yolov10s-coordatt.yaml``, one entry under ``scales:``): the exact name is a file and resolves to itself.
An unscaled name of such a family (``yolov10-coordatt.yaml``) is an error naming the per-scale files, because no one
file holds all its scales.

Ultralytics reads only n/s/m/l/x from a file name; YOLOv10's sixth scale, ``b``, exists in Ultralytics only as its
own file ``yolov10b.yaml``. :func:`read_extra_scale` (installed by :func:`yolo_ext.register`) lets Ultralytics' YAML
loader read that letter too, and find the unscaled file by file name alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

#: scale letters Ultralytics reads from a file name, plus YOLOv10's "b" (which :func:`read_extra_scale` teaches it)
_SCALED = re.compile(r"^(yolo(?:v)?\d+)([nslmxb])(.*)$")
_SCALE_ORDER = "nsmblx"  # smallest to largest, for messages


class ScaleLetterNeeded(FileNotFoundError):
    """An unscaled name of a family that ships one file per scale (``yolov10-coordatt.yaml``); names the files."""


def _models_root() -> Path:
    # yolo_ext/cfg is a link to the repository's cfg/, so source checkouts, editable installs and wheels agree.
    return Path(__file__).parent / "cfg" / "models"


def _unscaled(name: str) -> str:
    """``yolov10s-coordatt.yaml`` -> ``yolov10-coordatt.yaml``; a name without a scale letter stays as it is."""
    return _SCALED.sub(lambda m: m.group(1) + m.group(3), name)


def scaled_name(name: str, scale: str) -> str:
    """``yolo11-coordatt.yaml``, ``n`` -> ``yolo11n-coordatt.yaml``: the file name Ultralytics reads a scale from.

    A name that already has a scale letter gets ``scale`` instead (``yolov10n-coordatt.yaml``, ``s`` ->
    ``yolov10s-coordatt.yaml``).
    """
    base = _unscaled(name)
    head, sep, tail = base.partition("-")
    if sep:
        return f"{head}{scale}-{tail}"
    return base.replace(".yaml", f"{scale}.yaml")


def model_yamls() -> list[Path]:
    """All model YAML files shipped with yolo_ext: one per family (``yolo11-coordatt.yaml``, every scale inside) or,
    for YOLOv10, one per family and scale (``yolov10s-coordatt.yaml``). :func:`yaml_scales` says which is which."""
    return sorted(_models_root().glob("*/*.yaml"))


def yaml_scales(path: str | Path) -> str:
    """The scale letters a model YAML builds at: the keys of its ``scales:`` block (one letter for a per-scale file)."""
    with open(path, encoding="utf-8") as f:
        return "".join((yaml.safe_load(f) or {}).get("scales") or {})


def model_names(scale: str | None = None) -> list[str]:
    """Every scaled name :func:`model_yaml` resolves to a shipped model (``yolo11n-coordatt.yaml`` ...
    ``yolov10x-rvb-se.yaml``), each file at each scale it builds at; ``scale`` keeps only that scale's names.

    This is what to iterate over to build every shipped model: a per-scale file appears only at its own scale.
    """
    return [
        scaled_name(path.name, s)
        for path in model_yamls()
        for s in yaml_scales(path)
        if scale is None or s == scale
    ]


def model_yaml(name: str | Path) -> Path:
    """Resolve ``yolo11n-coordatt.yaml`` (or an existing path) to a path Ultralytics can build.

    A per-scale file (``yolov10s-coordatt.yaml``) resolves to itself. Otherwise the scale letter stays in the returned
    file name, because Ultralytics reads the scale from it: the returned path points at
    ``<cfg>/11/yolo11n-coordatt.yaml`` and Ultralytics' loader maps it to ``yolo11-coordatt.yaml``.

    Raises:
        FileNotFoundError: naming the per-scale files for an unscaled name of a per-scale family
            (``yolov10-coordatt.yaml``), or the shipped YAMLs when nothing matches.
    """
    path = Path(name)
    if path.exists():
        return path
    stem = path.name if path.suffix in {".yaml", ".yml"} else f"{path.name}.yaml"
    unscaled = _unscaled(stem)
    shipped = model_yamls()
    for candidate in shipped:  # an exact (per-scale) file first, then the family file the scale letter selects from
        if candidate.name == stem:
            return candidate
    for candidate in shipped:
        if candidate.name == unscaled:
            return candidate.with_name(stem)
    per_scale = [p.name for p in shipped if p.name != unscaled and _unscaled(p.name) == unscaled]
    per_scale.sort(key=lambda n: _SCALE_ORDER.find(_SCALED.match(n)[2]))
    if per_scale:
        raise ScaleLetterNeeded(
            f"Model YAML {str(name)!r}: {unscaled} ships one file per scale, as Ultralytics' YOLOv10 does (its layout "
            f"changes with the scale), so the name needs a scale letter. Pass one of: {', '.join(per_scale)}."
        )
    raise FileNotFoundError(
        f"Model YAML {str(name)!r} is neither a file nor a yolo_ext model. Shipped models (add a scale letter "
        f"n/s/m/l/x after the version, e.g. yolo11n-coordatt.yaml; YOLOv10 files already have theirs, b included): "
        f"{', '.join(p.name for p in shipped)}."
    )


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
        match = _SCALED.match(p.name)
        if match is None:
            return load(path)
        try:
            d = load(path)
        except FileNotFoundError as missing:
            try:
                d = load(p.with_name(_unscaled(p.name)))
            except FileNotFoundError:
                raise missing from None
            d["yaml_file"] = str(path)
        if not d.get("scale") and match[2] in (d.get("scales") or {}):
            d["scale"] = match[2]
        return d

    yaml_model_load.__wrapped__ = load  # type: ignore[attr-defined]
    yaml_model_load.yolo_ext = True  # type: ignore[attr-defined]
    return yaml_model_load
