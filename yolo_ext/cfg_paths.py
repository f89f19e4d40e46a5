"""Find the model YAMLs shipped with yolo_ext by name, as Ultralytics finds its own (scale letter in the name).

Ultralytics reads the scale from the file name (``yolo11n-x.yaml`` -> ``n``, file ``yolo11-x.yaml``) but knows only
n/s/m/l/x there; YOLOv10's sixth scale, ``b``, exists in Ultralytics only as its own file ``yolov10b.yaml``. So a
scaled yolo_ext name such as ``yolov10b-coordatt.yaml`` resolves here like the others, and :func:`read_extra_scale`
(installed by :func:`yolo_ext.register`) lets Ultralytics' YAML loader read that letter too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

#: scale letters Ultralytics reads from a file name, plus YOLOv10's "b" (which :func:`read_extra_scale` teaches it)
_SCALED = re.compile(r"^(yolo(?:v)?\d+)([nslmxb])(.*)$")
_EXTRA_SCALE = re.compile(r"^(yolov?\d+)b(-.*)?$")  # a stem with the scale letter Ultralytics does not read


def _models_root() -> Path:
    # yolo_ext/cfg is a link to the repository's cfg/, so source checkouts, editable installs and wheels agree.
    return Path(__file__).parent / "cfg" / "models"


def scaled_name(name: str, scale: str) -> str:
    """``yolo11-coordatt.yaml``, ``n`` -> ``yolo11n-coordatt.yaml``: the file name Ultralytics reads a scale from."""
    match = _SCALED.match(name)
    base = match.group(1) + match.group(3) if match else name
    head, sep, tail = base.partition("-")
    if sep:
        return f"{head}{scale}-{tail}"
    return base.replace(".yaml", f"{scale}.yaml")


def model_yamls() -> list[Path]:
    """All model YAMLs shipped with yolo_ext (unscaled names, e.g. ``yolo11-coordatt.yaml``)."""
    return sorted(_models_root().glob("*/*.yaml"))


def model_yaml(name: str | Path) -> Path:
    """Resolve ``yolo11n-coordatt.yaml`` (or an existing path) to a path Ultralytics can build.

    The scale letter stays in the returned file name, because Ultralytics reads the scale from it: the returned path
    points at ``<cfg>/11/yolo11n-coordatt.yaml`` and Ultralytics' loader maps it to ``yolo11-coordatt.yaml``.

    Raises:
        FileNotFoundError: naming the shipped YAMLs when nothing matches.
    """
    path = Path(name)
    if path.exists():
        return path
    stem = path.name if path.suffix in {".yaml", ".yml"} else f"{path.name}.yaml"
    unscaled = _SCALED.sub(lambda m: m.group(1) + m.group(3), stem)
    for candidate in model_yamls():
        if candidate.name in {stem, unscaled}:
            return candidate.with_name(stem)
    shipped = ", ".join(p.name for p in model_yamls())
    raise FileNotFoundError(
        f"Model YAML {str(name)!r} is neither a file nor a yolo_ext model. Shipped models (add a scale letter "
        f"n/s/m/l/x after the version, or b for YOLOv10, e.g. yolo11n-coordatt.yaml): {shipped}."
    )


def read_extra_scale(load: Callable[[str | Path], dict]) -> Callable[[str | Path], dict]:
    """Wrap Ultralytics' ``yaml_model_load`` so that ``yolov10b-coordatt.yaml`` builds scale ``b`` of
    ``yolov10-coordatt.yaml``, as ``yolov10n-coordatt.yaml`` builds scale ``n``.

    Ultralytics' own ``yolov10b.yaml`` exists as a file and keeps loading as before. Without this, Ultralytics cannot
    find the unscaled file for a ``b`` name, and for a file it does find it silently builds the YAML's first scale.
    Any other name goes to ``load`` untouched.
    """

    def yaml_model_load(path: str | Path) -> dict:
        """Ultralytics' YAML loader; a ``b`` scale in the file name is read like n/s/m/l/x."""
        p = Path(path)
        match = _EXTRA_SCALE.match(p.stem)
        if match is None:
            return load(path)
        try:
            d = load(path)
        except FileNotFoundError:
            d = load(p.with_name(f"{match[1]}{match[2] or ''}{p.suffix}"))
            d["yaml_file"] = str(path)
        if not d.get("scale") and "b" in (d.get("scales") or {}):
            d["scale"] = "b"
        return d

    yaml_model_load.__wrapped__ = load  # type: ignore[attr-defined]
    yaml_model_load.yolo_ext = True  # type: ignore[attr-defined]
    return yaml_model_load
