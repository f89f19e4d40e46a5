"""Recovery mechanics: kept-channel map, distillation losses, layer cap, allocation and the fine-tune recipe.

Accuracy is measured by benchmarks/accuracy.py, never here; these tests check that the pieces do what they say.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from yolo_ext.prune import PruneConfig, PruningError, prune_model, record
from yolo_ext.train.distill import DistillError, detect_widths, distill_losses, kept_channels
from yolo_ext.train.recipe import EPOCHS_FRACTION, RECIPE_KEYS, finetune_recipe

IMGSZ = 128


def trained_like(cfg: str = "yolo11n.yaml", seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=3, verbose=False).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.2, 1.5)
    return model


def pruned_pair(ratio: float, cfg: str = "yolo11n.yaml", **kw) -> tuple[DetectionModel, DetectionModel]:
    teacher = trained_like(cfg)
    student = copy.deepcopy(teacher)
    result = prune_model(student, PruneConfig(ratio=ratio, imgsz=IMGSZ, **kw))
    record.append(student, result.record())  # what save_pruned stores on the network
    return teacher, student


def head_outputs(model: DetectionModel, x: torch.Tensor) -> dict:
    """Training-format Detect output (boxes, scores, feats) with BN in eval mode, as the teacher runs."""
    with torch.no_grad():
        out = model.eval()(x)
    return out[1] if isinstance(out, tuple) else out


def channel_maps(student: DetectionModel, teacher: DetectionModel) -> list[torch.Tensor]:
    return [torch.tensor(m) for m in kept_channels(student, teacher)]


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolo26n.yaml"])
def test_distillation_losses_are_zero_for_a_student_pruned_at_ratio_zero(cfg):
    teacher, student = pruned_pair(0.0, cfg)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    terms = distill_losses(head_outputs(student, x), head_outputs(teacher, x), channel_maps(student, teacher),
                           student.model[-1].reg_max)
    assert all(float(v) == 0.0 for v in terms.values()), terms


def test_distillation_losses_are_positive_after_pruning_and_reach_every_student_weight_group():
    teacher, student = pruned_pair(0.4)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        taught = head_outputs(teacher, x)
    student.train()
    preds = student(x)
    terms = distill_losses(preds, taught, channel_maps(student, teacher), student.model[-1].reg_max)
    assert all(float(v.detach()) > 0 for v in terms.values()), terms
    sum(terms.values()).backward()
    assert student.model[-1].cv3[0][-1].weight.grad.abs().sum() > 0  # class logits are pulled by the cls term
    assert student.model[0].conv.weight.grad.abs().sum() > 0  # features reach the stem


def test_kept_channel_map_points_at_the_teacher_channels_each_student_channel_is():
    teacher, student = pruned_pair(0.5)
    maps = kept_channels(student, teacher)
    assert [len(m) for m in maps] == detect_widths(student) and detect_widths(teacher) == [64, 128, 256]
    assert any(len(m) < w for m, w in zip(maps, detect_widths(teacher)))
    for level, kept in enumerate(maps):
        s = student.model[-1].cv2[level][0].conv.weight  # (out, in, k, k): its input columns are the feature channels
        t = teacher.model[-1].cv2[level][0].conv.weight[:, kept]
        # every student filter is one teacher filter restricted to the kept input channels
        for row in s:
            assert (t - row).flatten(1).abs().amax(1).min() == 0


def test_kept_channel_map_composes_over_two_prunings_and_refuses_a_foreign_teacher():
    teacher, once = pruned_pair(0.3)
    twice = copy.deepcopy(once)
    result = prune_model(twice, PruneConfig(ratio=0.3, imgsz=IMGSZ))
    record.append(twice, result.record())  # once's record came with the copy
    direct = kept_channels(twice, teacher)
    via_once = [[first[j] for j in second] for first, second in zip(kept_channels(once, teacher),
                                                                    kept_channels(twice, once))]
    assert direct == via_once
    with pytest.raises(DistillError, match="pruned from"):
        kept_channels(twice, trained_like("yolov8s.yaml"))
    with pytest.raises(DistillError, match="classes"):
        kept_channels(twice, DetectionModel("yolo11n.yaml", nc=5, verbose=False))


@pytest.mark.parametrize("kw", [{"ratio": 0.95, "global_pruning": True}, {"ratio": 0.6, "max_layer_ratio": 0.5},
                                {"ratio": 0.6, "max_layer_ratio": 0.5, "global_pruning": True}])
def test_max_layer_ratio_holds_for_every_conv(kw):
    model = trained_like()
    result = prune_model(model, PruneConfig(imgsz=IMGSZ, **kw))
    cap = kw.get("max_layer_ratio", 0.8)
    worst = max(1 - result.channels_after[k] / v for k, v in result.channels_before.items())
    assert worst <= cap + 1 / 16  # a layer may round one channel past the cap, never more
    assert result.params_after < 0.75 * result.params_before  # and the request still prunes


def test_lamp_ranks_globally_by_default_and_allocates_unevenly():
    uniform = prune_model(trained_like(), PruneConfig(target_params=0.5, imgsz=IMGSZ, criterion="l1"))
    lamp = prune_model(trained_like(), PruneConfig(target_params=0.5, imgsz=IMGSZ, criterion="lamp"))
    assert not uniform.config.is_global and lamp.config.is_global
    assert lamp.record().config["global_pruning"] is True
    kept = [lamp.channels_after[k] / v for k, v in lamp.channels_before.items() if v >= 32]
    assert max(kept) - min(kept) > 0.3  # layers lose different fractions
    uniform_lamp = PruneConfig(criterion="lamp", global_pruning=False)
    assert not uniform_lamp.is_global


def test_recipe_comes_from_the_base_training_args_and_its_epochs():
    base_args = {"epochs": 100, "optimizer": "SGD", "lr0": 0.02, "lrf": 0.01, "warmup_epochs": 3.0, "mosaic": 1.0,
                 "imgsz": 320, "batch": 16, "data": "coco.yaml", "device": "0", "project": "x"}
    model = trained_like()
    recipe = finetune_recipe({"train_args": base_args}, model)
    assert recipe["epochs"] == round(EPOCHS_FRACTION * 100) == 30
    assert {k: recipe[k] for k in ("optimizer", "lr0", "lrf", "warmup_epochs", "imgsz", "batch")} == {
        "optimizer": "SGD", "lr0": 0.02, "lrf": 0.01, "warmup_epochs": 3.0, "imgsz": 320, "batch": 16}
    assert set(recipe) <= set(RECIPE_KEYS) | {"epochs"}  # never the data, device or output folder of the base run
    # after a fine-tuning, the record keeps the base's args: a second pruning still gets the base's recipe
    model.yolo_ext_pruning = [{"base_train_args": base_args}]
    assert finetune_recipe({"train_args": {"epochs": 30, "lr0": 0.5}}, model)["lr0"] == 0.02
    assert finetune_recipe({}, trained_like())["epochs"] == 30  # Ultralytics' default 100 epochs


def test_bad_teacher_is_refused_before_training(tmp_path):
    from ultralytics import YOLO

    from yolo_ext.demo import DEMO_DATA
    from yolo_ext.prune.checkpoint import prune_checkpoint
    from yolo_ext.train.errors import FinetuneError
    from yolo_ext.train.inputs import check_finetune_inputs, check_teacher, default_teacher

    yolo = YOLO("yolo11n.yaml")
    yolo.model = trained_like()
    yolo.model.names = {0: "RBC", 1: "WBC", 2: "Platelets"}
    yolo.save(tmp_path / "base.pt")
    yolo.model = trained_like("yolov8s.yaml")  # other Detect widths: not what the student was pruned from
    yolo.model.names = {0: "RBC", 1: "WBC", 2: "Platelets"}
    yolo.save(tmp_path / "other.pt")
    pruned = prune_checkpoint(tmp_path / "base.pt", PruneConfig(ratio=0.3, imgsz=IMGSZ), tmp_path / "p.pt",
                              latency_runs=0).output
    ckpt, model = check_finetune_inputs(pruned, DEMO_DATA)
    assert ckpt["model"] is not None and model.yolo_ext_pruning[-1]["feature_channels"]["widths"] == [64, 128, 256]
    check_teacher(model, tmp_path / "base.pt")
    assert default_teacher(pruned, model) == tmp_path / "base.pt"  # the recorded source, found as recorded
    with pytest.raises(FinetuneError, match="pruned from"):
        check_teacher(model, tmp_path / "other.pt")
    with pytest.raises(FinetuneError, match="Teacher"):
        check_teacher(model, tmp_path / "missing.pt")
    (tmp_path / "base.pt").rename(tmp_path / "moved.pt")
    assert default_teacher(pruned, model) is None  # gone: fine-tuning goes on without a teacher


def test_cap_check_refuses_a_result_past_the_cap():
    from yolo_ext.prune.tracking import check_layer_cap

    check_layer_cap({"a": 100, "b": 10}, {"a": 20, "b": 2}, 0.8)
    with pytest.raises(PruningError, match="max_layer_ratio"):
        check_layer_cap({"a": 100, "b": 10}, {"a": 19, "b": 2}, 0.8)
