"""Checkpoints with yolo_ext modules reload in fresh processes (also under ULTRALYTICS_SAFE_LOAD) and in DDP workers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ultralytics import YOLO

from conftest import run_python
from yolo_ext import model_yaml

RELOAD = """
import sys, torch, ultralytics, yolo_ext
from ultralytics import YOLO
model = YOLO(sys.argv[1]).model.float().eval()
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x)[0], sys.argv[3])
"""


@pytest.fixture(scope="module",
                params=["yolo11n-rvb-se.yaml", "yolo11n-ctx-p3p4p5.yaml", "yolov8n-mca.yaml", "yolo26n-coordatt.yaml"])
def saved(request, tmp_path_factory):
    """A model with random (BN-perturbed) weights, rounded to fp16 so Model.save's half() loses nothing."""
    torch.manual_seed(0)
    yolo = YOLO(model_yaml(request.param))
    with torch.no_grad():
        for p in yolo.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for t in [*yolo.model.parameters(), *yolo.model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    path = tmp_path_factory.mktemp("ckpt") / f"{request.param[:-5]}.pt"
    yolo.save(path)
    x = torch.rand(1, 3, 96, 128)
    torch.save(x, path.with_suffix(".x"))
    with torch.no_grad():
        expected = yolo.model.eval()(x)[0]
    return path, expected


@pytest.mark.parametrize("safe", ["0", "1"], ids=["pickle", "safe_load"])
def test_reload_in_fresh_process_gives_identical_outputs(saved, safe, tmp_path):
    path, expected = saved
    out = tmp_path / "y.pt"
    code = RELOAD.replace("sys.argv[1]", repr(str(path))).replace("sys.argv[2]", repr(str(path.with_suffix(".x"))))
    code = code.replace("sys.argv[3]", repr(str(out)))
    result = run_python(code, env={"ULTRALYTICS_SAFE_LOAD": safe})
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(out), expected)


def test_loading_a_checkpoint_registers_without_import(saved):
    """Pickle imports yolo_ext.nn.*, which registers the parser: what a DDP worker or `yolo` CLI process relies on."""
    path, _ = saved
    code = f"""
import sys
from ultralytics.nn.tasks import load_checkpoint, DetectionModel
load_checkpoint({str(path)!r})
assert "yolo_ext" in sys.modules
DetectionModel({str(model_yaml("yolo11n-coordatt.yaml"))!r}, verbose=False)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_worker_state_rebuilds_model(tmp_path, monkeypatch):
    """Ultralytics' own DDP launcher file, loaded the way a worker loads it, builds a yolo_ext YAML."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import dist

    monkeypatch.setattr(dist, "USER_CONFIG_DIR", tmp_path)
    cfg = str(model_yaml("yolo11n-rvb-se.yaml"))
    trainer = SimpleNamespace(args=SimpleNamespace(model=cfg), model=DetectionModel(cfg, verbose=False), callbacks={})
    script = dist.generate_ddp_file(trainer)
    state_file = script[:-3] + ".pt"
    code = f"""
import sys
from ultralytics.utils.patches import torch_load
from ultralytics.nn.tasks import DetectionModel
state = torch_load({state_file!r}, map_location="cpu")
assert "yolo_ext" in sys.modules, "unpickling the worker state must import yolo_ext"
DetectionModel(state["args"]["model"], verbose=False)
print(type(state["model"].model[2]).__name__)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("C3k2_RVB_SE")
