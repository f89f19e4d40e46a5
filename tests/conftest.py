"""Shared fixtures: offline Ultralytics, a tiny slice of the BCCD data set, and a helper to run fresh processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "datasets" / "bccd"


def run_python(code: str, *, env: dict | None = None, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (nothing imported but what the code imports)."""
    # Ultralytics sets OMP_NUM_THREADS=1 when imported; a child inheriting it would use another thread count than this
    # process and reduce floats in another order, so outputs compared bit for bit would differ in the last digit.
    full_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full_env.update({"YOLO_OFFLINE": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_bccd(tmp_path_factory) -> Path:
    """A 8-train / 4-val image copy of BCCD with its data YAML (real images and labels)."""
    if not BCCD.exists():
        pytest.skip(f"BCCD data set not found at {BCCD}")
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
