"""Global state yolo_ext changes for a while is put back: matplotlib's backend, Ultralytics' ARGV, module forwards."""

from __future__ import annotations

import matplotlib
import torch
from ultralytics.nn.modules import C2f
from ultralytics.nn.tasks import DetectionModel

import yolo_ext
from yolo_ext.prune import PruneConfig, prune_model
from yolo_ext.prune.report import plot_channels


def test_plot_leaves_the_matplotlib_backend(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        out = plot_channels({"a": 4, "b": 8}, {"a": 2, "b": 8}, tmp_path / "p.tmp", "t")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_cli_puts_argv_back():
    from ultralytics import cfg

    from yolo_ext.cli import app as cli

    previous = cfg.ARGV
    cli.main(["yolo-ext", "version"])
    assert cfg.ARGV is previous


def test_pruning_restores_instance_forwards():
    """Ultralytics' exporter sets ``m.forward = m.forward_split``; pruning swaps forwards and must put that back."""
    model = DetectionModel(str(yolo_ext.model_yaml("yolo11n-coordatt.yaml")), verbose=False)
    blocks = [m for m in model.modules() if isinstance(m, C2f)]
    for m in blocks[:2]:
        m.forward = m.forward_split
    attention = next(m for m in model.modules() if isinstance(m, yolo_ext.CoordAtt))
    kept = {id(m): m.__dict__["forward"] for m in blocks[:2]}
    prune_model(model, PruneConfig(ratio=0.3, imgsz=64))
    assert {id(m): m.__dict__.get("forward") for m in blocks[:2]} == kept
    assert all("forward" not in m.__dict__ for m in [*blocks[2:], attention, model.model[-1]])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.rand(1, 3, 64, 64))[0]).all()
