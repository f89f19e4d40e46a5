"""Issue 17: what about 250 careless-user probes still found. Nothing the user has is lost, nothing is silently wrong,
and every mistake is one line, exit code 2, before any work and with no run folder. One test (or more) per item; the
item number is in each test's docstring."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.tasks import SegmentationModel

import yolo_ext
from conftest import BCCD_NAMES, REPO, run_python
from test_safety import TOOLS, digest, plain, pruned, tool_main, tree  # noqa: F401  (fixtures)
from yolo_ext.cli import app as cli
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import load_prunable_checkpoint, network_digest, prune_checkpoint
from yolo_ext.train.errors import FinetuneError
from yolo_ext.train.finetune import finetune
from yolo_ext.train.inputs import check_finetune_inputs, check_teacher, find_default_teacher
from yolo_ext.train.trainers import PrunedDetectionTrainer

FT = ("--imgsz", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--epochs", "1")


class Records(logging.Handler):
    """Ultralytics' log lines (its LOGGER writes to the stream it found at import, which redirects do not catch)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def ultralytics_log():
    from ultralytics.utils import LOGGER

    handler = Records()
    LOGGER.addHandler(handler)
    try:
        yield handler.lines
    finally:
        LOGGER.removeHandler(handler)


def yolo_ext_cli(*args: str) -> tuple[int, str, str]:
    """``yolo-ext <args>`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        cli.main(["yolo-ext", *args])
    return done.value.code, out.getvalue(), err.getvalue()


def refused(err: str, *words: str) -> None:
    """One line on stderr, naming what is wrong."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    for word in words:
        assert word in lines[0], (word, err)


def with_names(data: Path, folder: Path, names: dict[int, str]) -> Path:
    """The same images and labels under other class names (the data YAML's path stays the original folder)."""
    text = data.read_text().split("names:")[0] + "names:\n" + "".join(f"  {k}: {v}\n" for k, v in names.items())
    out = folder / "other-names.yaml"
    out.write_text(text)
    return out


def copy_data(data: Path, folder: Path) -> Path:
    """A writable copy of the tiny data set (labels can be edited), with its YAML pointing at it."""
    root = Path(shutil.copytree(data.parent, folder / "data", ignore=shutil.ignore_patterns("*.cache")))
    (root / "data.yaml").write_text(data.read_text().replace(f"path: {data.parent}", f"path: {root}"))
    return root / "data.yaml"


def other_network(source: Path, path: Path) -> Path:
    """A network of the same widths and classes as ``source`` but other weights (another training of it)."""
    ckpt = torch.load(source, weights_only=False)
    with torch.no_grad():
        for p in ckpt["model"].parameters():
            p.add_(0.01)
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------- 1: a copied last.pt never replaces a finished run


def test_resume_of_a_copied_last_pt_never_replaces_the_finished_run(pruned, tiny_bccd, tmp_path):
    """Item 1. A copy of last.pt taken mid-run resumes into a folder of its own once the run has finished."""
    copy = tmp_path / "copy-of-last.pt"

    def keep_a_copy(trainer):
        if trainer.epoch == 0:
            shutil.copy(trainer.last, copy)

    model = YOLO(str(pruned))
    model.add_callback("on_model_save", keep_a_copy)
    runs = tmp_path / "runs"
    model.train(trainer=PrunedDetectionTrainer, data=str(tiny_bccd), epochs=2, imgsz=64, batch=4, workers=0,
                device="cpu", plots=False, project=str(runs), name="exp")
    finished = runs / "exp"
    before = {p: digest(finished / p) for p in ("weights/best.pt", "weights/last.pt", "results.csv")}
    with ultralytics_log() as lines:
        code, out, err = tool_main("finetune.py", "--resume", str(copy), cwd=tmp_path)
    assert code == 0, err
    assert {p: digest(finished / p) for p in before} == before  # the finished run is as it was
    assert any("resuming into" in line and str(runs / "exp-2") in line for line in lines), lines
    resumed = runs / "exp-2"
    assert f"Fine-tuned weights: {resumed / 'weights' / 'best.pt'}" in out
    rows = (resumed / "results.csv").read_text().strip().splitlines()
    assert rows[-1].startswith("2,")  # it trained the epoch the copy had left


# ---------------------------------------------------------------- teachers: 2, 3, 4 (test_finetune.py), 22


def test_teacher_predicting_other_class_names_is_refused_and_auto_says_why(plain, pruned, tiny_bccd, tmp_path):
    """Item 2. Same number of classes, other names: an explicit teacher is refused, 'auto' goes on without one."""
    data = with_names(tiny_bccd, tmp_path, {0: "cat", 1: "dog", 2: "car"})
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(data), "--teacher",
                             str(plain), *FT, cwd=tmp_path)
    assert code == 2, err
    refused(err, "teacher predicts the classes ['rbc', 'wbc', 'platelets']", "['cat', 'dog', 'car']")
    assert tree(tmp_path) == ["other-names.yaml"]
    _, model = check_finetune_inputs(pruned, data)
    found, line = find_default_teacher(pruned, model)
    assert found is None and line.startswith("fine-tuning without a teacher") and "classes" in line
    _, same = check_finetune_inputs(pruned, tiny_bccd)
    assert find_default_teacher(pruned, same)[0] == plain.resolve()


def test_auto_teacher_must_be_the_recorded_network(plain, tmp_path):
    """Item 3. The record keeps the source's weight digest; a file under the source's name with other weights is not
    used, and an older record without a digest is used with a line saying it could not be verified."""
    source = shutil.copy(plain, tmp_path / "best.pt")
    student = prune_checkpoint(source, PruneConfig(ratio=0.3, imgsz=64), tmp_path / "p.pt", latency_runs=0).output
    record = torch.load(student, weights_only=False)["model"].yolo_ext_pruning[0]
    assert record["source_sha256"] == network_digest(load_prunable_checkpoint(plain)[1])
    _, model = check_finetune_inputs(student, REPO / "yolo_ext" / "data" / "bccd_demo" / "data.yaml")
    found, line = find_default_teacher(student, model)
    assert found == Path(source).resolve() and "could not be verified" not in line
    other_network(plain, Path(source))  # another network now has the source's name, widths and classes
    found, line = find_default_teacher(student, model)
    assert found is None and "not those of the network it was pruned from" in line, line
    shutil.copy(plain, source)
    del model.yolo_ext_pruning[0]["source_sha256"]  # a record written before the digest existed
    found, line = find_default_teacher(student, model)
    assert found == Path(source).resolve() and "could not be verified" in line


def test_teacher_that_is_not_an_ancestor_is_refused(plain, pruned, tiny_bccd, tmp_path):
    """Item 22. Same widths and classes, other weights: not the network it was pruned from, so refused (the README
    says so); its own source is accepted."""
    stranger = other_network(plain, tmp_path / "stranger.pt")
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(tiny_bccd), "--teacher",
                             str(stranger), *FT, cwd=tmp_path)
    assert code == 2, err
    refused(err, "is not a network this model was pruned from", "--teacher none")
    assert tree(tmp_path) == ["stranger.pt"]
    _, model = check_finetune_inputs(pruned, tiny_bccd)
    check_teacher(model, plain)


# ---------------------------------------------------------------- 5: concurrent --overwrite prunes publish one set

SLOW_REPORT = r"""
import pathlib, runpy, sys, time
delay, tool, args = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
real = pathlib.Path.write_text
def write_text(self, *a, **k):  # the report is written a while after the checkpoint was published
    time.sleep(delay)
    return real(self, *a, **k)
pathlib.Path.write_text = write_text
sys.argv = [tool, *args]
runpy.run_path(tool, run_name="__main__")
"""


def test_overwrite_prunes_to_one_output_at_once_leave_one_runs_files(plain, tmp_path):
    """Item 5. Two --overwrite prunes of one output at once: checkpoint and report come from the same run. The first
    run is slow between its checkpoint and its report; unlocked, the second run's checkpoint would land in between."""
    out = tmp_path / "out.pt"
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    procs = []
    for ratio, delay in (("0.2", 4.0), ("0.3", 0.0)):
        args = ["--model-path", str(plain), "--imgsz", "64", "--latency-runs", "0", "--prune-type", "l1",
                "--prune-ratio", ratio, "--output", str(out), "--overwrite"]
        procs.append(subprocess.Popen([sys.executable, "-c", SLOW_REPORT, str(delay), str(TOOLS / "prune.py"), *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        time.sleep(1.5)
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    ratio = torch.load(out, weights_only=False)["model"].yolo_ext_pruning[-1]["config"]["ratio"]
    assert f"ratio {ratio:.3g}" in out.with_suffix(".txt").read_text().splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out.pt", "out.txt"]  # no lock or temp left


# ---------------------------------------------------------------- prune options: 6, 7, 8, 12, 23, 24, 25


def prune_args(source: Path, *extra: str) -> list[str]:
    return ["--model-path", str(source), "--imgsz", "64", "--latency-runs", "0", *extra]


@pytest.mark.parametrize("extra, words", [
    (("--target-params", "0.3", "--prune-ratio", "0.7"), ("--prune-ratio 0.7 and --target-params", "give one")),  # 6
    (("--target-macs", "0.3", "--ratio", "0.4"), ("--prune-ratio 0.4 and --target-macs",)),  # 6, the default value
    (("--data", "data.yaml"), ("--data is read only by --prune-type taylor", "l1 ranks")),  # 7
    (("--prune-type", "taylor", "--data", "d.yaml", "--batches", "0"), ("--batches must be a whole number >= 1",)),
    (("--prune-type", "taylor", "--data", "d.yaml", "--batch-size", "0"), ("--batch-size must be",)),  # 12
    (("--imgsz", "100000"), ("from 32 to 4096", "100000")),  # 11
    (("--protect", "model"), ("--protect model covers every layer",)),  # 25
])
def test_prune_refuses_before_any_work(plain, tmp_path, monkeypatch, extra, words):
    """Items 6, 7, 11, 12, 25: one line, exit 2, nothing written, and no pruning started."""
    from yolo_ext.prune import engine

    monkeypatch.setattr(engine.tp.pruner, "BasePruner", None)  # pruning would fail loudly, not with a message
    code, _, err = tool_main("prune.py", *prune_args(plain, "--output", str(tmp_path / "o.pt"), *extra), cwd=tmp_path)
    assert code == 2, err
    refused(err, *words)
    assert "Use a ratio such as" not in err
    assert not list(tmp_path.iterdir())


def test_iterative_refuses_a_ratio_beside_a_target(plain, tiny_bccd, tmp_path):
    """Items 6 and 27 for tools/iterative_prune.py: the explicit ratio is not ignored; --rounds is named as such."""
    common = ("--model-path", str(plain), "--data", str(tiny_bccd), "--out", str(tmp_path / "r"))
    code, _, err = tool_main("iterative_prune.py", *common, "--target-params", "0.3", "--prune-ratio", "0.5")
    assert code == 2 and "--prune-ratio 0.5 and --target-params" in err, err
    code, _, err = tool_main("iterative_prune.py", *common, "--rounds", "0")
    assert code == 2 and "--rounds (steps) must be a whole number >= 1, got 0" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, words", [
    (("ratio=0.3", "ratio=0.5"), ("ratio= is given twice (ratio=0.3, ratio=0.5)",)),  # 8
    (("ratio=0.3", "prune_ratio=0.5"), ("ratio= and prune_ratio= are the same option",)),  # 8
    (("uniform=yes",), ("uniform='yes': uniform is a switch; write uniform=True or uniform=False",)),  # 23
    (("overwrite=1",), ("overwrite is a switch",)),  # 23
    (("ratio=0.7", "target_params=0.3"), ("--prune-ratio 0.7 and --target-params",)),  # 6 in key=value form
])
def test_prune_mode_refusals(plain, tmp_path, args, words):
    """Items 8, 23 (and 6) for `yolo-ext prune`."""
    code, _, err = yolo_ext_cli("prune", f"model={plain}", *args, f"output={tmp_path / 'x.pt'}", "imgsz=64",
                                "latency_runs=0")
    assert code == 2, err
    refused(err, *words)
    assert not list(tmp_path.iterdir())


def test_switches_take_true_or_false_in_any_case():
    """Item 23: the one rule is True/False (as Ultralytics reads booleans); case does not matter."""
    from yolo_ext.cli.commands.prune import get_args_parser
    from yolo_ext.cli.options import parse_key_values

    assert parse_key_values(get_args_parser(), ["model=a.pt", "uniform=TRUE"]).global_pruning is False
    assert parse_key_values(get_args_parser(), ["model=a.pt", "uniform=false"]).global_pruning is True


def test_help_shows_no_default_for_switches():
    """Item 24: `prune.py --help` said `--uniform (default: True)` although lamp ranks globally by default."""
    from yolo_ext.cli.commands.prune import get_args_parser
    from yolo_ext.cli.options import describe_keys

    text = " ".join(get_args_parser().format_help().split("options:")[1].split())
    uniform = text[text.index("--uniform remove"):text.index("--max-layer-ratio MAX")]
    assert "default for l1, l2, random, taylor" in uniform and "default: True" not in uniform
    ratio = text[text.index("--prune-ratio P"):text.index("--target-params T")]
    assert "default when no target is given: 0.25" in ratio and "(default: None)" not in ratio
    criterion = text[text.index("--prune-type PRUNE_TYPE"):text.index("--prune-ratio P")]
    assert "default by request: ratio: l1" in criterion and "(default: None)" not in criterion
    keys = describe_keys(get_args_parser(), "usage")
    lines = {line.split()[0]: line for line in keys.splitlines() if line.startswith("  ")}
    assert "default: True" not in keys
    assert "default: None" not in lines["prune_type"] + lines["prune_ratio"]


# ---------------------------------------------------------------- fine-tune / val options: 9, 11, 13, 14, 16, 17


def cuda_missing() -> bool:
    return torch.cuda.device_count() == 0


DEVICE_CASES = [("banana", "--device 'banana' is not a device")]
if not torch.backends.mps.is_available():
    DEVICE_CASES.append(("mps", "--device mps: this machine has no Apple MPS GPU"))  # 9
if cuda_missing():
    DEVICE_CASES += [("cuda", "--device cuda: this machine has no CUDA GPU"), ("cuda:0", "no CUDA GPU")]  # 13


@pytest.mark.parametrize("device, words", DEVICE_CASES)
def test_finetune_refuses_a_device_this_machine_lacks(pruned, tiny_bccd, tmp_path, device, words):
    """Items 9 and 13: refused before any work, no run folder."""
    args = [a if a != "cpu" else device for a in FT]
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(tiny_bccd), *args, cwd=tmp_path)
    assert code == 2, err
    refused(err, words)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra, words", [
    (("--imgsz", "100000"), ("--imgsz must be a whole number of pixels from 32 to 4096", "100000")),  # 11
    (("--lr0", "-1"), ("--lr0 must be a learning rate > 0", "-1")),  # 14
    (("--optimizer", "Adamm"), ("--optimizer 'Adamm' is not an optimizer Ultralytics knows. Did you mean Adam?",)),
    (("--project", "FILE"), ("--project", "is a file: pass a folder",)),  # 16
    (("--project", "FILE/sub"), ("is a file): pass a folder",)),  # 16
])
def test_finetune_refuses_bad_values_before_making_a_run_folder(pruned, tiny_bccd, tmp_path, extra, words):
    """Items 11, 14, 16: Ultralytics would fail after setup, leaving a run folder with args.yaml."""
    (tmp_path / "FILE").write_text("mine")
    extra = tuple(str(tmp_path / e) if e.startswith("FILE") else e for e in extra)
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(tiny_bccd), *FT, *extra,
                             cwd=tmp_path)
    assert code == 2, err
    refused(err, *words)
    assert tree(tmp_path) == ["FILE"] and (tmp_path / "FILE").read_text() == "mine"


@pytest.mark.parametrize("extra, words", [
    (("--imgsz", "-5"), ("--imgsz must be a whole number of pixels from 32 to 4096", "got -5")),  # 11
    (("--device", "banana"), ("--device 'banana' is not a device",)),  # 13
    (("--project", "FILE"), ("--project", "is a file")),  # 16
])
def test_val_refuses_bad_values(plain, tiny_bccd, tmp_path, extra, words):
    (tmp_path / "FILE").write_text("mine")
    extra = tuple(str(tmp_path / e) if e == "FILE" else e for e in extra)
    code, _, err = tool_main("val.py", "--data", str(tiny_bccd), "--latency-runs", "0", *extra, str(plain),
                             cwd=tmp_path)
    assert code == 2, err
    refused(err, *words)
    assert tree(tmp_path) == ["FILE"]


def test_bad_checkpointing_switch_is_refused_at_start(pruned, tiny_bccd, tmp_path, monkeypatch):
    """Item 17: YOLO_EXT_CHECKPOINT=maybe was only read at the first batch, after the run folder was made."""
    monkeypatch.setenv("YOLO_EXT_CHECKPOINT", "maybe")
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(tiny_bccd), *FT, cwd=tmp_path)
    assert code == 2, err
    refused(err, "YOLO_EXT_CHECKPOINT='maybe' is not understood")
    code, _, err = yolo_ext_cli("train", "model=yolo11n.yaml", f"data={tiny_bccd}", "epochs=1", f"project={tmp_path}")
    assert code == 2 and "YOLO_EXT_CHECKPOINT='maybe'" in err, err
    code, _, err = tool_main("prune.py", *prune_args(pruned, "--output", str(tmp_path / "o.pt")))
    assert code == 2 and "YOLO_EXT_CHECKPOINT='maybe'" in err, err
    with pytest.raises(ValueError, match="YOLO_EXT_CHECKPOINT='maybe'"):  # Python: before Ultralytics makes a folder
        YOLO("yolo11n.yaml").train(data=str(tiny_bccd), epochs=1, imgsz=64, project=str(tmp_path), name="py")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- 10: val writes nothing it does not need


def _runs_dirs() -> list[Path]:
    """Where Ultralytics puts a relative or missing project: its settings' runs_dir (under pytest: its tests/tmp)."""
    from ultralytics.utils import ROOT, SETTINGS

    return [Path(SETTINGS["runs_dir"]), ROOT.parent / "tests" / "tmp" / "runs"]


def _dirs(folders: list[Path]) -> set[str]:
    return {str(p) for f in folders if f.is_dir() for p in f.rglob("*") if p.is_dir()}


def test_val_writes_nothing_without_project_and_into_project_with_it(plain, pruned, tiny_bccd, tmp_path):
    """Item 10: no empty runs/detect/val-N under Ultralytics' global runs folder; --project takes the plots."""
    before = _dirs(_runs_dirs())
    code, out, err = tool_main("val.py", "--data", str(tiny_bccd), "--imgsz", "64", "--batch", "4", "--latency-runs",
                               "0", str(plain), str(pruned), cwd=tmp_path)
    assert code == 0, err
    assert out.count(".pt |") == 2
    assert _dirs(_runs_dirs()) == before and not list(tmp_path.iterdir())
    code, _, err = tool_main("val.py", "--data", str(tiny_bccd), "--imgsz", "64", "--batch", "4", "--latency-runs",
                             "0", "--project", "plots", str(plain), cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "plots" / "best").is_dir() and list((tmp_path / "plots" / "best").glob("*.png"))
    assert _dirs(_runs_dirs()) == before


# ---------------------------------------------------------------- 15: labels a model cannot train on


@pytest.fixture(scope="module")
def pruned_segment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    yolo = YOLO("yolo11n-seg.yaml")
    torch.manual_seed(0)
    yolo.model = SegmentationModel(yolo.model.yaml, nc=3, verbose=False)
    yolo.model.names = dict(BCCD_NAMES)
    yolo.save(root / "seg.pt")
    return prune_checkpoint(root / "seg.pt", PruneConfig(ratio=0.3, imgsz=64), root / "p.pt", latency_runs=0).output


def test_labels_the_model_cannot_train_on_are_refused(pruned, pruned_segment, tiny_bccd, tmp_path):
    """Item 15: a segment model on box labels; a class index beyond the data's classes (Ultralytics dropped those
    images, or failed in the loss, after making the run folder)."""
    runs = tmp_path / "runs"
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned_segment), "--data", str(tiny_bccd), *FT,
                             "--project", str(runs))
    assert code == 2, err
    refused(err, "line 1 is a box (5 values), but a segment model needs polygon labels")
    data = copy_data(tiny_bccd, tmp_path)
    label = sorted((data.parent / "labels" / "train").glob("*.txt"))[2]
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    count = len(label.read_text().splitlines())
    code, _, err = tool_main("finetune.py", "--model-path", str(pruned), "--data", str(data), *FT,
                             "--project", str(runs))
    assert code == 2, err
    refused(err, f"{label} line {count}: class 7, but the data YAML ({data}) names 3 classes (0..2)")
    assert not runs.exists()


# ---------------------------------------------------------------- CLI: 18, 19


def test_unscaled_per_scale_yaml_lists_the_scaled_names(tiny_bccd, tmp_path):
    """Item 18: `yolo-ext train model=yolov10-coordatt.yaml` was Ultralytics' FileNotFoundError traceback."""
    code, _, err = yolo_ext_cli("train", "model=yolov10-coordatt.yaml", f"data={tiny_bccd}", f"project={tmp_path}")
    assert code == 2, err
    refused(err, "needs a scale letter", "yolov10n-coordatt.yaml", "yolov10x-coordatt.yaml")
    code, _, err = yolo_ext_cli("train", "model=yolo11n-nothing.yaml", f"data={tiny_bccd}", f"project={tmp_path}")
    assert code == 2 and "Shipped models" in err, err
    assert not list(tmp_path.iterdir())


def test_mode_typo_suggests_prune_and_help_lists_the_modes():
    """Item 19: `yolo-ext prun` was Ultralytics' SyntaxError traceback; `yolo-ext help` now names prune/finetune."""
    code, _, err = yolo_ext_cli("prun", "model=best.pt")
    assert code == 2
    refused(err, "'prun' is not a yolo-ext mode", "Did you mean prune?")
    code, _, err = yolo_ext_cli("train", "modle=x.pt")  # Ultralytics' own SyntaxError: one line, not its help
    assert code == 2
    refused(err, "'modle' is not a valid YOLO argument")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["yolo-ext", "help"])
    assert "yolo-ext prune" in out.getvalue() and "yolo-ext finetune" in out.getvalue()


# ---------------------------------------------------------------- YAML mistakes: 20, 21


class Shrink(nn.Module):
    """A module that halves its channels: not what parse='attention' builds for."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c1 // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _yaml(tmp_path: Path, layer: str) -> str:
    path = tmp_path / "yolo11n-mine.yaml"
    path.write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [32, 3, 2]]\n"
                    f"  - {layer}\nhead:\n  - [-1, 1, Conv, [32, 3, 2]]\n  - [[3], 1, Detect, [nc]]\n")
    return str(path)


def test_registered_module_that_changes_its_channels_is_named(tmp_path):
    """Item 20: the stride pass failed with a bare conv RuntimeError in the next layer."""
    yolo_ext.register_module(Shrink)
    try:
        match = r"layer 2 \(Shrink\) gets 32 channels and returns 16: a module registered with parse='attention'.*keep"
        with pytest.raises(yolo_ext.ModelYAMLError, match=match + r" its channels"):
            YOLO(_yaml(tmp_path, "[-1, 1, Shrink, []]"))
    finally:
        yolo_ext.unregister_module(Shrink)
    model = YOLO(_yaml(tmp_path, "[-1, 1, CoordAtt, []]")).model  # a channel-keeping one builds, and keeps no hook
    assert not any(m._forward_hooks for m in model.modules())


def test_c3k2_kind_module_without_arguments_says_what_they_are(tmp_path):
    """Item 21: `C3k2_RVB_SE, []` was 'IndexError: list index out of range'."""
    with pytest.raises(yolo_ext.ModelYAMLError, match=r"layer 2 \(C3k2_RVB_SE\) has no arguments; C3k2_RVB_SE takes "
                                                      r"\[c2, c3k=False, e=0\.5\]"):
        YOLO(_yaml(tmp_path, "[-1, 1, C3k2_RVB_SE, []]"))
    with pytest.raises(yolo_ext.ModelYAMLError, match=r"Its YAML args are \[reduction=32, min_mid=8\]"):
        YOLO(_yaml(tmp_path, "[-1, 1, CoordAtt, [1, 2, 3, 4]]"))


# ---------------------------------------------------------------- 26, 27: docs and hints that named the wrong thing


def test_plots_false_reaches_the_fine_tuning(pruned, tiny_bccd, monkeypatch):
    """Item 26: the README's offline advice (plots=False) was an unknown key for `yolo-ext finetune`."""
    from yolo_ext.cli.commands import finetune as command

    calls = []

    def arguments_only(*args, **kwargs):
        calls.append(kwargs)
        raise FinetuneError("stopped before training")

    monkeypatch.setattr(command, "finetune", arguments_only)
    code, _, err = yolo_ext_cli("finetune", f"model={pruned}", f"data={tiny_bccd}", "plots=False")
    assert code == 2 and "stopped before training" in err and calls[-1]["plots"] is False
    parser = command.get_args_parser()
    assert parser.parse_args(["--no-plots"]).plots is False and parser.parse_args([]).plots is True
    readme = (REPO / "README.md").read_text()
    assert "yolo-ext finetune" in readme[readme.index("Offline machines"):][:400]


def test_resume_hints_for_an_unpruned_checkpoint_include_allow_unpruned(plain, tmp_path):
    """Item 27: the suggested command must run as written."""
    code, _, err = tool_main("finetune.py", "--resume", str(plain))
    assert code == 2 and "--allow-unpruned" in err, err
    finished = tmp_path / "finished.pt"
    ckpt = torch.load(plain, weights_only=False)
    torch.save({**ckpt, "train_results": {}, "train_args": {"epochs": 3}}, finished)
    code, _, err = tool_main("finetune.py", "--resume", str(finished))
    assert code == 2 and "finished training" in err and "--allow-unpruned --epochs N" in err, err


# ---------------------------------------------------------------- 28: noise that buried our own lines


def test_finetune_of_a_frozen_pruned_checkpoint_logs_no_noise(plain, tiny_bccd, tmp_path, monkeypatch):
    """Item 28: a stripped checkpoint's weights are frozen (Ultralytics then warned once per tensor); the teacher's
    frozen tensors were one line each; the final strip named our temporary files; 'not distilling' came twice."""
    frozen = tmp_path / "best.pt"
    ckpt = torch.load(plain, weights_only=False)
    ckpt["model"].requires_grad_(False)  # as Ultralytics' final strip leaves best.pt
    torch.save(ckpt, frozen)
    student = prune_checkpoint(frozen, PruneConfig(ratio=0.4, imgsz=64), tmp_path / "p.pt", latency_runs=0).output
    with ultralytics_log() as lines:
        yolo = finetune(student, tiny_bccd, teacher="auto", epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                        plots=False, project=str(tmp_path / "runs"), name="ft")
    assert yolo.trainer.args.distill_model == str(frozen.resolve())
    assert not [line for line in lines if "requires_grad" in line]
    assert not [line for line in lines if line.startswith("Freezing layer 'teacher_model.")]
    assert sum(line.startswith("Freezing the teacher's") for line in lines) == 1
    stripped = [line for line in lines if line.startswith("Optimizer stripped from")]
    weights = tmp_path / "runs" / "ft" / "weights"
    assert len(stripped) == 2 and all(".tmp" not in line for line in stripped)
    assert {line.split()[3].rstrip(",") for line in stripped} == {str(weights / "last.pt"), str(weights / "best.pt")}
    data = with_names(tiny_bccd, tmp_path, {0: "cat", 1: "dog", 2: "car"})  # the teacher cannot teach these classes
    with ultralytics_log() as lines, monkeypatch.context() as patch:
        patch.setattr(YOLO, "train", lambda self, **kw: None)  # the arguments were settled: no training needed
        finetune(student, data, teacher="auto", epochs=1, project=str(tmp_path / "runs"))
    said = [line for line in lines if "teacher" in line or "distil" in line]
    assert len(said) == 1 and "fine-tuning without a teacher" in said[0] and "classes" in said[0], said


# ---------------------------------------------------------------- 29: DDP workers get yolo_ext and the pruned network

DDP_PARENT = """
import sys
from ultralytics import YOLO
model = YOLO({pruned!r})                     # made before `import yolo_ext`, as the README warned against
assert "yolo_ext" not in sys.modules
import yolo_ext
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.utils import dist
files = []
BaseTrainer.train = lambda self: files.append(dist.generate_ddp_file(self))  # what a multi-GPU parent does instead
try:
    model.train(data={data!r}, epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                project={project!r}, name="ddp")
except FileNotFoundError:  # this process trained nothing, so it finds no best.pt afterwards
    pass
print(files[0])
"""

DDP_WORKER = """
import runpy, sys
runpy.run_path({file!r}, run_name="__main__")   # the worker file Ultralytics generated, as torch.distributed runs it
print("yolo_ext imported:", "yolo_ext" in sys.modules)
"""


def test_ddp_worker_file_imports_yolo_ext_and_trains_the_pruned_network(pruned, tiny_bccd, tmp_path):
    """Item 29. A multi-GPU parent (Ultralytics runs no callback there) and a YOLO object made before `import yolo_ext`
    used to hand the workers the unpruned network rebuilt from the YAML. The parent below builds the DDP worker file
    exactly as Ultralytics does; the worker file then runs as a worker would (on the CPU: Ultralytics' DDP needs
    CUDA, see the README) and must train the pruned network."""
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "config")}  # Ultralytics writes the worker files there
    project = tmp_path / "runs"
    parent = run_python(DDP_PARENT.format(pruned=str(pruned), data=str(tiny_bccd), project=str(project)), env=env)
    assert parent.returncode == 0, parent.stderr[-3000:]
    assert "holds a pruned network" in parent.stdout + parent.stderr
    worker_file = parent.stdout.strip().splitlines()[-1]
    text = Path(worker_file).read_text()
    assert "trainer.model = state[\"model\"]" in text and "import yolo_ext" not in text  # Ultralytics' own file
    worker = run_python(DDP_WORKER.format(file=worker_file), env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "yolo_ext imported: True" in worker.stdout  # unpickling the trainer class imported it
    best = torch.load(project / "ddp" / "weights" / "best.pt", weights_only=False)["model"]
    reference = torch.load(pruned, weights_only=False)["model"]
    widths = lambda m: {n: c.out_channels for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}  # noqa: E731
    assert widths(best) == widths(reference) and best.yolo_ext_pruning
