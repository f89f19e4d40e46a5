"""Segmentation, pose and OBB models: prune (v8, 11, 26), validate, reload, export, fine-tune per task; refusals.

Every model is built from Ultralytics' own YAMLs. Each task gets a tiny data set written here (4 images, with mask
polygons, keypoints or 8-point oriented boxes); fine-tuning runs one epoch at 64 px.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.tasks import (
    ClassificationModel,
    DetectionModel,
    OBBModel,
    PoseModel,
    RTDETRDetectionModel,
    SegmentationModel,
)

from conftest import randomize, run_python
from test_safety import tool_main
from yolo_ext.prune import PruneConfig, PrunedModelError, PruningError, prune_model
from yolo_ext.prune.checkpoint import load_prunable_checkpoint, prune_checkpoint
from yolo_ext.prune.heads import head_outputs
from yolo_ext.prune.validate import check_model, output_shapes, prediction_tensors
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.finetune import finetune
from yolo_ext.train.inputs import check_teacher
from yolo_ext.train.iterative import iterative_prune
from yolo_ext.train.trainers import PRUNED_TRAINERS, PrunedDetectionTrainer

IMGSZ = 64
KPT_SHAPE = (4, 3)  # a small keypoint layout keeps the pose head and its labels short
NAMES = {"segment": {0: "blob", 1: "box"}, "pose": {0: "thing"}, "obb": {0: "plane", 1: "ship"}}
MODELS = {"segment": SegmentationModel, "pose": PoseModel, "obb": OBBModel}
YAMLS = {
    "segment": ["yolov8n-seg.yaml", "yolo11n-seg.yaml", "yolo26n-seg.yaml"],
    "pose": ["yolov8n-pose.yaml", "yolo11n-pose.yaml", "yolo26n-pose.yaml"],
    "obb": ["yolov8n-obb.yaml", "yolo11n-obb.yaml", "yolo26n-obb.yaml"],
}
CASES = [(task, cfg) for task, cfgs in YAMLS.items() for cfg in cfgs]
#: one model per task for the checkpoint round trip, ONNX export and fine-tuning (YOLO26's heads have the most parts)
CHECKPOINTED = {"segment": "yolo26n-seg.yaml", "pose": "yolo26n-pose.yaml", "obb": "yolo11n-obb.yaml"}
TRAIN = dict(epochs=1, imgsz=IMGSZ, batch=4, workers=0, device="cpu", plots=False, val=True, exist_ok=True)


def build(task: str, cfg: str) -> nn.Module:
    """A ``task`` model of ``cfg`` with trained-like BN statistics, the classes of :data:`NAMES`."""
    torch.manual_seed(0)
    kwargs = {"data_kpt_shape": KPT_SHAPE} if task == "pose" else {}
    model = MODELS[task](cfg, nc=len(NAMES[task]), verbose=False, **kwargs)
    model.names, model.task = NAMES[task], task  # as Ultralytics' trainer leaves them in a checkpoint
    return randomize(model).eval()


def shapes(model: nn.Module, x: torch.Tensor) -> dict[str, list[tuple[int, ...]]]:
    """Output shapes in eval and in training mode (on a copy: training mode updates BN statistics)."""
    with torch.no_grad():
        return {
            "eval": [tuple(t.shape) for t in prediction_tensors(model.eval()(x))],
            "train": [tuple(t.shape) for t in prediction_tensors(copy.deepcopy(model).train()(x))],
        }


def names_of(model: nn.Module, layers: list[nn.Module]) -> dict[str, int]:
    """Output channels of every conv in ``layers`` (plain convs, or Ultralytics' Conv blocks) by module name."""
    ids = {id(m) for layer in layers for m in layer.modules()}
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) in ids}


@pytest.fixture(scope="module", params=CASES, ids=[cfg[:-5] for _, cfg in CASES])
def case(request):
    """(task, original model, pruned model, result) for one YAML, pruned once for the whole module."""
    task, cfg = request.param
    original = build(task, cfg)
    model = copy.deepcopy(original)
    result = prune_model(model, PruneConfig(ratio=0.4, imgsz=IMGSZ))
    return task, original, model, result


def test_prunes_body_and_head_inside_but_no_output(case):
    task, original, model, result = case
    assert 1 - result.params_after / result.params_before > 0.45
    assert result.params_after == sum(p.numel() for p in model.parameters())
    before_head, head = original.model[-1], model.model[-1]
    assert type(head) is type(before_head)
    # every output layer keeps its channels; there is one per branch and level (plus prototypes)
    fixed = names_of(original, head_outputs(before_head))
    assert fixed and names_of(model, head_outputs(head)) == fixed
    # the convs inside the task branch (masks, keypoints, angles) and the prototype net are pruned
    assert head.cv4[0][0].conv.out_channels < before_head.cv4[0][0].conv.out_channels
    if task == "segment":
        assert head.proto.cv1.conv.out_channels < before_head.proto.cv1.conv.out_channels
        assert head.proto.cv3.conv.out_channels == head.nm
    x = torch.rand(1, 3, IMGSZ, 96)
    assert shapes(model, x) == shapes(original, x)  # every head output, training-only ones included


def test_pruned_model_survives_a_checkpoint_round_trip(case):
    _, _, model, _ = case
    buffer = io.BytesIO()
    torch.save({"model": model}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)["model"].eval()
    x = torch.rand(1, 3, IMGSZ, 96)
    with torch.no_grad():
        for a, b in zip(prediction_tensors(model.eval()(x)), prediction_tensors(loaded(x))):
            assert torch.equal(a, b)


def test_validator_checks_training_only_outputs():
    """YOLO26 pose's keypoint sigmas run only while training; a pruning that broke them must not pass."""
    model = build("pose", "yolo26n-pose.yaml")
    expected = output_shapes(model)
    tp.prune_conv_in_channels(model.model[-1].cv4_sigma[0], [0])
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 64, 96))  # the inference forward does not see it
    with pytest.raises(PrunedModelError, match="in training mode"):
        check_model(model, expected)


# ---------------------------------------------------------------- tiny data sets and checkpoints, one per task


def _labels(task: str, i: int) -> str:
    """One object per image, in normalised coordinates, in each task's label format."""
    x0, y0, x1, y1 = 0.2 + 0.05 * i, 0.25, 0.7, 0.8 - 0.05 * i
    cls = i % len(NAMES[task])
    corners = [x0, y0, x1, y0, x1, y1, x0, y1]
    if task == "segment":  # a polygon (a pentagon inside the box)
        polygon = [x0, y0, x1, y0, x1, (y0 + y1) / 2, (x0 + x1) / 2, y1, x0, y1]
        return f"{cls} " + " ".join(f"{v:.4f}" for v in polygon)
    if task == "pose":  # box centre/size, then x y visibility per keypoint (the corners)
        kpts = [v for k in range(KPT_SHAPE[0]) for v in (*corners[2 * k: 2 * k + 2], 2)]
        box = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        return f"{cls} " + " ".join(f"{v:.4f}" for v in box + kpts)
    return f"{cls} " + " ".join(f"{v:.4f}" for v in corners)  # obb: the four corners


def make_data(root: Path, task: str, n: int = 4) -> Path:
    """``n`` 96 px images with one filled shape each, labelled for ``task``; train and val are the same images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 60, (96, 96, 3), dtype=np.uint8)
            x0, y0, x1, y1 = (int(96 * v) for v in (0.2 + 0.05 * i, 0.25, 0.7, 0.8 - 0.05 * i))
            cv2.rectangle(image, (x0, y0), (x1, y1), (200, 180, 40 * i), -1)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            (root / "labels" / split / f"{i}.txt").write_text(_labels(task, i) + "\n")
    names = "".join(f"  {k}: {v}\n" for k, v in NAMES[task].items())
    extra = f"kpt_shape: {list(KPT_SHAPE)}\nflip_idx: [1, 0, 3, 2]\n" if task == "pose" else ""
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\n{extra}names:\n{names}")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """Per task: (data YAML, source checkpoint, pruned checkpoint written by prune_checkpoint)."""
    files = {}
    for task, cfg in CHECKPOINTED.items():
        root = tmp_path_factory.mktemp(task)
        data = make_data(root / "data", task)
        yolo = YOLO(cfg, task=task)
        yolo.model = build(task, cfg)
        yolo.save(root / "base.pt")
        report = prune_checkpoint(root / "base.pt", PruneConfig(ratio=0.4, imgsz=IMGSZ), latency_runs=0)
        assert f"({task})" in report.table and report.output.with_suffix(".png").exists()
        files[task] = (data, root / "base.pt", report.output)
    return files


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_pruned_checkpoints_reload_and_export_in_fresh_process(task_files):
    """Load each pruned checkpoint in a fresh process, check its widths and record, export to ONNX with dynamic
    shapes and compare every exported output with PyTorch's (export mode) in onnxruntime."""
    widths = {task: conv_widths(load_prunable_checkpoint(out)[1]) for task, (_, _, out) in task_files.items()}
    paths = {task: str(out) for task, (_, _, out) in task_files.items()}
    code = f"""
import numpy as np, onnxruntime as ort, torch
from ultralytics import YOLO
for task, path in {paths!r}.items():
    widths = {widths!r}[task]
    model = YOLO(path)
    assert model.task == task and len(model.model.yolo_ext_pruning) == 1, (task, model.task)
    got = {{n: m.out_channels for n, m in model.model.named_modules() if isinstance(m, torch.nn.Conv2d)}}
    assert got == widths, task
    onnx = model.export(format="onnx", imgsz=128, dynamic=True, simplify=False)
    net = YOLO(path).model.float().eval()
    net.model[-1].export = True
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        ref = net(x)
    ref = [t.numpy() for t in (ref if isinstance(ref, (list, tuple)) else [ref])]
    sess = ort.InferenceSession(onnx)
    out = sess.run(None, {{sess.get_inputs()[0].name: x.numpy()}})
    assert len(out) == len(ref), (task, len(out), len(ref))
    for o, r in zip(out, ref):
        assert o.shape == r.shape, (task, o.shape, r.shape)
        assert np.abs(o - r).max() < 1e-3 * max(1.0, np.abs(r).max()), (task, np.abs(o - r).max())
    print(task, "ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.endswith(" ok")] == [f"{t} ok" for t in paths]


@pytest.mark.parametrize("task", list(CHECKPOINTED))
def test_one_epoch_finetune_keeps_pruned_widths(task, task_files, tmp_path):
    """segment and pose through finetune(); obb through plain YOLO(pruned).train(), which the keep_pruned callback
    hands to the task's pruned trainer. Either way Ultralytics' own task trainer runs and the widths stay."""
    data, _, pruned = task_files[task]
    widths = conv_widths(load_prunable_checkpoint(pruned)[1])
    if task == "obb":
        yolo = YOLO(str(pruned))
        yolo.train(data=str(data), project=str(tmp_path), name="ft", **TRAIN)
    else:
        yolo = finetune(pruned, data, project=str(tmp_path), name="ft", **TRAIN)
    assert type(yolo.trainer) is PRUNED_TRAINERS[task]
    best = torch.load(yolo.trainer.best, weights_only=False)
    assert conv_widths(best["model"]) == widths and best["model"].yolo_ext_pruning
    assert best["train_args"]["task"] == task


@pytest.mark.parametrize("task", ["segment", "pose"])
def test_taylor_reads_the_task_labels(task, task_files):
    """The Taylor criterion's gradients come from the task's own loss (masks, keypoints), on its labels."""
    from yolo_ext.prune.gradients import loss_gradients

    data = task_files[task][0]
    model = build(task, CHECKPOINTED[task])
    grads = []

    def recording(m: nn.Module) -> None:
        loss_gradients(data, IMGSZ, batches=1, batch_size=4)(m)
        last = m.model[-1].cv4[0][-1]  # mask coefficients / keypoint trunk: gradients only from the task's loss
        grads.append(float(getattr(last, "conv", last).weight.grad.abs().sum()))

    result = prune_model(model, PruneConfig(ratio=0.4, criterion="taylor", imgsz=IMGSZ), gradient_fn=recording)
    assert grads and grads[0] > 0 and result.params_after < 0.6 * result.params_before


def test_finetune_refusals_for_tasks(task_files, tmp_path):
    """Distillation is for detection (also in iterative pruning); a trainer of another task and a keypoint layout
    that differs are refused before any training (nothing is written)."""
    data, base, pruned = task_files["segment"]
    with pytest.raises(FinetuneError, match=r"detection models only, .*is a segment model\. Fine-tune it without"):
        finetune(pruned, data, teacher=str(base), project=str(tmp_path), **TRAIN)
    with pytest.raises(FinetuneError, match=r"detection models only"):
        finetune(pruned, data, distill_model=str(base), project=str(tmp_path), **TRAIN)
    with pytest.raises(FinetuneError, match=r"PrunedDetectionTrainer trains detect models, but this is a segment "
                                            r"network: use yolo_ext\.train\.PrunedSegmentationTrainer"):
        finetune(pruned, data, trainer=PrunedDetectionTrainer, project=str(tmp_path), **TRAIN)
    with pytest.raises(FinetuneError, match=rf"the teacher '{base}' is a segment model"):  # nor teaches a detector
        check_teacher(DetectionModel("yolov8n.yaml", nc=2, verbose=False), base)
    with pytest.raises(FinetuneError, match=r"detection models only"):  # refused before round one prunes
        iterative_prune(pruned, data, PruneConfig(ratio=0.2, imgsz=IMGSZ), 2, tmp_path / "rounds", teacher=str(base))
    pose_data, _, pose = task_files["pose"]
    other = tmp_path / "pose5.yaml"
    other.write_text(pose_data.read_text().replace("kpt_shape: [4, 3]", "kpt_shape: [5, 3]"))
    with pytest.raises(FinetuneError, match=r"keypoints of shape \[4, 3\] but the data's kpt_shape is \[5, 3\]"):
        finetune(pose, other, project=str(tmp_path), **TRAIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose5.yaml"]


def test_val_reports_the_task_metric_and_refuses_mixed_tasks(task_files, tmp_path):
    data, base, pruned = task_files["segment"]
    code, out, err = tool_main("val.py", "--data", str(data), "--imgsz", str(IMGSZ), "--batch", "4",
                               "--latency-runs", "0", str(base), str(pruned))
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("| checkpoint"))
    assert "| R | mask mAP50-95 | params |" in header
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and ".pt" in line]
    assert len(rows) == 2 and all(0 <= float(r[6]) <= 1 for r in rows)
    assert int(rows[1][7].replace(",", "")) < 0.6 * int(rows[0][7].replace(",", ""))
    code, _, err = tool_main("val.py", "--data", str(data), "--latency-runs", "0", str(pruned),
                             str(task_files["obb"][2]))
    assert code == 2 and "different tasks (segment: " in err and "obb: " in err


# ---------------------------------------------------------------- what stays refused


@pytest.mark.parametrize("model_cls, cfg, task", [
    (RTDETRDetectionModel, "rtdetr-l.yaml", "RT-DETR"), (ClassificationModel, "yolo11n-cls.yaml", "classify"),
])
def test_other_models_are_refused_and_the_tool_writes_nothing(model_cls, cfg, task, tmp_path):
    model = model_cls(cfg, verbose=False)
    supported = r"these models only: detect \(Detect.*\), segment \(Segment, Segment26\), pose \(Pose, Pose26\), " \
                r"obb \(OBB, OBB26\)"
    with pytest.raises(PruningError, match=rf"a {task} model \({model_cls.__name__}, head \w+\); yolo_ext prunes "
                                           + supported):
        prune_model(model, PruneConfig(imgsz=IMGSZ))
    path = tmp_path / "other.pt"
    torch.save({"model": model.half()}, path)
    code, out, err = tool_main("prune.py", "--model-path", str(path), "--imgsz", str(IMGSZ), "--latency-runs", "0")
    assert code == 2 and f"holds a {task} model" in err and "segment (Segment, Segment26)" in err
    assert [p.name for p in tmp_path.iterdir()] == ["other.pt"]
