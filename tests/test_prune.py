"""Pruning engine: every family and shipped YAML, criteria, exact ratio 0, tolerances, repeated pruning, pitfalls."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from ultralytics.nn.modules import C2PSA, C2f, Detect
from ultralytics.nn.modules.block import Attention
from ultralytics.nn.tasks import ClassificationModel, DetectionModel

import yolo_ext
from conftest import randomize
from yolo_ext.nn import MCA, ContextAggregation, CoordAtt
from yolo_ext.prune import PruneConfig, PrunedModelError, PruningError, prune_model
from yolo_ext.prune.engine import protected_layers
from yolo_ext.prune.validate import check_model, output_shapes

IMGSZ = 128  # small inputs keep the suite fast; every code path is the same as at 640
# yolo12: A2C2f; v10: PSA, CIB
STOCK = ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolo12n.yaml", "yolov10n.yaml"]
SHIPPED = [str(yolo_ext.model_yaml(name)) for name in yolo_ext.model_names("n")]


def build(cfg: str) -> DetectionModel:
    torch.manual_seed(0)
    model = DetectionModel(cfg, verbose=False).eval()
    for m in model.modules():  # trained-like, non-trivial statistics and weights (zero-init branches too)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, ContextAggregation):
            nn.init.normal_(m.m.weight, std=0.02)
    return model


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)[0]


@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
@pytest.mark.parametrize("cfg", STOCK + SHIPPED, ids=lambda c: c.split("/")[-1][:-5])
def test_prunes_every_family_and_yaml(cfg, criterion):
    model = build(cfg)
    x = torch.rand(1, 3, IMGSZ, 96)
    before = outputs(model, x)
    result = prune_model(model, PruneConfig(ratio=0.4, criterion=criterion, imgsz=IMGSZ))
    after = outputs(model, x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    # about 1 - 0.6^2 of the weights go where both sides of a conv lose 40%; the protected head outputs keep theirs
    assert 0.55 <= 1 - result.params_after / result.params_before <= 0.68
    assert result.params_after == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg", STOCK + [c for c in SHIPPED if "rvb" in c or "ctx-p3p4p5" in c or "mca" in c])
def test_ratio_zero_is_exact(cfg):
    """Splitting C2f halves, stand-in forwards and merging back leave the network bit-identical."""
    model = build(cfg)
    x = torch.rand(1, 3, IMGSZ, 160)
    before = outputs(model, x)
    state = copy.deepcopy(model.state_dict())
    result = prune_model(model, PruneConfig(ratio=0.0, imgsz=IMGSZ))
    assert result.params_after == result.params_before
    assert torch.equal(outputs(model, x), before)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_each_prunable_group_keeps_the_ratio():
    """Uniform ratio r: every pruned conv keeps floor(c * (1 - r)) channels (per head for attention)."""
    model = build("yolo11n.yaml")
    result = prune_model(model, PruneConfig(ratio=0.4, imgsz=IMGSZ))
    changed = {k: v for k, v in result.channels_before.items() if result.channels_after[k] != v}
    assert len(changed) > 50
    for name, before in changed.items():
        if not name.endswith("attn.qkv.conv"):  # only its value rows shrink: queries and keys keep their width
            assert abs(result.channels_after[name] - before * 0.6) <= 2, name


@pytest.mark.parametrize("target", ["target_params", "target_macs"])
def test_reduction_target_within_tolerance(target):
    model = build("yolo11n.yaml")
    result = prune_model(model, PruneConfig(imgsz=IMGSZ, **{target: 0.5}))
    before, after = (result.params_before, result.params_after) if target == "target_params" else (
        result.macs_before, result.macs_after)
    assert abs((1 - after / before) - 0.5) <= 0.01


def test_pruning_twice_and_iteratively():
    model = build("yolo26n.yaml")
    first = prune_model(model, PruneConfig(ratio=0.3, imgsz=IMGSZ))
    second = prune_model(model, PruneConfig(ratio=0.3, imgsz=IMGSZ, iterative_steps=2))
    assert second.params_before == first.params_after > second.params_after


def test_head_outputs_dfl_and_attention_gates_keep_their_channels():
    model = build(str(yolo_ext.model_yaml("yolo26n-ctx-p3p5.yaml")))
    detect = model.model[-1]
    heads = {id(m): m.out_channels for m in protected_layers(model) if isinstance(m, nn.Conv2d)}
    assert len(heads) == 12  # box + class convs of the one-to-many and one-to-one heads at three levels
    prune_model(model, PruneConfig(ratio=0.5, imgsz=IMGSZ))
    assert {id(m): m.out_channels for m in protected_layers(model) if isinstance(m, nn.Conv2d)} == heads
    assert detect.one2one_cv2[0][0].conv.in_channels == detect.cv2[0][0].conv.in_channels  # both heads follow the neck
    for m in model.modules():
        if isinstance(m, ContextAggregation):
            assert m.a.out_channels == m.k.out_channels == 1 and m.inter_channels == m.in_channels  # reduction 1


def test_attention_blocks_are_pruned_and_repaired():
    model = build(str(yolo_ext.model_yaml("yolo11n-coordatt.yaml")))
    before = {n: (m.head_dim, m.key_dim, m.scale) for n, m in model.named_modules() if isinstance(m, Attention)}
    ca_before = {n: (m.conv1.conv.out_channels, m.conv_h.out_channels) for n, m in model.named_modules()
                 if isinstance(m, CoordAtt)}
    prune_model(model, PruneConfig(ratio=0.4, imgsz=IMGSZ))
    for n, m in model.named_modules():
        if isinstance(m, Attention):
            hd, kd, scale = before[n]
            assert m.head_dim == int(hd * 0.6) and m.key_dim == kd and m.scale == scale
        if isinstance(m, (C2f, C2PSA)):
            assert m.cv1.conv.out_channels == 2 * m.c
        if isinstance(m, CoordAtt):
            mid, c = ca_before[n]
            assert m.conv_h.out_channels == m.conv1.conv.in_channels == int(c * 0.6)
            assert m.conv1.conv.out_channels == max(min(8, mid), round(mid * int(c * 0.6) / c))  # in proportion


def test_mca_keeps_trained_kernel():
    model = build(str(yolo_ext.model_yaml("yolov8n-mca.yaml")))
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, MCA)]
    prune_model(model, PruneConfig(ratio=0.6, imgsz=IMGSZ))
    assert [m.kernel_size for m in model.modules() if isinstance(m, MCA)] == kernels


def test_frozen_parameters_still_prune_and_stay_frozen():
    """Pitfall (Torch-Pruning #463/#505): tracing needs requires_grad; a fully frozen model must still prune."""
    model = build("yolov8n.yaml").requires_grad_(False)
    result = prune_model(model, PruneConfig(ratio=0.4, imgsz=IMGSZ))
    assert result.params_after < 0.5 * result.params_before
    assert not any(p.requires_grad for p in model.parameters())


def test_protect_takes_module_names_and_keeps_their_channels():
    """Pitfall: ignored_layers takes module instances; names given by users are resolved to instances."""
    model = build("yolo11n.yaml")
    kept = {n: m.out_channels for n, m in model.model[9].named_modules() if isinstance(m, nn.Conv2d)}
    prune_model(model, PruneConfig(ratio=0.4, imgsz=IMGSZ, protect=["model.9.cv2"]))
    assert model.model[9].cv2.conv.out_channels == kept["cv2.conv"]
    with pytest.raises(PruningError, match="no such module"):
        prune_model(build("yolo11n.yaml"), PruneConfig(protect=["model.99"], imgsz=IMGSZ))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "0.4", True])
def test_bad_ratio(ratio):
    with pytest.raises(PruningError, match=r"ratio must be in \[0, 1\)"):
        prune_model(build("yolov8n.yaml"), PruneConfig(ratio=ratio))


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(criterion="l3"), "Unknown pruning criterion 'l3'.*lamp"),
        (dict(imgsz=100), "multiple of 32"),
        (dict(round_to=0), "round_to"),
        (dict(target_params=0.5, target_macs=0.5), "one target, not target_params and target_macs"),
        (dict(target_macs=0.5, target_latency=0.5), "one target, not target_macs and target_latency"),
        (dict(target_latency=1.2), "target_latency must be in"),
        (dict(allocation="cost"), "needs a target"),
        (dict(allocation="knapsack"), "allocation must be one of"),
        (dict(round_to="fast"), "round_to must be"),
        (dict(threads=0), "threads"),
        (dict(criterion="taylor"), "needs data"),
    ],
)
def test_bad_options(kw, pattern):
    with pytest.raises(PruningError, match=pattern):
        prune_model(build("yolov8n.yaml"), PruneConfig(**kw))


def test_classification_model_is_refused():
    with pytest.raises(PruningError, match=r"a classify model .*these models only: detect \(Detect, v10Detect\)"):
        prune_model(ClassificationModel("yolo11n-cls.yaml", verbose=False), PruneConfig())


def test_validator_names_an_inconsistent_layer():
    model = build("yolo11n.yaml")
    shapes = output_shapes(model)
    model.model[2].c -= 1
    with pytest.raises(PrunedModelError, match=r"model\.2 \(C3k2\).*self\.c"):
        check_model(model, shapes)


def test_taylor_uses_real_data(tiny_bccd):
    from yolo_ext.prune.gradients import loss_gradients

    model = randomize(DetectionModel("yolo11n.yaml", nc=3, verbose=False))  # no train args: the loss uses the defaults
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    calls = []
    grads = loss_gradients(tiny_bccd, IMGSZ, batches=1, batch_size=4)

    def counting(m):
        grads(m)
        calls.append(sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None))

    result = prune_model(model, PruneConfig(ratio=0.4, criterion="taylor", imgsz=IMGSZ), gradient_fn=counting)
    assert calls and calls[0] > 0
    assert result.params_after < 0.5 * result.params_before
    # BN statistics are unchanged: each pruned BN keeps a subset of its own trained values, in order (a train-mode
    # forward while estimating gradients would have moved every one of them)
    pruned = 0
    for (mean, var), m in zip(stats, bns):
        assert torch.isin(m.running_mean, mean).all(), "running_mean changed"
        kept = [int((mean == v).nonzero()[0]) for v in m.running_mean]
        assert kept == sorted(kept) and torch.equal(m.running_var, var[kept]), "running_var changed"
        pruned += len(kept) < len(mean)
    assert pruned > 20
    assert not hasattr(model, "criterion")
    assert isinstance(model.model[-1], Detect)


class UnknownHead(Detect):
    """A Detect subclass the head table does not know: its outputs are not known either, so it is refused."""


def test_one_detection_check_for_models_and_checkpoints(tmp_path):
    """prune_model and checkpoint loading refuse with the same check: exact model class with an exact head class of
    the head table (segmentation, pose and OBB are accepted: tests/test_tasks.py)."""
    from yolo_ext.prune.checkpoint import load_prunable_checkpoint
    from yolo_ext.prune.heads import check_supported_model

    odd = build("yolov8n.yaml")
    odd.model[-1].__class__ = UnknownHead
    with pytest.raises(PruningError, match=r"DetectionModel, head UnknownHead\); yolo_ext prunes these models only: "
                                           r"detect \(Detect.*\), segment \(Segment, Segment26\)"):
        prune_model(odd, PruneConfig(imgsz=IMGSZ))
    path = tmp_path / "odd.pt"
    torch.save({"model": odd}, path)
    with pytest.raises(PruningError, match=rf"'{path}' holds a .*DetectionModel, head UnknownHead"):
        load_prunable_checkpoint(path)
    headless = build("yolov8n.yaml")
    headless.model[-1] = nn.Identity()
    with pytest.raises(PruningError, match="head Identity"):
        check_supported_model(headless)
    check_supported_model(build("yolov8n.yaml"))  # a plain detector passes
