"""Registration into Ultralytics' parser: every shipped YAML at every scale it has, heads, errors, idempotence."""

from __future__ import annotations

import copy
import re
import shutil

import pytest
import torch
from ultralytics.nn import tasks
from ultralytics.nn.modules import C3k2, Detect
from ultralytics.nn.tasks import DetectionModel

import yolo_ext
from conftest import randomize
from yolo_ext import C3k2_RVB, C3k2_RVB_SE, ModelYAMLError, model_names, model_yaml, model_yamls
from yolo_ext.nn import MCA, ContextAggregation, CoordAtt

YAMLS = model_yamls()
NAMES = model_names()  # every file at every scale it builds at: a YOLOv10 file (one per scale) only at its own


def scale_of(name: str) -> str:
    """yolov10b-rvb-se.yaml -> b: the scale letter after the version."""
    return re.match(r"yolov?\d+([nslmxb])", name)[1]


def build(cfg, **kw) -> DetectionModel:
    return DetectionModel(cfg, verbose=False, **kw)


def test_ships_all_placements():
    names = {p.name for p in YAMLS}
    assert {
        "yolov8-mca.yaml",
        "yolo11-ctx-p3.yaml",
        "yolo11-ctx-p3p5.yaml",
        "yolo11-ctx-p3p4p5.yaml",
        "yolo11-coordatt.yaml",
        "yolo11-rvb-se.yaml",
        "yolo26-rvb-se.yaml",
        *(f"yolov10{scale}-{change}.yaml" for scale in "nsmblx" for change in ("coordatt", "rvb-se")),
    } <= names
    assert {scale_of(n) for n in NAMES} == set("nsmblx")
    assert [n for n in NAMES if n.startswith("yolov10")] == sorted(n for n in names if n.startswith("yolov10"))
    assert model_names("b") == ["yolov10b-coordatt.yaml", "yolov10b-rvb-se.yaml"]


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:-5])
def test_yaml_builds_and_runs_every_scale(name):
    model = build(model_yaml(name))
    assert model.yaml["scale"] == scale_of(name)
    ours = [m for m in model.modules() if isinstance(m, (C3k2_RVB, CoordAtt, MCA, ContextAggregation))]
    assert ours, "the YAML must contain yolo_ext modules"
    with torch.no_grad():
        for shape in ((1, 3, 640, 640), (1, 3, 320, 256)):
            x = torch.rand(shape)
            model.eval()
            preds = model(x)
            y = preds[0] if isinstance(preds, (tuple, list)) else preds
            assert torch.isfinite(y).all()
            anchors = sum((shape[2] // s) * (shape[3] // s) for s in (8, 16, 32))
            assert y.shape[0] == 1 and anchors in y.shape
            model.train()
            feats = model(x)
            feats = feats.get("one2many", feats) if isinstance(feats, dict) else feats  # YOLO26: two heads
            feats = feats["feats"] if isinstance(feats, dict) else feats  # 8.4: {boxes, scores, feats}
            assert [f.shape[-2:] for f in feats] == [(shape[2] // s, shape[3] // s) for s in (8, 16, 32)]


@pytest.mark.parametrize("scale", "nm")
@pytest.mark.parametrize("family", ["11", "26"])
def test_channels_follow_width_like_c3k2(family, scale):
    """C3k2_RVB_SE gets exactly the c1/c2/n/c3k that C3k2 gets, and attention gets the channels of its input."""
    ours = build(model_yaml(f"yolo{family}{scale}-rvb-se.yaml"))
    stock = build(f"yolo{family}{scale}.yaml")
    pairs = [(a, b) for a, b in zip(ours.model, stock.model) if isinstance(a, C3k2_RVB_SE)]
    assert len(pairs) >= 7
    for a, b in pairs:
        assert isinstance(b, C3k2)
        assert a.cv1.conv.in_channels == b.cv1.conv.in_channels
        assert a.cv2.conv.out_channels == b.cv2.conv.out_channels
        assert len(a.m) == len(b.m)
        assert type(a.m[0]).__name__.startswith("C3k") == type(b.m[0]).__name__.startswith("C3k")
    att = build(model_yaml(f"yolo11{scale}-coordatt.yaml"))
    for layer in att.model:
        if isinstance(layer, CoordAtt):
            prev = att.model[layer.i - 1]
            assert layer.conv_h.out_channels == prev.cv2.conv.out_channels


@pytest.mark.parametrize("family", ["11", "26"])
def test_detect_head_matches_builtin(family):
    """Ultralytics keys the Detect head off `m is C3k2`; our blocks must get the same (non-legacy) head."""
    ours = build(model_yaml(f"yolo{family}n-rvb-se.yaml"))
    stock = build(f"yolo{family}n.yaml")
    params = lambda m: sum(p.numel() for p in m.model[-1].parameters())  # noqa: E731
    assert isinstance(ours.model[-1], Detect)
    assert params(ours) == params(stock)
    assert ours.model[-1].legacy is False


def test_register_is_idempotent_and_reported():
    parser = tasks.parse_model
    yolo_ext.install()
    yolo_ext.install()
    assert tasks.parse_model is parser
    assert yolo_ext.is_installed()
    assert tasks.C3k2_RVB is C3k2_RVB


def _yaml_dict(name: str) -> dict:
    from ultralytics.nn.tasks import yaml_model_load

    return copy.deepcopy(yaml_model_load(model_yaml(name)))


def test_unknown_module_lists_registered():
    d = _yaml_dict("yolo11n-coordatt.yaml")
    d["head"][6][2] = "CoordAttention"
    with pytest.raises(ModelYAMLError, match=r"Unknown module 'CoordAttention' at model YAML layer 17.*CoordAtt"):
        build(d)


def test_bad_argument_names_layer_index():
    d = _yaml_dict("yolo11n-ctx-p3.yaml")
    d["head"][6][3] = [0]  # reduction 0 cannot work
    with pytest.raises(ModelYAMLError, match=r"layer 17 \(ContextAggregation"):
        build(d)


def test_bad_argument_restores_default_activation():
    from ultralytics.nn.modules import Conv

    before = Conv.default_act
    d = _yaml_dict("yolo11n-ctx-p3.yaml")
    d["activation"] = "nn.ReLU()"
    d["head"][6][3] = [0]
    with pytest.raises(ModelYAMLError):
        build(d)
    assert Conv.default_act is before


def test_model_yaml_errors_name_the_shipped_files():
    with pytest.raises(FileNotFoundError, match="yolo11-coordatt.yaml"):
        model_yaml("yolo11n-nonexistent.yaml")


@pytest.mark.parametrize("change", ["coordatt", "rvb-se"])
def test_per_scale_family_without_a_scale_letter_names_its_files(change):
    """YOLOv10 YAMLs ship one per scale; the unscaled name has no file and says which names to pass instead."""
    files = ", ".join(f"yolov10{scale}-{change}.yaml" for scale in "nsmblx")
    with pytest.raises(FileNotFoundError, match=rf"yolov10-{change}.yaml ships one file per scale.*{re.escape(files)}"):
        model_yaml(f"yolov10-{change}.yaml")
    assert model_yaml(f"yolov10s-{change}.yaml") in YAMLS  # a per-scale name resolves to its own file


def test_loader_reads_the_scale_from_the_file_name_only(tmp_path):
    """Ultralytics maps yolo11s-x.yaml to yolo11-x.yaml with a regex over the whole path, which a folder such as
    "v10s" derails; a user's single-file YOLOv10 YAML with a b scale builds it from the name yolov10b-...yaml."""
    from ultralytics.nn.tasks import yaml_model_load

    folder = tmp_path / "v10s"
    folder.mkdir()
    shutil.copy(model_yaml("yolo11-coordatt.yaml"), folder / "yolo11-coordatt.yaml")
    d = yaml_model_load(folder / "yolo11s-coordatt.yaml")
    assert d["scale"] == "s" and d["yaml_file"] == str(folder / "yolo11s-coordatt.yaml")
    mine = tmp_path / "yolov10-mine.yaml"
    two_scales = model_yaml("yolov10b-coordatt.yaml").read_text().replace("scales:", "scales:\n  n: [0.33, 0.25, 1024]")
    mine.write_text(two_scales)  # n first: Ultralytics alone would build n
    assert yaml_model_load(tmp_path / "yolov10b-mine.yaml")["scale"] == "b"
    with pytest.raises(FileNotFoundError, match="does not exist"):  # neither the name nor its unscaled file
        yaml_model_load(tmp_path / "yolov10b-missing.yaml")


def test_unsupported_parser_fails_loudly(monkeypatch):
    from yolo_ext.integration import parser as reg

    def parse_model(d, ch, verbose=True):  # a parser without the frozensets yolo_ext extends
        return None

    with pytest.raises(yolo_ext.RegistrationError, match=r"needs ultralytics>=8\.4\.104,<8\.5"):
        reg.build_parser(parse_model)



@pytest.mark.parametrize("name", [n for n in NAMES if "rvb" in n and scale_of(n) in "ns"], ids=lambda n: n[:-5])
def test_fused_model_equals_unfused(name):
    """Ultralytics' own model.fuse() reaches every RepVGGDW and the fused detector gives the same outputs."""
    from yolo_ext.nn.repvit import RepVGGDW

    model = build(model_yaml(name)).eval()
    randomize(model)
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        expected = model(x)[0]
        model.fuse(verbose=False)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert all(not hasattr(m, "conv1") for m in model.modules() if isinstance(m, RepVGGDW))
        torch.testing.assert_close(model(x)[0], expected, rtol=1e-4, atol=1e-4)
        model.fuse(verbose=False)  # fusing twice is harmless
        torch.testing.assert_close(model(x)[0], expected, rtol=1e-4, atol=1e-4)


def test_tracebacks_through_the_edited_parser_show_its_source():
    import inspect
    import traceback

    d = _yaml_dict("yolo11n-ctx-p3.yaml")
    d["head"][6][3] = [0]  # reduction 0 raises inside the parser
    with pytest.raises(ModelYAMLError) as info:
        build(d)
    frames = [f for f in traceback.extract_tb(info.value.__cause__.__traceback__)
              if f.filename.startswith("<yolo_ext edit")]
    assert frames and all(f.line for f in frames), frames
    assert "m(*args)" in frames[-1].line  # the line that built the layer
    assert "_yolo_ext_attention" in inspect.getsource(tasks.parse_model.__wrapped__)
