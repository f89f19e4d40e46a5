"""Does pruning pay? Pruned + fine-tuned yolo11n against a narrow yolo11 trained from scratch, at equal epochs.

Starts from a yolo11n trained once to its plateau (E epochs; ``--base``, committed next to this script, or trained
here when missing) and runs every recipe variant for every seed:

  narrow     a yolo11 whose width makes its params closest to the pruned models', from scratch for E + F epochs
  <variant>  the base pruned to ``--target-params`` (default: remove 50% of the params), fine-tuned F epochs
             (F = ``--finetune-fraction`` of E) -- see VARIANTS below
  sparse     BN-L1 sparse training from scratch for E epochs (trained once, like the base), pruned with ``bn``

Each run is one process (``--jobs`` at a time: ten fit side by side on one GPU); each writes one JSON record in
``<out>/records``, so re-running the same command only runs what is missing. Every number is Ultralytics' val
mAP50-95 on the val split of the checkpoint a run selected (``best.pt``, by val fitness: the same rule for all).
The table gives mean and spread (half the range) over seeds, and the plateau check of the base (mean mAP50-95 of the
last 10 epochs within 1% of the 10 before).

  python benchmarks/accuracy.py --device 0 --jobs 24            # the whole set on one GPU (about 10 minutes)
  python benchmarks/accuracy.py --variants default --seeds 0 1  # one variant on CPU (2 x 30 epochs x ~25 s)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import log, markdown_table  # sets YOLO_OFFLINE before Ultralytics is imported: nothing downloaded

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "bccd" / "data.yaml"
DEFAULT_BASE = REPO / "benchmarks" / "bccd_yolo11n_base.pt"
DEFAULT_SPARSE = REPO / "benchmarks" / "bccd_yolo11n_sparse.pt"
OLD_RECIPE = {"optimizer": "AdamW", "lr0": 0.001, "warmup_epochs": 1}  # tools/finetune.py before the rework

#: name -> how the base is pruned and fine-tuned. Keys: criterion, global (ranking), recipe ("rewind": the base's
#: own train args, see yolo_ext.train.recipe.finetune_recipe; "old": OLD_RECIPE), distill (None, "pruned",
#: "ultralytics"),
#: weights (DistillWeights fields), steps (gradual pruning: k prune + F/k fine-tune rounds), source ("sparse"),
#: fraction (fine-tune epochs as this fraction of E instead of --finetune-fraction).
VARIANTS: dict[str, dict[str, Any]] = {  # in order of priority: with --jobs below the run count, first come first
    "l1-old": {"criterion": "l1", "global": False, "recipe": "old"},
    "lamp-rewind": {"criterion": "lamp", "global": True, "recipe": "rewind"},
    "lamp-kd": {"criterion": "lamp", "global": True, "recipe": "rewind", "distill": "pruned",
                "weights": {"feature": 1.0, "cls": 1.0, "box": 1.0}},
    "l1-rewind": {"criterion": "l1", "global": False, "recipe": "rewind"},
    "lamp-head": {"criterion": "lamp", "global": True, "recipe": "rewind", "distill": "pruned",
                  "weights": {"feature": 0.0, "cls": 1.0, "box": 1.0}},
    "lamp-feat": {"criterion": "lamp", "global": True, "recipe": "rewind", "distill": "pruned",
                  "weights": {"feature": 1.0, "cls": 0.0, "box": 0.0}},
    "sparse-bn": {"criterion": "bn", "global": True, "recipe": "rewind", "source": "sparse"},
    "lamp-ultra": {"criterion": "lamp", "global": True, "recipe": "rewind", "distill": "ultralytics"},
    "lamp-gradual3": {"criterion": "lamp", "global": True, "recipe": "rewind", "steps": 3},
    "lamp-kd4": {"criterion": "lamp", "global": True, "recipe": "rewind", "distill": "pruned",
                 "weights": {"feature": 4.0, "cls": 4.0, "box": 4.0}},
    "lamp-gradual3-head": {"criterion": "lamp", "global": True, "recipe": "rewind", "steps": 3, "distill": "pruned",
                           "weights": {"feature": 0.0, "cls": 1.0, "box": 1.0}},
    "lamp-gradual5": {"criterion": "lamp", "global": True, "recipe": "rewind", "steps": 5},
    "lamp-rewind-f15": {"criterion": "lamp", "global": True, "recipe": "rewind", "fraction": 0.15},
    # issue 15: allocations that make the network faster (``prune``: PruneConfig fields instead of --target-params)
    "macs45": {"prune": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.45, "round_to": "auto"},
               "recipe": "rewind"},
    "macs50": {"prune": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.50, "round_to": "auto"},
               "recipe": "rewind"},
    "lamp40-r": {"prune": {"criterion": "lamp", "ratio": 0.4, "round_to": "auto"}, "recipe": "rewind"},
    # the same speed (about 1.6x in ONNX Runtime at 640) with the cuts spread evenly: uniform L1 at 0.25, and the
    # importance-per-MAC greedy capped at half of any layer; channels in multiples of 16 (the 640 reference's)
    "l1-25-r16": {"prune": {"criterion": "l1", "ratio": 0.25, "round_to": 16}, "recipe": "rewind"},
    "macs45-mlr5": {"prune": {"criterion": "lamp", "allocation": "cost", "target_macs": 0.45, "round_to": 16,
                              "max_layer_ratio": 0.5}, "recipe": "rewind"},
    "default": {},  # whatever tools/prune.py and tools/finetune.py do with no options
}


# --------------------------------------------------------------------------------------------------------------------
# One run (a child process): train, or prune + fine-tune, then validate and write the record
# --------------------------------------------------------------------------------------------------------------------


def curve(run_dir: Path) -> list[float]:
    """Val mAP50-95 of every epoch, from Ultralytics' results.csv."""
    path = run_dir / "results.csv"
    if not path.exists():
        return []
    rows = [[c.strip() for c in line.split(",")] for line in path.read_text().splitlines() if line.strip()]
    col = rows[0].index("metrics/mAP50-95(B)")
    return [round(float(r[col]), 5) for r in rows[1:]]


def plateau(values: list[float], window: int = 10) -> dict[str, Any]:
    """Mean of the last ``window`` epochs against the ``window`` before: a plateau when within 1%."""
    if len(values) < 2 * window:
        return {"ok": False, "why": f"only {len(values)} epochs"}
    last, before = values[-window:], values[-2 * window:-window]
    a, b = sum(last) / window, sum(before) / window
    return {"ok": abs(a - b) <= 0.01 * b, "last10": round(a, 4), "prev10": round(b, 4), "change": round(a / b - 1, 4)}


def narrow_yaml(width: float, out: Path) -> Path:
    """Ultralytics' yolo11.yaml with scale n at ``width`` (depth and max channels as yolo11n), 3 classes."""
    import yaml
    from ultralytics.utils import ROOT

    cfg = yaml.safe_load((ROOT / "cfg" / "models" / "11" / "yolo11.yaml").read_text())
    depth, _, max_channels = cfg["scales"]["n"]
    cfg["scales"], cfg["nc"] = {"n": [depth, width, max_channels]}, 3
    path = out / "models" / f"yolo11n-w{round(width * 10000):04d}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def yolo11n_params() -> int:
    from ultralytics.nn.tasks import DetectionModel

    return sum(p.numel() for p in DetectionModel("yolo11n.yaml", nc=3, verbose=False).parameters())


def match_width(target: int, out: Path) -> tuple[float, int]:
    """Width multiple (step 0.0025) whose yolo11 has the params closest to ``target``."""
    from ultralytics.nn.tasks import DetectionModel

    def params(w: float) -> int:
        return sum(p.numel() for p in DetectionModel(str(narrow_yaml(w, out)), nc=3, verbose=False).parameters())

    widths = [round(0.05 + 0.0025 * i, 4) for i in range(81)]
    lo, hi = 0, len(widths) - 1
    while hi - lo > 1:  # params grow with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(widths[mid]) <= target else (lo, mid)
    w = min((widths[lo], widths[hi]), key=lambda x: abs(params(x) - target))
    return w, params(w)


def measure(weights: Path, job: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch_pruning as tp
    from ultralytics import YOLO

    from yolo_ext.prune.checkpoint import load_prunable_checkpoint

    _, model = load_prunable_checkpoint(weights)
    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, job["imgsz"], job["imgsz"]))
    box = YOLO(str(weights)).val(data=job["data"], split="val", imgsz=job["imgsz"], batch=job["batch"],
                                 device=job["device"], workers=job["workers"], plots=False, verbose=False,
                                 project=str(Path(job["out"]) / "val"), name=job["key"], exist_ok=True).box
    return {"weights": str(weights), "params": int(params), "gflops": round(2 * macs / 1e9, 3),
            "map": round(float(box.map), 5), "map50": round(float(box.map50), 5)}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Do one run described by ``job`` (a dict made by :func:`plan`) and return its record."""
    from ultralytics import YOLO

    import yolo_ext  # noqa: F401
    from yolo_ext.prune import DEFAULT_CRITERION, PruneConfig
    from yolo_ext.prune.checkpoint import prune_checkpoint
    from yolo_ext.train.distill import DistillWeights
    from yolo_ext.train.finetune import finetune
    from yolo_ext.train.iterative import iterative_prune
    from yolo_ext.train.sparse import sparse_trainer
    from yolo_ext.train.trainers import PrunedDetectionTrainer

    out, key, seed = Path(job["out"]), job["key"], job["seed"]
    common = dict(data=job["data"], imgsz=job["imgsz"], batch=job["batch"], device=job["device"],
                  workers=job["workers"], seed=seed, plots=False, exist_ok=True, project=str(out), cache=job["cache"])
    start = time.time()
    if job["kind"] == "scratch":
        extra = {"trainer": sparse_trainer(job["bn_l1"], keep_given_model=False)} if job.get("bn_l1") else {}
        YOLO(job["model"]).train(epochs=job["epochs"], name=key, **common, **extra)
        best = out / key / "weights" / "best.pt"
        runs = [out / key]
    else:
        v = VARIANTS[job["variant"]]
        source = job["sparse"] if v.get("source") == "sparse" else job["base"]
        # "default" ({}) prunes as tools/prune.py does with no options
        if "prune" in v:
            config = PruneConfig(imgsz=job["imgsz"], **v["prune"])
        else:
            config = PruneConfig(target_params=job["target"], imgsz=job["imgsz"],
                                 criterion=v.get("criterion", DEFAULT_CRITERION), global_pruning=v.get("global"))
        epochs = max(1, round(v["fraction"] * job["epochs"])) if "fraction" in v else job["finetune_epochs"]
        args = dict(common, epochs=epochs)
        if v.get("recipe") == "old":
            args |= OLD_RECIPE
        trainer = PrunedDetectionTrainer
        if v:  # a named variant distils only when it says so; "default" ({}) does what finetune() does by default
            args["teacher"] = None
        if v.get("distill"):
            args["distill_model"] = source
            attrs = {"distill_method": v["distill"]}
            if "weights" in v:
                attrs["distill_weights"] = DistillWeights(**v["weights"])
            trainer = type("BenchTrainer", (PrunedDetectionTrainer,), attrs)
        steps = v.get("steps", 1)
        if steps > 1:
            args["epochs"] = max(1, round(epochs / steps))
            for k in ("project", "exist_ok"):
                args.pop(k)
            results = iterative_prune(source, job["data"], config, steps, out / key, trainer=trainer,
                                      **{k: a for k, a in args.items() if k != "data"})
            best = results[-1]
            runs = [out / key / f"step{i}" for i in range(1, steps + 1)]
        else:
            pruned = out / key / "pruned.pt"
            if not pruned.exists():
                prune_checkpoint(source, config, pruned, latency_runs=0)
            tuned = finetune(pruned, job["data"], trainer=trainer, name=key + "-ft",
                             **{k: a for k, a in args.items() if k != "data"})
            best = Path(tuned.trainer.best)
            runs = [out / (key + "-ft")]
    record = {**{k: job[k] for k in ("key", "name", "seed", "kind")}, **measure(best, job),
              "curve": [x for r in runs for x in curve(r)], "seconds": round(time.time() - start, 1)}
    if job["kind"] == "scratch":
        record["plateau"] = plateau(record["curve"])
    return record


# --------------------------------------------------------------------------------------------------------------------
# The driver: plan the runs, run them side by side in dependency order, tabulate
# --------------------------------------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of the benchmark with the runs it needs first (``after``)."""
    common = {"data": str(args.data), "imgsz": args.imgsz, "batch": args.batch, "device": args.device,
              "workers": args.workers, "cache": args.cache, "out": str(args.out), "base": str(args.base),
              "sparse": str(args.sparse), "target": args.target_params, "epochs": args.epochs,
              "finetune_epochs": max(1, round(args.finetune_fraction * args.epochs))}
    jobs = []
    if not args.base.exists():
        jobs.append({**common, "key": "base", "name": "base", "seed": 0, "kind": "scratch", "model": "yolo11n.yaml",
                     "epochs": args.epochs, "after": [], "copy_to": str(args.base)})
    needs_sparse = any(VARIANTS[v].get("source") == "sparse" for v in args.variants)
    if needs_sparse and not args.sparse.exists():
        jobs.append({**common, "key": "sparse", "name": "sparse", "seed": 0, "kind": "scratch",
                     "model": "yolo11n.yaml", "epochs": args.epochs, "bn_l1": args.bn_l1, "after": [],
                     "copy_to": str(args.sparse)})
    if args.narrow:
        goal = args.narrow_params or round((1 - args.target_params) * yolo11n_params())
        width, params = match_width(goal, args.out)
        total = args.epochs + common["finetune_epochs"]
        for s in args.seeds:
            jobs.append({**common, "key": f"narrow-s{s}", "name": f"narrow w{width} ({params:,} params, {total} ep)",
                         "seed": s, "kind": "scratch", "model": str(narrow_yaml(width, args.out)), "epochs": total,
                         "after": []})
    for v in args.variants:
        after = ["sparse"] if VARIANTS[v].get("source") == "sparse" else ["base"]
        for s in args.seeds:
            jobs.append({**common, "key": f"{v}-s{s}", "name": v, "seed": s, "kind": "prune", "variant": v,
                         "after": [a for a in after if any(j["key"] == a for j in jobs)]})
    return jobs


def record_path(out: Path, key: str) -> Path:
    return out / "records" / f"{key}.json"


def drive(jobs: list[dict[str, Any]], args: argparse.Namespace, script: str = __file__) -> None:
    """Run ``jobs`` with at most ``--jobs`` at a time, each after the runs it needs; stop starting new ones (and end
    those running) at ``--deadline`` seconds, so a time-boxed machine still returns every finished record. A job
    marked ``exclusive`` (one that times networks) starts alone and nothing starts beside it. Each job is
    ``script --run-job <json>``."""
    start, running, done = time.time(), {}, {j["key"] for j in jobs if record_path(args.out, j["key"]).exists()}
    failed: set[str] = set()
    todo = [j for j in jobs if j["key"] not in done]
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    while todo or running:
        for key, (proc, _job) in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                ok = proc.returncode == 0 and record_path(args.out, key).exists()
                (done if ok else failed).add(key)
                log(f"{'done' if ok else 'FAILED'} {key} ({time.time() - start:.0f} s)")
        ready = [j for j in todo if all(a in done for a in j["after"])]
        waiting_alone = any(j.get("exclusive") for j in ready)  # it goes first: start nothing else meanwhile
        for job in list(todo):
            if any(a in failed for a in job["after"]):
                todo.remove(job)
                failed.add(job["key"])
            elif job not in ready or any(j.get("exclusive") for _, j in running.values()):
                continue
            elif job.get("exclusive") and running or not job.get("exclusive") and waiting_alone:
                continue
            elif len(running) < args.jobs:
                todo.remove(job)
                log_file = (args.out / "logs" / f"{job['key']}.log").open("w")
                # each run gets its share of the cores: torch's default (all cores per process) oversubscribes them
                # so badly with ten runs side by side that CPU work such as pruning stalls for minutes
                share = 1 if job.get("exclusive") else min(args.jobs, len(jobs))
                threads = str(max(1, (os.cpu_count() or 1) // share))
                env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
                proc = subprocess.Popen([sys.executable, script, "--run-job", json.dumps(job)],
                                        stdout=log_file, stderr=subprocess.STDOUT, env=env)
                running[job["key"]] = (proc, job)
                log(f"start {job['key']}")
        if args.deadline and time.time() - start > args.deadline:
            for proc, _ in running.values():
                proc.kill()
            log(f"deadline: ended {sorted(running)}; not started {[j['key'] for j in todo]}")
            return
        time.sleep(2)


def summarize(jobs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown table: mean and spread over seeds per variant, the base and its plateau check."""
    records = {}
    for path in sorted((args.out / "records").glob("*.json")):
        r = json.loads(path.read_text())
        records[r["key"]] = r
    groups: dict[str, list[dict]] = {}
    for r in records.values():
        groups.setdefault(r["name"], []).append(r)
    rows = []
    for name, rs in groups.items():
        maps = [r["map"] for r in sorted(rs, key=lambda r: r["seed"])]
        mean = sum(maps) / len(maps)
        spread = (max(maps) - min(maps)) / 2
        tail = rs[0]["curve"][-3:] if rs[0].get("curve") else []
        rows.append([name, f"{rs[0]['params']:,}", f"{rs[0]['gflops']:.2f}", f"{mean:.4f}", f"{spread:.4f}",
                     " / ".join(f"{m:.4f}" for m in maps), f"{sum(r['map50'] for r in rs) / len(rs):.4f}", tail])
    lines = [f"BCCD val, imgsz {args.imgsz}, E = {args.epochs}, F = {round(args.finetune_fraction * args.epochs)}, "
             f"target -{args.target_params:.0%} params, seeds {args.seeds}", "",
             markdown_table(["run", "params", "GFLOPs", "mAP50-95 mean", "spread (half range)", "per seed",
                             "mAP50 mean", "epochs curve end"], "lrrrrlrl", rows)]
    for key in ("base", "sparse"):
        if key in records and "plateau" in records[key]:
            lines.append(f"\n{key} plateau check: {records[key]['plateau']}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data YAML (default: ../shared/datasets/bccd)")
    p.add_argument("--base", type=Path, default=DEFAULT_BASE, help="base checkpoint; trained (E epochs) if missing")
    p.add_argument("--sparse", type=Path, default=DEFAULT_SPARSE, help="BN-L1 sparse base; trained if missing")
    p.add_argument("--bn-l1", type=float, default=1e-3, help="BN L1 penalty of the sparse base")
    p.add_argument("--epochs", type=int, default=100, help="E: epochs of the base (and of the sparse base)")
    p.add_argument("--finetune-fraction", type=float, default=0.3, help="F = this fraction of E")
    p.add_argument("--target-params", type=float, default=0.5, help="fraction of params pruning removes")
    p.add_argument("--narrow-params", type=int, help="params of the narrow model (default: yolo11n's, less the "
                   "target fraction)")
    p.add_argument("--no-narrow", dest="narrow", action="store_false", help="skip the narrow from-scratch model")
    p.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "default"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default="ram", type=lambda v: False if v.lower() in {"false", "0", "none"} else v,
                   help="Ultralytics cache option for every run (ram, disk, false)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side")
    p.add_argument("--deadline", type=float, default=0, help="seconds after which runs are ended (0: none)")
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--run-job", help=argparse.SUPPRESS)
    return p


def child_main(job_json: str, run: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """One run in its own process (``--run-job``): ``run(job)``, then its record written where the driver looks."""
    job = json.loads(job_json)
    if "OMP_NUM_THREADS" in os.environ:  # Ultralytics resets it on import; keep the share the driver gave
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    record = run(job)
    if job.get("copy_to"):
        import shutil

        shutil.copy(record["weights"], job["copy_to"])
        record["weights"] = job["copy_to"]
    path = record_path(Path(job["out"]), job["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.run_job:
        return child_main(args.run_job, run_job)
    if not args.data.is_file():
        print(f"accuracy: error: data YAML {args.data} not found; pass --data", file=sys.stderr)
        return 2
    args.out = args.out.resolve()  # Ultralytics would put a relative project under runs/detect/
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = plan(args)
    drive(jobs, args)
    table = summarize(jobs, args)
    (args.out / "accuracy.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
