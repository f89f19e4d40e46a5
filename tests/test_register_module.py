"""Users' own modules through yolo_ext.register_module, defined only here: YAML at every scale, pruning by tracing and
by a rule of their own, the validator, reload in a fresh process and ONNX export of the whole detector."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
import yaml
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel, yaml_model_load

import yolo_ext
from conftest import randomize, run_python
from yolo_ext.nn._utils import make_divisible
from yolo_ext.prune import PruneConfig, PrunedModelError, prune_model
from yolo_ext.prune.validate import check_model, output_shapes

TESTS = Path(__file__).parent


class SqueezeGate(nn.Module):
    """The simplest form: channels first, channel preserving, no prune rule (Torch-Pruning traces through it)."""

    def __init__(self, c1: int, reduction: int = 4) -> None:
        super().__init__()
        mid = make_divisible(c1 / reduction, 8)
        self.fc1, self.fc2 = nn.Conv2d(c1, mid, 1), nn.Conv2d(mid, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))).sigmoid()


class GroupedGate(nn.Module):
    """GGCA-style grouped coordinate gate: the channels form ``groups`` groups that share one bottleneck (with a
    reduction) over a group's channels; each group is pooled along H and along W and gated per axis.

    The reshape into groups is what Torch-Pruning cannot follow, so it gets a prune rule: a leaf that removes the same
    positions from every group.
    """

    def __init__(self, c1: int, groups: int = 4, reduction: int = 4) -> None:
        super().__init__()
        if c1 % groups:
            raise ValueError(f"GroupedGate: c1={c1} must be divisible by groups={groups}")
        cg = c1 // groups
        mid = make_divisible(cg / reduction, 4)
        self.groups = groups
        self.conv1, self.bn = nn.Conv2d(cg, mid, 1), nn.BatchNorm2d(mid)
        self.conv_h, self.conv_w = nn.Conv2d(mid, cg, 1), nn.Conv2d(mid, cg, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        g = x.reshape(-1, x.shape[1] // self.groups, h, x.shape[3])
        y = torch.cat((g.mean(dim=3, keepdim=True), g.mean(dim=2, keepdim=True).transpose(2, 3)), dim=2)
        y = F.relu(self.bn(self.conv1(y)))
        a_h = self.conv_h(y[:, :, :h]).sigmoid()
        a_w = self.conv_w(y[:, :, h:].transpose(2, 3)).sigmoid()
        return (g * a_h * a_w).reshape_as(x)


def prune_grouped_gate(layer: GroupedGate, idxs: list[int]) -> None:
    """Block channel ``i`` is position ``i % cg`` of its group; every group loses the same positions."""
    cg = layer.conv_h.out_channels
    positions = sorted({i % cg for i in idxs})
    if len(positions) * layer.groups != len(idxs):
        raise RuntimeError(f"GroupedGate must lose the same positions in every group, got {idxs}")
    tp.prune_conv_in_channels(layer.conv1, positions)
    tp.prune_conv_out_channels(layer.conv_h, positions)
    tp.prune_conv_out_channels(layer.conv_w, positions)


def check_grouped_gate(layer: GroupedGate) -> str | None:
    widths = (layer.conv1.in_channels, layer.conv_h.out_channels, layer.conv_w.out_channels)
    return None if len(set(widths)) == 1 else f"group widths in/out_h/out_w {widths} differ"


@pytest.fixture(scope="module")
def registered():
    yolo_ext.register_module(SqueezeGate)
    yolo_ext.register_module(
        GroupedGate, prune=prune_grouped_gate, groups=lambda m: m.groups, check=check_grouped_gate
    )
    yield
    yolo_ext.unregister_module(SqueezeGate)
    yolo_ext.unregister_module(GroupedGate)


def yaml_with(tmp_path: Path, name: str, args: list) -> Path:
    """yolo11 with ``name`` instead of C2PSA (layer 10: channel preserving, no index moves), as a YAML file whose
    unscaled name lets Ultralytics read the scale from ``yolo11<scale>-...``."""
    d = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    for key in ("scale", "yaml_file"):
        d.pop(key, None)
    d["backbone"][10] = [-1, 1, name, args]
    path = tmp_path / f"yolo11-{name.lower()}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.mark.parametrize("scale", "nslmx")
def test_simplest_form_every_scale(registered, tmp_path, scale):
    path = yaml_with(tmp_path, "SqueezeGate", [4])
    model = DetectionModel(path.with_name(f"yolo11{scale}-squeezegate.yaml"), verbose=False).eval()
    gate, sppf = model.model[10], model.model[9]
    assert model.yaml["scale"] == scale and isinstance(gate, SqueezeGate)
    assert gate.fc1.in_channels == gate.fc2.out_channels == sppf.cv2.conv.out_channels  # c1 from the layer before
    assert gate.fc1.out_channels == make_divisible(gate.fc1.in_channels / 4, 8)  # the YAML arg reached it
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 3, 64, 64))[0]).all()


def test_simplest_form_prunes_by_tracing(registered, tmp_path):
    model = DetectionModel(yaml_with(tmp_path, "SqueezeGate", [4]).with_name("yolo11n-squeezegate.yaml"), verbose=False)
    gate, sppf = model.model[10], model.model[9]
    width, inner = gate.fc1.in_channels, gate.fc1.out_channels
    prune_model(model, PruneConfig(ratio=0.4, imgsz=64))
    assert gate.fc1.in_channels == gate.fc2.out_channels == sppf.cv2.conv.out_channels < width
    assert gate.fc2.in_channels == gate.fc1.out_channels < inner  # the inner conv pair is a group of its own


def _build_grouped(tmp_path: Path) -> DetectionModel:
    torch.manual_seed(0)
    path = yaml_with(tmp_path, "GroupedGate", [4, 4]).with_name("yolo11n-groupedgate.yaml")
    return randomize(DetectionModel(path, nc=3, verbose=False), convs=True).eval()


def test_own_prune_rule_is_used_and_checked(registered, tmp_path):
    model = _build_grouped(tmp_path)
    gate = model.model[10]
    old = {n: p.detach().clone() for n, p in gate.named_parameters()}
    cg, mid = gate.conv_h.out_channels, gate.conv1.out_channels
    prune_model(model, PruneConfig(ratio=0.4, imgsz=64))
    new_cg = gate.conv_h.out_channels
    assert new_cg < cg and gate.conv1.out_channels == mid and gate.groups == 4  # positions went, groups stayed
    assert model.model[9].cv2.conv.out_channels == 4 * new_cg  # every group lost the same number
    # the rule kept the same positions in conv1's inputs and both gates' outputs, weights untouched
    kept = [next(j for j in range(cg) if torch.equal(old["conv_h.weight"][j], row)) for row in gate.conv_h.weight]
    assert kept == sorted(kept) and len(set(kept)) == new_cg
    assert torch.equal(gate.conv_w.weight, old["conv_w.weight"][kept])
    assert torch.equal(gate.conv1.weight, old["conv1.weight"][:, kept])
    # the validator runs the user's check
    shapes = output_shapes(model)
    tp.prune_conv_out_channels(gate.conv_w, [0])
    with pytest.raises(PrunedModelError, match=r"model\.10 \(GroupedGate\).*group widths"):
        check_model(model, shapes)


def test_own_module_reloads_and_exports_in_fresh_process(registered, tmp_path):
    """The checkpoint names the class by import path (this file); a fresh process that can import it loads the
    pruned model, and Ultralytics exports it to ONNX with dynamic shapes that match PyTorch."""
    assert GroupedGate in torch.serialization.get_safe_globals()
    model = _build_grouped(tmp_path)
    prune_model(model, PruneConfig(ratio=0.4, imgsz=64))
    yolo = YOLO("yolo11n.yaml")
    yolo.model = model
    out = tmp_path / "grouped.pt"
    yolo.save(out)
    assert GroupedGate.__module__ == Path(__file__).stem
    code = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import numpy as np, onnxruntime as ort, torch
from ultralytics import YOLO
model = YOLO({str(out)!r})
gate = model.model.model[10]
assert type(gate).__name__ == "GroupedGate"
assert gate.conv_h.out_channels * 4 == model.model.model[9].cv2.conv.out_channels
onnx = model.export(format="onnx", imgsz=64, dynamic=True, simplify=False)
net = YOLO({str(out)!r}).model.float().eval()
net.model[-1].export = True
sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
for shape in ((1, 3, 64, 64), (2, 3, 96, 64)):
    x = torch.rand(*shape)
    with torch.no_grad():
        ref = net(x).numpy()
    got = sess.run(None, {{sess.get_inputs()[0].name: x.numpy()}})[0]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.abs(got - ref).max() < 1e-3 * max(1.0, np.abs(ref).max()), np.abs(got - ref).max()
print("ok")
"""
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
