"""What do yolo_ext's attention modules cost, in a YOLO11n and against textbook implementations of the same modules?

Part 1, models: plain yolo11n next to every shipped yolo_ext YAML of the family at that scale (random weights, seed
0): params, GFLOPs (`get_flops`: thop counts convs and matmuls, not the attention's element-wise work), CPU latency at
batch 1 (fused PyTorch and the ONNX export in ONNX Runtime, all models in one round-robin, median), the attention
layers' own time, and one training step's memory at `--mem-batch` / `--mem-imgsz` in a fresh child per model and
repeat (peak RSS growth via VmHWM reset through /proc/self/clear_refs, and the bytes autograd saves for backward;
children run with MALLOC_MMAP_THRESHOLD_=65536 so RSS follows live memory). Targets for CoordAtt, MCA and
ContextAggregation at the neck: under +5% latency and +10% training memory vs plain yolo11n (✗ marks a miss).
Part 2, modules: ours (`yolo_ext.nn`) vs a textbook implementation written here (adaptive pools, separate BN,
`torch.std`, `.contiguous()` permutes, a loop over MCA's gates, `view`/`bmm`), same weights, at the yolo11n neck
shapes, batch 1 and 4: forward and forward+backward, interleaved, median per call, plus bytes saved for backward.
Where ours is >10% slower both are profiled (`--profile all`: every module). Module timings keep freed memory
(`harness.keep_freed_memory`); thread CPU time in parentheses is the noise-resistant cross-check.
Part 3, checkpoint (on request): gradient checkpointing (`yolo_ext.train.grad_checkpoint`) off vs on, per model, for a
training step at `--ckpt-batch` / `--ckpt-imgsz`: one fresh process per (model, setting, repeat), the setting passed
as `YOLO_EXT_CHECKPOINT` as DDP workers get it, repeats interleaved; peak RSS growth on CPU (as part 1), or
`torch.cuda.max_memory_allocated` with `--device cuda`; bytes saved for backward; median step wall and CPU time.

  python benchmarks/modules.py                                 # parts 1 and 2
  python benchmarks/modules.py --parts modules --profile all     # only the module comparison, with op profiles
  python benchmarks/modules.py --parts checkpoint                # checkpointing at batch 2, imgsz 640 (~4 min on CPU)
  python benchmarks/modules.py --parts checkpoint --device cuda --ckpt-batch 16   # the same on a GPU
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # noqa: I001 (first: sets YOLO_OFFLINE before Ultralytics is imported)
import torch
import torch.nn.functional as F
from harness import log, markdown_table
from torch import nn

LAT_TARGET = 0.05  # +5% latency
MEM_TARGET = 0.10  # +10% training memory
SLOWER = 1.10  # ours/textbook above this gets profiled
SHAPES = [(64, 80), (128, 40), (256, 20)]  # yolo11n neck outputs P3, P4, P5 at imgsz 640: (channels, side)
BATCHES = [1, 4]


# --------------------------------------------------------------------------------------------------------------------
# Textbook implementations: how the modules are usually written from the papers' descriptions and figures.
# --------------------------------------------------------------------------------------------------------------------


class TextbookCoordAtt(nn.Module):
    """Coordinate attention drawn from the paper: two adaptive pools, 1x1 conv + separate BN + h-swish, two gates."""

    def __init__(self, c1: int, reduction: int = 32, min_mid: int = 8) -> None:
        super().__init__()
        mid = max(min_mid, c1 // reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv1 = nn.Conv2d(c1, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_h = nn.Conv2d(mid, c1, 1)
        self.conv_w = nn.Conv2d(mid, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        x_h = self.pool_h(x)  # (N, C, H, 1)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)  # (N, C, W, 1)
        y = self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y = y * F.relu6(y + 3) / 6  # h-swish, as the paper writes it
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.conv_h(y_h))
        a_w = torch.sigmoid(self.conv_w(y_w.permute(0, 1, 3, 2)))
        return x * a_w * a_h

    def copy_from(self, ours: nn.Module) -> None:
        """Take the weights of a yolo_ext CoordAtt (its conv1 is Ultralytics' Conv: conv without bias + BN)."""
        with torch.no_grad():
            self.conv1.weight.copy_(ours.conv1.conv.weight)
            self.conv1.bias.zero_()
            self.bn1.load_state_dict(ours.conv1.bn.state_dict())
            self.conv_h.load_state_dict(ours.conv_h.state_dict())
            self.conv_w.load_state_dict(ours.conv_w.state_dict())


class _StdPool(nn.Module):
    """Per-channel standard deviation over all positions, the way the MCA paper's code pools it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        return x.view(n, c, -1).std(dim=2, keepdim=True).view(n, c, 1, 1)


class TextbookMCAGate(nn.Module):
    """One MCA gate: avg and std pools in a list, learnable mix, 1-D conv along axis 1, sigmoid, rescale."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList([nn.AdaptiveAvgPool2d(1), _StdPool()])
        self.conv = nn.Conv2d(1, 1, (1, k), padding=(0, (k - 1) // 2), bias=False)
        self.weight = nn.Parameter(torch.rand(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, std = (pool(x) for pool in self.pools)
        w = torch.sigmoid(self.weight)
        y = 0.5 * (avg + std) + w[0] * avg + w[1] * std
        y = self.conv(y.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        return x * torch.sigmoid(y).expand_as(x)


class TextbookMCA(nn.Module):
    """MCA in the authors' style: contiguous permuted copies, a loop over the H, W and C gates, the mean of three."""

    PERMS = ((0, 2, 1, 3), (0, 3, 2, 1), (0, 1, 2, 3))  # brings H, W, C to axis 1; each is its own inverse

    def __init__(self, c1: int) -> None:
        super().__init__()
        t = round(abs((math.log2(c1) - 1) / 1.5))
        k = max(t if t % 2 else t - 1, 3)
        self.gates = nn.ModuleList([TextbookMCAGate(3), TextbookMCAGate(3), TextbookMCAGate(k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for gate, perm in zip(self.gates, self.PERMS):
            outs.append(gate(x.permute(*perm).contiguous()).permute(*perm).contiguous())
        return (outs[0] + outs[1] + outs[2]) / 3

    def copy_from(self, ours: nn.Module) -> None:
        """Take the weights of a yolo_ext MCA (h_cw, w_hc, c_hw gates)."""
        with torch.no_grad():
            for mine, theirs in zip(self.gates, (ours.h_cw, ours.w_hc, ours.c_hw)):
                mine.conv.weight.copy_(theirs.conv.weight)
                mine.weight.copy_(theirs.weight)


class TextbookContextAggregation(nn.Module):
    """CATNet's context aggregation with explicit view / softmax / bmm, residual."""

    def __init__(self, c1: int, reduction: int = 1) -> None:
        super().__init__()
        self.c = max(c1 // reduction, 1)
        self.a = nn.Conv2d(c1, 1, 1)
        self.k = nn.Conv2d(c1, 1, 1)
        self.v = nn.Conv2d(c1, self.c, 1)
        self.m = nn.Conv2d(self.c, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.size()
        a = torch.sigmoid(self.a(x))  # (N, 1, H, W)
        k = F.softmax(self.k(x).view(n, h * w, 1), dim=1)  # (N, HW, 1)
        v = self.v(x).view(n, self.c, h * w)  # (N, c, HW)
        y = torch.bmm(v, k).view(n, self.c, 1, 1)
        return x + self.m(y) * a

    def copy_from(self, ours: nn.Module) -> None:
        self.load_state_dict(ours.state_dict())


class TextbookSE(nn.Module):
    """Squeeze-and-excitation with AdaptiveAvgPool2d(1), as in the SE paper's figure."""

    def __init__(self, c1: int, rd: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c1, rd, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(self.pool(x)))))

    def copy_from(self, ours: nn.Module) -> None:
        self.load_state_dict(ours.state_dict())


def module_pairs() -> dict[str, Callable[[int], tuple[nn.Module, nn.Module]]]:
    """Name -> (ours, textbook with the same weights) for a channel count."""
    from yolo_ext.nn import MCA, ContextAggregation, CoordAtt
    from yolo_ext.nn.repvit import SqueezeExcite

    def coordatt(c: int) -> tuple[nn.Module, nn.Module]:
        ours = CoordAtt(c, reduction=32)
        ref = TextbookCoordAtt(c, 32)
        ref.copy_from(ours)
        return ours, ref

    def mca(c: int) -> tuple[nn.Module, nn.Module]:
        ours = MCA(c)
        ref = TextbookMCA(c)
        ref.copy_from(ours)
        return ours, ref

    def ctx(c: int) -> tuple[nn.Module, nn.Module]:
        ours = ContextAggregation(c, reduction=1)
        nn.init.normal_(ours.m.weight, std=0.02)  # a fresh block is an identity: make the output depend on it
        ref = TextbookContextAggregation(c, 1)
        ref.copy_from(ours)
        return ours, ref

    def se(c: int) -> tuple[nn.Module, nn.Module]:
        ours = SqueezeExcite(c)
        ref = TextbookSE(c, ours.rd_channels)
        ref.copy_from(ours)
        return ours, ref

    return {"CoordAtt": coordatt, "MCA": mca, "ContextAggregation": ctx, "SqueezeExcite": se}


# --------------------------------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------------------------------


def saved_bytes(fn: Callable[[], torch.Tensor], exclude: set[int]) -> tuple[torch.Tensor, int]:
    """Run `fn` and count the bytes autograd saves for backward (unique storages, `exclude`d pointers left out)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())



def synthetic_batch(n: int, imgsz: int) -> dict[str, torch.Tensor]:
    """A detection batch Ultralytics' loss accepts: n images, 2 boxes each (normalised xywh), fixed seed."""
    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(n).repeat_interleave(2).float(),
        "cls": torch.randint(0, 80, (2 * n, 1), generator=g).float(),
        "bboxes": torch.rand(2 * n, 4, generator=g) * 0.4 + 0.2,
    }



class TrainingStep:
    """One training step's loss on a fixed batch: Ultralytics' detection loss, or the sum of output means if the loss
    API changed (``how`` says which was used, so the number is kept either way)."""

    def __init__(self, model: nn.Module, data: dict[str, torch.Tensor]) -> None:
        from ultralytics.cfg import get_cfg
        from ultralytics.utils import DEFAULT_CFG

        model.args = get_cfg(DEFAULT_CFG)  # the loss reads its gains from here, as during training
        self.model, self.data, self.how = model.train(), data, "model.loss"

    def __call__(self) -> torch.Tensor:
        if self.how == "model.loss":
            try:
                return self.model.loss(self.data)[0].sum()
            except (AttributeError, KeyError, RuntimeError, TypeError):  # keep the number if the loss API changes
                self.how = "sum of output means"
        out = self.model(self.data["img"])
        tensors = [t for t in (out.values() if isinstance(out, dict) else out) if isinstance(t, torch.Tensor)]
        return sum(t.float().mean() for t in tensors)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``/proc/self/clear_refs``); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(cfg: str, batch: int, imgsz: int, threads: int) -> dict[str, Any]:
    """In a fresh process: one training step's peak RSS growth, saved-for-backward bytes and time."""
    torch.set_num_threads(threads)
    model = harness.build_model(cfg)
    data = synthetic_batch(batch, imgsz)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    step = TrainingStep(model, data)

    step().backward()  # warm-up: one-off allocations (oneDNN primitives, loss buffers) are not the step's
    model.zero_grad(set_to_none=True)
    gc.collect()
    rss0 = harness.proc_status_kb("VmRSS")
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    step().backward()
    step_s = time.perf_counter() - t0
    hwm = harness.proc_status_kb("VmHWM")
    model.zero_grad(set_to_none=True)
    gc.collect()
    loss, saved = saved_bytes(step, params)
    loss.backward()
    return {
        "rss_before_mb": rss0 / 1024,
        "peak_mb": hwm / 1024,
        "growth_mb": (hwm - rss0) / 1024,
        "hwm_reset": reset,
        "saved_mb": saved / 2**20,
        "step_s": step_s,
        "loss": step.how,
    }


def run_memory_child(cfg: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start this script as a memory child for `cfg` and read its JSON line."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child-mem", cfg, "--mem-batch", str(args.mem_batch),
        "--mem-imgsz", str(args.mem_imgsz), "--threads", str(args.threads),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"memory child for {cfg} failed ({p.returncode}): {p.stderr[-800:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------------------------------
# Part 1: models
# --------------------------------------------------------------------------------------------------------------------


def model_configs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(label, buildable YAML path) for the plain model and every shipped yolo_ext YAML of the family."""
    import yolo_ext
    from yolo_ext.cfg import scaled_name

    plain = scaled_name(f"{args.family}.yaml", args.scale)
    out = [(plain, plain)]
    for name in yolo_ext.model_names(args.scale):  # YOLOv10 ships one file per scale: only this scale's
        if name.startswith(f"{plain.removesuffix('.yaml')}-"):
            out.append((name, str(yolo_ext.model_yaml(name))))
    return out



def part_models(args: argparse.Namespace) -> dict[str, Any]:
    """Params, GFLOPs, latency (PyTorch and ONNX Runtime) and training memory of each model vs the plain one."""
    if args.malloc == "keep" and not harness.keep_freed_memory():
        print("WARNING: could not set glibc malloc options; timing with the defaults", file=sys.stderr)
    from ultralytics.utils.torch_utils import get_flops

    configs = model_configs(args)
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, harness.Deployed] = {}
    x = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory(prefix="yolo_ext_modules_") as d:
        for label, cfg in configs:
            model = harness.build_model(cfg)
            rows[label] = {"cfg": cfg, "params": harness.n_params(model), "gflops": get_flops(model, args.imgsz)}
            pt = harness.save_checkpoint(cfg, Path(d) / label.replace(".yaml", ".pt"))
            runs[label] = harness.deploy(pt, args.imgsz, args.threads, x)
            rows[label]["ort_max_diff"] = runs[label].ort_max_diff
            rows[label]["onnx"] = str(runs[label].onnx_path)
            log(f"[models] built and exported {label}")

        with harness.other_load() as lat_load, torch.inference_mode():
            samples = harness.interleaved([r.runners(x) for r in runs.values()], args.runs, args.warmup)
        log(f"[models] latency rounds done (other processes busy {lat_load.cores:.2f} cores)")
        for (label, r), (t, o) in zip(runs.items(), samples):
            rows[label]["times_ms"] = {"torch": t.wall, "ort": o.wall, "torch_cpu": t.cpu, "ort_cpu": o.cpu}
            rows[label]["latency_ms"] = {"torch": t.median, "ort": o.median, "torch_cpu": t.median_cpu,
                                         "ort_cpu": o.median_cpu}
            if label != configs[0][0]:
                rows[label]["attention"] = attention_breakdown(r, x, args, Path(d))
        runs.clear()

    # Training memory: fresh child per (model, repeat), models interleaved within each repeat.
    mem: dict[str, list[dict[str, Any]]] = {lab: [] for lab, _ in configs}
    with harness.other_load() as mem_load:
        for rep in range(args.mem_repeats):
            for label, cfg in configs:
                mem[label].append(run_memory_child(cfg, args))
            log(f"[models] memory repeat {rep + 1}/{args.mem_repeats} done")
    for label, row in rows.items():
        row["memory_runs"] = mem[label]
        row["memory"] = {
            k: statistics.median(m[k] for m in mem[label])
            for k in ("growth_mb", "peak_mb", "rss_before_mb", "saved_mb", "step_s")
        }
        row["loss"] = mem[label][0]["loss"]
    plain = configs[0][0]
    print_models(rows, plain, args)
    print_attention(rows, plain)
    return {"rows": rows, "plain": plain, "latency_other_load": lat_load.cores, "memory_other_load": mem_load.cores}


ATTENTION_TYPES = ("CoordAtt", "MCA", "ContextAggregation")


def attention_breakdown(run: harness.Deployed, x: torch.Tensor, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Own time of the attention layers of a model: PyTorch thread CPU ms (hooks), ONNX Runtime kernel ms by op.

    Says how much of a model's latency change the attention layers themselves explain, and which ONNX ops they
    spend it in (node names carry the layer index as `/model.i/`).
    """
    model = run.torch_model
    idx = [i for i, m in enumerate(model.model) if type(m).__name__ in ATTENTION_TYPES]
    reps = max(5, min(15, args.runs))
    layer_ms, total_ms = harness.layer_cpu_ms(model, {str(i): model.model[i] for i in idx}, x, reps)
    nodes = harness.ort_node_ms(run.onnx_path, x.numpy(), reps, args.threads,
                                str(tmp / f"attprof-{run.onnx_path.stem}"))
    prefixes = tuple(f"/model.{i}/" for i in idx)
    by_op: dict[str, float] = {}
    for node, op, ms in nodes:
        if node.startswith(prefixes):
            by_op[op] = by_op.get(op, 0.0) + ms
    return {
        "layers": idx,
        "torch_ms": sum(layer_ms.values()),
        "torch_total_ms": total_ms,
        "ort_ms": sum(by_op.values()),
        "ort_total_ms": sum(ms for _, _, ms in nodes),
        "ort_ops_ms": by_op,
    }


def print_attention(rows: dict[str, dict[str, Any]], plain: str) -> None:
    """How much time the attention layers themselves take, and in which ONNX ops."""
    table = []
    for label, r in rows.items():
        a = r.get("attention")
        if label == plain or not a or not a["layers"]:
            continue
        top = sorted(a["ort_ops_ms"].items(), key=lambda kv: -kv[1])[:4]
        table.append([label, ", ".join(map(str, a["layers"])), f"{a['torch_ms']:.2f}",
                      f"{100 * a['torch_ms'] / a['torch_total_ms']:.1f}%", f"{a['ort_ms']:.2f}",
                      f"{100 * a['ort_ms'] / a['ort_total_ms']:.1f}%", ", ".join(f"{k} {v:.2f}" for k, v in top)])
    print("\n### Own time of the attention layers (thread CPU ms per image; share of the whole model)\n")
    print(markdown_table(["model", "layers", "PyTorch ms", "share", "ORT ms", "share",
                          "top ONNX Runtime ops in them (ms)"], "llrrrrl", table))


def _pct(v: float, base: float) -> float:
    return 100.0 * (v / base - 1.0)


def print_models(rows: dict[str, dict[str, Any]], plain: str, args: argparse.Namespace) -> None:
    """Absolute numbers and the change vs the plain model; ✗ marks a missed target."""
    b = rows[plain]
    table = []
    for label, r in rows.items():
        attention = label != plain and "rvb" not in label  # targets apply to the attention layers at the neck
        cells = [label, f"{r['params']:,} ({_pct(r['params'], b['params']):+.1f}%)", f"{r['gflops']:.2f}"]
        for bk in ("torch", "ort"):
            v, d = r["latency_ms"][bk], _pct(r["latency_ms"][bk], b["latency_ms"][bk])
            dc = _pct(r["latency_ms"][f"{bk}_cpu"], b["latency_ms"][f"{bk}_cpu"])
            miss = " ✗" if attention and d > 100 * LAT_TARGET else ""
            cells += [f"{v:.1f}", f"{d:+.1f}%{miss} ({dc:+.1f}%)" if label != plain else "-"]
        for key in ("growth_mb", "saved_mb"):
            v, d = r["memory"][key], _pct(r["memory"][key], b["memory"][key])
            miss = " ✗" if attention and d > 100 * MEM_TARGET else ""
            cells += [f"{v:.0f}", f"{d:+.1f}%{miss}" if label != plain else "-"]
        table.append(cells)
    print(
        f"\n### Models vs plain {plain}: params, GFLOPs@{args.imgsz}, CPU latency (batch 1, imgsz {args.imgsz}, "
        f"{args.threads} thread, median of {args.runs} interleaved runs), training step at batch {args.mem_batch}, "
        f"imgsz {args.mem_imgsz} (median of {args.mem_repeats} fresh processes)\n"
    )
    print(markdown_table(["model", "params", "GFLOPs", "PyTorch ms", "Δ (Δ CPU time)", "ORT ms", "Δ (Δ CPU time)",
                          "step peak RSS growth MB", "Δ", "saved for backward MB", "Δ"], "lrrrrrrrrrr", table))
    loss = {r["loss"] for r in rows.values()}
    print(
        f"\nTraining step = forward + {'/'.join(loss)} + backward. Total peak RSS of the step (incl. ~"
        f"{b['memory']['rss_before_mb']:.0f} MB of torch/Ultralytics/model before it): "
        + ", ".join(f"{lab} {r['memory']['peak_mb']:.0f}" for lab, r in rows.items())
        + f" MB. ONNX Runtime vs PyTorch max abs diff: {max(r['ort_max_diff'] for r in rows.values()):.1e}."
    )


# --------------------------------------------------------------------------------------------------------------------
# Part 2: modules, ours vs textbook
# --------------------------------------------------------------------------------------------------------------------


def _call(m: nn.Module, x: torch.Tensor, g: torch.Tensor | None) -> None:
    """One forward (g None) or forward+backward with upstream gradient g."""
    if g is None:
        m(x)
        return
    m.zero_grad(set_to_none=True)
    x.grad = None
    m(x).backward(g)


def _inner_count(m: nn.Module, x: torch.Tensor, g: torch.Tensor | None, target_s: float = 0.004) -> int:
    """Calls per timing sample so that one sample lasts about `target_s` (timer noise stays small)."""
    t0 = time.perf_counter()
    _call(m, x, g)
    return max(1, math.ceil(target_s / max(time.perf_counter() - t0, 1e-6)))


def time_pair(ours: nn.Module, ref: nn.Module, x: torch.Tensor, train: bool, runs: int) -> dict[str, float]:
    """Median ms per call of ours and of the textbook module, wall clock and thread CPU time, samples alternating."""
    mods = (ours, ref)
    for m in mods:
        m.train(train)
    g = torch.randn_like(x) if train else None
    xs = [x.detach().clone().requires_grad_(train) for _ in mods]
    with torch.enable_grad() if train else torch.inference_mode():
        for m, xi in zip(mods, xs):
            for _ in range(3):
                _call(m, xi, g)
        k = max(_inner_count(m, xi, g) for m, xi in zip(mods, xs))  # calls per sample

        def sample(m: nn.Module, xi: torch.Tensor) -> Callable[[], None]:
            return lambda: [_call(m, xi, g) for _ in range(k)]

        (o,), (t,) = harness.interleaved([[sample(m, xi)] for m, xi in zip(mods, xs)], runs)
    return {"ours_ms": o.median / k, "textbook_ms": t.median / k,
            "ours_cpu_ms": o.median_cpu / k, "textbook_cpu_ms": t.median_cpu / k}


def profile_pair(ours: nn.Module, ref: nn.Module, x: torch.Tensor, train: bool, reps: int = 20) -> dict[str, Any]:
    """Self CPU ms per op per call (torch.profiler), ours and textbook, two interleaved samples each, op-wise min."""
    g = torch.randn_like(x) if train else None
    res: dict[str, list[dict[str, float]]] = {"ours": [], "textbook": []}
    for _ in range(2):
        for key, m in (("ours", ours), ("textbook", ref)):
            m.train(train)
            xi = x.detach().clone().requires_grad_(train)
            with torch.enable_grad() if train else torch.inference_mode():
                for _ in range(3):
                    _call(m, xi, g)
                res[key].append(harness.torch_op_ms(functools.partial(_call, m, xi, g), reps))
    return {k: harness.opwise_min(v) for k, v in res.items()}


def print_profile(name: str, shape: tuple[int, int, int, int], train: bool, prof: dict[str, Any]) -> None:
    """Top ops by |ours - textbook| self time."""
    ours, ref = prof["ours"], prof["textbook"]
    ops = sorted(set(ours) | set(ref), key=lambda o: -abs(ours.get(o, 0.0) - ref.get(o, 0.0)))
    rows = [[op, f"{a:.3f}", f"{b:.3f}", f"{a - b:+.3f}"]
            for op in ops[:10] if max(a := ours.get(op, 0.0), b := ref.get(op, 0.0)) >= 0.005]
    a, b = sum(ours.values()), sum(ref.values())
    rows.append(["all ops", f"{a:.3f}", f"{b:.3f}", f"{a - b:+.3f}"])
    mode = "forward+backward (train)" if train else "forward (eval)"
    print(f"\n#### {name}, {mode}, input {tuple(shape)}: self CPU ms per call by op (torch.profiler)\n")
    print(markdown_table(["op", "ours", "textbook", "ours − textbook"], "lrrr", rows))


def part_modules(args: argparse.Namespace) -> dict[str, Any]:
    """Ours vs textbook per module, shape, batch and mode; profiles where ours is clearly slower."""
    pairs = module_pairs()
    kept = harness.keep_freed_memory()
    records: list[dict[str, Any]] = []
    with harness.other_load() as load:
        for name, make in pairs.items():
            for c, s in SHAPES:
                torch.manual_seed(0)
                ours, ref = make(c)
                for n in BATCHES:
                    x = torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(1))
                    ours.eval(), ref.eval()
                    with torch.no_grad():
                        diff = float((ours(x) - ref(x)).abs().max())
                    rec: dict[str, Any] = {"module": name, "shape": [n, c, s, s], "max_diff": diff}
                    for train in (False, True):
                        rec["fwd_bwd" if train else "fwd"] = time_pair(ours, ref, x, train, args.module_runs)
                    for key, m in (("ours", ours), ("textbook", ref)):
                        m.train()
                        xi = x.clone().requires_grad_(True)
                        exclude = {p.untyped_storage().data_ptr() for p in m.parameters()}
                        exclude.add(xi.untyped_storage().data_ptr())  # the input is live anyway in a network
                        out, nbytes = saved_bytes(functools.partial(m, xi), exclude)
                        out.sum().backward()
                        rec[f"saved_mb_{key}"] = nbytes / 2**20
                    records.append(rec)
            log(f"[modules] {name} done")

    def ratio(t: dict[str, float]) -> str:
        rw, rc = t["ours_ms"] / t["textbook_ms"], t["ours_cpu_ms"] / t["textbook_cpu_ms"]
        return f"{rw:.2f} ({rc:.2f})" + (" ▲" if rc > SLOWER else "")

    rows = [[r["module"], tuple(r["shape"]), f"{r['fwd']['ours_ms']:.3f}", f"{r['fwd']['textbook_ms']:.3f}",
             ratio(r["fwd"]), f"{r['fwd_bwd']['ours_ms']:.3f}", f"{r['fwd_bwd']['textbook_ms']:.3f}",
             ratio(r["fwd_bwd"]), f"{r['saved_mb_ours']:.1f} / {r['saved_mb_textbook']:.1f}", f"{r['max_diff']:.1e}"]
            for r in records]
    print(
        f"\n### Our modules vs textbook implementations: median ms per call, wall clock ({args.threads} thread, "
        f"{args.module_runs} interleaved samples); ratio ours/textbook (<1: ours faster) by wall clock and, in "
        "parentheses, by thread CPU time; MB autograd saves for backward\n"
    )
    print(markdown_table(["module", "input (N, C, H, W)", "fwd ours", "fwd textbook", "fwd ratio", "fwd+bwd ours",
                          "fwd+bwd textbook", "fwd+bwd ratio", "saved MB ours / textbook", "max abs diff"],
                         "llrrrrrrrr", rows))
    print(
        f"\n▲: ours more than {100 * (SLOWER - 1):.0f}% slower by CPU time. Other processes kept "
        f"{load.cores:.2f} cores "
        f"busy on average. glibc kept freed memory: {kept}. Max abs diff: outputs of ours and the textbook module "
        "with the same weights (MCA's textbook std is torch.std's unbiased one, ours the population std)."
    )

    def gmean(rs: list[dict[str, Any]], key: str, suffix: str) -> float:
        return math.exp(statistics.mean(math.log(r[key][f"ours{suffix}"] / r[key][f"textbook{suffix}"]) for r in rs))

    rows = []
    for name in pairs:
        rs = [r for r in records if r["module"] == name]
        rows.append([name, *(f"{gmean(rs, k, '_ms'):.2f} ({gmean(rs, k, '_cpu_ms'):.2f})" for k in ("fwd", "fwd_bwd"))])
    print()
    print(markdown_table(["module", "geometric mean ratio ours/textbook, fwd: wall (CPU time)",
                          "fwd+bwd: wall (CPU time)"], "lrr", rows))

    profiles: list[dict[str, Any]] = []
    if args.profile != "none":
        for name, make in pairs.items():
            for key, train in (("fwd", False), ("fwd_bwd", True)):
                rs = [r for r in records if r["module"] == name]
                worst = max(rs, key=lambda r: r[key]["ours_cpu_ms"] / r[key]["textbook_cpu_ms"])
                if args.profile == "auto" and worst[key]["ours_cpu_ms"] / worst[key]["textbook_cpu_ms"] <= SLOWER:
                    continue
                n, c, s, _ = worst["shape"]
                torch.manual_seed(0)
                ours, ref = make(c)
                x = torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(1))
                prof = profile_pair(ours, ref, x, train)
                print_profile(name, (n, c, s, s), train, prof)
                profiles.append({"module": name, "mode": key, "shape": [n, c, s, s], "ops_ms": prof})
    return {"records": records, "other_load": load.cores, "profiles": profiles, "malloc_keep": kept}


# --------------------------------------------------------------------------------------------------------------------
# Part 3: gradient checkpointing, memory saved and time paid
# --------------------------------------------------------------------------------------------------------------------


def child_checkpoint(cfg: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: peak memory and time of training steps, checkpointing as ``YOLO_EXT_CHECKPOINT`` says.

    The switch comes from the environment the parent set, as in Ultralytics' DDP workers. The checkpoint calls are
    counted, so an "on" row that checkpointed nothing (or an "off" row that did) fails instead of printing numbers.
    CPU: peak RSS growth over the timed steps (VmHWM reset after a warm-up step). CUDA: ``max_memory_allocated``
    growth over the same steps, and the absolute peak.
    """
    import yolo_ext
    from yolo_ext.train import grad_checkpoint

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = harness.build_model(cfg).to(device)
    data = {k: v.to(device) for k, v in synthetic_batch(args.ckpt_batch, args.ckpt_imgsz).items()}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    step = TrainingStep(model, data)
    calls = 0
    real = grad_checkpoint.checkpoint

    def counting(*a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*a, **k)

    grad_checkpoint.checkpoint = counting
    checkpointable = sum(grad_checkpoint.is_installed(type(m)) for m in model.modules())
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    step().backward()  # warm-up: one-off allocations (oneDNN primitives, cuDNN plans, loss buffers)
    model.zero_grad(set_to_none=True)
    gc.collect()
    sync()
    per_step = calls
    rss0, reset = harness.proc_status_kb("VmRSS"), reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    alloc0 = torch.cuda.memory_allocated() if cuda else 0
    wall, cpu = [], []
    for _ in range(args.ckpt_steps):
        c0, t0 = time.thread_time(), time.perf_counter()
        step().backward()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        model.zero_grad(set_to_none=True)
    hwm = harness.proc_status_kb("VmHWM")
    out = {
        "checkpointing": yolo_ext.checkpointing_enabled(),
        "checkpointable": checkpointable,
        "checkpoint_calls_per_step": per_step,
        "rss_before_mb": rss0 / 1024,
        "peak_mb": hwm / 1024,
        "growth_mb": (hwm - rss0) / 1024,
        "hwm_reset": reset,
        "step_s": statistics.median(wall),
        "step_cpu_s": statistics.median(cpu),
        "loss": step.how,
    }
    if cuda:
        out["cuda_growth_mb"] = (torch.cuda.max_memory_allocated() - alloc0) / 2**20
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["device_name"] = torch.cuda.get_device_name()
    gc.collect()
    loss, saved = saved_bytes(step, params)
    loss.backward()
    out["saved_mb"] = saved / 2**20
    expected = checkpointable if out["checkpointing"] else 0
    if per_step != expected:
        raise RuntimeError(f"{cfg}: {per_step} checkpoint calls per step, expected {expected}")
    return out


def run_checkpoint_child(cfg: str, on: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Start this script as a checkpointing child for `cfg` with the switch on or off and read its JSON line."""
    env = {
        **os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
        "YOLO_EXT_CHECKPOINT": "1" if on else "0",
    }
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child-ckpt", cfg, "--ckpt-batch", str(args.ckpt_batch),
        "--ckpt-imgsz", str(args.ckpt_imgsz), "--ckpt-steps", str(args.ckpt_steps), "--threads", str(args.threads),
        "--device", args.device,
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"checkpointing child for {cfg} (on={on}) failed ({p.returncode}): {p.stderr[-800:]}")
    return json.loads(lines[-1])


def part_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Training memory and step time of each model with checkpointing off and on: one fresh process per (model,
    setting, repeat), so peaks do not mix; repeats interleave the settings, starting each round at another one."""
    import yolo_ext
    from yolo_ext.cfg import scaled_name

    configs = [(scaled_name(m if m.endswith(".yaml") else f"{m}.yaml", args.scale), on)
               for m in args.ckpt_models for on in (False, True)]
    runs: dict[tuple[str, bool], list[dict[str, Any]]] = {c: [] for c in configs}
    with harness.other_load() as load:
        for rep in range(args.ckpt_repeats):
            for j in range(len(configs)):
                name, on = configs[(rep + j) % len(configs)]
                runs[(name, on)].append(run_checkpoint_child(str(yolo_ext.model_yaml(name)), on, args))
            log(f"[checkpoint] repeat {rep + 1}/{args.ckpt_repeats} done")
    keys = ["growth_mb", "peak_mb", "saved_mb", "step_s", "step_cpu_s"]
    if args.device.startswith("cuda"):
        keys += ["cuda_growth_mb", "cuda_peak_mb"]
    rows = {c: {k: statistics.median(r[k] for r in rs) for k in keys} | {"runs": rs} for c, rs in runs.items()}
    print_checkpoint(rows, args, load.cores)
    return {"rows": {f"{n} {'on' if on else 'off'}": r for (n, on), r in rows.items()}, "other_load": load.cores}


def print_checkpoint(rows: dict[tuple[str, bool], dict[str, Any]], args: argparse.Namespace, load: float) -> None:
    """One row per model and setting; Δ is checkpointing on vs off for the same model."""
    cuda = args.device.startswith("cuda")
    mem = [("cuda_growth_mb", "CUDA max allocated growth MB"), ("cuda_peak_mb", "CUDA max allocated MB")] if cuda \
        else [("growth_mb", "step peak RSS growth MB")]
    mem += [("saved_mb", "saved for backward MB")]
    table = []
    for (name, on), r in rows.items():
        base = rows[(name, False)]
        first = r["runs"][0]
        cells = [name, "on" if on else "off", f"{first['checkpoint_calls_per_step']} / {first['checkpointable']}"]
        for key, _ in mem:
            cells += [f"{r[key]:.0f}", f"{_pct(r[key], base[key]):+.1f}%" if on else "-"]
        d, dc = _pct(r["step_s"], base["step_s"]), _pct(r["step_cpu_s"], base["step_cpu_s"])
        cells += [f"{r['step_s']:.2f}", f"{d:+.1f}% ({dc:+.1f}%)" if on else "-"]
        table.append(cells)
    where = rows[next(iter(rows))]["runs"][0].get("device_name", f"CPU, {args.threads} thread")
    print(
        f"\n### Gradient checkpointing: training step (forward + loss + backward) at batch {args.ckpt_batch}, imgsz "
        f"{args.ckpt_imgsz}, {where}; median of {args.ckpt_repeats} fresh processes per row, {args.ckpt_steps} timed "
        f"steps each after a warm-up (other processes kept {load:.2f} cores busy)\n"
    )
    columns = ["model", "checkpointing", "checkpoint calls / checkpointable modules"]
    for _, title in mem:
        columns += [title, "Δ"]
    columns += ["step s", "Δ (Δ CPU time)"]
    print(markdown_table(columns, "lll" + "rr" * len(mem) + "rr", table))


# --------------------------------------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the commands in RESULTS.md give the numbers there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", default=["models", "modules"], choices=["models", "modules", "checkpoint"],
        help="models and modules by default; checkpoint (gradient checkpointing on vs off) on request",
    )
    parser.add_argument("--family", default="yolo11", help="model family whose shipped YAMLs are compared")
    parser.add_argument("--scale", default="n", choices=list("nslmx"))
    parser.add_argument("--imgsz", type=int, default=640, help="latency and GFLOPs input size")
    parser.add_argument("--runs", type=int, default=30, help="timed latency rounds per model (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed latency rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--mem-batch", type=int, default=4, help="training-step batch size for the memory numbers")
    parser.add_argument("--mem-imgsz", type=int, default=320, help="training-step image size")
    parser.add_argument("--mem-repeats", type=int, default=3, help="fresh child processes per model (median)")
    parser.add_argument("--module-runs", type=int, default=30, help="timing samples per module comparison")
    parser.add_argument(
        "--malloc", default="default", choices=["default", "keep"],
        help="model latency with glibc's default malloc (what users get) or keeping freed memory (no page faults); "
        "module timings always keep it",
    )
    parser.add_argument(
        "--profile", default="auto", choices=["auto", "all", "none"],
        help="torch.profiler ours vs textbook at each module's worst shape: where ours is >10%% slower (auto), "
        "for every module (all), or never",
    )
    parser.add_argument(
        "--ckpt-models", nargs="+", default=["yolo11-rvb-se", "yolo11-mca", "yolo11-coordatt"],
        help="shipped YAMLs (scaled by --scale) measured with gradient checkpointing off and on",
    )
    parser.add_argument("--ckpt-batch", type=int, default=2, help="checkpointing: training-step batch size")
    parser.add_argument("--ckpt-imgsz", type=int, default=640, help="checkpointing: training-step image size")
    parser.add_argument("--ckpt-repeats", type=int, default=2, help="checkpointing: fresh processes per row (median)")
    parser.add_argument("--ckpt-steps", type=int, default=2, help="checkpointing: timed steps per process (median)")
    parser.add_argument("--device", default="cpu", help="checkpointing part: cpu, or cuda for max_memory_allocated")
    parser.add_argument("--json", default="", help="also write all raw numbers to this file")
    parser.add_argument("--child-mem", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child-ckpt", default="", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> None:
    """Run the asked-for parts (or, in a memory child, one training step) and print Markdown tables."""
    if args.child_mem:
        print(json.dumps(child_memory(args.child_mem, args.mem_batch, args.mem_imgsz, args.threads)))
        return
    if args.child_ckpt:
        print(json.dumps(child_checkpoint(args.child_ckpt, args)))
        return
    harness.setup(args.threads)
    clock = harness.RunClock()
    out: dict[str, Any] = {"args": vars(args)}
    if "models" in args.parts:
        out["models"] = part_models(args)
    if "modules" in args.parts:
        out["modules"] = part_modules(args)
    if "checkpoint" in args.parts:
        out["checkpoint"] = part_checkpoint(args)
    out["total_s"] = clock.seconds
    import onnxruntime as ort

    print(f"\n{clock.summary()} onnxruntime {ort.__version__}.")
    if args.json:
        harness.write_json(args.json, out)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
