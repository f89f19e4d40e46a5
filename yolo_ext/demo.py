"""The end-to-end story on the BCCD subset shipped with yolo_ext: build, train, prune, fine-tune, compare.

Every step writes under one run folder, so nothing a user already has is touched.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ultralytics import YOLO

from yolo_ext.cfg import model_yaml
from yolo_ext.evaluate import compare_checkpoints, format_comparison
from yolo_ext.prune import PruneConfig
from yolo_ext.prune.checkpoint import describe, prune_checkpoint
from yolo_ext.prune.defaults import default_fields
from yolo_ext.train.finetune import finetune

DEMO_DATA = Path(__file__).parent / "data" / "bccd_demo" / "data.yaml"


def _step(i: int, text: str) -> float:
    print(f"\n=== [{i}/4] {text} ===", flush=True)
    return time.perf_counter()


def run_demo(
    out: Path, model: str = "yolo11n-coordatt.yaml", epochs: int = 30, finetune_epochs: int = 15, imgsz: int = 320,
    ratio: float | None = None, batch: int = 8, latency_runs: int = 20,
) -> str:
    """Run the four steps into ``out`` (a new folder) and return the comparison table. Pruning is what
    ``tools/prune.py`` does with no options (:mod:`yolo_ext.prune.defaults`), at ``ratio`` if given.

    48 training images make 6 batches of 8 per epoch; ``nbs=batch`` steps the optimizer on every batch (Ultralytics
    would otherwise accumulate to 64 images, i.e. less than one step per epoch, and learn nothing in a demo).
    """
    out.mkdir(parents=True, exist_ok=False)
    # a copy beside the results: Ultralytics writes label caches next to the labels, never into the package
    data = Path(shutil.copytree(DEMO_DATA.parent, out / "data", ignore=shutil.ignore_patterns("*.cache")))
    data = data / DEMO_DATA.name
    common = dict(data=str(data), imgsz=imgsz, batch=batch, nbs=batch, device="cpu", workers=0, plots=False,
                  exist_ok=True)
    t = _step(1, f"Train {model} from scratch for {epochs} epochs on {DEMO_DATA.parent.name}")
    yolo = YOLO(model_yaml(model))
    yolo.train(epochs=epochs, project=str(out), name="train", **common)
    trained = Path(yolo.trainer.best)
    print(f"trained in {time.perf_counter() - t:.0f} s: {trained}")
    fields = default_fields() if ratio is None else {**default_fields(), "ratio": ratio}
    config = PruneConfig(**fields, imgsz=imgsz)
    t = _step(2, f"Prune ({describe(config)}{', as tools/prune.py does by default' if ratio is None else ''})")
    report = prune_checkpoint(trained, config, out / "pruned.pt", latency_runs=latency_runs)
    print(report.table, f"\npruned in {time.perf_counter() - t:.1f} s: {report.output}")
    t = _step(3, f"Fine-tune the pruned model for {finetune_epochs} epochs (its base's recipe)")
    tuned = finetune(report.output, data, epochs=finetune_epochs, project=str(out), name="finetune",
                     **{k: v for k, v in common.items() if k != "data"})
    print(f"fine-tuned in {time.perf_counter() - t:.0f} s: {tuned.trainer.best}")
    _step(4, "Compare (val set of the demo data; latency side by side on the deployment runtime, batch 1)")
    rows = compare_checkpoints([trained, report.output, tuned.trainer.best], data, imgsz, batch, latency_runs)
    for row, label in zip(rows, ("trained", "pruned", "pruned + fine-tuned")):
        row.name = label
    table = format_comparison(rows, imgsz)
    (out / "comparison.md").write_text(table + "\n")
    return table
