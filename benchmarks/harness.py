"""What every benchmark script needs once: interleaved timing, other-load snapshots, models, ONNX, tables, logging.

Why one harness: the scripts compare variants measured on a shared 2-core machine, so they must time, build and
report the same way or their numbers cannot be put side by side. Heavy imports (torch, Ultralytics, ONNX Runtime)
happen inside the functions, so a parent process that only spawns children (`prune_speed.py`) stays small.

    >>> print(markdown_table(["model", "ms"], "lr", [["yolo11n", "41.2"]]))
    | model | ms |
    |---|---:|
    | yolo11n | 41.2 |
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported anywhere: never reach for the network


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """A time-stamped progress line on stderr: stdout carries only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def markdown_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; `align` has one letter per column, "l" (text) or "r" (numbers). Empty cells stay empty."""
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} must be one 'l' or 'r' per column ({len(columns)})")

    def line(cells: Sequence[Any]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    out = [line(columns), "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells, the table {len(columns)} columns: {row}")
        out.append(line(row))
    return "\n".join(out)


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    """Raw numbers next to the tables, dated."""
    with open(path, "w") as f:
        json.dump({"date": datetime.now().isoformat(timespec="seconds"), **record}, f, indent=1)


# --------------------------------------------------------------------------------------------------------------------
# The machine: threads, quiet libraries, load from other processes, memory
# --------------------------------------------------------------------------------------------------------------------


def setup(threads: int) -> None:
    """One torch thread by default: with two on a shared 2-core machine, any other busy process stalls OpenMP barriers
    and made the same work up to 15x slower. Also silences warnings and Ultralytics' banners between the tables."""
    import logging
    import warnings

    import torch
    from ultralytics.utils import LOGGER

    if threads > 0:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    LOGGER.setLevel(logging.WARNING)


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its finished children)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return time.monotonic(), (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own


@dataclass
class OtherLoad:
    """Average number of cores other processes kept busy while a block ran (set when it ends)."""

    cores: float = float("nan")


@contextmanager
def other_load() -> Iterator[OtherLoad]:
    """Measure how busy the rest of the machine was during the block: says how much to trust its wall-clock times."""
    load, start = OtherLoad(), _cpu_snapshot()
    try:
        yield load
    finally:
        end = _cpu_snapshot()
        load.cores = max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / max(end[0] - start[0], 1e-9)


class RunClock:
    """Wall time and 1-minute load average since the script started, for the line under the tables."""

    def __init__(self) -> None:
        self.start, self.load_before = time.monotonic(), os.getloadavg()[0]

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def summary(self) -> str:
        import torch

        return (
            f"Total {self.seconds:.0f} s. {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
            f"thread); 1-min load average {self.load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
        )


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory (no heap trimming, no mmap below 32 MB); True if it took.

    With glibc's defaults, whether a freed tensor's pages go back to the OS depends on the allocation history, so the
    same forward can pay thousands of page faults in one place and none in another (up to 10x on the first shape
    timed); ONNX Runtime's arena does not. Timings that compare compute keep memory.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 32 << 20))  # M_TRIM_, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def proc_status_kb(key: str, pid: int | str = "self") -> int:
    """A /proc/<pid>/status field in kB (VmRSS, VmHWM; 0 where unavailable): ru_maxrss only gives the peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Timings of one callable: wall-clock ms and this thread's CPU ms per call.

    Thread CPU time (`time.thread_time`; with one thread, torch and ONNX Runtime compute on the calling thread) leaves
    out the time spent waiting for a core while other processes run: the noise-resistant cross-check of wall time.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def interleaved(variants: Sequence[Sequence[Callable[[], Any]]], runs: int, warmup: int = 0) -> list[list[Samples]]:
    """Time every variant round after round so load from other processes hits all alike.

    Each variant is a sequence of callables timed back to back (e.g. its PyTorch forward, then its ONNX Runtime run).
    Round r starts at variant r mod n: none always runs first or after the same one (with two, the order alternates).
    The first `warmup` rounds are not kept. Returns samples[variant][callable].
    """
    n = len(variants)
    out = [[Samples() for _ in fns] for fns in variants]
    for r in range(warmup + runs):
        for j in range(n):
            i = (r + j) % n
            for fn, s in zip(variants[i], out[i]):
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                c1, t1 = time.thread_time(), time.perf_counter()
                if r >= warmup:
                    s.wall.append(1000 * (t1 - t0))
                    s.cpu.append(1000 * (c1 - c0))
    return out


def layer_cpu_ms(model: Any, layers: dict[str, Any], x: Any, reps: int) -> tuple[dict[str, float], float]:
    """(median thread CPU ms of each named submodule per forward, median CPU ms of the whole forward), 2 warm-ups.

    Forward hooks time what each layer itself costs, which a whole-model latency cannot say.
    """
    import torch

    times: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    handles = []
    for key, m in layers.items():
        handles.append(m.register_forward_pre_hook(lambda _m, _a, k=key: starts.__setitem__(k, time.thread_time())))
        handles.append(
            m.register_forward_hook(lambda _m, _a, _o, k=key: times[k].append(1000 * (time.thread_time() - starts[k])))
        )
    total = []
    try:
        with torch.inference_mode():
            for _ in range(2 + reps):
                c0 = time.thread_time()
                model(x)
                total.append(1000 * (time.thread_time() - c0))
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(v[2:]) for k, v in times.items()}, statistics.median(total[2:])


def torch_op_ms(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """Self CPU ms per aten op per call of `fn` (torch.profiler): names the op that makes one variant slower."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    return {e.key: e.self_cpu_time_total / 1000 / reps for e in prof.key_averages()}


def opwise_min(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key (in first-seen order), the smallest of several profiles (missing counts 0): the least disturbed."""
    keys = dict.fromkeys(k for s in samples for k in s)
    return {k: min(s.get(k, 0.0) for s in samples) for k in keys}


# --------------------------------------------------------------------------------------------------------------------
# Models: built from YAML names with fixed random weights, fused, exported
# --------------------------------------------------------------------------------------------------------------------


def _cfg(name: str) -> str:
    return name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"


def build_model(name: str, seed: int = 0) -> Any:
    """A DetectionModel from Ultralytics' bundled YAML, or yolo_ext's (name or path), random weights (`seed`).

    Same name, same weights in every process: variants and methods start from the same model. yolo_ext is imported
    only when the YAML is not Ultralytics' own, so stock models are measured without it.
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    cfg = _cfg(name)
    is_path = os.sep in cfg  # a path (e.g. from yolo_ext.model_yaml) rather than a bundled name
    torch.manual_seed(seed)
    if not is_path:
        try:
            return DetectionModel(cfg, verbose=False)
        except FileNotFoundError:
            pass
    import yolo_ext  # registers our modules with Ultralytics' parser and knows where our YAMLs live

    torch.manual_seed(seed)
    return DetectionModel(cfg if is_path else str(yolo_ext.model_yaml(cfg)), verbose=False)


def save_checkpoint(name: str, path: Path, seed: int = 0) -> Path:
    """A freshly built model (see `build_model`) saved as an Ultralytics checkpoint: what users load and export."""
    import torch
    from ultralytics import YOLO

    cfg = _cfg(name)
    torch.manual_seed(seed)
    try:
        yolo = YOLO(cfg)
    except FileNotFoundError:
        import yolo_ext

        torch.manual_seed(seed)
        yolo = YOLO(str(yolo_ext.model_yaml(cfg)))
    yolo.save(path)
    return path


def n_params(model: Any) -> int:
    """All parameters of a model."""
    return sum(p.numel() for p in model.parameters())


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count (and optionally its per-node profiler on)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class Deployed:
    """A checkpoint as users run it: fused FP32 in PyTorch, and the ONNX file Ultralytics' exporter writes for it."""

    torch_model: Any
    onnx_path: Path
    session: Any
    ort_max_diff: float  # ONNX Runtime vs PyTorch on the same input: the two backends time the same network

    def runners(self, x: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """(PyTorch forward, ONNX Runtime run) on input `x`, for `interleaved` (call under torch.inference_mode)."""
        feed = {self.session.get_inputs()[0].name: x.numpy()}
        return (lambda: self.torch_model(x)), (lambda: self.session.run(None, feed))


def deploy(pt_path: Path, imgsz: int, threads: int, x: Any) -> Deployed:
    """Load a checkpoint (as a user would), fuse it, export it to ONNX (opset as Ultralytics picks, no simplifier)
    and check ONNX Runtime against PyTorch on `x`."""
    import numpy as np
    import torch
    from ultralytics import YOLO

    from yolo_ext.latency import deployed_copy
    from yolo_ext.prune.checkpoint import load_prunable_checkpoint

    _, model = load_prunable_checkpoint(pt_path)
    fused = deployed_copy(model)
    onnx_path = Path(YOLO(str(pt_path)).export(format="onnx", imgsz=imgsz, simplify=False, verbose=False))
    session = ort_session(onnx_path, threads)
    with torch.inference_mode():
        ref = fused(x)
    while isinstance(ref, (list, tuple)):  # the decoded predictions of Detect's (y, preds)
        ref = ref[0]
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - ref.numpy()).max()) if got.shape == tuple(ref.shape) else float("inf")
    return Deployed(fused, onnx_path, session, diff)


def ort_node_ms(path: Path, x: Any, reps: int, threads: int, prefix: str) -> list[tuple[str, str, float]]:
    """(node name, op type, kernel ms per run) from ONNX Runtime's node profile, after 2 unprofiled warm-up runs.

    Node names carry the layer as `/model.i/`, so times can be put on layers as well as op types.
    """
    sess = ort_session(path, threads, prefix)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(2 + reps):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    t_cut = runs[2]["ts"] if len(runs) > 2 else 0  # skip the two warm-up runs
    return [
        (e["name"], e.get("args", {}).get("op_name", "?"), e["dur"] / 1000 / reps)
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= t_cut
    ]
