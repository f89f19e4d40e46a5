"""The spec table: what is derived from it agrees with it, every YAML-named module goes end to end, bad specs refused.

The end-to-end test is parametrized over the table itself, so a new spec line is tested without editing this file.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.modules import C2PSA, C2f, C3k2
from ultralytics.nn.tasks import DetectionModel, yaml_model_load

import yolo_ext
from conftest import randomize
from yolo_ext.prune import PruneConfig, prune_model
from yolo_ext.prune.leaves import leaf_pruners
from yolo_ext.prune.split import is_split_block
from yolo_ext.registry import spec as spec_table
from yolo_ext.registry.spec import ModuleSpec, SpecError

YAML_SPECS = [s for s in spec_table.specs() if s.parse is not None]


def place(name: str, parse: str, args: list | None = None, scale: str = "n") -> dict:
    """yolo11 with ``name`` in it: an attention module instead of C2PSA (layer 10, channel preserving, so no index
    moves), or a C3k2-like block instead of every C3k2 (same arguments)."""
    d = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    d.pop("yaml_file", None)
    d["scale"] = scale
    if parse == "attention":
        d["backbone"][10] = [-1, 1, name, list(args or [])]
    else:
        for layer in d["backbone"] + d["head"]:
            if layer[2] == "C3k2":
                layer[2] = name
    return d


def test_derived_tables_agree_with_the_specs():
    classes = [s.cls for s in spec_table.specs()]
    assert len(classes) == len(set(classes))
    assert set(leaf_pruners()) == {s.cls for s in spec_table.specs() if s.leaf}
    assert yolo_ext.registered_modules() == sorted(s.name for s in YAML_SPECS)
    assert len(YAML_SPECS) >= 6 and "SimAM" in yolo_ext.registered_modules()
    safe = set(torch.serialization.get_safe_globals())
    for s in YAML_SPECS:
        assert getattr(tasks, s.name) is s.cls  # the parser resolves the YAML name
        assert s.cls in getattr(tasks, f"_yolo_ext_{s.parse}")  # and treats it as its kind
        assert getattr(yolo_ext, s.name) is s.cls and s.name in yolo_ext.__all__  # exported
        assert s.cls in safe  # loadable with ULTRALYTICS_SAFE_LOAD=1
    assert yolo_ext.is_installed()


def test_rules_follow_the_class_hierarchy():
    """Splits and checks walk the MRO (C3k2 splits like C2f); a leaf rule is for its exact class only."""
    assert is_split_block(C3k2(16, 16, 1)) and is_split_block(yolo_ext.C3k2_RVB(16, 16, 1))
    assert is_split_block(C2PSA(32, 32, 1))

    class OwnForward(C2f):
        def forward(self, x):
            return super().forward(x)

    assert not is_split_block(OwnForward(16, 16, 1))  # split_forward would not reproduce it: traced instead
    assert spec_table.checks_for(C3k2) == [spec_table.spec_for(C2f).check]

    class SubCoordAtt(yolo_ext.CoordAtt):
        pass

    assert spec_table.prune_kind(yolo_ext.CoordAtt) == "leaf" and spec_table.prune_kind(SubCoordAtt) == "trace"


@pytest.mark.parametrize("spec", YAML_SPECS, ids=lambda s: s.name)
def test_every_module_builds_prunes_reloads_and_exports(spec, tmp_path):
    """Named in a YAML, pruned (the validator runs inside prune_model), pickled and reloaded, and the pruned layer
    exported to ONNX with dynamic H and W, matching PyTorch at two sizes."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = randomize(DetectionModel(place(spec.name, spec.parse), verbose=False), convs=True).eval()
    layers = [m for m in model.modules() if type(m) is spec.cls]
    assert layers, f"{spec.name} was not built"
    seen: dict[int, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.__setitem__(id(m), a[0].shape[1])) for m in layers]
    model(torch.rand(1, 3, 64, 64))
    before = dict(seen)

    result = prune_model(model, PruneConfig(ratio=0.4, imgsz=64))
    assert result.params_after < 0.7 * result.params_before
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        y = model(x)[0]
    assert all(seen[i] < before[i] for i in before), "the module's channels did not follow the pruning"
    for h in hooks:
        h.remove()

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(buffer, weights_only=False).eval()(x)[0], y)

    layer = layers[0].eval()
    path = tmp_path / "layer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            layer, (torch.randn(1, seen[id(layer)], 8, 12),), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, seen[id(layer)], 8, 12), (2, seen[id(layer)], 10, 6)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = layer(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-4, rtol=1e-4)


class _Gate(nn.Module):
    def __init__(self, c1: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c1, 1)

    def forward(self, x):
        return x * self.conv(x).sigmoid()


class _NoChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(parse="dense"), r"unknown parse kind 'dense'; use one of attention, c3k2"),
        (dict(prune="magic"), r"unknown prune kind 'magic'"),
        (dict(prune="split"), r"prune='split' is for C2f / C2PSA / PSA subclasses"),
        (dict(groups=lambda m: 2), r"groups only applies to a leaf rule"),
        (dict(name="my gate"), r"name must be a Python identifier"),
        (dict(name="Conv"), r"'Conv' is already Ultralytics'.*name='MyConv'"),
        (dict(parse="c3k2"), r"builds it as _Gate\(c1, c2, n, \*yaml_args\).*takes 1 positional"),
    ],
)
def test_bad_registration_says_what_to_change(kwargs, pattern):
    with pytest.raises(SpecError, match=pattern):
        yolo_ext.register_module(_Gate, **kwargs)
    assert spec_table.spec_for(_Gate) is None and "_Gate" not in yolo_ext.registered_modules()


def test_duplicates_are_refused_and_unregister_undoes():
    with pytest.raises(SpecError, match=r"_NoChannels cannot be registered with parse='attention'.*c1 first"):
        yolo_ext.register_module(_NoChannels)
    with pytest.raises(SpecError, match=r"CoordAtt is already registered \(YAML name 'CoordAtt'\)"):
        yolo_ext.register_module(yolo_ext.CoordAtt)
    with pytest.raises(SpecError, match="ships with yolo_ext"):
        yolo_ext.unregister_module(yolo_ext.CoordAtt)
    with pytest.raises(SpecError, match="taken by .*CoordAtt"):
        yolo_ext.register_module(_Gate, name="CoordAtt")
    assert yolo_ext.register_module(_Gate) is _Gate
    try:
        with pytest.raises(SpecError, match=r"_Gate is already registered"):
            yolo_ext.register_module(_Gate, name="OtherGate")
        assert "_Gate" in yolo_ext.registered_modules() and yolo_ext.is_installed()
        model = DetectionModel(place("_Gate", "attention"), verbose=False)
        assert isinstance(model.model[10], _Gate)
    finally:
        yolo_ext.unregister_module(_Gate)
    assert "_Gate" not in yolo_ext.registered_modules() and not hasattr(tasks, "_Gate") and yolo_ext.is_installed()
    with pytest.raises(yolo_ext.ModelYAMLError, match="Unknown module '_Gate'"):
        DetectionModel(place("_Gate", "attention"), verbose=False)


def test_spec_needs_a_module_class():
    with pytest.raises(SpecError, match="torch.nn.Module subclass"):
        ModuleSpec(int)
