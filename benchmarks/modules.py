"""What do yolo_ext's attention modules cost, in a YOLO11n and against textbook implementations of the same modules?

Part 1, models: plain yolo11n (`yolo11n.yaml`) next to every shipped yolo_ext YAML of the family at that scale
(CoordAtt, MCA, ContextAggregation at P3 / P3P5 / P3P4P5, C3k2_RVB_SE), each built with random weights (seed 0):
  params, GFLOPs      all parameters; `ultralytics.utils.torch_utils.get_flops(model, 640)` (thop: counts convs and
                      matmuls, not the attention's pooling / std / softmax / gating element-wise work);
  latency             batch 1, `--imgsz` 640, CPU: the fused FP32 model in PyTorch and the ONNX file Ultralytics'
                      exporter writes for it in ONNX Runtime; all models in one round-robin (`--warmup` + `--runs`
                      rounds, the starting model rotating), median;
  training memory     one training step (forward, `model.loss` on a synthetic batch of 2 boxes per image, backward)
                      at `--mem-batch` 4, `--mem-imgsz` 320, in a fresh child process per model and repeat
                      (`--mem-repeats`, interleaved, median). Reported: the step's peak RSS growth (VmHWM after the
                      step, with the high-water mark reset through /proc/self/clear_refs after a warm-up step, minus
                      VmRSS before it: activations, gradients, workspaces), and the bytes autograd saves for backward
                      (saved_tensors_hooks, unique storages, parameters excluded: deterministic). Children run with
                      MALLOC_MMAP_THRESHOLD_=65536, so glibc returns freed tensors to the OS and RSS follows live memory
                      (which also makes their steps slow: their step time is in the JSON only).
  The project's targets for the channel-preserving attention layers at the neck outputs (CoordAtt, MCA,
  ContextAggregation): under +5% latency and under +10% training memory vs plain yolo11n (✗ marks a miss).
Part 2, modules: ours (`yolo_ext.nn`) vs a straightforward textbook implementation written here (adaptive pools,
separate BN, `torch.std`, `.contiguous()` permutes and a loop over MCA's three gates, `view`/`bmm`), same weights
(outputs compared), at the yolo11n neck shapes C=64@80x80, 128@40x40, 256@20x20, batch 1 and 4: forward (eval,
inference mode) and forward+backward (train mode), interleaved, median time per call; plus the bytes saved for
backward. Where ours is >10% slower than the textbook module, both are profiled (torch.profiler, self CPU time by op)
at the worst shape, so the op responsible is named (`--profile all`: every module, at the shape where ours
compares worst). Module timings run with glibc told to keep freed memory (mallopt: no trimming, no mmap below
32 MB): with its defaults the page faults of re-grown heap pages depend on allocation history and made the first
shape timed up to 10x slower for both implementations. Every sample is also timed in thread CPU time
(`time.thread_time`; with one torch thread all work runs on the calling thread), which leaves out the time spent
waiting for a core while other processes run: the noise-resistant cross-check shown in parentheses.

Usage:
  python benchmarks/modules.py                                 # both parts, defaults below
  python benchmarks/modules.py --parts modules --profile all     # only the module comparison, with op profiles
  options: --family yolo11 --scale n --imgsz 640 --runs 30 --warmup 5 --threads 1 --mem-batch 4 --mem-imgsz 320
           --mem-repeats 3 --module-runs 30 --parts models modules --malloc default|keep --profile auto|all|none
           --json PATH
1 torch thread and 1 ONNX Runtime intra-op thread by default (`--threads`): the dev machine has 2 cores shared with
other work. Needs no weights or network (YOLO_OFFLINE=1).

Duration on the 2-core AMD EPYC (AVX-512) dev machine, another developer's test suite keeping ~1 core busy: about
3.5 min for the full default run (209 s measured with `--profile all`, 180-195 s for earlier versions without the
attention-layer breakdown); `--parts modules` alone ~20 s at `--module-runs 9`.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: never reach for the network

import torch
import torch.nn.functional as F
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


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its finished children)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    t = os.times()
    return time.monotonic(), (sum(vals[:8]) - idle) / tick, t.user + t.system + t.children_user + t.children_system


def other_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Average number of cores other processes kept busy between two snapshots."""
    wall = max(end[0] - start[0], 1e-9)
    return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / wall


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


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory (no trimming, no mmap below 32 MB); True if it took.

    With glibc's defaults, whether a freed tensor's pages go back to the OS depends on the allocation history
    (dynamic mmap threshold, heap trimming), so the same call can pay hundreds of page faults in one place and none
    in another: up to 10x on the first shape timed in a process. Module timings compare compute, so they keep memory.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 32 << 20))  # M_TRIM_, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def build_model(cfg: str) -> nn.Module:
    """A DetectionModel from a bundled Ultralytics YAML or a yolo_ext YAML path, random weights (seed 0)."""
    from ultralytics.nn.tasks import DetectionModel

    import yolo_ext  # noqa: F401 (registers the modules with Ultralytics' parser)

    torch.manual_seed(0)
    return DetectionModel(cfg, verbose=False)


def synthetic_batch(n: int, imgsz: int) -> dict[str, torch.Tensor]:
    """A detection batch Ultralytics' loss accepts: n images, 2 boxes each (normalised xywh), fixed seed."""
    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(n).repeat_interleave(2).float(),
        "cls": torch.randint(0, 80, (2 * n, 1), generator=g).float(),
        "bboxes": torch.rand(2 * n, 4, generator=g) * 0.4 + 0.2,
    }


def child_memory(cfg: str, batch: int, imgsz: int, threads: int) -> dict[str, Any]:
    """In a fresh process: one training step's peak RSS growth, saved-for-backward bytes and time."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    torch.set_num_threads(threads)
    model = build_model(cfg)
    model.args = get_cfg(DEFAULT_CFG)  # the loss reads its gains from here, as during training
    model.train()
    data = synthetic_batch(batch, imgsz)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    how = "model.loss"

    def step() -> torch.Tensor:
        nonlocal how
        if how == "model.loss":
            try:
                return model.loss(data)[0].sum()
            except (AttributeError, KeyError, RuntimeError, TypeError):  # keep the number if the loss API changes
                how = "sum of output means"
        out = model(data["img"])
        tensors = [t for t in (out.values() if isinstance(out, dict) else out) if isinstance(t, torch.Tensor)]
        return sum(t.float().mean() for t in tensors)

    step().backward()  # warm-up: one-off allocations (oneDNN primitives, loss buffers) are not the step's
    model.zero_grad(set_to_none=True)
    gc.collect()
    rss0 = _proc_status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    step().backward()
    step_s = time.perf_counter() - t0
    hwm = _proc_status_kb("VmHWM")
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
        "loss": how,
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
    from yolo_ext.cfg_paths import scaled_name

    plain = scaled_name(f"{args.family}.yaml", args.scale)
    out = [(plain, plain)]
    for path in yolo_ext.model_yamls():
        if path.name.startswith(f"{args.family}-"):
            name = scaled_name(path.name, args.scale)
            out.append((name, str(yolo_ext.model_yaml(name))))
    return out


def part_models(args: argparse.Namespace) -> dict[str, Any]:
    """Params, GFLOPs, latency (PyTorch and ONNX Runtime) and training memory of each model vs the plain one."""
    if args.malloc == "keep" and not keep_freed_memory():
        print("WARNING: could not set glibc malloc options; timing with the defaults", file=sys.stderr)
    import onnxruntime as ort
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER
    from ultralytics.utils.torch_utils import get_flops

    from yolo_ext.prune.checkpoint import load_detection_checkpoint
    from yolo_ext.prune.report import fused_copy

    LOGGER.setLevel(logging.WARNING)
    configs = model_configs(args)
    rows: dict[str, dict[str, Any]] = {}
    runners: dict[str, tuple[nn.Module, Any]] = {}
    x = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory(prefix="yolo_ext_modules_") as d:
        for label, cfg in configs:
            model = build_model(cfg)
            rows[label] = {
                "cfg": cfg,
                "params": sum(p.numel() for p in model.parameters()),
                "gflops": get_flops(model, args.imgsz),
            }
            torch.manual_seed(0)
            pt = Path(d) / label.replace(".yaml", ".pt")
            yolo = YOLO(cfg)
            yolo.save(pt)
            _, loaded = load_detection_checkpoint(pt)
            fused = fused_copy(loaded)
            onnx_path = YOLO(str(pt)).export(format="onnx", imgsz=args.imgsz, simplify=False, verbose=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            with torch.inference_mode():
                ref = fused(x)
            while isinstance(ref, (list, tuple)):
                ref = ref[0]
            got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            rows[label]["ort_max_diff"] = float(abs(got - ref.numpy()).max())
            runners[label] = (fused, sess)
            rows[label]["onnx"] = str(onnx_path)
            print(f"[models] built and exported {label}", file=sys.stderr, flush=True)

        # Latency: every model in both backends per round, starting model rotating.
        labels = list(runners)
        times = {lab: {"torch": [], "ort": [], "torch_cpu": [], "ort_cpu": []} for lab in labels}
        feed = x.numpy()
        snap = cpu_snapshot()
        with torch.inference_mode():
            for r in range(args.warmup + args.runs):
                for j in range(len(labels)):
                    lab = labels[(r + j) % len(labels)]
                    fused, sess = runners[lab]
                    c0, t0 = time.thread_time(), time.perf_counter()
                    fused(x)
                    c1, t1 = time.thread_time(), time.perf_counter()
                    sess.run(None, {sess.get_inputs()[0].name: feed})
                    c2, t2 = time.thread_time(), time.perf_counter()
                    if r >= args.warmup:
                        times[lab]["torch"].append(1000 * (t1 - t0))
                        times[lab]["ort"].append(1000 * (t2 - t1))
                        times[lab]["torch_cpu"].append(1000 * (c1 - c0))
                        times[lab]["ort_cpu"].append(1000 * (c2 - c1))
        lat_load = other_load(snap, cpu_snapshot())
        print(f"[models] latency rounds done (other processes busy {lat_load:.2f} cores)", file=sys.stderr, flush=True)
        for label, (fused, _) in runners.items():
            if label != configs[0][0]:
                rows[label]["attention"] = attention_breakdown(fused, Path(rows[label]["onnx"]), x, args, Path(d))
        runners.clear()

    # Training memory: fresh child per (model, repeat), models interleaved within each repeat.
    mem: dict[str, list[dict[str, Any]]] = {lab: [] for lab, _ in configs}
    snap = cpu_snapshot()
    for rep in range(args.mem_repeats):
        for label, cfg in configs:
            mem[label].append(run_memory_child(cfg, args))
        print(f"[models] memory repeat {rep + 1}/{args.mem_repeats} done", file=sys.stderr, flush=True)
    mem_load = other_load(snap, cpu_snapshot())

    for label, row in rows.items():
        row["times_ms"] = times[label]
        row["latency_ms"] = {b: statistics.median(v) for b, v in times[label].items()}
        row["memory_runs"] = mem[label]
        row["memory"] = {
            k: statistics.median(m[k] for m in mem[label])
            for k in ("growth_mb", "peak_mb", "rss_before_mb", "saved_mb", "step_s")
        }
        row["loss"] = mem[label][0]["loss"]
    plain = configs[0][0]
    print_models(rows, plain, args)
    print_attention(rows, plain)
    return {"rows": rows, "plain": plain, "latency_other_load": lat_load, "memory_other_load": mem_load}


ATTENTION_TYPES = ("CoordAtt", "MCA", "ContextAggregation")


def attention_breakdown(
    model: nn.Module, onnx_path: Path, x: torch.Tensor, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Own time of the attention layers of a model: PyTorch thread CPU ms (hooks), ONNX Runtime kernel ms by op.

    Says how much of a model's latency change the attention layers themselves explain, and which ONNX ops they
    spend it in (node names carry the layer index as `/model.i/`).
    """
    import onnxruntime as ort

    idx = [i for i, m in enumerate(model.model) if type(m).__name__ in ATTENTION_TYPES]
    reps = max(5, min(15, args.runs))
    times: dict[int, list[float]] = {i: [] for i in idx}
    starts: dict[int, float] = {}
    handles = []
    for i in idx:
        layer = model.model[i]
        handles.append(layer.register_forward_pre_hook(lambda m, a, i=i: starts.__setitem__(i, time.thread_time())))
        handles.append(
            layer.register_forward_hook(lambda m, a, o, i=i: times[i].append(1000 * (time.thread_time() - starts[i])))
        )
    total = []
    with torch.inference_mode():
        for _ in range(2 + reps):
            c0 = time.thread_time()
            model(x)
            total.append(1000 * (time.thread_time() - c0))
    for h in handles:
        h.remove()
    torch_ms = sum(statistics.median(v[2:]) for v in times.values())

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp / f"attprof-{onnx_path.stem}")
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    for _ in range(2 + reps):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    t_cut = runs[2]["ts"] if len(runs) > 2 else 0
    prefixes = tuple(f"/model.{i}/" for i in idx)
    by_op: dict[str, float] = {}
    ort_total = 0.0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < t_cut:
            continue
        ms = e["dur"] / 1000 / reps
        ort_total += ms
        if e["name"].startswith(prefixes):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + ms
    return {
        "layers": idx,
        "torch_ms": torch_ms,
        "torch_total_ms": statistics.median(total[2:]),
        "ort_ms": sum(by_op.values()),
        "ort_total_ms": ort_total,
        "ort_ops_ms": by_op,
    }


def print_attention(rows: dict[str, dict[str, Any]], plain: str) -> None:
    """How much time the attention layers themselves take, and in which ONNX ops."""
    print("\n### Own time of the attention layers (thread CPU ms per image; share of the whole model)\n")
    print("| model | layers | PyTorch ms | share | ORT ms | share | top ONNX Runtime ops in them (ms) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for label, r in rows.items():
        a = r.get("attention")
        if label == plain or not a or not a["layers"]:
            continue
        top = sorted(a["ort_ops_ms"].items(), key=lambda kv: -kv[1])[:4]
        print(
            f"| {label} | {', '.join(map(str, a['layers']))} | {a['torch_ms']:.2f} | "
            f"{100 * a['torch_ms'] / a['torch_total_ms']:.1f}% | {a['ort_ms']:.2f} | "
            f"{100 * a['ort_ms'] / a['ort_total_ms']:.1f}% | " + ", ".join(f"{k} {v:.2f}" for k, v in top) + " |"
        )


def _pct(v: float, base: float) -> float:
    return 100.0 * (v / base - 1.0)


def print_models(rows: dict[str, dict[str, Any]], plain: str, args: argparse.Namespace) -> None:
    """Absolute numbers and the change vs the plain model; ✗ marks a missed target."""
    b = rows[plain]
    print(
        f"\n### Models vs plain {plain}: params, GFLOPs@{args.imgsz}, CPU latency (batch 1, imgsz {args.imgsz}, "
        f"{args.threads} thread, median of {args.runs} interleaved runs), training step at batch {args.mem_batch}, "
        f"imgsz {args.mem_imgsz} (median of {args.mem_repeats} fresh processes)\n"
    )
    print(
        "| model | params | GFLOPs | PyTorch ms | Δ (Δ CPU time) | ORT ms | Δ (Δ CPU time) "
        "| step peak RSS growth MB | Δ | saved for backward MB | Δ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
        print("| " + " | ".join(cells) + " |")
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
    """Median ms per call of ours and of the textbook module, wall clock and thread CPU time, samples alternating
    (which goes first alternates)."""
    mods = (ours, ref)
    for m in mods:
        m.train(train)
    g = torch.randn_like(x) if train else None
    xs = [x.detach().clone().requires_grad_(train) for _ in mods]
    ctx = torch.enable_grad() if train else torch.inference_mode()
    with ctx:
        for m, xi in zip(mods, xs):
            for _ in range(3):
                _call(m, xi, g)
        k = max(_inner_count(m, xi, g) for m, xi in zip(mods, xs))
        wall: list[list[float]] = [[], []]
        cpu: list[list[float]] = [[], []]
        for r in range(runs):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                c0, t0 = time.thread_time(), time.perf_counter()
                for _ in range(k):
                    _call(mods[i], xs[i], g)
                c1, t1 = time.thread_time(), time.perf_counter()
                wall[i].append(1000 * (t1 - t0) / k)
                cpu[i].append(1000 * (c1 - c0) / k)
    med = statistics.median
    return {
        "ours_ms": med(wall[0]),
        "textbook_ms": med(wall[1]),
        "ours_cpu_ms": med(cpu[0]),
        "textbook_cpu_ms": med(cpu[1]),
    }


def profile_pair(ours: nn.Module, ref: nn.Module, x: torch.Tensor, train: bool, reps: int = 20) -> dict[str, Any]:
    """Self CPU ms per op per call (torch.profiler), ours and textbook, two interleaved samples each, op-wise min."""
    from torch.profiler import ProfilerActivity, profile

    g = torch.randn_like(x) if train else None
    res: dict[str, list[dict[str, float]]] = {"ours": [], "textbook": []}
    for _ in range(2):
        for key, m in (("ours", ours), ("textbook", ref)):
            m.train(train)
            xi = x.detach().clone().requires_grad_(train)
            ctx = torch.enable_grad() if train else torch.inference_mode()
            with ctx:
                for _ in range(3):
                    _call(m, xi, g)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(reps):
                        _call(m, xi, g)
            res[key].append({e.key: e.self_cpu_time_total / 1000 / reps for e in prof.key_averages()})
    return {k: {op: min(s.get(op, 0.0) for s in v) for op in set().union(*v)} for k, v in res.items()}


def print_profile(name: str, shape: tuple[int, int, int, int], train: bool, prof: dict[str, Any]) -> None:
    """Top ops by |ours - textbook| self time."""
    ours, ref = prof["ours"], prof["textbook"]
    mode = "forward+backward (train)" if train else "forward (eval)"
    print(f"\n#### {name}, {mode}, input {tuple(shape)}: self CPU ms per call by op (torch.profiler)\n")
    print("| op | ours | textbook | ours − textbook |")
    print("|---|---:|---:|---:|")
    ops = sorted(set(ours) | set(ref), key=lambda o: -abs(ours.get(o, 0.0) - ref.get(o, 0.0)))
    for op in ops[:10]:
        a, b = ours.get(op, 0.0), ref.get(op, 0.0)
        if max(a, b) >= 0.005:
            print(f"| {op} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
    a, b = sum(ours.values()), sum(ref.values())
    print(f"| all ops | {a:.3f} | {b:.3f} | {a - b:+.3f} |")


def part_modules(args: argparse.Namespace) -> dict[str, Any]:
    """Ours vs textbook per module, shape, batch and mode; profiles where ours is clearly slower."""
    pairs = module_pairs()
    kept = keep_freed_memory()
    records: list[dict[str, Any]] = []
    snap = cpu_snapshot()
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
        print(f"[modules] {name} done", file=sys.stderr, flush=True)
    load = other_load(snap, cpu_snapshot())

    print(
        f"\n### Our modules vs textbook implementations: median ms per call, wall clock ({args.threads} thread, "
        f"{args.module_runs} interleaved samples); ratio ours/textbook (<1: ours faster) by wall clock and, in "
        "parentheses, by thread CPU time; MB autograd saves for backward\n"
    )
    print(
        "| module | input (N, C, H, W) | fwd ours | fwd textbook | fwd ratio | fwd+bwd ours | fwd+bwd textbook "
        "| fwd+bwd ratio | saved MB ours / textbook | max abs diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(t: dict[str, float]) -> str:
        rw, rc = t["ours_ms"] / t["textbook_ms"], t["ours_cpu_ms"] / t["textbook_cpu_ms"]
        return f"{rw:.2f} ({rc:.2f})" + (" ▲" if rc > SLOWER else "")

    for r in records:
        f, fb = r["fwd"], r["fwd_bwd"]
        print(
            f"| {r['module']} | {tuple(r['shape'])} | {f['ours_ms']:.3f} | {f['textbook_ms']:.3f} | {ratio(f)} | "
            f"{fb['ours_ms']:.3f} | {fb['textbook_ms']:.3f} | {ratio(fb)} | "
            f"{r['saved_mb_ours']:.1f} / {r['saved_mb_textbook']:.1f} | {r['max_diff']:.1e} |"
        )
    print(
        f"\n▲: ours more than {100 * (SLOWER - 1):.0f}% slower by CPU time. Other processes kept {load:.2f} cores "
        f"busy on average. glibc kept freed memory: {kept}. Max abs diff: outputs of ours and the textbook module "
        "with the same weights (MCA's textbook std is torch.std's unbiased one, ours the population std)."
    )

    def gmean(rs: list[dict[str, Any]], key: str, suffix: str) -> float:
        return math.exp(statistics.mean(math.log(r[key][f"ours{suffix}"] / r[key][f"textbook{suffix}"]) for r in rs))

    print("\n| module | geometric mean ratio ours/textbook, fwd: wall (CPU time) | fwd+bwd: wall (CPU time) |")
    print("|---|---:|---:|")
    for name in pairs:
        rs = [r for r in records if r["module"] == name]
        cells = [f"{gmean(rs, k, '_ms'):.2f} ({gmean(rs, k, '_cpu_ms'):.2f})" for k in ("fwd", "fwd_bwd")]
        print(f"| {name} | {cells[0]} | {cells[1]} |")

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
    return {"records": records, "other_load": load, "profiles": profiles, "malloc_keep": kept}


# --------------------------------------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the commands in RESULTS_latency_modules.md give the numbers there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["models", "modules"], choices=["models", "modules"])
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
    parser.add_argument("--json", default="", help="also write all raw numbers to this file")
    parser.add_argument("--child-mem", default="", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> None:
    """Run the asked-for parts (or, in a memory child, one training step) and print Markdown tables."""
    if args.child_mem:
        print(json.dumps(child_memory(args.child_mem, args.mem_batch, args.mem_imgsz, args.threads)))
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    t_start = time.monotonic()
    load_before = os.getloadavg()
    out: dict[str, Any] = {"args": vars(args), "date": datetime.now().isoformat(timespec="seconds")}
    if "models" in args.parts:
        out["models"] = part_models(args)
    if "modules" in args.parts:
        out["modules"] = part_modules(args)
    out["total_s"] = time.monotonic() - t_start
    import onnxruntime as ort

    print(
        f"\nTotal {out['total_s']:.0f} s. {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
        f"thread), onnxruntime {ort.__version__}; 1-min load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
