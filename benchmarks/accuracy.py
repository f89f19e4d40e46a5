"""Does pruning pay on real data? Prune + fine-tune a trained yolo11n versus a narrow yolo11 trained from scratch.

Pruning only pays if a pruned and fine-tuned network beats the obvious alternative: a network built that small from the
start and trained for the same total number of epochs. On BCCD (blood cells, 292 train / 72 val images) this runs:

  (a) yolo11n (``yolo11n.yaml``, random init) trained ``--epochs`` E epochs                      -> checkpoint A
  (b) A pruned to remove each ``--targets`` fraction of the PARAMETERS with each ``--criteria`` criterion
      (``PruneConfig(target_params=...)``), validated right after pruning, then fine-tuned F epochs
      (``--finetune-epochs``; AdamW, lr0 ``--finetune-lr``, one warmup epoch, batch as in (a))
  (c) per target, a yolo11 whose width multiple (in steps of 0.0025) makes its params closest to (b)'s (within a few %;
      the verdict line prints the difference), trained from scratch for E + F epochs: the same total epoch budget as (b)

Every number comes from Ultralytics' val on the val split (``metrics.box.map`` = mAP50-95, ``metrics.box.map50``) of
the checkpoint a run selected (Ultralytics' ``best.pt``, chosen by val mAP50-95 during training: the same rule for every
variant). Params are all parameters of the unfused network; GFLOPs are 2 x MACs counted by Torch-Pruning at
``--imgsz`` (eval mode, batch 1), as ``tools/prune.py`` reports them. Training uses Ultralytics' defaults apart from
``imgsz``/``batch``/``device``/``plots`` (so ``nbs=64`` gradient accumulation, ``close_mosaic=10``, seed 0,
deterministic).

Everything is written under ``--out`` (default ``runs/accuracy``): the data YAML, the narrow model YAMLs, one folder per
training run, the pruned checkpoints, one JSON per measured checkpoint in ``records/``, and finally ``accuracy.md`` and
``accuracy.json``. A step whose record already exists is skipped and an interrupted training resumes from its
``last.pt``, so re-running the same command continues where it stopped (change the options, change ``--out``).

Defaults: E=20, F=5, criteria l1 lamp taylor, targets 0.4 0.6, i.e. 20 yolo11n epochs, 6 fine-tunings of 5 epochs and
2 narrow trainings of 25 epochs (100 epochs, 80 of them on networks with 40-60% fewer params). Measured on our 2-core
dev machine while two other developers ran tests (load ~2): yolo11n ~43 s/epoch with mosaic and ~30 s in the last 10
(``close_mosaic``); fine-tuning ~26 s/epoch at -40% and ~19 s/epoch at -60%; the narrow models ~22 and ~20 s/epoch.
The whole default set took 41 min (27 min for target 0.4, then 14 min more for 0.6); an idle machine is faster.
E=20 does NOT reach the plateau (yolo11n needs ~40 epochs on BCCD for mAP50-95 ~0.50; at 20 it is ~0.35 and still
rising): the defaults answer the question at a one-hour budget; for the plateau question run
``--epochs 40 --finetune-epochs 10`` (about 1.5 hours).

Usage:
  python benchmarks/accuracy.py                                                   # defaults, < 1 h
  python benchmarks/accuracy.py --epochs 10 --finetune-epochs 5 --criteria l1 lamp --targets 0.4    # ~15-20 min
  options: --data-dir, --out, --imgsz 320, --batch 16, --workers 0, --finetune-lr 0.001, --threads 0 (torch default)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: nothing may be downloaded

import torch
import torch_pruning as tp
import yaml
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import ROOT as ULTRALYTICS_ROOT
from ultralytics.utils.patches import torch_load

import yolo_ext  # noqa: F401  (registers our modules, so every checkpoint loads)
from yolo_ext.finetune import finetune, resume
from yolo_ext.prune import PruneConfig, PruningError
from yolo_ext.prune.checkpoint import load_detection_checkpoint, prune_checkpoint
from yolo_ext.prune.gradients import loss_gradients
from yolo_ext.prune.importance import NEEDS_GRADIENTS

DATA_DIR = Path("/work/shared/datasets/bccd")
NAMES = {0: "RBC", 1: "WBC", 2: "Platelets"}
YOLO11_YAML = ULTRALYTICS_ROOT / "cfg" / "models" / "11" / "yolo11.yaml"
WIDTHS = [round(0.05 + 0.0025 * i, 4) for i in range(81)]  # 0.05 .. 0.25 (yolo11n's width), searched for (c)
KEEP_TARGET = {0.4: 0.97}  # (b) at this params target should keep this fraction of (a)'s mAP50-95


def log(msg: str) -> None:
    """Timestamped progress line: the run takes an hour and may be resumed, so say when each step happened."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Inputs: data YAML and narrow model YAMLs
# --------------------------------------------------------------------------------------------------------------------


def write_data_yaml(data_dir: Path, out: Path) -> Path:
    """A data YAML in ``out`` pointing at the shared data set (absolute path, so runs work from any cwd)."""
    for split in ("train", "val"):
        if not (data_dir / "images" / split).is_dir() or not (data_dir / "labels" / split).is_dir():
            raise SystemExit(f"{data_dir} must hold images/{split} and labels/{split} (YOLO format).")
    path = out / "bccd.yaml"
    cfg = {"path": str(data_dir.resolve()), "train": "images/train", "val": "images/val", "names": NAMES}
    text = yaml.safe_dump(cfg, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def narrow_cfg(width: float) -> dict[str, Any]:
    """Ultralytics' yolo11.yaml with one scale ``n`` = (depth 0.50, ``width``, 1024): yolo11n except for the width.

    Scale ``n`` also keeps ``c3k=False`` and the YOLO11 head, exactly as in yolo11n.
    """
    cfg = yaml.safe_load(YOLO11_YAML.read_text())
    depth, _, max_channels = cfg["scales"]["n"]
    cfg["scales"] = {"n": [depth, width, max_channels]}
    cfg["nc"] = len(NAMES)
    return cfg


def narrow_yaml(width: float, out: Path) -> Path:
    """The YAML file of :func:`narrow_cfg`, named ``yolo11n-w<width>.yaml`` so Ultralytics reads scale ``n`` from it."""
    path = out / "models" / f"yolo11n-w{round(width * 10000):04d}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {YOLO11_YAML.name} from Ultralytics with width multiple {width} (benchmarks/accuracy.py)\n"
    text += yaml.safe_dump(narrow_cfg(width), sort_keys=False, default_flow_style=None)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def cfg_params(width: float) -> int:
    """Parameters of the narrow yolo11 at ``width`` with the data set's classes (what training will build)."""
    model = DetectionModel({**narrow_cfg(width), "scale": "n"}, nc=len(NAMES), verbose=False)
    return sum(p.numel() for p in model.parameters())


def match_width(target: int) -> tuple[float, int]:
    """The width multiple whose yolo11 is closest in params to ``target``.

    Params grow monotonically (in jumps: channels round to multiples of 8) with the width, so a bisection over
    :data:`WIDTHS` finds the two widths around the target in ~7 model builds; the closer of the two wins.
    """
    lo, hi = 0, len(WIDTHS) - 1  # invariant: params(lo) <= target < params(hi), unless target is out of range
    params = {i: cfg_params(WIDTHS[i]) for i in (lo, hi)}
    if params[lo] >= target or params[hi] <= target:
        i = lo if params[lo] >= target else hi
        return WIDTHS[i], params[i]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        params[mid] = cfg_params(WIDTHS[mid])
        lo, hi = (mid, hi) if params[mid] <= target else (lo, mid)
    i = min((lo, hi), key=lambda j: abs(params[j] - target))
    return WIDTHS[i], params[i]


# --------------------------------------------------------------------------------------------------------------------
# Measurements: one JSON record per checkpoint
# --------------------------------------------------------------------------------------------------------------------


def size_of(weights: Path, imgsz: int) -> tuple[int, float]:
    """(params, GFLOPs at ``imgsz``) of a checkpoint's unfused FP32 network, counted as the pruning report counts."""
    _, model = load_detection_checkpoint(weights)
    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, imgsz, imgsz))
    return int(params), 2 * float(macs) / 1e9


def train_seconds(run_dir: Path) -> float | None:
    """Training wall time from Ultralytics' results.csv: its ``time`` column restarts at 0 when a run is resumed, so
    the time of each segment is added up."""
    csv = run_dir / "results.csv"
    if not csv.exists():
        return None
    rows = [line.split(",") for line in csv.read_text().splitlines() if line.strip()]
    if len(rows) < 2 or "time" not in rows[0]:
        return None
    col = rows[0].index("time")
    total = prev = 0.0
    for row in rows[1:]:
        t = float(row[col])
        if t < prev:  # a resumed segment starts here
            total += prev
        prev = t
    return total + prev


def stored(key: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The record of a finished step, or None: what makes a re-run skip work already done."""
    path = args.out / "records" / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def save(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Write ``records/<key>.json``: from now on :func:`stored` returns it and the step is skipped."""
    path = args.out / "records" / f"{record['key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def measure(key: str, weights: Path, args: argparse.Namespace, data: Path, **info: Any) -> dict[str, Any]:
    """Validate ``weights`` on the val split, count its size and store the record."""
    log(f"val {key}: {weights}")
    params, gflops = size_of(weights, args.imgsz)
    metrics = YOLO(str(weights)).val(
        data=str(data), split="val", imgsz=args.imgsz, batch=args.batch, device="cpu", workers=args.workers,
        plots=False, verbose=False, project=str(args.out / "val"), name=key, exist_ok=True,
    )
    record = save({"key": key, "weights": str(weights), "params": params, "gflops": gflops,
                   "map": float(metrics.box.map), "map50": float(metrics.box.map50), **info}, args)
    log(f"  {key}: params {params:,}  GFLOPs {gflops:.2f}  mAP50-95 {record['map']:.4f}  mAP50 {record['map50']:.4f}")
    return record


def failed(key: str, args: argparse.Namespace, error: BaseException, **info: Any) -> dict[str, Any]:
    """Record a step that could not run (e.g. a params target a criterion cannot reach), so the table says why."""
    record = save({"key": key, "error": f"{type(error).__name__}: {error}"[:300], **info}, args)
    log(f"  {key} FAILED: {record['error']}")
    return record


# --------------------------------------------------------------------------------------------------------------------
# Training runs that resume after an interruption
# --------------------------------------------------------------------------------------------------------------------


def train_run(run_dir: Path, start: Callable[[], Any], resume_from: Callable[[Path], Any]) -> Path:
    """``best.pt`` of the run in ``run_dir``: reused when finished, resumed from ``last.pt``, or started.

    Ultralytics marks a finished run by stripping ``last.pt`` to epoch -1; ``YOLO(last).train(resume=True)`` on such a
    file would silently start a new training, so the state is read here first.
    """
    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    epoch = torch_load(last, map_location="cpu", weights_only=False).get("epoch", -1) if last.exists() else None
    if epoch == -1 and best.exists():
        log(f"  {run_dir.name}: finished earlier, reusing {best}")
    elif epoch is not None:
        log(f"  {run_dir.name}: resuming after epoch {epoch + 1}")
        resume_from(last)
    else:
        start()
    if not best.exists():
        raise RuntimeError(f"training in {run_dir} ended without {best}")
    return best


def train_from_scratch(name: str, model_yaml: str, epochs: int, args: argparse.Namespace, data: Path) -> Path:
    """Standard Ultralytics training of a YAML (random init) with the benchmark's size, batch and device."""
    run_dir = args.out / name
    log(f"train {name}: {model_yaml}, {epochs} epochs from scratch")
    return train_run(
        run_dir,
        lambda: YOLO(model_yaml).train(
            data=str(data), epochs=epochs, imgsz=args.imgsz, batch=args.batch, device="cpu", workers=args.workers,
            plots=False, project=str(args.out), name=name, exist_ok=True,
        ),
        lambda last: YOLO(str(last)).train(resume=True),
    )


def finetune_pruned(name: str, pruned: Path, args: argparse.Namespace, data: Path) -> Path:
    """yolo_ext's fine-tuning of a pruned checkpoint (keeps the pruned network), same batch as training."""
    log(f"fine-tune {name}: {args.finetune_epochs} epochs")
    return train_run(
        args.out / name,
        lambda: finetune(
            pruned, data, epochs=args.finetune_epochs, imgsz=args.imgsz, batch=args.batch, device="cpu",
            workers=args.workers, plots=False, project=str(args.out), name=name, exist_ok=True,
            optimizer="AdamW", lr0=args.finetune_lr, warmup_epochs=1,
        ),
        resume,
    )


# --------------------------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------------------------


def tag(target: float) -> str:
    """``0.4`` -> ``p40`` for run names."""
    return f"p{round(100 * target)}"


def prune_step(a_best: Path, criterion: str, target: float, args: argparse.Namespace, data: Path,
               gradients: dict[str, Callable]) -> dict[str, Any]:
    """(b) before fine-tuning: prune A to remove ``target`` of its params and validate the pruned checkpoint."""
    key = f"b_{criterion}_{tag(target)}"
    info = {"group": "b0", "criterion": criterion, "target": target, "epochs": args.epochs}
    if record := stored(key, args):
        return record
    pruned = args.out / key / "pruned.pt"
    if not pruned.exists():
        log(f"prune {key}: criterion {criterion}, remove {target:.0%} of the params")
        gradient_fn = None
        if criterion in NEEDS_GRADIENTS:
            gradients.setdefault("fn", loss_gradients(data, args.imgsz))
            gradient_fn = gradients["fn"]
        t0 = time.perf_counter()
        try:
            report = prune_checkpoint(a_best, PruneConfig(target_params=target, criterion=criterion, imgsz=args.imgsz),
                                      pruned, latency_runs=0, gradient_fn=gradient_fn)
        except PruningError as e:
            return failed(key, args, e, **info)
        cfg = report.result.config
        info |= {"ratio": cfg.ratio, "global": cfg.global_pruning, "prune_s": round(time.perf_counter() - t0, 1)}
        (args.out / key / "prune.json").write_text(json.dumps(info, indent=1))
    else:
        meta = args.out / key / "prune.json"
        info = json.loads(meta.read_text()) if meta.exists() else info
    return measure(key, pruned, args, data, **info)


def baseline_step(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """(a): yolo11n from scratch for E epochs."""
    key = "a_yolo11n"
    if record := stored(key, args):
        return record
    best = train_from_scratch(key, "yolo11n.yaml", args.epochs, args, data)
    return measure(key, best, args, data, group="a", epochs=args.epochs, train_s=train_seconds(args.out / key))


def finetune_step(b0: dict[str, Any], args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """(b) after fine-tuning: F epochs on the pruned checkpoint, so E + F epochs in all."""
    key = f"{b0['key']}_ft"
    if record := stored(key, args):
        return record
    best = finetune_pruned(key, Path(b0["weights"]), args, data)
    return measure(key, best, args, data, group="b", criterion=b0["criterion"], target=b0["target"],
                   epochs=args.epochs + args.finetune_epochs, train_s=train_seconds(args.out / key))


def narrow_step(target: float, goal: int, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """(c): a yolo11 as wide as makes ``goal`` params, from scratch for E + F epochs."""
    key = f"c_{tag(target)}"
    if record := stored(key, args):
        return record
    width, params = match_width(goal)
    log(f"narrow model for -{target:.0%} params: width {width} -> {params:,} params ((b): {goal:,}, "
        f"{params / goal - 1:+.1%})")
    total = args.epochs + args.finetune_epochs
    best = train_from_scratch(key, str(narrow_yaml(width, args.out)), total, args, data)
    return measure(key, best, args, data, group="c", target=target, width=width, epochs=total,
                   train_s=train_seconds(args.out / key))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or resume) every step; returns every record in table order.

    Per target, (c) trains before the fine-tunings, and those run best pruned mAP first: a run cut short still has
    its comparison point and the most promising (b).
    """
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_data_yaml(args.data_dir, args.out)
    a = baseline_step(args, data)
    records = [a]
    gradients: dict[str, Callable] = {}  # the gradient function for Taylor (its data loader) is built once
    pruned = {(c, t): prune_step(Path(a["weights"]), c, t, args, data, gradients)
              for t in args.targets for c in args.criteria}
    for t in args.targets:
        b0s = [pruned[(c, t)] for c in args.criteria]
        ok = [r for r in b0s if "error" not in r]
        goal = round(sum(r["params"] for r in ok) / len(ok)) if ok else round(a["params"] * (1 - t))
        c_record = narrow_step(t, goal, args, data)
        tuned = {r["key"]: finetune_step(r, args, data) for r in sorted(ok, key=lambda r: -r["map"])}
        for r in b0s:
            records += [r, tuned[r["key"]]] if r["key"] in tuned else [r]
        records.append(c_record)
    return records


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def label(r: dict[str, Any], args: argparse.Namespace) -> str:
    """Human name of a record's variant."""
    group = r.get("group")
    if group == "a":
        return f"(a) yolo11n, {r['epochs']} ep from scratch"
    if group == "c":
        return f"(c) yolo11 width {r['width']}, {r['epochs']} ep from scratch"
    how = f"{r['criterion']} -{r['target']:.0%} params"
    if "ratio" in r:
        how += f" (ratio {r['ratio']:.3f}{', global' if r.get('global') else ''})"
    if group == "b0":
        return f"(b) {how}, pruned, no fine-tune"
    return f"(b) {how} + {args.finetune_epochs} ep fine-tune"


def verdicts(records: list[dict[str, Any]], a: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per params target: the best fine-tuned (b) against (c), and whether (b) kept the mAP it should."""
    out = []
    for t in args.targets:
        bs = [r for r in records if r.get("group") == "b" and r["target"] == t]
        cs = [r for r in records if r.get("group") == "c" and r["target"] == t]
        v: dict[str, Any] = {"target": t}
        if bs:
            b = max(bs, key=lambda r: r["map"])
            v |= {"best_b": b["key"], "b_map": b["map"], "b_keep": b["map"] / a["map"] if a["map"] else math.nan}
            if t in KEEP_TARGET:
                v["keep_goal"], v["keep_met"] = KEEP_TARGET[t], v["b_keep"] >= KEEP_TARGET[t]
        if cs:
            v |= {"c": cs[0]["key"], "c_map": cs[0]["map"]}
        if bs and cs:
            v["params_diff"] = cs[0]["params"] / b["params"] - 1
            v["pruning_wins"] = b["map"] > cs[0]["map"]
        out.append(v)
    return out


def table(records: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table of every variant plus the verdict lines; also returns the verdicts as data."""
    a = next(r for r in records if r.get("group") == "a")
    columns = ["variant", "epochs", "params", f"GFLOPs@{args.imgsz}", "mAP50-95", "mAP50", "mAP50-95 vs (a)",
               "train min (this step)"]
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
    for r in records:
        if "error" in r:
            name = f"(b) {r['criterion']} -{r['target']:.0%} params"
            lines.append(f"| {name} | - | - | - | - | - | failed: {r['error'][:80].replace('|', '/')} | - |")
            continue
        rel = f"{100 * r['map'] / a['map']:.1f}%" if a["map"] else "-"
        mins = f"{r['train_s'] / 60:.1f}" if r.get("train_s") else "-"
        lines.append(
            f"| {label(r, args)} | {r['epochs']} | {r['params']:,} | {r['gflops']:.2f} | {r['map']:.4f} | "
            f"{r['map50']:.4f} | {rel} | {mins} |"
        )
    vs = verdicts(records, a, args)
    lines.append("")
    for v in vs:
        head = f"- params -{v['target']:.0%}: "
        if "pruning_wins" in v:
            gap = 100 * (v["b_map"] - v["c_map"])
            who = ("tie" if v["b_map"] == v["c_map"] else "pruning wins" if v["pruning_wins"]
                   else "the narrow model trained from scratch wins")
            head += (f"best (b) `{v['best_b']}` mAP50-95 {v['b_map']:.4f} vs (c) `{v['c']}` {v['c_map']:.4f} "
                     f"({gap:+.1f} points, (c) params {v['params_diff']:+.1%}): **{who}**")
        else:
            head += "incomplete (missing (b) or (c))"
        if "keep_goal" in v:
            met = "met" if v["keep_met"] else "MISSED"
            head += (f"; (b) keeps {100 * v['b_keep']:.1f}% of (a)'s mAP50-95 "
                     f"(goal >= {100 * v['keep_goal']:.0f}%: {met})")
        lines.append(head)
    return "\n".join(lines), vs


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="E: epochs of (a); (c) trains E + F")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="F: fine-tuning epochs of every (b)")
    parser.add_argument("--criteria", nargs="+", default=["l1", "lamp", "taylor"], help="pruning criteria for (b)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.4, 0.6],
                        help="fractions of the parameters pruning removes (one (c) per target)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="YOLO-format data set with images/{train,val}")
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"), help="every run, record and table go here")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="data loader workers (Ultralytics uses 0 on CPU anyway)")
    parser.add_argument("--finetune-lr", type=float, default=0.001, help="AdamW lr0 for fine-tuning pruned models")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def main(args: argparse.Namespace) -> None:
    args.out = args.out.resolve()  # Ultralytics puts relative projects under its own runs dir
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    log(f"accuracy benchmark -> {args.out} (E={args.epochs}, F={args.finetune_epochs}, criteria {args.criteria}, "
        f"targets {args.targets}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    records = run(args)
    text, vs = table(records, args)
    header = (f"BCCD val, imgsz {args.imgsz}, batch {args.batch}, CPU; E={args.epochs}, F={args.finetune_epochs}; "
              f"mAP from Ultralytics val of each run's best.pt\n\n")
    (args.out / "accuracy.md").write_text(header + text + "\n")
    (args.out / "accuracy.json").write_text(json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "records": records, "verdicts": vs}, indent=1))
    print("\n" + header + text)
    log(f"done in {(time.perf_counter() - t0) / 60:.1f} min: {args.out / 'accuracy.md'}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
