"""The wheel: quiet to build (no setuptools warning per data folder) and complete (code, model YAMLs, demo data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


def test_wheel_builds_quietly_with_all_data(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                             "__pycache__", "runs", "*.cache"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-v", str(src),
         "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in (result.stdout + result.stderr).splitlines() if "Warning" in line or "warn(" in line]
    assert not noise, noise[:5]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "yolo_ext" / "cfg").rglob("*.yaml")}
    assert len(shipped) >= 20 and shipped <= set(names)
    demo = {p.relative_to(REPO).as_posix() for p in (REPO / "yolo_ext" / "data").rglob("*")
            if p.is_file() and p.suffix != ".cache"}  # label caches Ultralytics may have written are not data
    assert demo <= set(names) and any(n.endswith(".jpg") for n in demo)
    code = {p.relative_to(REPO).as_posix() for p in (REPO / "yolo_ext").rglob("*.py")}
    assert code <= set(names)
