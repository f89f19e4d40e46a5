"""Issue 11: nothing the user had is lost, nothing silently wrong, a clear message (exit 2, nothing written) for every
mistake a careless user makes, and kills at any point leave only complete files under final names."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from ultralytics import YOLO

import yolo_ext
from conftest import REPO, save_three_class
from yolo_ext.io.atomic import publish, remove_stale_temps, temp_path
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import prune_checkpoint

TOOLS = REPO / "tools"
TRAIN = dict(imgsz=64, batch=4, workers=0, device="cpu", plots=False, exist_ok=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def params(path: Path) -> int:
    ckpt = torch.load(path, weights_only=False)
    return sum(p.numel() for p in (ckpt.get("ema") or ckpt["model"]).parameters())


def tool_main(name: str, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run tools/<name>'s main() in this process (as its __main__ does): exit code, stdout, stderr."""
    spec = importlib.util.spec_from_file_location(f"tool_{name[:-3]}", TOOLS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        os.chdir(cwd or old)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(module.get_args_parser().parse_args(list(args)))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """An untrained 3-class yolo11n checkpoint as Ultralytics saves it."""
    return save_three_class("yolo11n.yaml", tmp_path_factory.mktemp("plain") / "best.pt")


@pytest.fixture(scope="module")
def pruned(plain) -> Path:
    config = PruneConfig(ratio=0.4, imgsz=64)
    return prune_checkpoint(plain, config, plain.with_name("pruned.pt"), latency_runs=0).output


def prune_args(source: Path, *extra: str) -> list[str]:
    return ["--model_path", str(source), "--imgsz", "64", "--latency-runs", "0", *extra]


# ---------------------------------------------------------------- prune: outputs checked first, never clobbered


@pytest.mark.parametrize("name", ["x.txt", "y.png", "z.PNG"])
def test_output_named_like_its_report_is_refused(plain, tmp_path, name):
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(tmp_path / "out" / name)))
    assert code == 2 and "Name the checkpoint .pt" in err, err
    assert not (tmp_path / "out").exists()


def test_bad_output_is_refused_before_any_pruning(plain, tmp_path, monkeypatch):
    from yolo_ext.prune import checkpoint

    def no_work(*a, **k):
        raise AssertionError("pruned before checking --output")

    monkeypatch.setattr(checkpoint, "prune_model", no_work)
    folder = tmp_path / "dir"
    folder.mkdir()
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(folder)))
    assert code == 2 and "is a folder" in err and "pruned.pt" in err
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(blocker / "sub" / "x.pt")))
    assert code == 2 and "is a file" in err and blocker.read_text() == "mine"
    (folder / "x.txt").mkdir()  # a folder where the report would go
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(folder / "x.pt")))
    assert code == 2 and "x.txt is a folder" in err
    assert tree(tmp_path) == ["dir", "dir/x.txt", "file"]


def test_folder_as_model_path_is_named_a_folder(tmp_path, plain):
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    shutil.copy(plain, run / "weights" / "best.pt")
    code, _, err = tool_main("prune.py", *prune_args(run))
    assert code == 2 and "is a folder, not a checkpoint" in err and "weights/best.pt" in err
    assert tree(run) == ["weights", "weights/best.pt"]


@pytest.mark.parametrize("extra", [("--round-to", "1000", "--prune-ratio", "0.4"), ("--round-to", "1000"),
                                   ("--prune_ratio", "0.999", "--prune-type", "l1")])
def test_request_that_removes_nothing_is_refused(plain, tmp_path, extra):
    out = tmp_path / "o.pt"
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(out), *extra))
    assert code == 2, err
    if extra[0] == "--round-to":  # an explicit ratio, and the default cut (uniform L1 at 0.25): the same refusal
        assert "Nothing was pruned" in err and "--round-to 1000" in err and "nothing was written" in err
    assert not list(tmp_path.iterdir())


def test_tiny_ratio_says_what_was_removed(plain, tmp_path):
    out = tmp_path / "tiny.pt"
    code, stdout, err = tool_main("prune.py", *prune_args(plain, "--output", str(out), "--prune_ratio", "1e-9",
                                                          "--prune-type", "l1"))
    assert code == 0, err
    note = next(line for line in stdout.splitlines() if line.startswith("Note:"))
    assert "asked for ratio 1e-09" in note and "of the params" in note
    assert note in out.with_suffix(".txt").read_text()
    code, stdout, _ = tool_main("prune.py", *prune_args(plain, "--output", str(tmp_path / "zero.pt"),
                                                        "--prune_ratio", "0"))
    assert code == 0 and "Note:" not in stdout  # ratio 0 is an explicit copy, not a mistake


def test_default_name_taken_meanwhile_goes_to_the_next_name(plain, tmp_path, monkeypatch):
    """Another run publishes best-pruned40.pt while this one prunes: both results survive, under two names."""
    from yolo_ext.prune import checkpoint

    source = tmp_path / "best.pt"
    shutil.copy(plain, source)
    real = checkpoint.prune_model

    def prune_then_race(*args, **kwargs):
        result = real(*args, **kwargs)
        (tmp_path / "best-pruned40.pt").write_bytes(b"the other run's checkpoint")
        return result

    monkeypatch.setattr(checkpoint, "prune_model", prune_then_race)
    report = prune_checkpoint(source, PruneConfig(ratio=0.4, imgsz=64), latency_runs=0)
    assert report.output.name == "best-pruned40-2.pt" and report.text.name == "best-pruned40-2.txt"
    assert (tmp_path / "best-pruned40.pt").read_bytes() == b"the other run's checkpoint"
    assert params(report.output) < params(source)
    monkeypatch.setattr(checkpoint, "prune_model", prune_then_race)
    with pytest.raises(yolo_ext.prune.CheckpointError, match="already exist|created by another program"):
        (tmp_path / "best-pruned40.pt").unlink()
        prune_checkpoint(source, PruneConfig(ratio=0.4, imgsz=64), tmp_path / "best-pruned40.pt", latency_runs=0)
    assert (tmp_path / "best-pruned40.pt").read_bytes() == b"the other run's checkpoint"  # explicit name: untouched


def test_two_prunes_at_once_keep_both_results(plain, tmp_path):
    source = tmp_path / "best.pt"
    shutil.copy(plain, source)
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, str(TOOLS / "prune.py"), *prune_args(source)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    saved = sorted(line.split()[-1] for out, _ in outs for line in out.splitlines() if line.startswith("Saved "))
    assert len(set(saved)) == 2, saved
    for name in saved:
        assert params(Path(name)) < params(source)
        assert Path(name).with_suffix(".txt").read_text().startswith(source.name)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- kills: only complete files under final names

KILLER = r"""
import io, os, pathlib, runpy, signal, sys
point, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "checkpoint":  # prune: half of the checkpoint written
    import torch
    real = torch.save
    def save(obj, f, *a, **k):
        buf = io.BytesIO(); real(obj, buf); open(f, "wb").write(buf.getvalue()[: len(buf.getvalue()) // 2]); die()
    torch.save = save
elif point == "report":  # prune: half of the text report written
    real_text = pathlib.Path.write_text
    def write_text(self, s, *a, **k):
        real_text(self, s[: len(s) // 2]); die()
    pathlib.Path.write_text = write_text
elif point == "plot":  # prune: a partial PNG
    import matplotlib.figure
    def savefig(self, fname, *a, **k):
        open(fname, "wb").write(b"\x89PNG\r\n\x1a\n partial"); die()
    matplotlib.figure.Figure.savefig = savefig
elif point == "epoch-save":  # fine-tuning: half of the epoch checkpoint written
    real_bytes = pathlib.Path.write_bytes
    def write_bytes(self, data):
        real_bytes(self, data[: len(data) // 2]); die()
    pathlib.Path.write_bytes = write_bytes
elif point == "final-strip":  # fine-tuning: the final strip of last.pt cut in half
    import ultralytics.engine.trainer as trainer
    def strip_optimizer(f, *a, **k):
        os.truncate(f, os.path.getsize(f) // 2); die()
    trainer.strip_optimizer = strip_optimizer
sys.argv = [tool, *args]
runpy.run_path(tool, run_name="__main__")
"""


def run_killed(point: str, tool: str, *args: str, cwd: Path, after_s: float | None = None) -> None:
    cmd = [sys.executable, "-c", KILLER, point, str(TOOLS / tool), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    if after_s is not None:
        time.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]


def assert_complete(path: Path) -> None:
    """A file under a final name is whole: a loadable checkpoint, a finished report, a valid PNG."""
    if path.suffix == ".pt":
        torch.load(path, weights_only=False)
    elif path.suffix == ".txt":
        assert path.read_text().count("\n") >= 4
    elif path.suffix == ".png":
        with Image.open(path) as im:
            im.load()


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".yolo_ext-" in p.name]


def test_prune_killed_at_any_point_leaves_only_complete_files(plain, tmp_path):
    source = tmp_path / "best.pt"
    shutil.copy(plain, source)
    before = digest(source)
    outputs = {}
    for point in ("checkpoint", "report", "plot", "external"):
        out = tmp_path / f"{point}.pt"
        outputs[point] = out
        run_killed(point, "prune.py", *prune_args(source, "--output", str(out)), cwd=tmp_path,
                   after_s=2.0 if point == "external" else None)
        if point != "external":
            assert temps(tmp_path), point  # the killed run's temporary file, until the next run removes it
    finals = [p for p in tmp_path.iterdir() if not p.name.startswith(".") and p != source]
    for path in finals:
        assert_complete(path)
    assert not outputs["checkpoint"].exists()  # killed while writing it: nothing under its name
    assert outputs["report"].exists() and not outputs["report"].with_suffix(".txt").exists()
    assert outputs["plot"].with_suffix(".txt").exists() and not outputs["plot"].with_suffix(".png").exists()
    assert digest(source) == before
    code, stdout, err = tool_main("prune.py", *prune_args(source), cwd=tmp_path)
    assert code == 0, err
    assert not temps(tmp_path) and digest(source) == before


def test_finetune_killed_in_its_saves_leaves_complete_checkpoints(pruned, tiny_bccd, tmp_path):
    """Killed half-way through an epoch save and through the final strip; the next run removes the temp files."""
    before = digest(pruned)
    args = ("--model_path", str(pruned), "--data", str(tiny_bccd), "--epochs", "1", "--imgsz", "64",
            "--batch_size", "4", "--workers", "0", "--device", "cpu")
    run_killed("epoch-save", "finetune.py", *args, cwd=tmp_path)
    run_killed("final-strip", "finetune.py", *args, cwd=tmp_path)
    runs = tmp_path / "runs" / "finetune"  # where the README says: relative to the current folder
    assert sorted(p.name for p in runs.iterdir()) == ["exp", "exp-2"]
    assert not (runs / "exp" / "weights" / "last.pt").exists()  # killed while writing it
    last = runs / "exp-2" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)  # complete, as written before the final strip
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None
    assert_complete(runs / "exp-2" / "weights" / "best.pt")
    assert len(temps(runs)) >= 2
    code, _, err = tool_main("finetune.py", "--resume", str(last))
    assert code == 2 and "trained all its 1 epochs" in err and not temps(runs / "exp-2")
    code, stdout, err = tool_main("finetune.py", *args, cwd=tmp_path)
    assert code == 0, err
    assert not temps(tmp_path) and digest(pruned) == before
    assert (runs / "exp-3" / "weights" / "best.pt").exists()


# ---------------------------------------------------------------- training a pruned checkpoint keeps it


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def plain_trained(pruned, tiny_bccd, tmp_path_factory):
    """YOLO("pruned.pt").train() with no trainer, as a user would write it; returns (model, log lines)."""
    from ultralytics.utils import LOGGER

    handler = _Records()
    LOGGER.addHandler(handler)
    try:
        model = YOLO(str(pruned))
        model.train(data=str(tiny_bccd), epochs=1, project=str(tmp_path_factory.mktemp("runs")), name="py", **TRAIN)
    finally:
        LOGGER.removeHandler(handler)
    return model, handler.lines


def test_plain_train_keeps_the_pruned_network_and_warns(plain_trained, pruned):
    from yolo_ext.train.trainers import PrunedDetectionTrainer

    model, lines = plain_trained
    assert type(model.trainer) is PrunedDetectionTrainer
    assert any("holds a pruned network" in line and "PrunedDetectionTrainer" in line for line in lines)
    assert not any("Transferred" in line for line in lines)
    best = torch.load(model.trainer.best, weights_only=False)["model"]
    assert sum(p.numel() for p in best.parameters()) == params(pruned)
    assert len(best.yolo_ext_pruning) == 1


def test_cli_train_keeps_the_pruned_network(pruned, tiny_bccd, tmp_path):
    exe = shutil.which("yolo-ext") or str(Path(sys.executable).with_name("yolo-ext"))
    result = subprocess.run(
        [exe, "train", f"model={pruned}", f"data={tiny_bccd}", "epochs=1", "imgsz=64", "batch=4", "workers=0",
         "device=cpu", "plots=False", f"project={tmp_path}", "name=cli"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "holds a pruned network" in result.stdout + result.stderr
    best = torch.load(tmp_path / "cli" / "weights" / "best.pt", weights_only=False)["model"]
    assert sum(p.numel() for p in best.parameters()) == params(pruned) and best.yolo_ext_pruning


# ---------------------------------------------------------------- fine-tuning / iterative / val: refused up front


def test_finetune_bad_inputs_exit_2_and_write_nothing(plain_trained, pruned, plain, tiny_bccd, tmp_path):
    finished = Path(plain_trained[0].trainer.last)
    common = ("--data", str(tiny_bccd), "--imgsz", "64", "--batch_size", "4", "--workers", "0", "--device", "cpu")
    cases = [
        (("--resume", str(tmp_path / "missing.pt")), "does not exist"),
        (("--resume", str(finished.parent)), "is a folder"),
        (("--resume", str(finished)), "finished training"),
        (("--resume", str(pruned)), "is a pruned checkpoint"),
        (("--model_path", str(pruned), *common, "--epochs", "1", "--teacher", str(tmp_path / "nope.pt")),
         "Teacher (--teacher / distill_model)"),
        (("--model_path", str(pruned), *common, "--epochs", "0"), "epochs must be a whole number >= 1, got 0"),
        (("--model_path", str(pruned), *common, "--epochs", "-1"), "got -1"),
    ]
    if torch.cuda.device_count() < 8:
        cases.append((("--model_path", str(pruned), *common, "--epochs", "1", "--device", "7"), "--device 7"))
    for args, message in cases:
        code, _, err = tool_main("finetune.py", *args, cwd=tmp_path)
        assert code == 2 and message in err, (args, err)
    assert not list(tmp_path.iterdir())


def test_iterative_refuses_before_step_one(plain, tiny_bccd, tmp_path):
    common = ("--model_path", str(plain), "--data", str(tiny_bccd), "--imgsz", "64", "--steps", "2")
    code, _, err = tool_main("iterative_prune.py", *common, "--epochs", "0", "--out", str(tmp_path / "a"))
    assert code == 2 and "epochs must be" in err and not (tmp_path / "a").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "step1-pruned.pt").write_bytes(b"earlier result")
    code, _, err = tool_main("iterative_prune.py", *common, "--epochs", "1", "--out", str(used))
    assert code == 2 and "Choose another --out" in err and "--overwrite" not in err
    assert tree(tmp_path) == ["used", "used/step1-pruned.pt"]


def test_val_refuses_a_classification_checkpoint(tiny_bccd, tmp_path):
    cls = tmp_path / "cls.pt"
    YOLO("yolo11n-cls.yaml").save(cls)
    code, _, err = tool_main("val.py", "--data", str(tiny_bccd), "--latency-runs", "0", str(cls))
    assert code == 2 and "classify" in err and "these models only" in err


# ---------------------------------------------------------------- model YAML mistakes


def _yaml(tmp_path: Path, body: str) -> str:
    path = tmp_path / "yolo11n-mine.yaml"
    path.write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [32, 3, 2]]\nhead:\n" + body)
    return str(path)


@pytest.mark.parametrize("flag", ["[banana]", "maybe", "0.5", "1"])
def test_mca_flag_must_be_a_bool(tmp_path, flag):
    with pytest.raises(yolo_ext.ModelYAMLError, match="no_spatial must be True or False"):
        YOLO(_yaml(tmp_path, f"  - [-1, 1, MCA, [{flag}]]\n  - [[2], 1, Detect, [nc]]\n"))
    assert YOLO(_yaml(tmp_path, "  - [-1, 1, MCA, [true]]\n  - [[2], 1, Detect, [nc]]\n")).model.model[2].no_spatial


def test_yaml_without_head_and_bad_from_index(tmp_path):
    with pytest.raises(yolo_ext.ModelYAMLError, match="no output head: its last layer .layer 2. is 'Conv'"):
        YOLO(_yaml(tmp_path, "  - [-1, 1, Conv, [32, 3, 1]]\n"))
    with pytest.raises(yolo_ext.ModelYAMLError, match=r"layer 2 \(Concat\): 'from' index 5 is out of range.*0\.\.1"):
        YOLO(_yaml(tmp_path, "  - [[1, 5], 1, Concat, [1]]\n  - [[2], 1, Detect, [nc]]\n"))


# ---------------------------------------------------------------- the file helpers


def test_stale_temps_removed_live_ones_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".best.yolo_ext-{int(dead.stdout)}.tmp.pt"
    live = temp_path(tmp_path / "last.pt")  # this process: a concurrent writer
    other = tmp_path / ".best.pt.123.tmp"  # not our naming
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and other.exists()


def test_publish_never_replaces_without_overwrite(tmp_path):
    final, tmp = tmp_path / "a.pt", tmp_path / "t"
    final.write_bytes(b"user's")
    tmp.write_bytes(b"new")
    with pytest.raises(FileExistsError):
        publish(tmp, final)
    assert final.read_bytes() == b"user's" and tmp.exists()
    publish(tmp, final, overwrite=True)
    assert final.read_bytes() == b"new" and not tmp.exists()
