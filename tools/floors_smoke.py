"""Smoke test of yolo_ext on whatever torch / Ultralytics / Torch-Pruning are installed: what tools/check_floors.sh runs
against the lowest versions pyproject.toml declares.

Import (installs the integration), build shipped YAMLs with every module family, save a checkpoint, prune it, reload it
(in this process and in a fresh one, also with ULTRALYTICS_SAFE_LOAD=1), fine-tune it one epoch on the bundled BCCD
subset with distillation from the unpruned network, uninstall and install again. Prints one line per step; exits
non-zero at the first failure.

Usage: YOLO_OFFLINE=1 PYTHONPATH=. python tools/floors_smoke.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def step(name: str, t0: list[float]) -> None:
    now = time.perf_counter()
    print(f"ok  {name} ({now - t0[0]:.1f} s)", flush=True)
    t0[0] = now


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for the files it writes (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="yolo_ext-floors-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = [time.perf_counter()]

    import torch
    import torch_pruning
    import ultralytics

    import yolo_ext

    version = getattr(torch_pruning, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("torch-pruning")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, ultralytics {ultralytics.__version__}, "
          f"torch-pruning {version}, yolo_ext {yolo_ext.__version__}", flush=True)
    assert yolo_ext.is_installed()
    step("import yolo_ext (integration installed)", t0)

    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    for name in ("yolo11n-coordatt.yaml", "yolo11n-rvb-se.yaml", "yolo11n-ctx-p3.yaml", "yolov8n-mca.yaml",
                 "yolo26n-coordatt.yaml", "yolov10n-rvb-se.yaml"):
        model = DetectionModel(str(yolo_ext.model_yaml(name)), verbose=False).eval()
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))
    step("build and run shipped YAMLs (CoordAtt, C3k2_RVB_SE, ContextAggregation, MCA; YOLO11, YOLO26, v8, v10)", t0)

    data = Path(yolo_ext.__file__).parent / "data" / "bccd_demo" / "data.yaml"
    yolo = YOLO(str(yolo_ext.model_yaml("yolo11n-coordatt.yaml")))
    yolo.model = DetectionModel(yolo.model.yaml, nc=3, verbose=False)
    yolo.model.names = {0: "RBC", 1: "WBC", 2: "Platelets"}
    base = out / "base.pt"
    yolo.save(base)
    step(f"save {base}", t0)

    from yolo_ext.prune import PruneConfig
    from yolo_ext.prune.checkpoint import prune_checkpoint
    from yolo_ext.prune.record import read_history

    report = prune_checkpoint(base, PruneConfig(ratio=0.4, criterion="lamp", imgsz=64), out / "pruned.pt",
                              latency_runs=0)
    step(f"prune -> {report.output} ({report.result.params_before:,} -> {report.result.params_after:,} params)", t0)

    from yolo_ext.prune.defaults import default_fields

    default = prune_checkpoint(base, PruneConfig(**default_fields(), imgsz=64), out / "default.pt", latency_runs=2)
    step(f"prune as tools/prune.py does by default ({default.result.config.round_to}-channel multiple measured on "
         f"{default.result.config.backend or 'the default backend'})", t0)

    reloaded = YOLO(str(report.output))
    assert len(read_history(reloaded.model)) == 1
    with torch.no_grad():
        reloaded.model.eval()(torch.rand(1, 3, 64, 64))
    code = (f"from ultralytics import YOLO\nm = YOLO({str(report.output)!r}).model.eval()\n"
            "print(type(m.model[17]).__name__)")
    for safe in ("0", "1"):  # restricted loading allows our classes once yolo_ext is imported (pickle imports it)
        env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": safe}
        run = ("import yolo_ext\n" if safe == "1" else "") + code
        result = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0 and result.stdout.strip().endswith("CoordAtt"), result.stderr[-2000:]
    step("reload here and in fresh processes (pickle, ULTRALYTICS_SAFE_LOAD=1)", t0)

    from yolo_ext.train.finetune import finetune

    tuned = finetune(report.output, data, teacher="auto", epochs=1, imgsz=64, batch=8, workers=0, device="cpu",
                     plots=False, project=str(out / "runs"), name="ft", exist_ok=True)
    assert type(tuned.trainer.model).__name__ == "PrunedDistillationModel"
    assert read_history(YOLO(tuned.trainer.best).model)
    step(f"fine-tune one epoch, distilling from the network it was pruned from -> {tuned.trainer.best}", t0)

    yolo_ext.uninstall()
    assert not yolo_ext.is_installed()
    yolo_ext.install()
    assert yolo_ext.is_installed()
    step("uninstall / install", t0)
    print(f"floors smoke test passed; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
