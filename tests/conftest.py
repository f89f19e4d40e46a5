"""Shared fixtures: offline Ultralytics, a tiny slice of the BCCD data set, and a helper to run fresh processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn
from ultralytics.nn.tasks import BaseModel

os.environ.setdefault("YOLO_OFFLINE", "1")
# latency tables and channel multiples measured by tests go to a throwaway folder, never the user's cache
os.environ["YOLO_EXT_CACHE"] = tempfile.mkdtemp(prefix="yolo_ext-test-cache-")

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO / "yolo_ext" / "data" / "bccd_demo"  # the subset shipped with the package: tests run from a fresh clone


def run_python(
    code: str, *, env: dict | None = None, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (nothing imported but what the code imports)."""
    # The child computes with as many threads as this process does now: outputs compared bit for bit are only equal
    # when floats are reduced in the same order. (Ultralytics sets OMP_NUM_THREADS=1 when imported, and its trainer
    # resets torch's thread count, so neither the inherited variable nor torch's default would match.)
    full_env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    full_env.update({"YOLO_OFFLINE": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_bccd(tmp_path_factory) -> Path:
    """A 8-train / 4-val image copy of the bundled BCCD subset with its data YAML (real images and labels)."""
    root = tmp_path_factory.mktemp("bccd_tiny")
    for split, count in (("train", 8), ("val", 4)):
        images = sorted((BCCD / "images" / split).glob("*.jpg"))[:count]
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in images:
            shutil.copy(image, root / "images" / split / image.name)
            shutil.copy(BCCD / "labels" / split / f"{image.stem}.txt", root / "labels" / split / f"{image.stem}.txt")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: RBC\n  1: WBC\n  2: Platelets\n"
    )
    return root / "data.yaml"


BCCD_NAMES = {0: "RBC", 1: "WBC", 2: "Platelets"}


def save_three_class(cfg: str | Path, path: Path) -> Path:
    """A 3-class checkpoint (the BCCD names) as Ultralytics saves it (half precision), built from ``cfg``: a shipped
    yolo_ext name (``yolo11n-coordatt.yaml``), an Ultralytics name (``yolo11n.yaml``) or a YAML path."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    import yolo_ext

    try:
        cfg = yolo_ext.model_yaml(str(cfg))
    except FileNotFoundError:
        pass  # one of Ultralytics' own YAMLs: it finds them by name
    torch.manual_seed(0)
    yolo = YOLO(str(cfg))
    yolo.model = DetectionModel(yolo.model.yaml, nc=3, verbose=False)
    yolo.model.names = dict(BCCD_NAMES)
    yolo.save(path)
    return path


class Host(BaseModel):
    """The smallest Ultralytics model around one module, so the real ``BaseModel.fuse`` can run on it."""

    def __init__(self, m: nn.Module) -> None:
        nn.Module.__init__(self)
        self.model = nn.Sequential(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def randomize(m: nn.Module, seed: int = 0, convs: bool = False) -> nn.Module:
    """Trained-like BN statistics (and conv weights with ``convs``), so fusing is tested away from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.randn(n, generator=g) * 0.3 + 1.0)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.2)
            elif convs and isinstance(mod, nn.Conv2d):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.3)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)
    return m
