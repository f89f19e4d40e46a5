"""Safe loading: yolo_ext never unpickles a file behind Ultralytics' back, honours ULTRALYTICS_SAFE_LOAD wherever it
loads, and reads a checkpoint once per run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO

from conftest import run_python, save_three_class
from yolo_ext.io.checkpoints import has_pruning_record
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import prune_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_bd036b7"

#: A pruned checkpoint whose pickle runs code when it is unpickled in full: it creates ``sentinel``.
EVIL = """
import pathlib, sys, torch
pruned, evil, sentinel = sys.argv[1:4]

class Payload:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(sentinel),))

ckpt = torch.load(pruned, weights_only=False)
ckpt["payload"] = Payload()
torch.save(ckpt, evil)
"""


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> tuple[Path, Path]:
    """(a pruned checkpoint carrying a pickled payload, the file the payload creates when it runs)."""
    root = tmp_path_factory.mktemp("evil")
    base = save_three_class("yolo11n.yaml", root / "base.pt")
    pruned = prune_checkpoint(base, PruneConfig(ratio=0.4, imgsz=64), root / "pruned.pt", latency_runs=0).output
    sentinel = root / "payload-ran"
    code = EVIL.replace("sys.argv[1:4]", repr([str(pruned), str(root / "evil.pt"), str(sentinel)]))
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not sentinel.exists()
    return root / "evil.pt", sentinel


def test_the_payload_is_live(evil):
    """The control: a full unpickle of the file does run it (so the tests below show that nothing unpickled it)."""
    path, sentinel = evil
    torch.load(path, weights_only=False)
    assert sentinel.exists()
    sentinel.unlink()


def test_building_a_trainer_on_an_untrusted_checkpoint_runs_nothing_under_safe_load(evil, tiny_bccd, tmp_path):
    """The keep-pruned callback used to unpickle trainer.args.model with weights_only=False: with
    ULTRALYTICS_SAFE_LOAD=1 that ran the file's code where plain Ultralytics does not. It now reads the record's name
    from the pickle stream and still picks the pruned trainer."""
    path, sentinel = evil
    code = f"""
import yolo_ext
from ultralytics.models.yolo.detect import DetectionTrainer
trainer = DetectionTrainer(overrides=dict(model={str(path)!r}, data={str(tiny_bccd)!r}, epochs=1, imgsz=64,
                                          device="cpu", workers=0, project={str(tmp_path)!r}, name="t", plots=False))
print(type(trainer).__name__)
"""
    result = run_python(code, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "PrunedDetectionTrainer"
    assert not sentinel.exists(), "building a trainer unpickled the checkpoint"


def test_our_tools_load_with_weights_only_under_safe_load(evil, tmp_path):
    """Honour ULTRALYTICS_SAFE_LOAD wherever we load: tools/prune.py refuses the file (exit 2) without running it."""
    path, sentinel = evil
    code = f"""
import sys
from yolo_ext.cli.commands.prune import get_args_parser, main
sys.exit(main(get_args_parser().parse_args(["--model-path", {str(path)!r}, "--output", {str(tmp_path / "o.pt")!r},
                                            "--prune-ratio", "0.3", "--latency-runs", "0", "--imgsz", "64"])))
"""
    result = run_python(code, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "is not a PyTorch checkpoint" in result.stderr and not sentinel.exists()
    assert not list(tmp_path.iterdir())


def test_a_pruned_checkpoint_loads_trains_setup_and_prunes_under_safe_load(tmp_path):
    """Safe loading is not only refusing: yolo_ext's own checkpoints (its classes on the allow-list, the record plain
    data) load with weights_only=True, in Ultralytics and in our tools."""
    for name in ("base.pt", "pruned.pt"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    code = f"""
import yolo_ext
from ultralytics import YOLO
from yolo_ext.prune.checkpoint import load_prunable_checkpoint
from yolo_ext.prune.record import read_history
model = YOLO({str(tmp_path / "pruned.pt")!r}).model
assert len(read_history(model)) == 2
ckpt, network = load_prunable_checkpoint({str(tmp_path / "pruned.pt")!r})
assert len(read_history(network)) == 2
print("ok")
"""
    result = run_python(code, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_record_is_read_without_unpickling(tmp_path):
    assert has_pruning_record(FIXTURES / "pruned.pt")
    assert not has_pruning_record(FIXTURES / "base.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert not has_pruning_record(tmp_path / "junk.pt") and not has_pruning_record(tmp_path / "missing.pt")


@pytest.fixture()
def loads(monkeypatch) -> list[str]:
    """Every file torch.load reads in this process, resolved."""
    seen: list[str] = []
    real = torch.load

    def counting(f, *args, **kwargs):
        seen.append(str(Path(f).resolve()) if isinstance(f, (str, Path)) else repr(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return seen


def test_finetune_reads_the_checkpoint_once(tmp_path, tiny_bccd, monkeypatch, loads):
    from yolo_ext.train.finetune import finetune

    pruned = tmp_path / "pruned.pt"
    shutil.copy(FIXTURES / "pruned.pt", pruned)
    calls = []
    monkeypatch.setattr(YOLO, "train", lambda self, **kw: calls.append(kw))  # the run's own reads are Ultralytics'
    finetune(pruned, tiny_bccd, epochs=1, imgsz=64, device="cpu", project=str(tmp_path / "runs"))
    assert calls and loads.count(str(pruned.resolve())) == 1, loads


def test_the_keep_pruned_callback_reads_no_checkpoint(tmp_path, tiny_bccd, loads):
    from ultralytics.models.yolo.detect import DetectionTrainer

    pruned = tmp_path / "pruned.pt"
    shutil.copy(FIXTURES / "pruned.pt", pruned)
    trainer = DetectionTrainer(overrides=dict(model=str(pruned), data=str(tiny_bccd), epochs=1, imgsz=64,
                                              device="cpu", workers=0, project=str(tmp_path), name="t", plots=False))
    assert type(trainer).__name__ == "PrunedDetectionTrainer" and not loads
