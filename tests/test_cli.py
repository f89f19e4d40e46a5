"""The yolo-ext console command: Ultralytics' CLI with yolo_ext modules registered."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_python

EXE = shutil.which("yolo-ext") or str(Path(sys.executable).with_name("yolo-ext"))


def yolo_ext_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**__import__("os").environ, "YOLO_OFFLINE": "1"})


@pytest.fixture(scope="module")
def trained(tiny_bccd, tmp_path_factory) -> Path:
    """`yolo-ext train` for one epoch on 8 BCCD images with a custom-module YAML (a packaged name, no path)."""
    project = tmp_path_factory.mktemp("runs")
    result = yolo_ext_cli(
        "train", "model=yolo11n-coordatt.yaml", f"data={tiny_bccd}", "epochs=1", "imgsz=64", "batch=4", "workers=0",
        "device=cpu", f"project={project}", "name=cli", "plots=False", "val=True", cwd=project,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return project / "cli"


def test_train_writes_weights(trained):
    weights = trained / "weights"
    assert (weights / "last.pt").stat().st_size > 100_000
    assert (weights / "best.pt").exists()
    assert (trained / "results.csv").read_text().count("\n") >= 2


def test_trained_checkpoint_keeps_modules_and_predicts_in_fresh_process(trained, tiny_bccd):
    image = next((tiny_bccd.parent / "images" / "val").glob("*.jpg"))
    code = f"""
import ultralytics, yolo_ext
from ultralytics import YOLO
from yolo_ext import CoordAtt
model = YOLO({str(trained / "weights" / "best.pt")!r})
assert sum(isinstance(m, CoordAtt) for m in model.model.modules()) == 3
assert model.names == {{0: "RBC", 1: "WBC", 2: "Platelets"}}
boxes = model.predict({str(image)!r}, imgsz=64, conf=0.0, max_det=5, verbose=False)[0].boxes
assert boxes.data.ndim == 2 and boxes.data.shape[1] == 6 and 1 <= len(boxes) <= 5, boxes.data.shape  # conf 0: boxes
assert ((0 <= boxes.cls) & (boxes.cls < 3)).all() and ((0 <= boxes.conf) & (boxes.conf <= 1)).all()
h, w = boxes.orig_shape
assert (boxes.xyxy >= 0).all() and (boxes.xyxy[:, [0, 2]] <= w).all() and (boxes.xyxy[:, [1, 3]] <= h).all()
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_val_mode_runs_on_trained_checkpoint(trained, tiny_bccd):
    result = yolo_ext_cli("val", f"model={trained / 'weights' / 'best.pt'}", f"data={tiny_bccd}", "imgsz=64",
                          "batch=4", "workers=0", "device=cpu", "plots=False", f"project={trained}", "name=val",
                          cwd=trained)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "all" in result.stdout + result.stderr  # Ultralytics' metrics row


def test_unknown_module_fails_with_list(tmp_path):
    bad = tmp_path / "yolo11n-bad.yaml"
    bad.write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, CoordAttention, [32]]\nhead:\n"
                   "  - [[1], 1, Detect, [nc]]\n")
    result = run_python(f"import yolo_ext\nfrom ultralytics import YOLO\nYOLO({str(bad)!r})")
    assert result.returncode != 0
    assert "Unknown module 'CoordAttention' at model YAML layer 1" in result.stderr
    assert "C3k2_RVB_SE" in result.stderr
