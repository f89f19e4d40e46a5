"""Fine-tuning pruned checkpoints: architecture and weights survive training, resume, DDP hand-off and bad input."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import unwrap_model

from conftest import REPO, run_python, save_three_class
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import prune_checkpoint
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.finetune import finetune, resume
from yolo_ext.train.trainers import PrunedDetectionTrainer

TRAIN = dict(imgsz=64, batch=4, workers=0, device="cpu", plots=False, val=True, exist_ok=True)


def channels(model: torch.nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("ft")
    save_three_class("yolo11n-rvb-se.yaml", root / "base.pt")
    report = prune_checkpoint(root / "base.pt", PruneConfig(ratio=0.4, imgsz=64), root / "pruned.pt", latency_runs=0)
    return report.output


def test_finetune_starts_from_pruned_weights_and_keeps_channels(pruned, tiny_bccd, tmp_path):
    start = {}

    def on_train_start(trainer):
        start.update({k: v.detach().clone() for k, v in unwrap_model(trainer.model).state_dict().items()})

    reference = torch.load(pruned, weights_only=False)["model"].float()
    model = YOLO(str(pruned))
    model.add_callback("on_train_start", on_train_start)
    model.train(trainer=PrunedDetectionTrainer, data=str(tiny_bccd), epochs=1, project=str(tmp_path), name="a",
                save_period=1, **TRAIN)
    ref_state = reference.state_dict()
    weights = model.trainer.wdir  # save_period's copy: complete, FP32 like last.pt, no temporary left
    periodic = torch.load(weights / "epoch0.pt", weights_only=False)
    assert periodic["epoch"] == 0 and periodic["ema"].model[2].cv1.conv.weight.dtype == torch.float32
    assert not list(weights.glob(".*.tmp*"))
    assert start.keys() == ref_state.keys()
    assert all(torch.equal(start[k].float(), v.float()) for k, v in ref_state.items() if v.is_floating_point())
    best = model.trainer.best
    assert channels(torch.load(best, weights_only=False)["model"]) == channels(reference)
    code = f"""
import torch
from ultralytics import YOLO
m = YOLO({str(best)!r})
assert m.model.model[2].cv1.conv.out_channels == {reference.model[2].cv1.conv.out_channels}
print(m.model.eval()(torch.rand(1, 3, 64, 96))[0].shape)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.Size([1, 7, 126])" in result.stdout


def test_interrupted_run_keeps_last_and_resumes_pruned(pruned, tiny_bccd, tmp_path, monkeypatch):
    """The second epoch's save dies half-way: last.pt stays the complete epoch-1 file and resume continues it."""
    real_write = pathlib.Path.write_bytes

    def arm(trainer):
        def broken_write(self, data):
            real_write(self, data[: len(data) // 2])
            raise RuntimeError("disk full")

        monkeypatch.setattr(pathlib.Path, "write_bytes", broken_write)

    model = YOLO(str(pruned))
    model.add_callback("on_fit_epoch_end", arm)
    with pytest.raises(RuntimeError, match="disk full"):
        model.train(trainer=PrunedDetectionTrainer, data=str(tiny_bccd), epochs=2, project=str(tmp_path), name="r",
                    **TRAIN)
    monkeypatch.setattr(pathlib.Path, "write_bytes", real_write)
    last = tmp_path / "r" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["ema"].model[2].cv1.conv.weight.dtype == torch.float32
    assert not list(last.parent.glob(".*.tmp"))
    resumed = resume(last)
    final = torch.load(resumed.trainer.last, weights_only=False)["model"]
    assert channels(final) == channels(torch.load(pruned, weights_only=False)["model"])
    rows = (tmp_path / "r" / "results.csv").read_text().strip().splitlines()
    assert rows[-1].startswith("2,")  # the resumed run trained the second epoch


def test_ddp_workers_receive_the_pruned_model(pruned, tiny_bccd, tmp_path, monkeypatch):
    from ultralytics.utils import dist

    monkeypatch.setattr(dist, "USER_CONFIG_DIR", tmp_path)
    model = torch.load(pruned, weights_only=False)["model"]
    trainer = PrunedDetectionTrainer(overrides=dict(model=str(pruned), data=str(tiny_bccd), project=str(tmp_path),
                                                    name="ddp", **TRAIN))
    trainer.model = model  # what Model.train() hands the trainer before Ultralytics launches DDP workers
    script = dist.generate_ddp_file(trainer)
    code = f"""
from ultralytics.utils.patches import torch_load
state = torch_load({script[:-3] + '.pt'!r}, map_location="cpu")
assert state["trainer"].__name__ == "PrunedDetectionTrainer", state["trainer"]
assert state["trainer"].__module__ == "yolo_ext.train.trainers"
print(state["model"].model[2].cv1.conv.out_channels)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) == model.model[2].cv1.conv.out_channels


def test_bad_inputs_fail_before_training(pruned, tiny_bccd, tmp_path):
    kw = dict(epochs=1, project=str(tmp_path / "runs"), **TRAIN)
    with pytest.raises(FinetuneError, match="does not exist"):
        finetune(tmp_path / "missing.pt", tiny_bccd, **kw)
    with pytest.raises(FinetuneError, match="not a pruned checkpoint"):
        finetune(pruned.with_name("base.pt"), tiny_bccd, **kw)
    with pytest.raises(FinetuneError, match="cannot be used"):
        finetune(pruned, tmp_path / "nope.yaml", **kw)
    assert not (tmp_path / "runs").exists()


def test_distillation_from_unpruned_teacher(pruned, tiny_bccd, tmp_path):
    from yolo_ext.train.distill import PrunedDistillationModel

    seen = []
    model = YOLO(str(pruned))
    model.add_callback("on_train_start", lambda t: seen.append(type(unwrap_model(t.model))))
    model.train(trainer=PrunedDetectionTrainer, data=str(tiny_bccd), epochs=1, project=str(tmp_path), name="kd",
                distill_model=str(pruned.with_name("base.pt")), **TRAIN)
    assert seen == [PrunedDistillationModel]  # kept-channel distillation, not Ultralytics' projector
    best = torch.load(model.trainer.best, weights_only=False)["model"]
    assert type(best) is DetectionModel  # the student alone is saved
    assert channels(best) == channels(torch.load(pruned, weights_only=False)["model"])


def test_sparse_training_shrinks_bn_scales(tiny_bccd, tmp_path):
    from yolo_ext.train.sparse import sparse_trainer

    def gammas(trainer_cls, name):
        model = YOLO("yolov8n.yaml")
        model.train(trainer=trainer_cls, data=str(tiny_bccd), epochs=1, project=str(tmp_path), name=name, **TRAIN)
        net = torch.load(model.trainer.last, weights_only=False)["model"]
        return torch.cat([m.weight.float().abs() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])

    from ultralytics.models.yolo.detect import DetectionTrainer

    plain = gammas(DetectionTrainer, "plain")
    sparse = gammas(sparse_trainer(0.05, keep_given_model=False), "sparse")
    assert sparse.mean() < plain.mean() - 1e-3
    with pytest.raises(FinetuneError, match="must be > 0"):
        sparse_trainer(0.0)


def test_iterative_pruning_reaches_the_ratio(pruned, tiny_bccd, tmp_path):
    from yolo_ext.train.iterative import iterative_prune, step_ratio

    base = pruned.with_name("base.pt")
    results = iterative_prune(base, tiny_bccd, PruneConfig(ratio=0.36, imgsz=64), steps=2, out=tmp_path, epochs=1,
                              **{k: v for k, v in TRAIN.items() if k != "exist_ok"})
    assert step_ratio(0.36, 2) == pytest.approx(0.2)
    assert len(results) == 2 and all(p.exists() for p in results)
    before = channels(torch.load(base, weights_only=False)["model"])
    after = channels(torch.load(results[-1], weights_only=False)["model"])
    assert after["model.1.conv"] == int(int(before["model.1.conv"] * 0.8) * 0.8)  # 0.8 of 0.8 of the original
    history = torch.load(tmp_path / "step2-pruned.pt", weights_only=False)["model"].yolo_ext_pruning
    assert len(history) == 2  # the second round pruned the fine-tuned network of the first


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"})


def test_val_tool_compares_checkpoints_in_one_table(pruned, tiny_bccd):
    base = pruned.with_name("base.pt")
    result = _tool("val.py", "--data", str(tiny_bccd), "--imgsz", "64", "--batch", "4", "--latency-runs", "2",
                   str(base), str(pruned))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and ".pt" in line]
    assert len(rows) == 2 and rows[0].endswith("1.00x | 1.00x | 1.00 |")  # params, speed-up, efficiency vs first
    params = [int(r.split("|")[6].replace(",", "")) for r in rows]
    assert params[1] < 0.5 * params[0]
    assert "ort-cpu ms" in result.stdout and "Latency: ort-cpu (64x64, batch 1, 1 thread)" in result.stdout
    speedup = float(rows[1].split("|")[-3].strip().rstrip("x"))
    assert speedup > 0  # timed side by side: a number, not nan
    missing = _tool("val.py", "--data", str(tiny_bccd), str(base.with_name("nope.pt")))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_train_tool_val_mode_and_errors(pruned, tiny_bccd, tmp_path):
    result = _tool("train.py", "val", "--model_path", str(pruned), "--data", str(tiny_bccd), "--imgsz", "64",
                   "--batch-size", "4", "--workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mAP50-95" in result.stdout
    bad = _tool("train.py", "train_ch", "--yaml", "yolo11n-coordatt.yaml", "--data", str(tmp_path / "x.yaml"))
    assert bad.returncode == 2 and "not found" in bad.stderr
    # the spellings of before issue 16 still run, and say what to write now
    unknown = _tool("train.py", "train_ch", "--yaml_path", "yolo11n-nothing.yaml", "--data-path", str(tiny_bccd),
                    "--epoch", "1")
    assert unknown.returncode == 2 and "Shipped models" in unknown.stderr
    assert all(f"write {new}" in unknown.stderr for new in ("--yaml", "--data", "--epochs")), unknown.stderr


def test_auto_distils_from_the_network_it_was_pruned_from_and_the_default_does_not(pruned, tiny_bccd, tmp_path,
                                                                                     monkeypatch):
    """Issue 17 item 4: one meaning everywhere. teacher=None (Python) == --teacher none == the default: no teacher;
    'auto' opts in; a path distils from that file."""
    from yolo_ext.cli.commands.finetune import get_args_parser
    from yolo_ext.cli.options import parse_key_values

    calls = []
    monkeypatch.setattr(YOLO, "train", lambda self, **kw: calls.append(kw))  # the arguments, not a training
    base = pruned.with_name("base.pt")
    finetune(pruned, tiny_bccd, epochs=1, project=str(tmp_path), **TRAIN)
    finetune(pruned, tiny_bccd, teacher=None, epochs=1, project=str(tmp_path), **TRAIN)
    finetune(pruned, tiny_bccd, teacher="auto", epochs=1, project=str(tmp_path), **TRAIN)
    finetune(pruned, tiny_bccd, teacher=str(base), epochs=1, project=str(tmp_path), **TRAIN)
    assert "distill_model" not in calls[0] and "distill_model" not in calls[1]
    assert pathlib.Path(calls[2]["distill_model"]).resolve() == base.resolve()
    assert calls[3]["distill_model"] == str(base)
    parser = get_args_parser()
    common = ["--model-path", "p.pt", "--data", "d.yaml"]
    assert parser.parse_args(common).teacher is None
    assert parser.parse_args([*common, "--teacher", "None"]).teacher is None
    assert parser.parse_args([*common, "--teacher", "AUTO"]).teacher == "auto"
    assert parse_key_values(parser, ["model=p.pt", "data=d.yaml"]).teacher is None  # yolo-ext finetune
    assert parse_key_values(parser, ["model=p.pt", "data=d.yaml", "teacher=auto"]).teacher == "auto"
