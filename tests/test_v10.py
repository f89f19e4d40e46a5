"""YOLOv10: the shipped YAMLs (every scale, b included), pruning PSA / SCDown / C2fCIB / CIB / RepVGGDW / v10Detect,
the pruned checkpoint through tools/prune.py, a fresh process (val, predict, ONNX), and fine-tuning with its loss."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import pytest
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.modules import PSA, SCDown, v10Detect
from ultralytics.nn.modules.block import CIB, C2fCIB, RepVGGDW
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, RTDETRDetectionModel, yaml_model_load
from ultralytics.utils.loss import E2ELoss
from ultralytics.utils.torch_utils import unwrap_model

import yolo_ext
from conftest import randomize
from test_prune_cli import _load_tool, reload_val_predict_export
from yolo_ext.cfg_paths import scaled_name
from yolo_ext.finetune import finetune
from yolo_ext.prune import PruneConfig, PruningError, prune_model
from yolo_ext.prune.checkpoint import load_detection_checkpoint, prune_checkpoint
from yolo_ext.prune.heads import head_outputs

NAMES = {0: "RBC", 1: "WBC", 2: "Platelets"}
IMGSZ = 128


def build(cfg: str | Path, nc: int = 80) -> DetectionModel:
    torch.manual_seed(0)
    return randomize(DetectionModel(str(cfg), nc=nc, verbose=False)).eval()


def layer_widths(model: DetectionModel) -> list[tuple[str, int]]:
    """(class, output channels) of every layer before the head, CoordAtt left out (it keeps its input's width)."""
    out: list[tuple[str, int]] = []
    layers = [m for m in model.model[:-1] if not isinstance(m, yolo_ext.CoordAtt)]
    hooks = [m.register_forward_hook(lambda m, a, y: out.append((type(m).__name__, y.shape[1]))) for m in layers]
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("scale", "nb")
def test_coordatt_yaml_has_ultralytics_widths(scale):
    """Every layer as wide as in Ultralytics' yolov10<scale>.yaml; b (a letter Ultralytics' file-name guess does not
    read) resolves by name and builds its own scale. At n the network is yolov10n plus the three CoordAtt."""
    name = scaled_name("yolov10-coordatt.yaml", scale)
    assert name == f"yolov10{scale}-coordatt.yaml"
    ours = build(yolo_ext.model_yaml(name))
    stock = build(f"yolov10{scale}.yaml")
    assert ours.yaml["scale"] == scale and stock.yaml["scale"] == scale
    assert [w for _, w in layer_widths(ours)] == [w for _, w in layer_widths(stock)]
    head = ours.model[-1]
    assert isinstance(head, v10Detect)
    assert all(isinstance(ours.model[i], yolo_ext.CoordAtt) for i in head.f)  # attention at the three head inputs
    if scale == "n":
        params = lambda layers: [sum(p.numel() for p in m.parameters()) for m in layers]  # noqa: E731
        body = [m for m in ours.model if not isinstance(m, yolo_ext.CoordAtt)]
        assert [type(m) for m in body] == [type(m) for m in stock.model]
        assert params(body) == params(stock.model)


def test_rvb_se_yaml_replaces_the_neck_c2f():
    ours = build(yolo_ext.model_yaml("yolov10n-rvb-se.yaml"))
    stock = build("yolov10n.yaml")
    assert layer_widths(ours) == [
        ("C3k2_RVB_SE" if i in (13, 16, 19) else name, w) for i, (name, w) in enumerate(layer_widths(stock))
    ]
    assert isinstance(ours.model[-1], v10Detect)


def _fuse_repvggdw(model: DetectionModel) -> DetectionModel:
    """Fold every RepVGGDW as Ultralytics' fuse does (one 7x7 depth-wise conv), leaving the rest unfused."""
    for m in model.modules():
        if isinstance(m, RepVGGDW):
            m.fuse()
            m.forward = m.forward_fuse
    return model


def _train_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, list[tuple[int, ...]]]:
    """Shapes of both training branches of v10Detect (boxes, scores per branch)."""
    with torch.no_grad():
        preds = model.train()(x)
    model.eval()
    return {branch: [tuple(preds[branch][k].shape) for k in ("boxes", "scores")] for branch in ("one2many", "one2one")}


@pytest.mark.parametrize("case", ["yolov10n", "yolov10n-fused-repvggdw", "yolov10n-coordatt"])
def test_prunes_every_v10_block_and_keeps_the_head_outputs(case):
    cfg = yolo_ext.model_yaml(f"{case}.yaml") if "coordatt" in case else "yolov10n.yaml"
    model = build(cfg)
    if "fused" in case:
        _fuse_repvggdw(model)
    head = model.model[-1]
    outputs = [(m, m.out_channels) for m in head_outputs(head)]
    assert len(outputs) == 12  # 3 levels x (box, class) x (one-to-many, one-to-one)
    x = torch.rand(1, 3, IMGSZ, 96)
    train_before = _train_shapes(model, x)
    with torch.no_grad():
        eval_before = model(x)[0].shape
    blocks = {n: copy.deepcopy(m) for n, m in model.named_modules() if isinstance(m, (PSA, SCDown, C2fCIB, RepVGGDW))}

    result = prune_model(model, PruneConfig(ratio=0.4, criterion="l1", imgsz=IMGSZ))  # the validator runs inside

    assert 0.55 <= 1 - result.params_after / result.params_before <= 0.68
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert [m.out_channels for m, _ in outputs] == [c for _, c in outputs]
    assert all(any(o is m for o, _ in outputs) for m in head_outputs(model.model[-1]))  # the same, unreplaced layers
    assert _train_shapes(model, x) == train_before
    with torch.no_grad():
        y = model(x)[0]
    assert y.shape == eval_before and torch.isfinite(y).all()
    modules = dict(model.named_modules())
    for name, old in blocks.items():
        new = modules[name]
        if isinstance(new, PSA):
            assert new.c == new.cv1.conv.out_channels // 2 < old.c
            assert new.attn.head_dim < old.attn.head_dim and new.attn.key_dim == old.attn.key_dim
        elif isinstance(new, SCDown):
            dw = new.cv2.conv
            assert dw.groups == dw.out_channels == new.cv1.conv.out_channels < old.cv1.conv.out_channels
        elif isinstance(new, C2fCIB):
            assert new.c < old.c and all(isinstance(b, CIB) for b in new.m)
        else:  # RepVGGDW: its depth-wise branches (one once fused) keep equal widths and lose channels
            branches = (new.conv, getattr(new, "conv1", None))
            convs = [c.conv if hasattr(c, "conv") else c for c in branches if c is not None]
            assert len(convs) == (1 if "fused" in case else 2)
            widths = {c.out_channels for c in convs} | {c.groups for c in convs}
            assert len(widths) == 1 and widths.pop() < old.dim
    for branch in model.model[-1].cv3:  # the class branch's depth-wise conv follows the pruned neck
        dw = branch[0][0].conv
        assert dw.groups == dw.in_channels == dw.out_channels


def _checkpoint(cfg: str | Path, path: Path) -> Path:
    """A 3-class checkpoint as Ultralytics saves it (half precision)."""
    torch.manual_seed(0)
    yolo = YOLO(str(cfg))
    yolo.model = DetectionModel(yolo.model.yaml, nc=3, verbose=False)
    yolo.model.names = NAMES
    yolo.save(path)
    return path


def _tool(*args: str) -> tuple[int, str]:
    """tools/prune.py's main() in-process (as its CLI runs it): exit code and stderr."""
    tool = _load_tool()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = tool.main(tool.get_args_parser().parse_args([*args, "--latency-runs", "0", "--imgsz", str(IMGSZ)]))
    return code, err.getvalue()


def test_tool_prunes_a_v10_checkpoint_that_reloads_validates_predicts_and_exports(tiny_bccd, tmp_path):
    source = _checkpoint("yolov10n.yaml", tmp_path / "v10.pt")
    code, err = _tool("--model-path", str(source), "--prune-type", "l1")
    out = tmp_path / "v10-pruned40.pt"
    assert code == 0, err
    model = torch.load(out, weights_only=False)["model"]
    assert isinstance(model.model[-1], v10Detect) and model.yolo_ext_pruning[-1]["params"][1] < 0.45 * (
        model.yolo_ext_pruning[-1]["params"][0])
    reload_val_predict_export(out, tiny_bccd)


def test_finetune_keeps_the_pruned_v10_and_trains_with_its_end_to_end_loss(tiny_bccd, tmp_path):
    source = _checkpoint(yolo_ext.model_yaml("yolov10n-coordatt.yaml"), tmp_path / "base.pt")
    pruned = prune_checkpoint(source, PruneConfig(ratio=0.4, imgsz=64), tmp_path / "pruned.pt", latency_runs=0).output
    widths = lambda m: {n: c.out_channels for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}  # noqa: E731
    reference = widths(torch.load(pruned, weights_only=False)["model"])
    yolo = finetune(pruned, tiny_bccd, epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                    project=str(tmp_path / "runs"), name="ft", exist_ok=True)
    trained = unwrap_model(yolo.trainer.model)
    assert isinstance(trained.criterion, E2ELoss)  # one-to-many and one-to-one branches both trained
    assert all(torch.isfinite(v) and v > 0 for v in yolo.trainer.tloss.values())  # box, cls, dfl of the last epoch
    assert widths(trained) == reference
    best = torch.load(yolo.trainer.best, weights_only=False)["model"]
    assert widths(best) == reference and isinstance(best.model[-1], v10Detect)


def _tiny_rtdetr() -> RTDETRDetectionModel:
    d = copy.deepcopy(yaml_model_load("rtdetr-l.yaml"))
    d["scales"] = {"l": [0.33, 0.25, 256]}  # what is refused does not need its full width
    d["scale"] = "l"
    return RTDETRDetectionModel(d, verbose=False)


@pytest.mark.parametrize("kind", ["RT-DETR", "classify"])
def test_unsupported_models_are_refused_naming_what_is_supported(kind, tmp_path):
    model = _tiny_rtdetr() if kind == "RT-DETR" else ClassificationModel("yolo11n-cls.yaml", verbose=False)
    supported = r"yolo_ext prunes these models only: detect \(Detect, v10Detect\), segment \("
    with pytest.raises(PruningError, match=rf"a {kind} model \({type(model).__name__}, head \w+\); {supported}"):
        prune_model(model, PruneConfig(imgsz=64))
    path = tmp_path / f"{kind}.pt"
    torch.save({"model": model.half()}, path)
    with pytest.raises(PruningError, match=rf"'{path}' holds a {kind} model"):
        load_detection_checkpoint(path)
    code, err = _tool("--model-path", str(path))
    assert code == 2 and f"holds a {kind} model" in err and "v10Detect" in err
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing written
