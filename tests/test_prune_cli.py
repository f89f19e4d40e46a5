"""tools/prune.py and pruned checkpoints: files written, reload/val/predict/export in fresh processes, bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO

from conftest import REPO, run_python, save_three_class
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import prune_checkpoint

PRUNE = REPO / "tools" / "prune.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("prune_tool", PRUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_prune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PRUNE), *args], capture_output=True, text=True, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_three_class("yolo11n-coordatt.yaml", tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def pruned(checkpoint) -> tuple[Path, subprocess.CompletedProcess, str]:
    before = digest(checkpoint)
    result = run_prune("--model_path", str(checkpoint), "--prune_type", "l1", "--prune-ratio", "0.4", "--round-to", "1",
                       "--imgsz", "128", "--latency-runs", "2")
    return checkpoint.with_name("best-pruned40.pt"), result, before


def test_cli_writes_checkpoint_report_and_plot(pruned, checkpoint):
    out, result, before = pruned
    assert result.returncode == 0, result.stderr[-3000:]
    assert digest(checkpoint) == before, "the input checkpoint must never change"
    assert out.stat().st_size > 100_000
    table = out.with_suffix(".txt").read_text()
    assert "params" in table and "GFLOPs@128" in table and "ort-cpu ms" in table and "%" in table
    assert "Latency on ort-cpu (128x128, batch 1, 1 thread)" in table and "faster" in table and "efficiency" in table
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*.tmp"))


def test_checkpoint_records_what_was_done(pruned):
    out, _, _ = pruned
    ckpt = torch.load(out, weights_only=False)
    record = ckpt["model"].yolo_ext_pruning[-1]
    assert record["config"]["ratio"] == 0.4 and record["config"]["criterion"] == "l1"
    params_before, params_after = record["params"]
    assert params_after == sum(p.numel() for p in ckpt["model"].parameters()) < 0.5 * params_before
    assert record["macs"][1] < record["macs"][0]
    before, after = record["channels"]["model.2.cv1.conv"]
    assert after == 2 * int(before // 2 * 0.6)  # two tied halves, each keeps 60%
    assert ckpt["model"].model[2].cv1.conv.out_channels == after


def test_pickled_classes_are_importable_package_classes(pruned):
    """Pitfall: a checkpoint must not pickle classes from __main__ or from pruning internals."""
    out, _, _ = pruned
    with zipfile.ZipFile(out) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    modules, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE"}:
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            modules.add(strings[-2])
        elif op.name == "GLOBAL":
            modules.add(arg.split(" ")[0])
    assert modules and not any(m == "__main__" or m.startswith("yolo_ext.prune") for m in modules), modules
    import _compat_pickle  # pickle protocol 2 writes Python 2 names such as __builtin__

    for name in modules:
        importlib.import_module(_compat_pickle.IMPORT_MAPPING.get(name, name))


def reload_val_predict_export(out: Path, data: Path) -> None:
    """In a fresh process: load, validate, predict, export to ONNX with dynamic shapes, run it with onnxruntime."""
    image = next((data.parent / "images" / "val").glob("*.jpg"))
    code = f"""
import numpy as np, onnxruntime as ort, torch
from ultralytics import YOLO
model = YOLO({str(out)!r})
assert model.model.yolo_ext_pruning and model.names[1] == "WBC"
metrics = model.val(data={str(data)!r}, imgsz=64, batch=4, workers=0, device="cpu", plots=False, verbose=False)
assert 0 <= metrics.box.map <= 1
boxes = model.predict({str(image)!r}, imgsz=64, conf=0.0, max_det=5, verbose=False)[0].boxes
assert boxes.data.ndim == 2 and boxes.data.shape[1] == 6 and 1 <= len(boxes) <= 5, boxes.data.shape  # conf 0: boxes
assert ((0 <= boxes.cls) & (boxes.cls < 3)).all() and ((0 <= boxes.conf) & (boxes.conf <= 1)).all()
h, w = boxes.orig_shape
assert (boxes.xyxy >= 0).all() and (boxes.xyxy[:, [0, 2]] <= w).all() and (boxes.xyxy[:, [1, 3]] <= h).all()
onnx = model.export(format="onnx", imgsz=128, dynamic=True, simplify=False)
x = torch.rand(1, 3, 128, 96)
net = YOLO({str(out)!r}).model.float().eval()
net.model[-1].export = True  # the exported graph's output (end-to-end heads: boxes after top-k)
with torch.no_grad():
    ref = net(x).numpy()
sess = ort.InferenceSession(onnx)
got = sess.run(None, {{sess.get_inputs()[0].name: x.numpy()}})[0]
assert got.shape == ref.shape, (got.shape, ref.shape)
assert np.abs(got - ref).max() < 1e-3 * max(1.0, np.abs(ref).max()), np.abs(got - ref).max()
print("ok")
"""
    result = run_python(code, cwd=out.parent)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_reloads_validates_predicts_and_exports_in_fresh_process(pruned, tiny_bccd):
    reload_val_predict_export(pruned[0], tiny_bccd)


@pytest.mark.parametrize("cfg", ["yolov8n-mca.yaml", "yolo26n-rvb-se.yaml", "yolo26n-ctx-p3p5.yaml"])
def test_every_family_reloads_and_exports(cfg, tiny_bccd, tmp_path):
    source = save_three_class(cfg, tmp_path / "in.pt")
    out = prune_checkpoint(source, PruneConfig(ratio=0.4, imgsz=128), latency_runs=0).output
    reload_val_predict_export(out, tiny_bccd)


def test_default_prunes_every_layer_alike_at_the_runtime_multiple(checkpoint, tmp_path):
    """No ratio, no target: the weakest 25% (L1) of every group's channels, at widths that are multiples of the
    backend's measured channel multiple, and the report times both networks on the backend."""
    source = tmp_path / "best.pt"
    source.write_bytes(checkpoint.read_bytes())
    result = run_prune("--model_path", str(source), "--imgsz", "128", "--latency-runs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "best-pruned25.pt"
    record = torch.load(out, weights_only=False)["model"].yolo_ext_pruning[-1]
    config = record["config"]
    assert (config["criterion"], config["allocation"], config["ratio"], config["global_pruning"]) == (
        "l1", "ratio", 0.25, False)
    multiple = config["round_to"]
    assert isinstance(multiple, int) and multiple in (4, 8, 16, 32)  # measured, not "auto"
    changed = {n: c for n, c in record["channels"].items() if c[0] != c[1]}
    assert changed and all(after % multiple == 0 for _, after in changed.values())
    assert all(after >= 0.2 * before for before, after in changed.values())
    text = out.with_suffix(".txt").read_text()
    assert "l1, ratio 0.25" in text and f"channels x{multiple}" in text
    assert "Latency on ort-cpu (128x128" in text and "efficiency" in text


def test_prune_the_pruned_checkpoint_again(pruned):
    out, _, _ = pruned
    result = run_prune("--model_path", str(out), "--imgsz", "128", "--latency-runs", "0",
                       "--prune_type", "lamp", "--target-params", "0.3")
    assert result.returncode == 0, result.stderr[-3000:]
    again = out.with_name("best-pruned40-params30.pt")  # default name says what the target was
    assert again.exists() and "ratio 0." in again.with_suffix(".txt").read_text()
    history = torch.load(again, weights_only=False)["model"].yolo_ext_pruning
    assert [h["config"]["criterion"] for h in history] == ["l1", "lamp"]
    assert abs(1 - history[1]["params"][1] / history[1]["params"][0] - 0.3) <= 0.01


def _bad(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run the tool's main() in-process (as the CLI does) and return its exit code and error output."""
    tool = _load_tool()
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = tool.main(tool.get_args_parser().parse_args([*args, "--latency-runs", "0", "--imgsz", "64"]))
    return code, err.getvalue()


@pytest.mark.parametrize("ratio", ["1.0", "-0.2", "1.5"])
def test_bad_ratio_writes_nothing(checkpoint, tmp_path, ratio):
    out = tmp_path / "o.pt"
    code, err = _bad(tmp_path, "--model_path", str(checkpoint), "--prune_ratio", ratio, "--output", str(out))
    assert code == 2 and "ratio must be in [0, 1)" in err and not out.exists()


def test_missing_file(tmp_path):
    code, err = _bad(tmp_path, "--model_path", str(tmp_path / "nope.pt"))
    assert code == 2 and "does not exist" in err and not list(tmp_path.iterdir())


def test_not_a_checkpoint(tmp_path):
    fake = tmp_path / "notes.pt"
    fake.write_text("hello")
    code, err = _bad(tmp_path, "--model_path", str(fake))
    assert code == 2 and "is not a PyTorch checkpoint" in err
    state = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(3)}, state)
    code, err = _bad(tmp_path, "--model_path", str(state))
    assert code == 2 and "not an Ultralytics YOLO checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt", "state.pt"]


def test_classification_checkpoint_is_refused(tmp_path):
    cls = tmp_path / "cls.pt"
    YOLO("yolo11n-cls.yaml").save(cls)
    code, err = _bad(tmp_path, "--model_path", str(cls))
    assert code == 2 and "these models only" in err and "classify" in err
    assert [p.name for p in tmp_path.iterdir()] == ["cls.pt"]


def test_never_overwrites(checkpoint, tmp_path):
    code, err = _bad(tmp_path, "--model_path", str(checkpoint), "--output", str(checkpoint))
    assert code == 2 and "Refusing to overwrite the input" in err
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"keep me")
    code, err = _bad(tmp_path, "--model_path", str(checkpoint), "--output", str(existing))
    assert code == 2 and "already exist" in err and existing.read_bytes() == b"keep me"
    report = tmp_path / "new.txt"  # the report beside a new checkpoint name is protected too
    report.write_text("my notes")
    code, err = _bad(tmp_path, "--model_path", str(checkpoint), "--output", str(tmp_path / "new.pt"))
    assert code == 2 and "new.txt" in err and report.read_text() == "my notes"
    assert not (tmp_path / "new.pt").exists()


def test_taylor_without_data_is_refused(checkpoint, tmp_path):
    code, err = _bad(tmp_path, "--model_path", str(checkpoint), "--prune_type", "taylor",
                     "--output", str(tmp_path / "t.pt"))
    assert code == 2 and "--data" in err and not (tmp_path / "t.pt").exists()


def test_cli_exit_code_on_error(tmp_path):
    result = run_prune("--model_path", str(tmp_path / "missing.pt"))
    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("extra, criterion, is_global, ratio", [
    ((), "l1", False, 0.25),  # the default cut: uniform L1 (kept the most at equal speed)
    (("--target-latency", "0.4"), "l1", False, None),
    (("--target-macs", "0.4"), "l1", False, None),
    (("--target-params", "0.5"), "lamp", True, None),  # a params budget: global LAMP (kept the most at -50% params)
    (("--prune-ratio", "0.3"), "l1", False, 0.3),
    (("--prune-ratio", "0.3", "--prune-type", "lamp"), "lamp", True, 0.3),
    (("--prune-ratio", "0.3", "--prune-type", "lamp", "--uniform"), "lamp", False, 0.3),
])
def test_cli_defaults_by_request(extra, criterion, is_global, ratio):
    """What tools/prune.py does unless told (yolo_ext.prune.defaults: measured in benchmarks/RESULTS.md)."""
    spec = importlib.util.spec_from_file_location("prune_tool", PRUNE)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = tool.config_from_args(tool.get_args_parser().parse_args(["--model-path", "best.pt", *extra]))
    assert (config.criterion, config.is_global, config.round_to, config.allocation) == (
        criterion, is_global, "auto", "ratio")
    if ratio is not None:
        assert config.ratio == ratio
