"""New class sets: a pruned network fine-tuned on data with another number of classes gets new class outputs only."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

from conftest import save_three_class
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import prune_checkpoint
from yolo_ext.train.class_outputs import class_output_layers, rebuild_class_outputs
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.finetune import finetune
from yolo_ext.train.inputs import check_finetune_inputs, default_teacher

OLD = {0: "RBC", 1: "WBC", 2: "Platelets"}
NEW = {0: "person", 1: "wbc", 2: "car", 3: "dog", 4: "cat"}  # "wbc" matches "WBC" by name (case ignored)
TRAIN = dict(imgsz=64, batch=4, workers=0, device="cpu", plots=False, exist_ok=True)


@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    save_three_class("yolo11n.yaml", root / "base.pt")  # the BCCD names, OLD
    config = PruneConfig(ratio=0.4, imgsz=64)
    return prune_checkpoint(root / "base.pt", config, root / "pruned.pt", latency_runs=0).output


def network(source: str | Path) -> DetectionModel:
    """The pruned yolo11n (with its pruning record) from the checkpoint tools/prune.py wrote, or an unpruned network
    built from a YAML (pruning YOLO26 here would cost 10+ s and change nothing this file tests)."""
    if str(source).endswith(".pt"):
        return torch.load(source, weights_only=False)["model"].float()
    torch.manual_seed(0)
    model = DetectionModel(str(source), nc=3, verbose=False)
    model.names = dict(OLD)
    return model


def class_keys(model: DetectionModel) -> set[str]:
    convs = {id(branch[i]) for branch, i in class_output_layers(model)}
    return {f"{n}.{p}" for n, m in model.named_modules() if id(m) in convs for p in ("weight", "bias")}


@pytest.mark.parametrize("cfg, branches", [("yolo11n.yaml", 1), ("yolo26n.yaml", 2)])  # YOLO26: one2one_cv3 too
def test_rebuild_replaces_only_the_class_outputs(cfg, branches, pruned_ckpt):
    model = network(pruned_ckpt if cfg == "yolo11n.yaml" else cfg)  # the checkpoint holds a pruned yolo11n
    pruned = bool(getattr(model, "yolo_ext_pruning", None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    old_convs = [b[i] for b, i in class_output_layers(model)]
    change = rebuild_class_outputs(model, NEW, data="other.yaml")

    head = model.model[-1]
    layers = class_output_layers(model)
    assert len(layers) == branches * head.nl
    assert all(b[i].out_channels == 5 and b[i].in_channels == old.in_channels for (b, i), old in zip(layers, old_convs))
    after = model.state_dict()
    rebuilt = class_keys(model)
    assert len(rebuilt) == 2 * len(layers) and after.keys() == before.keys()
    # body, box branches, hidden layers of the class branches: every tensor identical
    assert all(torch.equal(after[k], before[k]) for k in before if k not in rebuilt)
    # "wbc" keeps the trained WBC row; the other classes start from Ultralytics' prior (a model built with 5 classes)
    prior = copy.deepcopy(model)
    prior.model[-1].bias_init()  # what Ultralytics gives the class biases of a model built for 5 classes
    for (b, i), old, (pb, pi) in zip(layers, old_convs, class_output_layers(prior)):
        assert torch.equal(b[i].weight[1], old.weight[1]) and torch.equal(b[i].bias[1], old.bias[1])
        assert torch.equal(b[i].bias[[0, 2, 3, 4]], pb[pi].bias[[0, 2, 3, 4]])
        assert not torch.equal(b[i].bias[0], old.bias[0])
    assert head.nc == model.nc == model.yaml["nc"] == 5 and head.no == 5 + 4 * head.reg_max
    assert model.names == NEW

    preds = model.train()(torch.rand(2, 3, 64, 96))
    for branch in preds.values() if "one2one" in preds else [preds]:
        assert branch["scores"].shape[:2] == (2, 5) and branch["boxes"].shape[1] == 4 * head.reg_max
    model.eval()
    y = model(torch.rand(1, 3, 64, 96))[0]
    assert y.shape == ((1, 300, 6) if head.end2end else (1, 4 + 5, 126))

    body = "the pruned body" if pruned else "the rest of the network"
    assert change.line() == (f"Classes: 3 -> 5 (data: other.yaml); rebuilt the class outputs, kept {body}; "
                             "1 of them keep their trained weights by name (wbc)")
    if pruned:
        (noted,) = model.yolo_ext_pruning[-1]["class_changes"]
        assert (noted["from"], noted["to"], noted["data"], noted["by_name"]) == (3, 5, "other.yaml", ["wbc"])
        assert len(model.yolo_ext_pruning) == 1  # a change of classes is not another pruning
    else:
        assert not hasattr(model, "yolo_ext_pruning")  # no record is made up for a network never pruned


def test_same_class_count_changes_nothing(pruned_ckpt):
    model = network(pruned_ckpt)
    before = copy.deepcopy(model.state_dict())
    assert rebuild_class_outputs(model, {0: "a", 1: "b", 2: "c"}) is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "class_changes" not in model.yolo_ext_pruning[-1]


@pytest.fixture(scope="module")
def two_class_data(tiny_bccd, tmp_path_factory) -> Path:
    """The tiny BCCD copy relabelled to two classes: WBC (was 1) and cell (RBC and platelets)."""
    root = tmp_path_factory.mktemp("two_classes")
    shutil.copytree(tiny_bccd.parent / "images", root / "images")
    for label in (tiny_bccd.parent / "labels").rglob("*.txt"):
        out = root / label.relative_to(tiny_bccd.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [line.split(maxsplit=1) for line in label.read_text().splitlines() if line.strip()]
        out.write_text("".join(f"{0 if c == '1' else 1} {rest}\n" for c, rest in rows))
    (root / "two.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: WBC\n  1: cell\n")
    return root / "two.yaml"


def test_finetune_on_other_classes_trains_and_reloads(pruned_ckpt, two_class_data, tmp_path, caplog):
    pruned = torch.load(pruned_ckpt, weights_only=False)["model"]
    widths = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    model = finetune(pruned_ckpt, two_class_data, epochs=1, project=str(tmp_path), name="two", **TRAIN)
    line = (f"Classes: 3 -> 2 (data: {two_class_data}); rebuilt the class outputs, kept the pruned body; "
            "1 of them keep their trained weights by name (WBC)")
    assert [r.getMessage() for r in caplog.records].count(line) == 1  # Ultralytics' LOGGER prints it (stdout)

    reloaded = YOLO(str(model.trainer.best))
    net = reloaded.model
    assert reloaded.names == {0: "WBC", 1: "cell"} and net.model[-1].nc == 2
    class_convs = {n.rsplit(".", 1)[0] for n in class_keys(net)}
    got = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert got.keys() == widths.keys()
    assert {n: w for n, w in got.items() if n not in class_convs} == {
        n: w for n, w in widths.items() if n not in class_convs}
    assert {got[n] for n in class_convs} == {2} and {widths[n] for n in class_convs} == {3}
    (noted,) = net.yolo_ext_pruning[-1]["class_changes"]
    assert (noted["from"], noted["to"], noted["data"]) == (3, 2, str(two_class_data))
    result = reloaded.predict(torch.rand(1, 3, 64, 64), verbose=False)[0]
    assert result.names == {0: "WBC", 1: "cell"}


def test_teacher_with_other_classes_is_refused(pruned_ckpt, two_class_data, tiny_bccd, tmp_path):
    base = pruned_ckpt.with_name("base.pt")
    with pytest.raises(FinetuneError, match=r"teacher predicts 3 classes and the student 2 .*class by class"):
        finetune(pruned_ckpt, two_class_data, teacher=base, epochs=1, project=str(tmp_path / "runs"), **TRAIN)
    assert not (tmp_path / "runs").exists()
    # 'auto' finds the network it was pruned from, but only for data with its classes
    _, same = check_finetune_inputs(pruned_ckpt, tiny_bccd)
    _, other = check_finetune_inputs(pruned_ckpt, two_class_data)
    assert default_teacher(pruned_ckpt, same).resolve() == base.resolve()
    assert default_teacher(pruned_ckpt, other) is None


@pytest.mark.parametrize("cfg, task, outputs", [
    ("yolov10n.yaml", "detect", 6),          # one-to-many and one-to-one class convs, three levels each
    ("yolo26n-seg.yaml", "segment", 7),     # ... plus the semantic-mask logits of Proto26 (training only)
    ("yolo11n-pose.yaml", "pose", 3),
    ("yolo11n-obb.yaml", "obb", 3),
])
def test_every_head_family_rebuilds_its_class_outputs_and_nothing_else(cfg, task, outputs):
    from ultralytics.nn.tasks import OBBModel, PoseModel, SegmentationModel

    cls = {"detect": DetectionModel, "segment": SegmentationModel, "pose": PoseModel, "obb": OBBModel}[task]
    torch.manual_seed(0)
    model = cls(cfg, nc=3, verbose=False)
    model.names = dict(OLD)
    keys = class_keys(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if k not in keys}
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    ref = model(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    assert rebuild_class_outputs(model, NEW).new_nc == len(NEW)
    layers = class_output_layers(model)
    assert len(layers) == outputs and all(b[i].out_channels == len(NEW) for b, i in layers)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # box, task branches and body untouched
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    out = out[0] if isinstance(out, (tuple, list)) else out
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    if not model.model[-1].end2end:  # channels = 4 box + classes + task values (mask coefficients, keypoints, angle)
        assert out.shape[1] == ref.shape[1] + len(NEW) - 3
    model.train()
    model(x)  # the training forward (one-to-one and semantic branches included) runs with the new class count
