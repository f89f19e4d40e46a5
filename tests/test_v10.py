"""YOLOv10: the shipped YAMLs (every scale, b included), pruning PSA / SCDown / C2fCIB / CIB / RepVGGDW / v10Detect,
the pruned checkpoint through tools/prune.py, a fresh process (val, predict, ONNX), and fine-tuning with its loss."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import pytest
import torch
from test_prune_cli import _load_tool, reload_val_predict_export
from torch import nn
from ultralytics.nn.modules import PSA, C2f, SCDown, v10Detect
from ultralytics.nn.modules.block import CIB, C2fCIB, RepVGGDW
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, RTDETRDetectionModel, yaml_model_load
from ultralytics.utils.loss import E2ELoss
from ultralytics.utils.torch_utils import unwrap_model

import yolo_ext
from conftest import randomize, save_three_class
from yolo_ext.prune import PruneConfig, PruningError, prune_model
from yolo_ext.prune.checkpoint import load_prunable_checkpoint, prune_checkpoint
from yolo_ext.prune.heads import head_outputs
from yolo_ext.train.distill import PrunedDistillationModel
from yolo_ext.train.finetune import finetune

IMGSZ = 128


def build(cfg: str | Path, nc: int = 80) -> DetectionModel:
    torch.manual_seed(0)
    return randomize(DetectionModel(str(cfg), nc=nc, verbose=False)).eval()


V10_SCALES = "nsmblx"
RVB_NECK = (13, 16, 19)  # the P4, P3, P4 neck blocks yolov10<scale>-rvb-se.yaml replaces; the P5 C2fCIB (22) stays


def layout(model: DetectionModel, skip: type | tuple[type, ...] = ()) -> list[tuple[list[str], int]]:
    """Per layer: the class of every submodule (the layer's structure all the way down) and its parameter count,
    layers of type ``skip`` left out. Equal layouts are the same network up to weights."""
    return [
        ([type(m).__name__ for m in layer.modules()], sum(p.numel() for p in layer.parameters()))
        for layer in model.model
        if not isinstance(layer, skip)
    ]


def stock_and_ours(scale: str, change: str) -> tuple[DetectionModel, DetectionModel]:
    stock = DetectionModel(f"yolov10{scale}.yaml", verbose=False)
    ours = DetectionModel(str(yolo_ext.model_yaml(f"yolov10{scale}-{change}.yaml")), verbose=False)
    assert ours.yaml["scale"] == scale == stock.yaml["scale"]  # b too, a letter Ultralytics' guess does not read
    return stock, ours


@pytest.mark.parametrize("scale", V10_SCALES)
def test_coordatt_yaml_is_ultralytics_layout_plus_coordatt(scale):
    """yolov10<scale>-coordatt.yaml is Ultralytics' yolov10<scale>.yaml layer for layer (C2f or C2fCIB as that scale
    has it, same widths, same parameters) plus three CoordAtt, which are exactly the inputs of v10Detect."""
    stock, ours = stock_and_ours(scale, "coordatt")
    assert layout(ours, skip=yolo_ext.CoordAtt) == layout(stock)
    attention = [i for i, m in enumerate(ours.model) if isinstance(m, yolo_ext.CoordAtt)]
    assert attention == ours.model[-1].f == [17, 21, 25]
    assert isinstance(ours.model[-1], v10Detect)


@pytest.mark.parametrize("scale", V10_SCALES)
def test_rvb_se_yaml_is_ultralytics_layout_with_its_neck_blocks_replaced(scale):
    """yolov10<scale>-rvb-se.yaml is Ultralytics' yolov10<scale>.yaml except the P3/P4 neck blocks, C2f or C2fCIB by
    scale, which are C3k2_RVB_SE of the same input and output widths."""
    stock, ours = stock_and_ours(scale, "rvb-se")
    keep = lambda layers: [x for i, x in enumerate(layers) if i not in RVB_NECK]  # noqa: E731
    assert keep(layout(ours)) == keep(layout(stock))
    for i in RVB_NECK:
        a, b = ours.model[i], stock.model[i]
        assert isinstance(a, yolo_ext.C3k2_RVB_SE) and type(b) in (C2f, C2fCIB)
        assert (a.cv1.conv.in_channels, a.cv2.conv.out_channels) == (b.cv1.conv.in_channels, b.cv2.conv.out_channels)


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


def _tool(*args: str) -> tuple[int, str]:
    """tools/prune.py's main() in-process (as its CLI runs it): exit code and stderr."""
    tool = _load_tool()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = tool.main(tool.get_args_parser().parse_args([*args, "--latency-runs", "0", "--imgsz", str(IMGSZ)]))
    return code, err.getvalue()


def test_tool_prunes_a_v10_checkpoint_that_reloads_validates_predicts_and_exports(tiny_bccd, tmp_path):
    source = save_three_class("yolov10n.yaml", tmp_path / "v10.pt")
    code, err = _tool("--model-path", str(source), "--prune-type", "l1", "--prune-ratio", "0.4", "--round-to", "1")
    out = tmp_path / "v10-pruned40.pt"
    assert code == 0, err
    model = torch.load(out, weights_only=False)["model"]
    assert isinstance(model.model[-1], v10Detect) and model.yolo_ext_pruning[-1]["params"][1] < 0.45 * (
        model.yolo_ext_pruning[-1]["params"][0])
    reload_val_predict_export(out, tiny_bccd)


def test_finetune_keeps_the_pruned_v10_and_trains_with_its_end_to_end_loss(tiny_bccd, tmp_path):
    source = save_three_class("yolov10n-coordatt.yaml", tmp_path / "base.pt")
    pruned = prune_checkpoint(source, PruneConfig(ratio=0.4, imgsz=64), tmp_path / "pruned.pt", latency_runs=0).output
    widths = lambda m: {n: c.out_channels for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}  # noqa: E731
    reference = widths(torch.load(pruned, weights_only=False)["model"])
    yolo = finetune(pruned, tiny_bccd, teacher="auto", epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                    plots=False, project=str(tmp_path / "runs"), name="ft", exist_ok=True)
    trained = unwrap_model(yolo.trainer.model)
    assert isinstance(trained, PrunedDistillationModel)  # 'auto' distils from the network it was pruned from
    trained = trained.student_model
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
        load_prunable_checkpoint(path)
    code, err = _tool("--model-path", str(path))
    assert code == 2 and f"holds a {kind} model" in err and "v10Detect" in err
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing written
