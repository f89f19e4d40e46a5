"""Find the model YAMLs shipped with yolo_ext by name, as Ultralytics finds its own (scale letter in the name).

Two layouts ship, as in Ultralytics. Most families are one file with a ``scales:`` block (``yolo11-coordatt.yaml``);
Ultralytics reads the scale from the name it is given (``yolo11n-coordatt.yaml`` -> ``n``) and, finding no such
file, loads the unscaled one. YOLOv10 changes its layout with the scale (C2f or C2fCIB per layer), so it ships one file
per scale (``yolov10s-coordatt.yaml``, one entry under ``scales:``): the exact name is a file and resolves to itself.
An unscaled name of such a family (``yolov10-coordatt.yaml``) is an error naming the per-scale files, because no one
file holds all its scales.

Ultralytics reads only n/s/m/l/x from a file name; YOLOv10's sixth scale, ``b``, exists in Ultralytics only as its
own file ``yolov10b.yaml``. :func:`yolo_ext.integration.yaml_loader.read_extra_scale` (installed by
:func:`yolo_ext.install`) lets Ultralytics' YAML loader read that letter too, and find the unscaled file by file name
alone.

The YAMLs themselves live in ``yolo_ext/cfg/models/`` (inside the package, so source checkouts, editable installs
and wheels find them at the same place).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

#: scale letters Ultralytics reads from a file name, plus YOLOv10's "b" (which the integration teaches it)
SCALED = re.compile(r"^(yolo(?:v)?\d+)([nslmxb])(.*)$")
_SCALE_ORDER = "nsmblx"  # smallest to largest, for messages


class ScaleLetterNeeded(FileNotFoundError):
    """An unscaled name of a family that ships one file per scale (``yolov10-coordatt.yaml``); names the files."""


def _models_root() -> Path:
    return Path(__file__).parent / "models"


def unscaled(name: str) -> str:
    """``yolov10s-coordatt.yaml`` -> ``yolov10-coordatt.yaml``; a name without a scale letter stays as it is."""
    return SCALED.sub(lambda m: m.group(1) + m.group(3), name)


def scaled_name(name: str, scale: str) -> str:
    """``yolo11-coordatt.yaml``, ``n`` -> ``yolo11n-coordatt.yaml``: the file name Ultralytics reads a scale from.

    A name that already has a scale letter gets ``scale`` instead (``yolov10n-coordatt.yaml``, ``s`` ->
    ``yolov10s-coordatt.yaml``).
    """
    base = unscaled(name)
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
    family = unscaled(stem)
    shipped = model_yamls()
    for candidate in shipped:  # an exact (per-scale) file first, then the family file the scale letter selects from
        if candidate.name == stem:
            return candidate
    for candidate in shipped:
        if candidate.name == family:
            return candidate.with_name(stem)
    per_scale = [p.name for p in shipped if p.name != family and unscaled(p.name) == family]
    per_scale.sort(key=lambda n: _SCALE_ORDER.find(SCALED.match(n)[2]))
    if per_scale:
        raise ScaleLetterNeeded(
            f"Model YAML {str(name)!r}: {family} ships one file per scale, as Ultralytics' YOLOv10 does (its layout "
            f"changes with the scale), so the name needs a scale letter. Pass one of: {', '.join(per_scale)}."
        )
    raise FileNotFoundError(
        f"Model YAML {str(name)!r} is neither a file nor a yolo_ext model. Shipped models (add a scale letter "
        f"n/s/m/l/x after the version, e.g. yolo11n-coordatt.yaml; YOLOv10 files already have theirs, b included): "
        f"{', '.join(p.name for p in shipped)}."
    )
