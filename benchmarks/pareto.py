"""Accuracy at equal measured latency: pruned yolo11s / yolo11n against what users would otherwise pick.

Rows (every one trained on the same data, image size, batch and recipe; E + F epochs in all):

  yolo11n, yolo11s           Ultralytics' models from scratch, E + F epochs, each seed
  narrow w<W>                yolo11 at width W (yolo11n's depth) from scratch, E + F epochs (``--widths``)
                             (``--comparators continue``: these rows train E epochs once, then continue F epochs per
                             seed with the fine-tune recipe, the schedule the pruned rows get; E + F in all)
  yolo11s -> <target>        yolo11s trained E epochs (once), pruned to a latency target (``--s-targets``: ``n`` is
                             yolo11n's measured latency, a number the fraction of yolo11s' latency to remove), then
                             fine-tuned F epochs with yolo_ext's default recipe, each seed
  yolo11n -> <target>        the same from yolo11n (``--n-targets``: ``w<W>`` is that narrow model's latency)
  ... + teacher              (``--distill``) the yolo11s row at yolo11n's latency, distilled from the unpruned yolo11s

Latency is what users run: ONNX Runtime CPU, 1 thread, batch 1, imgsz ``--latency-imgsz`` (640) is the reference,
OpenVINO CPU beside it (TensorRT FP16 too when a GPU and tensorrt are present); targets are resolved by timing
yolo11n, yolo11s and the narrow models side by side before anything trains, and every final network is timed
again side by side at the end. Pruning jobs time networks, so each runs alone (no training beside it).

Each run is one process (``--jobs`` side by side) that writes one JSON record under ``<out>/records``; re-running
the same command runs only what is missing. Output: ``<out>/pareto.md`` (table: params, GFLOPs, ms per backend,
mAP50-95 mean and spread over seeds, plateau check of the from-scratch rows) and ``<out>/pareto.png``.

  python benchmarks/pareto.py --seeds 0 1 --jobs 2 --epochs 60                     # BCCD on 2 CPU cores
  python benchmarks/pareto.py --data benchmarks/datasets/aquarium/data.yaml --out runs/pareto-aquarium
  python benchmarks/pareto.py --device 0 --jobs 12 --epochs 100                    # a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from accuracy import child_main, curve, drive, measure, narrow_yaml, plateau, record_path
from harness import log, markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "bccd" / "data.yaml"


# ---------------------------------------------------------------------------------------------------------------------
# One run (a child process)
# ---------------------------------------------------------------------------------------------------------------------


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from ultralytics import YOLO

    import yolo_ext  # noqa: F401
    from yolo_ext.prune import PruneConfig
    from yolo_ext.prune.checkpoint import prune_checkpoint
    from yolo_ext.train.finetune import finetune

    out, key = Path(job["out"]), job["key"]
    common = dict(data=job["data"], imgsz=job["imgsz"], batch=job["batch"], device=job["device"],
                  workers=job["workers"], seed=job["seed"], plots=False, exist_ok=True, project=str(out),
                  cache=job["cache"])
    start = time.time()
    if job["kind"] == "scratch":
        last = out / key / "weights" / "last.pt"
        if not last.exists():
            YOLO(job["model"]).train(epochs=job["epochs"], name=key, **common)
        elif torch.load(last, map_location="cpu", weights_only=False).get("optimizer") is not None:
            YOLO(last).train(resume=True)  # an interrupted run (Ultralytics strips the optimizer when one finishes)
        best, runs = out / key / "weights" / "best.pt", [out / key]
    elif job["kind"] == "prune":  # alone on the machine: the latency search times networks
        config = PruneConfig(target_latency=job["target"], imgsz=job["latency_imgsz"], backend=job["backend"])
        report = prune_checkpoint(job["source"], config, out / f"{key}.pt", overwrite=True, latency_runs=30)
        return {"key": key, "name": job["name"], "seed": -1, "kind": "prune", "weights": str(report.output),
                "report": report.table, "search": report.result.latency, "seconds": round(time.time() - start, 1)}
    else:  # fine-tune a pruned network (or continue an unpruned base) with the default recipe
        source = Path(job["source"]) if job.get("source") else out / f"{job['pruned']}.pt"
        extra = {"teacher": "auto"} if job.get("teacher") else {}
        tuned = finetune(source, job["data"], name=key, epochs=job["epochs"], require_pruned=not job.get("source"),
                         **{k: v for k, v in common.items() if k != "data"}, **extra)
        best, runs = Path(tuned.trainer.best), [out / key]
    record = {**{k: job[k] for k in ("key", "name", "seed", "kind")}, **measure(best, job),
              "curve": [x for r in runs for x in curve(r)], "seconds": round(time.time() - start, 1)}
    if job["kind"] == "scratch":
        record["plateau"] = plateau(record["curve"])
    return record


# ---------------------------------------------------------------------------------------------------------------------
# Latency: what the targets are, and what every final network measures
# ---------------------------------------------------------------------------------------------------------------------


def time_networks(paths: dict[str, str], backends: list[str], imgsz: int, nc: int, runs: int = 30) -> dict[str, dict]:
    """ms of every network (a YAML built for ``nc`` classes, or a checkpoint; by label) on every backend, all side by
    side per backend."""
    import torch
    import torch_pruning as tp
    from ultralytics.nn.tasks import DetectionModel

    import yolo_ext  # noqa: F401
    from yolo_ext.latency import BACKENDS, Deployment, measure_latency
    from yolo_ext.prune.checkpoint import load_prunable_checkpoint

    nets = {}
    for label, path in paths.items():
        nets[label] = (load_prunable_checkpoint(path)[1] if path.endswith(".pt")
                       else DetectionModel(path, nc=nc, verbose=False)).eval()
    out = {label: {} for label in nets}
    for label, net in nets.items():
        macs, params = tp.utils.count_ops_and_params(net, torch.zeros(1, 3, imgsz, imgsz))
        out[label].update(gflops=2 * macs / 1e9, params=int(params))
    for name in backends:
        if BACKENDS[name].unavailable():
            log(f"skipping {name}: {BACKENDS[name].unavailable()}")
            continue
        lat = measure_latency(list(nets.values()), name, Deployment((imgsz, imgsz)), runs=runs)
        for label, ms in zip(nets, lat.ms):
            out[label][name] = ms
    return out


def data_nc(data: Path) -> int:
    import yaml

    names = yaml.safe_load(Path(data).read_text())["names"]
    return len(names)


def time_candidates(args: argparse.Namespace) -> dict[str, dict]:
    """yolo11n, yolo11s and the narrow models, built for the data's classes and timed side by side."""
    yamls = {"yolo11n": "yolo11n.yaml", "yolo11s": "yolo11s.yaml"}
    yamls |= {f"narrow w{w}": str(narrow_yaml(w, args.out)) for w in args.widths}
    return time_networks(yamls, [args.backend], args.latency_imgsz, data_nc(args.data))


def resolve_targets(args: argparse.Namespace, timed: dict[str, dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Latency fractions to remove from yolo11s and yolo11n, by label, from networks timed side by side."""
    ms = {k: v[args.backend] for k, v in timed.items()}
    s_targets, n_targets = {}, {}
    for t in args.s_targets:
        s_targets["yolo11n latency" if t == "n" else f"-{float(t):.0%}"] = (
            1 - ms["yolo11n"] / ms["yolo11s"] if t == "n" else float(t))
    for t in args.n_targets:
        if t.startswith("w"):
            n_targets[f"narrow w{t[1:]} latency"] = 1 - ms[f"narrow w{float(t[1:])}"] / ms["yolo11n"]
        else:
            n_targets[f"-{float(t):.0%}"] = float(t)
    return s_targets, n_targets


# ---------------------------------------------------------------------------------------------------------------------
# Plan, table, plot
# ---------------------------------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plan(args: argparse.Namespace, s_targets: dict[str, float], n_targets: dict[str, float]) -> list[dict[str, Any]]:
    finetune_epochs = max(1, round(args.finetune_fraction * args.epochs))
    total = args.epochs + finetune_epochs
    common = {"data": str(args.data), "imgsz": args.imgsz, "batch": args.batch, "device": args.device,
              "workers": args.workers, "cache": args.cache, "out": str(args.out), "backend": args.backend,
              "latency_imgsz": args.latency_imgsz}
    jobs = []
    for model in ("yolo11n", "yolo11s"):
        jobs.append({**common, "key": f"base-{model}", "name": f"{model} base ({args.epochs} ep)", "seed": 0,
                     "kind": "scratch", "model": f"{model}.yaml", "epochs": args.epochs, "after": []})
    scratch = [(m, f"{m}.yaml") for m in args.scratch]
    scratch += [(f"narrow w{w}", str(narrow_yaml(w, args.out))) for w in args.widths]
    for name, cfg in scratch:
        if args.comparators == "continue":  # E epochs once, then F more with the recipe the pruned rows get
            base = f"base-{slug(name)}"
            if not any(j["key"] == base for j in jobs):
                jobs.append({**common, "key": base, "name": f"{name} base ({args.epochs} ep)", "seed": 0,
                             "kind": "scratch", "model": cfg, "epochs": args.epochs, "after": []})
        for seed in args.seeds:
            if args.comparators == "continue":
                jobs.append({**common, "key": f"{slug(name)}-cont-s{seed}", "name": f"{name} ({args.epochs}+"
                             f"{finetune_epochs} ep)", "seed": seed, "kind": "finetune", "epochs": finetune_epochs,
                             "source": str(args.out / base / "weights" / "best.pt"), "after": [base]})
            else:
                jobs.append({**common, "key": f"{slug(name)}-s{seed}", "name": f"{name} ({total} ep)", "seed": seed,
                             "kind": "scratch", "model": cfg, "epochs": total, "after": []})
    pruned = [("yolo11s", label, f, False) for label, f in s_targets.items()]
    pruned += [("yolo11n", label, f, False) for label, f in n_targets.items()]
    if args.distill and "yolo11n latency" in s_targets:
        pruned.append(("yolo11s", "yolo11n latency", s_targets["yolo11n latency"], True))
    for model, label, fraction, teacher in pruned:
        name = f"{model} -> {label}"
        key = f"prune-{slug(name)}"
        if not any(j["key"] == key for j in jobs):
            jobs.append({**common, "key": key, "name": name, "seed": -1, "kind": "prune", "target": round(fraction, 4),
                         "source": str(args.out / f"base-{model}" / "weights" / "best.pt"), "exclusive": True,
                         "after": [f"base-{model}"]})
        for seed in args.seeds:
            jobs.append({**common, "key": f"{key}{'-kd' if teacher else ''}-s{seed}",
                         "name": f"{name}{' + teacher' if teacher else ''} (+{finetune_epochs} ep)", "seed": seed,
                         "kind": "finetune", "pruned": key, "epochs": finetune_epochs, "teacher": teacher,
                         "after": [key]})
    return jobs


def summarize(args: argparse.Namespace, timed: dict[str, dict]) -> tuple[str, list[dict]]:
    records = [json.loads(p.read_text()) for p in sorted((args.out / "records").glob("*.json"))]
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] in ("scratch", "finetune"):
            groups.setdefault(r["name"], []).append(r)
    backends = sorted({b for t in timed.values() for b in t if b not in ("gflops", "params")},
                      key=lambda b: (b != args.backend, b))
    rows, points = [], []
    for name, rs in sorted(groups.items()):
        label = name.split(" (")[0].replace(" + teacher", " + teacher")
        t = timed.get(name)
        if t is None:
            continue
        maps = [r["map"] for r in sorted(rs, key=lambda r: r["seed"])]
        mean, spread = sum(maps) / len(maps), (max(maps) - min(maps)) / 2
        plateau_text = ", ".join(
            f"{'ok' if r['plateau'].get('ok') else 'no'} ({r['plateau'].get('change', r['plateau'].get('why'))})"
            for r in rs if r.get("plateau"))
        rows.append([name, f"{t['params']:,}", f"{t['gflops']:.2f}", *[f"{t.get(b, math.nan):.1f}" for b in backends],
                     f"{mean:.4f}", f"{spread:.4f}", " / ".join(f"{m:.4f}" for m in maps), plateau_text])
        if "base" not in label:  # the bases are pruned, not compared: same epochs as the others only after F more
            points.append({"label": label, "ms": t.get(args.backend, math.nan), "map": mean, "spread": spread,
                           "family": label.split(" ")[0] + (" pruned" if "->" in label else "")
                           + (" + teacher" if "teacher" in label else "")})
    columns = ["run", "params", f"GFLOPs@{args.latency_imgsz}", *[f"{b} ms" for b in backends], "mAP50-95 mean",
               "spread (half range)", "per seed", "plateau (last 10 vs 10 before)"]
    table = markdown_table(columns, "lrr" + "r" * len(backends) + "rrll", rows)
    finetune_epochs = max(1, round(args.finetune_fraction * args.epochs))
    head = (f"{args.data} val, train imgsz {args.imgsz}, batch {args.batch}, E = {args.epochs}, F = {finetune_epochs}; "
            f"latency at {args.latency_imgsz}, batch 1, 1 thread, side by side per backend; seeds {args.seeds}")
    return head + "\n\n" + table, points


def plot(points: list[dict], path: Path, title: str, backend: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"yolo11n": "#2ca02c", "yolo11s": "#1f77b4", "narrow": "#7f7f7f", "yolo11s pruned": "#d62728",
              "yolo11n pruned": "#ff7f0e", "yolo11s pruned + teacher": "#9467bd"}
    for fam in dict.fromkeys(p["family"] for p in points):
        ps = sorted((p for p in points if p["family"] == fam), key=lambda p: p["ms"])
        ax.errorbar([p["ms"] for p in ps], [p["map"] for p in ps], yerr=[p["spread"] for p in ps], fmt="o-" if
                    "pruned" in fam or fam == "narrow" else "s", color=colors.get(fam, "k"), label=fam, capsize=3)
        for p in ps:
            ax.annotate(p["label"].replace("yolo11s -> ", "").replace("yolo11n -> ", ""), (p["ms"], p["map"]),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{backend} latency, ms (batch 1, 1 thread)")
    ax.set_ylabel("mAP50-95 (mean over seeds, bars: half range)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=60, help="E: epochs of the bases that are pruned")
    p.add_argument("--finetune-fraction", type=float, default=0.3, help="F = this fraction of E (the default recipe)")
    p.add_argument("--widths", nargs="+", type=float, default=[0.16, 0.2], help="narrow yolo11 widths")
    p.add_argument("--scratch", nargs="*", default=["yolo11n", "yolo11s"], choices=["yolo11n", "yolo11s"],
                   help="official models trained from scratch for E + F epochs")
    p.add_argument("--comparators", choices=["scratch", "continue"], default="scratch",
                   help="how the from-scratch rows reach E + F epochs: one run of E + F, or the E-epoch base "
                        "continued F epochs with the fine-tune recipe (the pruned rows' schedule; cheaper on a CPU)")
    p.add_argument("--s-targets", nargs="+", default=["n", "0.3", "0.6"])
    p.add_argument("--n-targets", nargs="+", default=["w0.16", "0.3"])
    p.add_argument("--distill", action="store_true", help="also yolo11s at yolo11n's latency with its teacher")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--imgsz", type=int, default=320, help="training and validation size")
    p.add_argument("--latency-imgsz", type=int, default=640)
    p.add_argument("--backend", default="ort-cpu", help="backend the targets are measured on")
    p.add_argument("--backends", nargs="+", default=["ort-cpu", "openvino-cpu", "tensorrt"],
                   help="backends of the final table (those not available here are skipped)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default="ram", type=lambda v: False if v.lower() in {"false", "0", "none"} else v)
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--deadline", type=float, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/pareto"))
    p.add_argument("--run-job", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> int:
    if args.run_job:
        return child_main(args.run_job, run_job)
    if not args.data.is_file():
        print(f"pareto: error: data YAML {args.data} not found; pass --data", file=sys.stderr)
        return 2
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    targets_file = args.out / "targets.json"
    known = json.loads(targets_file.read_text())["timed"] if targets_file.exists() else {}
    missing = [w for w in args.widths if f"narrow w{w}" not in known]
    if not known or missing:  # timed once: a re-run keeps the same targets, so finished runs stay comparable
        known = {**time_candidates(args), **known}
        targets_file.write_text(json.dumps({"timed": known}, indent=1))
    s_targets, n_targets = resolve_targets(args, known)
    log(f"targets: yolo11s {s_targets}; yolo11n {n_targets}")
    jobs = plan(args, s_targets, n_targets)
    drive(jobs, args, script=__file__)
    finals = {}
    for job in jobs:  # seed 0's network of each row (the seeds share the architecture)
        if job["kind"] in ("scratch", "finetune") and job["seed"] == args.seeds[0]:
            rec = record_path(args.out, job["key"])
            if rec.exists():
                finals[job["name"]] = json.loads(rec.read_text())["weights"]
    timed = time_networks(finals, args.backends, args.latency_imgsz, data_nc(args.data))
    table, points = summarize(args, timed)
    (args.out / "pareto.md").write_text(table + "\n")
    plot(points, args.out / "pareto.png", f"{args.data.parent.name}: mAP50-95 vs measured latency", args.backend)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
