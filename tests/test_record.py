"""The pruning record: one typed, versioned reader and writer; checkpoints written before it (tests/fixtures, by main at
bd036b7) still load, prune again, find their teacher and fine-tune."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO

from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import load_prunable_checkpoint, network_digest, prune_checkpoint
from yolo_ext.prune.record import (
    ATTRIBUTE,
    VERSION,
    ClassChangeEntry,
    LatencyEntry,
    PruningRecord,
    RecordError,
    ancestor_digests,
    append,
    base_train_args,
    is_pruned,
    note_class_change,
    read_history,
    times_pruned,
)

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_bd036b7"


@pytest.fixture()
def old(tmp_path) -> Path:
    """The fixture pair copied (tests must not write beside the committed files)."""
    for name in ("base.pt", "pruned.pt"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path / "pruned.pt"


def test_an_old_record_reads_as_typed_fields(old):
    model = YOLO(old).model
    stored = getattr(model, ATTRIBUTE)
    assert all("version" not in d for d in stored)  # written before the record had a version
    first, second = read_history(model)
    assert times_pruned(model) == 2 and is_pruned(model)
    assert first.config["criterion"] == "lamp" and first.config["ratio"] == pytest.approx(0.3)
    assert second.config["target_macs"] == pytest.approx(0.3) and second.config["round_to"] == 8
    assert second.params[1] < second.params[0] == first.params[1]
    assert second.feature_channels.widths and len(second.feature_channels.kept) == len(second.feature_channels.widths)
    assert second.class_changes == (ClassChangeEntry(3, 2, "two.yaml", ("RBC", "WBC"), second.class_changes[0].date),)
    assert first.source.endswith("base.pt") and len(first.source_sha256) == 64 and second.latency is None
    assert base_train_args({}, model)["epochs"] == 40 and ancestor_digests(model) == [first.source_sha256,
                                                                                      second.source_sha256]


def test_records_round_trip_without_losing_anything(old):
    for stored in getattr(YOLO(old).model, ATTRIBUTE):
        assert PruningRecord.from_dict(stored).to_dict() == {**stored, "version": VERSION}
    record = PruningRecord(
        config={"ratio": 0.4, "round_to": "auto"}, params=(10, 5), macs=(2.0, 1.0), channels={"model.0.conv": (16, 8)},
        latency=LatencyEntry(backend="ort-cpu", runtime="1.20", imgsz=(320, 320), multiple=16, allocation="cost",
                             target=0.4, base_ms=10.0, ms=6.1, speedup=1.64, off_target=0.01, table="cached",
                             tries=({"knob": 0.3, "base_ms": 10.0, "ms": 6.1},)),
        extra={"written_by_a_later_minor": [1, 2]},
    )
    assert PruningRecord.from_dict(record.to_dict()) == record
    assert record.to_dict()["written_by_a_later_minor"] == [1, 2]  # kept, and written back


def test_a_record_from_a_newer_yolo_ext_is_refused_not_half_read():
    net = torch.nn.Conv2d(1, 1, 1)
    setattr(net, ATTRIBUTE, [{"version": VERSION + 1, "config": {}}])
    with pytest.raises(RecordError, match=f"version {VERSION + 1}.*newer yolo_ext"):
        read_history(net)
    with pytest.raises(RecordError, match="must be a dict"):
        PruningRecord.from_dict(["not", "a", "record"])


def test_the_writer_keeps_no_empty_record_and_notes_class_changes_on_the_last():
    net = torch.nn.Conv2d(1, 1, 1)
    assert not note_class_change(net, ClassChangeEntry(3, 2)) and not hasattr(net, ATTRIBUTE)  # never pruned
    append(net, PruningRecord(params=(4, 2)))
    append(net, PruningRecord(params=(2, 1)))
    assert note_class_change(net, ClassChangeEntry(3, 2, "d.yaml"))
    first, last = read_history(net)
    assert not first.class_changes and last.class_changes[0].new_nc == 2
    assert all(d["version"] == VERSION for d in getattr(net, ATTRIBUTE))


def test_an_old_checkpoint_prunes_again_and_keeps_its_history(old, tmp_path):
    report = prune_checkpoint(old, PruneConfig(ratio=0.2, imgsz=64), tmp_path / "again.pt", latency_runs=0)
    _, model = load_prunable_checkpoint(report.output)
    history = read_history(model)
    before = read_history(YOLO(old).model)
    assert len(history) == 3 and history[:2] == before
    assert history[2].source_sha256 == network_digest(load_prunable_checkpoint(old)[1])
    assert history[2].base_train_args["epochs"] == 40  # the base's recipe, through two earlier prunings


def test_an_old_checkpoint_finds_its_teacher_and_fine_tunes_with_it(old, tiny_bccd, tmp_path):
    """--teacher auto reads source / source_sha256 of the old record; distillation its feature_channels; the class
    change of the record (3 -> 2) is undone by the data's 3 classes, which the teacher predicts."""
    from yolo_ext.train.distill import PrunedDistillationModel
    from yolo_ext.train.finetune import finetune
    from yolo_ext.train.inputs import check_finetune_inputs, find_default_teacher

    _, student = check_finetune_inputs(old, tiny_bccd)  # as fine-tuning sees it: the data's 3 classes
    found, line = find_default_teacher(old, student)
    assert found == old.with_name("base.pt").resolve(), line
    yolo = finetune(old, tiny_bccd, teacher="auto", epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                    plots=False, project=str(tmp_path / "runs"), name="ft", exist_ok=True)
    assert isinstance(yolo.trainer.model, PrunedDistillationModel)
    best = torch.load(yolo.trainer.best, weights_only=False)["model"]
    history = read_history(best)
    assert len(history) == 2 and [c.new_nc for c in history[-1].class_changes] == [2, 3]
