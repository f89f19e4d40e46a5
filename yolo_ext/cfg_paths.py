"""Find the model YAMLs shipped with yolo_ext by name, as Ultralytics finds its own (scale letter in the name)."""

from __future__ import annotations

import re
from pathlib import Path

_SCALED = re.compile(r"^(yolo(?:v)?\d+)([nslmx])(.*)$")


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
        f"n/s/m/l/x after the version, e.g. yolo11n-coordatt.yaml): {shipped}."
    )
