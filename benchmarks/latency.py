"""Does structured pruning make YOLO detectors as much faster on a CPU as their MACs reduction promises?

Each model (`--models`) is pruned at each ratio (`--ratios`; `yolo_ext.prune.prune_model`, L1, uniform), saved as a
checkpoint and timed at batch 1 on the CPU as deployed: fused FP32 in PyTorch, and Ultralytics' ONNX export in ONNX
Runtime (checked against PyTorch, `ort_max_diff`). The unpruned model and all its prunings are timed in one
round-robin (`benchmarks/harness.py`); tables show medians, speedup, and efficiency = speedup / MACs ratio (target
>= 0.8), with the thread-CPU-time efficiency in parentheses as the noise-resistant cross-check. `--round-to` also
prunes at `--round-ratio` with channel counts rounded to multiples of N; `--profile MODEL` breaks the unpruned vs
highest-ratio variant down by op and by layer.

  python benchmarks/latency.py                                  # 5 models x ratios 0.2 0.4 0.6 (+ round_to 8)
  python benchmarks/latency.py --models yolo11n --ratios 0.4 --runs 10 --round-to
  python benchmarks/latency.py --profile yolo11n --json latency.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness  # noqa: I001 (first: sets YOLO_OFFLINE before Ultralytics is imported)
import onnxruntime as ort
import torch
from harness import Deployed, Samples, log, markdown_table
from torch import nn

from yolo_ext.prune import PruneConfig, prune_model
from yolo_ext.prune.checkpoint import load_prunable_checkpoint, save_pruned

DEFAULT_MODELS = ["yolov8n", "yolov8s", "yolo11n", "yolo11s", "yolo26n"]
DEFAULT_RATIOS = [0.2, 0.4, 0.6]
TARGET_EFFICIENCY = 0.8
PARITY_TOL = 1e-3


@dataclass
class Variant:
    """One model to time: the unpruned baseline or one pruning of it."""

    label: str
    ratio: float
    round_to: int | None
    macs: float
    params: int
    pt_path: Path
    prune_s: float = 0.0
    run: Deployed | None = None
    ort_max_diff: float = float("nan")
    times: dict[str, Samples] = field(default_factory=lambda: {"torch": Samples(), "ort": Samples()})

    def median(self, backend: str) -> float:
        """Median ms of "torch" / "ort", or of their thread CPU time ("torch_cpu" / "ort_cpu")."""
        s = self.times[backend.removesuffix("_cpu")]
        return s.median_cpu if backend.endswith("_cpu") else s.median


def prepare_variants(name: str, args: argparse.Namespace, tmp: Path) -> list[Variant]:
    """Baseline and every pruning of `name`: pruned, saved, reloaded, fused, exported and parity-checked."""
    src = harness.save_checkpoint(name, tmp / f"{name}.pt")
    specs = [(r, None) for r in args.ratios] + [(args.round_ratio, n) for n in args.round_to]
    variants: list[Variant] = []
    for ratio, round_to in specs:
        ckpt, model = load_prunable_checkpoint(src)
        t0 = time.perf_counter()
        res = prune_model(model, PruneConfig(ratio=ratio, criterion=args.criterion, imgsz=args.imgsz,
                                             round_to=round_to))
        prune_s = time.perf_counter() - t0
        label = f"p{round(100 * ratio)}" + (f"/r{round_to}" if round_to else "")
        out = save_pruned(ckpt, res, src, tmp / f"{name}-{label.replace('/', '-')}.pt")
        variants.append(Variant(label, ratio, round_to, res.macs_after, res.params_after, out, prune_s))
    variants.insert(0, Variant("unpruned", 0.0, None, res.macs_before, res.params_before, src))
    x = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(1))
    for v in variants:
        v.run = harness.deploy(v.pt_path, args.imgsz, args.threads, x)
        if not v.run.ort_max_diff <= PARITY_TOL:
            print(f"WARNING {name} {v.label}: ONNX Runtime differs from PyTorch by {v.run.ort_max_diff:g}",
                  file=sys.stderr)
    return variants


def time_round_robin(variants: list[Variant], imgsz: int, runs: int, warmup: int) -> None:
    """Each round times every variant in PyTorch, then in ONNX Runtime; fills `v.times`."""
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        samples = harness.interleaved([v.run.runners(x) for v in variants], runs, warmup)
    for v, (t, o) in zip(variants, samples):
        v.times = {"torch": t, "ort": o}


def _ms(u: float, q: float) -> str:
    return f"{u:.2f} → {q:.2f}"


def _ratio(u: float, q: float) -> float | None:
    return u / q if q > 0 and u > 0 else None


def print_profile(name: str, base: Variant, pruned: Variant, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Per op, in both backends: ms per forward unpruned vs pruned and how much each shrank (min of 2 alternating
    profiles per model: less noise from other load)."""
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    reps = max(3, min(10, args.runs))
    mr = base.macs / pruned.macs
    record: dict[str, Any] = {"pruned": pruned.label, "macs_ratio": mr}
    for backend, title in (("torch", "PyTorch (torch.profiler self CPU time)"), ("ort", "ONNX Runtime (node profile)")):
        samples: dict[str, list[dict[str, float]]] = {"base": [], "pruned": []}
        for i in range(2):
            for key, v in (("base", base), ("pruned", pruned)):
                if backend == "torch":
                    with torch.inference_mode():
                        v.run.torch_model(x), v.run.torch_model(x)
                        samples[key].append(harness.torch_op_ms(lambda m=v.run.torch_model: m(x), reps))
                else:
                    ops: dict[str, float] = defaultdict(float)
                    for _, op, ms in harness.ort_node_ms(v.run.onnx_path, x.numpy(), reps, args.threads,
                                                         str(tmp / f"ortprof-{v.run.onnx_path.stem}-{i}")):
                        ops[op] += ms
                    samples[key].append(dict(ops))
        ops = {key: harness.opwise_min(s) for key, s in samples.items()}
        record[backend] = {"ops_ms": ops}
        tot = {k: sum(ops[k].values()) for k in ops}
        top = [k for k in sorted(ops["base"], key=lambda k: -ops["base"][k]) if ops["base"][k] >= 0.01 * tot["base"]]
        top = top[:12]
        rest = {k: sum(v for n, v in ops[k].items() if n not in top) for k in ops}
        rows = [(n, ops["base"].get(n, 0.0), ops["pruned"].get(n, 0.0)) for n in top]
        rows += [("(other ops)", rest["base"], rest["pruned"]), ("all ops", tot["base"], tot["pruned"])]
        print(f"\n### Where the time goes, {title}: {name} unpruned vs {pruned.label} (MACs ratio {mr:.2f}x)\n")
        print(markdown_table(
            ["op", "unpruned ms", "pruned ms", "shrink", "share of unpruned ops", "share of pruned ops"], "lrrrrr",
            [[n, f"{u:.2f}", f"{q:.2f}", f"{r:.2f}x" if (r := _ratio(u, q)) else "-",
              f"{100 * u / tot['base']:.0f}%", f"{100 * q / tot['pruned']:.0f}%"] for n, u, q in rows],
        ))
    record["layers"] = print_layers(name, base, pruned, args, tmp)
    return record


def layer_times_torch(model: nn.Module, x: torch.Tensor, reps: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(thread CPU ms per layer, conv MACs per layer, CPU ms per whole forward).

    Layers are the top-level `model.model[i]`; the Detect head is split into its convs ("i Detect convs") and the
    rest ("i Detect rest": DFL softmax, box decoding, concatenations), which pruning cannot shrink.
    """
    layers = list(model.model)
    head = len(layers) - 1
    named = {f"{i} {type(m).__name__}": m for i, m in enumerate(layers)}
    head_convs = [c for c in layers[-1].modules() if isinstance(c, nn.Conv2d)]
    timed = {**named, **{f"{head} Detect convs#{j}": c for j, c in enumerate(head_convs)}}
    med, total = harness.layer_cpu_ms(model, timed, x, reps)
    head_name = f"{head} {type(layers[-1]).__name__}"
    convs = sum(v for k, v in med.items() if "#" in k)
    out = {k: v for k, v in med.items() if "#" not in k and k != head_name}
    out[f"{head} Detect convs"], out[f"{head} Detect rest"] = convs, med[head_name] - convs

    macs: dict[str, float] = defaultdict(float)
    handles = []
    for name, layer in named.items():
        for conv in (c for c in layer.modules() if isinstance(c, nn.Conv2d)):
            key = f"{head} Detect convs" if layer is layers[-1] else name

            def hook(m: nn.Conv2d, _i: Any, o: torch.Tensor, key: str = key) -> None:
                macs[key] += o[0].numel() * m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]

            handles.append(conv.register_forward_hook(hook))
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return out, dict(macs), total


def layer_times_ort(path: Path, x: Any, reps: int, threads: int, prefix: str, n_layers: int) -> dict[str, float]:
    """Kernel ms per top-level layer from ONNX Runtime's node profile (Detect split into convs and rest)."""
    out: dict[str, float] = defaultdict(float)
    for node, op, ms in harness.ort_node_ms(path, x, reps, threads, prefix):
        idx = node.split("/")[1].removeprefix("model.") if node.startswith("/model.") else ""
        key = idx if idx.isdigit() else "(other nodes)"
        if key == str(n_layers - 1):
            key += " convs" if "Conv" in op else " rest"
        out[key] += ms
    return dict(out)


def print_layers(name: str, base: Variant, pruned: Variant, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Per layer: MACs ratio vs time ratio in both backends; shows which layers pay more per MAC after pruning."""
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    reps = max(5, min(15, args.runs))
    n_layers = len(base.run.torch_model.model)
    res: dict[str, dict[str, Any]] = {}
    for key, v in (("base", base), ("pruned", pruned)):
        runs = [layer_times_torch(v.run.torch_model, x, reps) for _ in range(2)]  # min of two: less noise
        o = [layer_times_ort(v.run.onnx_path, x.numpy(), reps, args.threads,
                             str(tmp / f"ortlayers-{v.run.onnx_path.stem}-{i}"), n_layers) for i in range(2)]
        res[key] = {"torch_ms": harness.opwise_min([r[0] for r in runs]), "macs": runs[0][1],
                    "forward_ms": min(r[2] for r in runs), "ort_ms": harness.opwise_min(o)}
    b, p = res["base"], res["pruned"]
    rows = []
    for layer in b["torch_ms"]:
        idx = layer.split()[0]
        ort_key = idx + (" convs" if layer.endswith("convs") else " rest" if layer.endswith("rest") else "")
        mb, mp = b["macs"].get(layer, 0.0), p["macs"].get(layer, 0.0)
        mr = _ratio(mb, mp)
        cells = [layer, f"{mb / 1e9:.3f} → {mp / 1e9:.3f}" if mb else "-", f"{mr:.2f}x" if mr else "-"]
        for u, q in ((b["torch_ms"][layer], p["torch_ms"].get(layer, 0.0)),
                     (b["ort_ms"].get(ort_key, 0.0), p["ort_ms"].get(ort_key, 0.0))):
            tr = u / q if q > 0 else None
            cells += [_ms(u, q), f"{tr:.2f}x" if tr else "-", f"{tr / mr:.2f}" if tr and mr else "-"]
        rows.append(cells)
    mb, mp = sum(b["macs"].values()), sum(p["macs"].values())
    lb, lp = sum(b["torch_ms"].values()), sum(p["torch_ms"].values())
    ob, op = sum(b["ort_ms"].values()), sum(p["ort_ms"].values())
    fb, fp = b["forward_ms"], p["forward_ms"]
    rows.append(["all layers", f"{mb / 1e9:.3f} → {mp / 1e9:.3f}", f"{mb / mp:.2f}x", _ms(lb, lp), f"{lb / lp:.2f}x",
                 f"{lb / lp / (mb / mp):.2f}", _ms(ob, op), f"{ob / op:.2f}x", f"{ob / op / (mb / mp):.2f}"])
    rows.append([f"whole forward (PyTorch; outside layers {fb - lb:.2f} → {fp - lp:.2f})", "", "", _ms(fb, fp),
                 f"{fb / fp:.2f}x", f"{fb / fp / (mb / mp):.2f}", "", "", ""])
    print(f"\n### Per layer: {name} unpruned vs {pruned.label}, MACs vs time (thread CPU ms per image, hooks on "
          "model.model[i] in PyTorch, node profile in ONNX Runtime)\n")
    print(markdown_table(["layer", "GMACs", "MACs ratio", "PyTorch ms", "time ratio", "eff.", "ORT ms", "time ratio",
                          "eff."], "lrrrrrrrr", rows))
    print("\nGMACs here are the convolutions' multiply-accumulates (batch 1) counted by hooks; eff. = time ratio / "
          "MACs ratio per layer. Layer i Detect is split into its convs and the rest (DFL softmax, decoding, "
          "concatenation).")
    return res


def print_tables(results: dict[str, list[Variant]], args: argparse.Namespace) -> None:
    """The speedup table, and the round_to comparison where one was asked for."""
    rows = []
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
            rows.append(cells)
    print(f"\n### Pruned vs unpruned, batch 1, imgsz {args.imgsz}, CPU, {args.threads} thread(s), median of "
          f"{args.runs} interleaved runs (L1, uniform ratio; efficiency = speedup / MACs ratio, target >= "
          f"{TARGET_EFFICIENCY})\n")
    print(markdown_table(["model", "variant", "GMACs", "MACs ratio", "params", "PyTorch ms", "PyTorch speedup",
                          "PyTorch eff. (CPU-time eff.)", "ORT ms", "ORT speedup", "ORT eff. (CPU-time eff.)"],
                         "llrrrrrrrrr", rows))
    if not args.round_to:
        return
    rows = []
    for name, variants in results.items():
        base = variants[0]
        for v in variants[1:]:
            if abs(v.ratio - args.round_ratio) > 1e-9:
                continue
            mr = base.macs / v.macs
            sp = {b: base.median(b) / v.median(b) for b in ("torch", "ort", "torch_cpu", "ort_cpu")}
            rows.append([name, v.round_to or "None", f"{v.macs / 1e9:.2f}", f"{mr:.2f}x", f"{sp['torch']:.2f}x",
                         f"{sp['torch'] / mr:.2f} ({sp['torch_cpu'] / mr:.2f})", f"{sp['ort']:.2f}x",
                         f"{sp['ort'] / mr:.2f} ({sp['ort_cpu'] / mr:.2f})"])
    print(f"\n### round_to at ratio {args.round_ratio}: channel counts rounded to multiples of N\n")
    print(markdown_table(["model", "round_to", "GMACs", "MACs ratio", "PyTorch speedup", "PyTorch eff. (CPU-time)",
                          "ORT speedup", "ORT eff. (CPU-time)"], "llrrrrrr", rows))


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the commands in RESULTS.md give the numbers there."""
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
    harness.setup(args.threads)
    if args.malloc == "keep" and not harness.keep_freed_memory():
        print("WARNING: could not set glibc malloc options; timing with the defaults", file=sys.stderr)
    clock = harness.RunClock()
    results: dict[str, list[Variant]] = {}
    loads: dict[str, float] = {}
    prof: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="yolo_ext_latency_") as d:
        for name in args.models:
            t0 = time.monotonic()
            variants = prepare_variants(name, args, Path(d))
            t1 = time.monotonic()
            with harness.other_load() as load:
                time_round_robin(variants, args.imgsz, args.runs, args.warmup)
            loads[name] = load.cores
            results[name] = variants
            log(f"[{name}] prepared {len(variants)} variants in {t1 - t0:.0f}s, timed in {time.monotonic() - t1:.0f}s "
                f"(other processes busy {load.cores:.2f} cores); medians ms torch/ort: "
                + ", ".join(f"{v.label} {v.median('torch'):.1f}/{v.median('ort'):.1f}" for v in variants))
            if args.profile == name:
                plain = [v for v in variants[1:] if v.round_to is None] or variants[1:]
                prof = print_profile(name, variants[0], max(plain, key=lambda v: v.ratio), args, Path(d))
            for v in variants:  # free memory before the next model
                v.ort_max_diff, v.run = v.run.ort_max_diff, None
        print_tables(results, args)
    print(
        f"\n{clock.summary()} onnxruntime {ort.__version__} ({args.threads} intra-op thread). Other processes kept "
        + ", ".join(f"{k} {v:.2f}" for k, v in loads.items())
        + " cores busy on average while each model was timed. ✗: efficiency below the target. "
        + f"ONNX Runtime vs PyTorch max abs diff: {max(v.ort_max_diff for vs in results.values() for v in vs):.1e}."
    )
    if args.json:
        harness.write_json(args.json, {
            "args": vars(args), "total_s": clock.seconds, "other_load_cores": loads, "profile": prof,
            "results": {name: [{
                "label": v.label, "ratio": v.ratio, "round_to": v.round_to, "macs": v.macs, "params": v.params,
                "prune_s": v.prune_s, "ort_max_diff": v.ort_max_diff,
                "times_ms": {**{b: s.wall for b, s in v.times.items()},
                             **{f"{b}_cpu": s.cpu for b, s in v.times.items()}},
                "median_ms": {b: v.median(b) for b in ("torch", "ort", "torch_cpu", "ort_cpu")},
            } for v in vs] for name, vs in results.items()},
        })


if __name__ == "__main__":
    main(get_args_parser().parse_args())
