"""Does structured pruning make YOLO detectors as much faster on a CPU as their MACs reduction promises?

For each model (`--models`) and pruning ratio (`--ratios`) the model is pruned with `yolo_ext.prune.prune_model`
(L1, uniform), saved as an Ultralytics checkpoint (`save_pruned`), and timed at batch 1, `--imgsz` 640 on the CPU:
  PyTorch      the fused FP32 model (`fused_copy`: BN folded, as deployed), under `torch.inference_mode`;
  ONNX Runtime the ONNX file Ultralytics' exporter writes for the checkpoint (`YOLO(pt).export(format="onnx",
               simplify=False)`, opset 18), CPUExecutionProvider, default graph optimisations.
The exporter works for every default model (yolov8n/s, yolo11n/s, yolo26n); ONNX Runtime's output is checked
against PyTorch's on the same input (max abs difference, `ort_max_diff` in the JSON; > 1e-3 is reported).
The unpruned model and every pruned variant of a model are timed in one round-robin (`--warmup` rounds, then
`--runs` rounds; each round times every variant once in PyTorch and once in ONNX Runtime, the starting variant
rotating), so load from other processes hits all alike; the tables show medians. For each variant:
  MACs ratio   macs_before / macs_after as prune_model counts them (Torch-Pruning, unfused model, at --imgsz);
  speedup      median latency unpruned / median latency pruned, per backend;
  efficiency   speedup / MACs ratio (1.0: time falls exactly as MACs do; the project's target is >= 0.8).
Every run is also timed in this thread's CPU time (`time.thread_time`; with one thread, torch and ONNX Runtime both
compute on the calling thread): it leaves out the time the process waits for a core while other work runs, so the
"CPU-time eff." in parentheses is the noise-resistant cross-check of the wall-clock numbers.
`--round-to 8` (default) also prunes at `--round-ratio` 0.4 with channel counts rounded to multiples of 8, to show
what hardware-friendly widths change; pass `--round-to` with no value to skip, or several values (8 16).
`--profile MODEL` adds, for that model's unpruned vs highest-ratio variant (without round_to), a per-op breakdown
(torch.profiler self CPU time; ONNX Runtime's node profile by op type) and a per-layer one (conv MACs and thread CPU
time of each `model.model[i]`, the Detect head split into its convs and the rest): which ops and layers do not get
as much faster as their MACs shrink.

Usage:
  python benchmarks/latency.py                                  # 5 models x ratios 0.2 0.4 0.6 (+ round_to 8)
  python benchmarks/latency.py --models yolo11n --ratios 0.4 --runs 10 --round-to
  python benchmarks/latency.py --profile yolo11n --json latency.json
  options: --models, --ratios, --imgsz 640, --runs 30, --warmup 5, --threads 1, --criterion l1,
           --round-to [N ...], --round-ratio 0.4, --malloc default|keep, --profile MODEL, --json PATH
Runs with 1 torch thread and 1 ONNX Runtime intra-op thread (`--threads`): on a 2-core machine shared with other
work, timings then do not depend on whether the second core happens to be free. Needs no weights or network (models come
from Ultralytics' bundled YAMLs, random weights, seed 0; YOLO_OFFLINE=1 is set).

Duration on the 2-core AMD EPYC (AVX-512) dev machine, another developer's test suite keeping ~1 core busy: 3.7 min
for the full default set (223 s measured: per model 6-12 s to prune, save, export and check 4 variants, then the
35 timing rounds, 18-63 s); `--round-to 8 16 --profile yolo11n` 4.7 min (281 s); `--models yolo11n --ratios 0.6
--runs 5 --warmup 1 --round-to` ~20 s.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: never reach for the network

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from ultralytics import YOLO
from ultralytics.utils import LOGGER

import yolo_ext
from yolo_ext.prune import PruneConfig, prune_model
from yolo_ext.prune.checkpoint import load_detection_checkpoint, save_pruned
from yolo_ext.prune.report import fused_copy

DEFAULT_MODELS = ["yolov8n", "yolov8s", "yolo11n", "yolo11s", "yolo26n"]
DEFAULT_RATIOS = [0.2, 0.4, 0.6]
TARGET_EFFICIENCY = 0.8
PARITY_TOL = 1e-3
BACKEND_KEYS = ("torch", "ort", "torch_cpu", "ort_cpu")  # wall-clock and thread-CPU-time series per backend


@dataclass
class Variant:
    """One model to time: the unpruned baseline or one pruning of it, ready in both backends."""

    label: str
    ratio: float
    round_to: int | None
    macs: float
    params: int
    pt_path: Path
    torch_model: nn.Module | None = None
    session: ort.InferenceSession | None = None
    onnx_path: Path | None = None
    prune_s: float = 0.0
    ort_max_diff: float = float("nan")
    # wall-clock ms ("torch", "ort") and this thread's CPU ms ("torch_cpu", "ort_cpu") per run
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in BACKEND_KEYS})

    def median(self, backend: str) -> float:
        """Median of one timing series: robust to the runs another process slowed down."""
        return statistics.median(self.times[backend])


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process): to report how busy other processes were."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    t = os.times()
    return time.monotonic(), (sum(vals[:8]) - idle) / tick, t.user + t.system


def other_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Average number of cores other processes kept busy between two snapshots."""
    wall = max(end[0] - start[0], 1e-9)
    return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / wall


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory (no heap trimming, no mmap below 32 MB); True if it took.

    With glibc's defaults a PyTorch forward re-grows trimmed heap pages and pays thousands of page faults per image
    (in proportion to activation bytes); ONNX Runtime's arena does not. `--malloc keep` measures the networks
    without that cost.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 32 << 20))  # M_TRIM_, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def build_checkpoint(name: str, path: Path) -> None:
    """Save a freshly built model (Ultralytics' bundled YAML, or one of yolo_ext's) as an Ultralytics checkpoint."""
    torch.manual_seed(0)  # same random weights on every run
    cfg = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    try:
        yolo = YOLO(cfg)
    except FileNotFoundError:
        yolo = YOLO(str(yolo_ext.model_yaml(cfg)))
    yolo.save(path)


def export_onnx(pt_path: Path, imgsz: int) -> Path:
    """The ONNX file Ultralytics' exporter writes for a checkpoint (what users deploy), beside the checkpoint."""
    return Path(YOLO(str(pt_path)).export(format="onnx", imgsz=imgsz, simplify=False, verbose=False))


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session with a fixed thread count (and optionally ONNX Runtime's per-node profiler on)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def first_tensor(out: Any) -> torch.Tensor:
    """The decoded predictions of a Detect model's eval output ((y, preds) in PyTorch)."""
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def prepare_variants(name: str, args: argparse.Namespace, tmp: Path) -> list[Variant]:
    """Baseline and every pruning of `name`: pruned, saved, reloaded, fused, exported and parity-checked."""
    src = tmp / f"{name}.pt"
    build_checkpoint(name, src)
    specs: list[tuple[float, int | None]] = [(r, None) for r in args.ratios]
    specs += [(args.round_ratio, n) for n in args.round_to]
    variants: list[Variant] = []
    macs_before, params_before = float("nan"), 0
    for ratio, round_to in specs:
        ckpt, model = load_detection_checkpoint(src)
        t0 = time.perf_counter()
        cfg = PruneConfig(ratio=ratio, criterion=args.criterion, imgsz=args.imgsz, round_to=round_to)
        res = prune_model(model, cfg)
        prune_s = time.perf_counter() - t0
        macs_before, params_before = res.macs_before, res.params_before
        label = f"p{round(100 * ratio)}" + (f"/r{round_to}" if round_to else "")
        out = save_pruned(ckpt, res, src, tmp / f"{name}-{label.replace('/', '-')}.pt")
        variants.append(Variant(label, ratio, round_to, res.macs_after, res.params_after, out, prune_s=prune_s))
    base = Variant("unpruned", 0.0, None, macs_before, params_before, src)
    variants.insert(0, base)

    x = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(1))
    for v in variants:
        _, model = load_detection_checkpoint(v.pt_path)  # the checkpoint, as a user would load it
        v.torch_model = fused_copy(model)
        v.onnx_path = export_onnx(v.pt_path, args.imgsz)
        v.session = ort_session(v.onnx_path, args.threads)
        with torch.inference_mode():
            ref = first_tensor(v.torch_model(x)).numpy()
        got = v.session.run(None, {v.session.get_inputs()[0].name: x.numpy()})[0]
        v.ort_max_diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if not v.ort_max_diff <= PARITY_TOL:
            print(f"WARNING {name} {v.label}: ONNX Runtime differs from PyTorch by {v.ort_max_diff:g}", file=sys.stderr)
    return variants


def time_round_robin(variants: list[Variant], imgsz: int, runs: int, warmup: int) -> None:
    """Time every variant in both backends, round after round, so noise hits them alike; fills `v.times`."""
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(2))
    feed = x.numpy()
    names = [v.session.get_inputs()[0].name for v in variants]
    n = len(variants)
    with torch.inference_mode():
        for r in range(warmup + runs):
            for j in range(n):
                i = (r + j) % n  # rotate the starting variant: no variant always runs first or after the same one
                v = variants[i]
                c0, t0 = time.thread_time(), time.perf_counter()
                v.torch_model(x)
                c1, t1 = time.thread_time(), time.perf_counter()
                v.session.run(None, {names[i]: feed})
                c2, t2 = time.thread_time(), time.perf_counter()
                if r >= warmup:
                    v.times["torch"].append(1000 * (t1 - t0))
                    v.times["ort"].append(1000 * (t2 - t1))
                    v.times["torch_cpu"].append(1000 * (c1 - c0))
                    v.times["ort_cpu"].append(1000 * (c2 - c1))


def read_profile(sess: ort.InferenceSession) -> list[dict[str, Any]]:
    """Stop ONNX Runtime's profiler and return its events (the JSON file it wrote)."""
    with open(sess.end_profiling()) as f:
        return json.load(f)


def profile_torch(model: nn.Module, x: torch.Tensor, reps: int) -> tuple[dict[str, float], float]:
    """(self CPU ms per aten op per forward from torch.profiler, median wall ms per forward without the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    walls = []
    with torch.inference_mode():
        for _ in range(2 + reps):
            t0 = time.perf_counter()
            model(x)
            walls.append(1000 * (time.perf_counter() - t0))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                model(x)
    ops = {e.key: e.self_cpu_time_total / 1000 / reps for e in prof.key_averages()}
    return ops, statistics.median(walls[2:])


def profile_ort(path: Path, x: np.ndarray, reps: int, threads: int, tmp: Path) -> tuple[dict[str, float], float]:
    """(kernel ms per ONNX op type per run from ONNX Runtime's node profile, median wall ms per run unprofiled)."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    walls = []
    for _ in range(2 + reps):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        walls.append(1000 * (time.perf_counter() - t0))
    sess = ort_session(path, threads, str(tmp / f"ortprof-{path.stem}"))
    for _ in range(2 + reps):
        sess.run(None, {name: x})
    events = read_profile(sess)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    t_cut = runs[2]["ts"] if len(runs) > 2 else 0  # skip the two warm-up runs
    ops: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= t_cut:
            ops[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1000 / reps
    return dict(ops), statistics.median(walls[2:])


def print_profile(name: str, base: Variant, pruned: Variant, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Per op and per layer: ms per forward unpruned vs pruned and how much each shrank, in both backends.

    The two models are profiled alternately twice and each op keeps its smaller time (less noise from other load).
    """
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    reps = max(3, min(10, args.runs))
    mr = base.macs / pruned.macs
    record: dict[str, Any] = {"pruned": pruned.label, "macs_ratio": mr}
    for backend, title in (("torch", "PyTorch (torch.profiler self CPU time)"), ("ort", "ONNX Runtime (node profile)")):
        samples: dict[str, list[tuple[dict[str, float], float]]] = {"base": [], "pruned": []}
        for _ in range(2):
            for key, v in (("base", base), ("pruned", pruned)):
                if backend == "torch":
                    samples[key].append(profile_torch(v.torch_model, x, reps))
                else:
                    samples[key].append(profile_ort(v.onnx_path, x.numpy(), reps, args.threads, tmp))
        ops = {
            key: {k: min(s[0].get(k, 0.0) for s in samples[key]) for k in set().union(*(s[0] for s in samples[key]))}
            for key in samples
        }
        wall = {key: min(s[1] for s in samples[key]) for key in samples}
        record[backend] = {"ops_ms": ops, "wall_ms": wall}
        print(f"\n### Where the time goes, {title}: {name} unpruned vs {pruned.label} (MACs ratio {mr:.2f}x)\n")
        print("| op | unpruned ms | pruned ms | shrink | share of unpruned ops | share of pruned ops |")
        print("|---|---:|---:|---:|---:|---:|")
        tot = {k: sum(ops[k].values()) for k in ops}
        names = sorted(ops["base"], key=lambda k: -ops["base"][k])
        top = [k for k in names if ops["base"][k] >= 0.01 * tot["base"]][:12]
        rest = {k: sum(v for n, v in ops[k].items() if n not in top) for k in ops}
        rows = [(n, ops["base"].get(n, 0.0), ops["pruned"].get(n, 0.0)) for n in top]
        rows += [("(other ops)", rest["base"], rest["pruned"]), ("all ops", tot["base"], tot["pruned"])]
        for n, u, q in rows:
            shrink = f"{u / q:.2f}x" if q > 0 and u > 0 else "-"
            share = f"{100 * u / tot['base']:.0f}% | {100 * q / tot['pruned']:.0f}%"
            print(f"| {n} | {u:.2f} | {q:.2f} | {shrink} | {share} |")
    record["layers"] = print_layers(name, base, pruned, args, tmp)
    return record


def _conv_macs_hook(store: dict[str, float], key: str) -> Any:
    """Forward hook adding a conv's MACs for this call (batch 1) to store[key]."""

    def hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]  # in_channels / groups * kh * kw
        store[key] += out[0].numel() * k

    return hook


def layer_times_torch(model: nn.Module, x: torch.Tensor, reps: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(thread CPU ms per layer, MACs per layer, CPU ms per whole forward), medians over `reps` forwards.

    Layers are the top-level `model.model[i]`; the Detect head is split into its convs ("i Detect convs") and the
    rest ("i Detect rest": DFL softmax, box decoding, concatenations), which pruning cannot shrink.
    """
    times: dict[str, list[float]] = defaultdict(list)
    macs: dict[str, float] = defaultdict(float)
    handles = []
    starts: dict[str, float] = {}

    def timed(key: str, m: nn.Module) -> None:
        def pre(_m: nn.Module, _i: Any) -> None:
            starts[key] = time.thread_time()

        def post(_m: nn.Module, _i: Any, _o: Any) -> None:
            times[key].append(1000 * (time.thread_time() - starts[key]))

        handles.extend([m.register_forward_pre_hook(pre), m.register_forward_hook(post)])

    layers = list(model.model)
    for i, layer in enumerate(layers):
        name = f"{i} {type(layer).__name__}"
        timed(name, layer)
        head = i == len(layers) - 1
        for j, conv in enumerate(c for c in layer.modules() if isinstance(c, nn.Conv2d)):
            key = f"{i} Detect convs" if head else name
            handles.append(conv.register_forward_hook(_conv_macs_hook(macs, key)))
            if head:
                timed(f"{key}#{j}", conv)
    total = []
    with torch.inference_mode():
        for _ in range(2 + reps):
            macs.clear()
            c0 = time.thread_time()
            model(x)
            total.append(1000 * (time.thread_time() - c0))
    for h in handles:
        h.remove()
    med = {k: statistics.median(v[2:]) for k, v in times.items()}
    head = f"{len(layers) - 1} {type(layers[-1]).__name__}"
    convs = sum(v for k, v in med.items() if k.startswith(f"{len(layers) - 1} Detect convs#"))
    out = {k: v for k, v in med.items() if "#" not in k and k != head}
    out[f"{len(layers) - 1} Detect convs"] = convs
    out[f"{len(layers) - 1} Detect rest"] = med[head] - convs
    return out, dict(macs), statistics.median(total[2:])


def layer_times_ort(path: Path, x: np.ndarray, reps: int, threads: int, tmp: Path, n_layers: int) -> dict[str, float]:
    """Kernel ms per top-level layer from ONNX Runtime's node profile (node names carry `/model.i/`)."""
    sess = ort_session(path, threads, str(tmp / f"ortlayers-{path.stem}"))
    name = sess.get_inputs()[0].name
    for _ in range(2 + reps):
        sess.run(None, {name: x})
    events = read_profile(sess)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    t_cut = runs[2]["ts"] if len(runs) > 2 else 0
    out: dict[str, float] = defaultdict(float)
    head = n_layers - 1
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < t_cut:
            continue
        node = e["name"]
        idx = node.split("/")[1].removeprefix("model.") if node.startswith("/model.") else ""
        key = idx if idx.isdigit() else "(other nodes)"
        if key == str(head):
            key += " convs" if "Conv" in e.get("args", {}).get("op_name", "") else " rest"
        out[key] += e["dur"] / 1000 / reps
    return dict(out)


def print_layers(name: str, base: Variant, pruned: Variant, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Per layer: MACs ratio vs time ratio in both backends; shows which layers pay more per MAC after pruning."""
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    reps = max(5, min(15, args.runs))
    n_layers = len(base.torch_model.model)
    res: dict[str, dict[str, Any]] = {}
    for key, v in (("base", base), ("pruned", pruned)):
        runs = [layer_times_torch(v.torch_model, x, reps) for _ in range(2)]  # min of two: less noise
        t = {k: min(r[0][k] for r in runs) for k in runs[0][0]}
        o = [layer_times_ort(v.onnx_path, x.numpy(), reps, args.threads, tmp, n_layers) for _ in range(2)]
        res[key] = {
            "torch_ms": t, "macs": runs[0][1], "forward_ms": min(r[2] for r in runs),
            "ort_ms": {k: min(r.get(k, 0.0) for r in o) for k in set().union(*o)},
        }
    b, p = res["base"], res["pruned"]
    print(
        f"\n### Per layer: {name} unpruned vs {pruned.label}, MACs vs time (thread CPU ms per image, hooks on "
        "model.model[i] in PyTorch, node profile in ONNX Runtime)\n"
    )
    print("| layer | GMACs | MACs ratio | PyTorch ms | time ratio | eff. | ORT ms | time ratio | eff. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layer in b["torch_ms"]:
        idx = layer.split()[0]
        ort_key = idx + (" convs" if layer.endswith("convs") else " rest" if layer.endswith("rest") else "")
        mb, mp = b["macs"].get(layer, 0.0), p["macs"].get(layer, 0.0)
        tb, tp = b["torch_ms"][layer], p["torch_ms"].get(layer, 0.0)
        ob, op = b["ort_ms"].get(ort_key, 0.0), p["ort_ms"].get(ort_key, 0.0)
        mr = mb / mp if mp else None
        cells = [layer, f"{mb / 1e9:.3f} → {mp / 1e9:.3f}" if mb else "-", f"{mr:.2f}x" if mr else "-"]
        for u, q in ((tb, tp), (ob, op)):
            tr = u / q if q > 0 else None
            cells += [f"{u:.2f} → {q:.2f}", f"{tr:.2f}x" if tr else "-", f"{tr / mr:.2f}" if tr and mr else "-"]
        print("| " + " | ".join(cells) + " |")
    mb, mp = sum(b["macs"].values()), sum(p["macs"].values())
    lb, lp = sum(b["torch_ms"].values()), sum(p["torch_ms"].values())
    ob, op = sum(b["ort_ms"].values()), sum(p["ort_ms"].values())
    print(
        f"| all layers | {mb / 1e9:.3f} → {mp / 1e9:.3f} | {mb / mp:.2f}x | {lb:.2f} → {lp:.2f} | {lb / lp:.2f}x | "
        f"{lb / lp / (mb / mp):.2f} | {ob:.2f} → {op:.2f} | {ob / op:.2f}x | {ob / op / (mb / mp):.2f} |"
    )
    fb, fp = b["forward_ms"], p["forward_ms"]
    print(
        f"| whole forward (PyTorch; outside layers {fb - lb:.2f} → {fp - lp:.2f}) | | | {fb:.2f} → {fp:.2f} | "
        f"{fb / fp:.2f}x | {fb / fp / (mb / mp):.2f} | | | |"
    )
    print(
        "\nGMACs here are the convolutions' multiply-accumulates (batch 1) counted by hooks; eff. = time ratio / MACs "
        "ratio per layer. Layer i Detect is split into its convs and the rest (DFL softmax, decoding, concatenation)."
    )
    return res


def print_tables(results: dict[str, list[Variant]], args: argparse.Namespace) -> None:
    """The speedup table, and the round_to comparison where one was asked for."""
    print(
        f"\n### Pruned vs unpruned, batch 1, imgsz {args.imgsz}, CPU, {args.threads} thread(s), median of "
        f"{args.runs} interleaved runs (L1, uniform ratio; efficiency = speedup / MACs ratio, target >= "
        f"{TARGET_EFFICIENCY})\n"
    )
    print(
        "| model | variant | GMACs | MACs ratio | params | PyTorch ms | PyTorch speedup | PyTorch eff. (CPU-time eff.) "
        "| ORT ms | ORT speedup | ORT eff. (CPU-time eff.) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, variants in results.items():
        base = variants[0]
        for v in variants:
            mr = base.macs / v.macs
            cells = [name, v.label, f"{v.macs / 1e9:.2f}", f"{mr:.2f}x", f"{v.params / 1e6:.2f}M"]
            for b in ("torch", "ort"):
                sp = base.median(b) / v.median(b)
                eff, eff_cpu = sp / mr, base.median(f"{b}_cpu") / v.median(f"{b}_cpu") / mr
                mark = "" if v is base or eff >= TARGET_EFFICIENCY else " ✗"
                cells += [f"{v.median(b):.1f}", f"{sp:.2f}x", f"{eff:.2f}{mark} ({eff_cpu:.2f})"]
            print("| " + " | ".join(cells) + " |")

    if not args.round_to:
        return
    print(f"\n### round_to at ratio {args.round_ratio}: channel counts rounded to multiples of N\n")
    print(
        "| model | round_to | GMACs | MACs ratio | PyTorch speedup | PyTorch eff. (CPU-time) | ORT speedup "
        "| ORT eff. (CPU-time) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, variants in results.items():
        base = variants[0]
        for v in variants[1:]:
            if abs(v.ratio - args.round_ratio) > 1e-9:
                continue
            mr = base.macs / v.macs
            sp = {b: base.median(b) / v.median(b) for b in ("torch", "ort", "torch_cpu", "ort_cpu")}
            print(
                f"| {name} | {v.round_to or 'None'} | {v.macs / 1e9:.2f} | {mr:.2f}x | {sp['torch']:.2f}x | "
                f"{sp['torch'] / mr:.2f} ({sp['torch_cpu'] / mr:.2f}) | {sp['ort']:.2f}x | {sp['ort'] / mr:.2f} "
                f"({sp['ort_cpu'] / mr:.2f}) |"
            )


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the commands in RESULTS_latency_modules.md give the numbers there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="Ultralytics/yolo_ext model names")
    parser.add_argument("--ratios", nargs="+", type=float, default=DEFAULT_RATIOS, help="uniform pruning ratios")
    parser.add_argument("--imgsz", type=int, default=640, help="input size for timing and MACs")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--criterion", default="l1", help="pruning importance criterion")
    parser.add_argument(
        "--round-to", nargs="*", type=int, default=[8],
        help="also prune at --round-ratio with channel counts rounded to these multiples (none: skip)",
    )
    parser.add_argument("--round-ratio", type=float, default=0.4, help="ratio for the --round-to comparison")
    parser.add_argument(
        "--malloc", default="default", choices=["default", "keep"],
        help="glibc malloc as users get it, or told to keep freed memory (no page faults in the PyTorch forward)",
    )
    parser.add_argument("--profile", default="", help="per-op and per-layer breakdown for this model (one of --models)")
    parser.add_argument("--json", default="", help="also write raw timings and numbers to this file")
    return parser


def main(args: argparse.Namespace) -> None:
    """Prepare, time and tabulate every model's variants, one model at a time (memory stays bounded)."""
    torch.set_num_threads(args.threads)
    if args.malloc == "keep" and not keep_freed_memory():
        print("WARNING: could not set glibc malloc options; timing with the defaults", file=sys.stderr)
    warnings.filterwarnings("ignore")
    LOGGER.setLevel(logging.WARNING)  # the exporter's banner would interleave with the tables
    t_start = time.monotonic()
    load_before = os.getloadavg()
    results: dict[str, list[Variant]] = {}
    loads: dict[str, float] = {}
    prof: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="yolo_ext_latency_") as d:
        tmp = Path(d)
        for name in args.models:
            t0 = time.monotonic()
            variants = prepare_variants(name, args, tmp)
            t1 = time.monotonic()
            snap = cpu_snapshot()
            time_round_robin(variants, args.imgsz, args.runs, args.warmup)
            loads[name] = other_load(snap, cpu_snapshot())
            results[name] = variants
            print(
                f"[{name}] prepared {len(variants)} variants in {t1 - t0:.0f}s, timed in {time.monotonic() - t1:.0f}s "
                f"(other processes busy {loads[name]:.2f} cores); medians ms torch/ort: "
                + ", ".join(f"{v.label} {v.median('torch'):.1f}/{v.median('ort'):.1f}" for v in variants),
                file=sys.stderr,
                flush=True,
            )
            if args.profile == name:
                plain = [v for v in variants[1:] if v.round_to is None] or variants[1:]
                prof = print_profile(name, variants[0], max(plain, key=lambda v: v.ratio), args, tmp)
            for v in variants:  # free memory before the next model
                v.torch_model = v.session = None
        print_tables(results, args)
    total = time.monotonic() - t_start
    print(
        f"\nTotal {total:.0f} s. {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"onnxruntime {ort.__version__} ({args.threads} intra-op thread); 1-min load average {load_before[0]:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after; other processes kept "
        + ", ".join(f"{k} {v:.2f}" for k, v in loads.items())
        + " cores busy on average while each model was timed. ✗: efficiency below the target. "
        + f"ONNX Runtime vs PyTorch max abs diff: {max(v.ort_max_diff for vs in results.values() for v in vs):.1e}."
    )
    if args.json:
        record = {
            "args": vars(args),
            "date": datetime.now().isoformat(timespec="seconds"),
            "total_s": total,
            "other_load_cores": loads,
            "profile": prof,
            "results": {
                name: [
                    {
                        "label": v.label, "ratio": v.ratio, "round_to": v.round_to, "macs": v.macs, "params": v.params,
                        "prune_s": v.prune_s, "ort_max_diff": v.ort_max_diff, "times_ms": v.times,
                        "median_ms": {b: v.median(b) for b in v.times},
                    }
                    for v in vs
                ]
                for name, vs in results.items()
            },
        }
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
