"""Time, peak RAM and MACs reduction of structured channel pruning of YOLO detectors, three methods side by side.

Methods (same importance criterion for all, one ratio for all):
  naive     what a new user writes: plain Torch-Pruning MetaPruner on the DetectionModel, Detect head ignored.
  expert    the best hand recipe with plain Torch-Pruning: every C2f/C3k2/C2PSA `cv1` rewritten as two 1x1 convs
            (no chunk/split for the tracer), Detect head and every Ultralytics `Attention` left unpruned and kept out
            of the graph (a no-op customized pruner plus a clone() stand-in forward while the graph is built).
  yolo_ext  `yolo_ext.prune.prune_model` (everything it does: graph, step, repair, validation).

Every (model, method) run happens in a fresh subprocess so its peak RSS is its own; the parent enforces a wall-clock
limit on the pruning itself (`--timeout`) and a memory cap (`--max-gb`, by polling the child's RSS and killing it, or
with `--cap as` by RLIMIT_AS in the child), and reports "timeout>120s" / "OOM>6GB" instead of crashing. A pruned model
only counts as a success if it still runs forward in eval mode at `--imgsz` and at 320 with the same output shapes as
the unpruned model; otherwise the result is "broken: <error>". MACs are counted with
`torch_pruning.utils.count_ops_and_params` at `--imgsz` in eval mode, params are all parameters of the model.

  python benchmarks/prune_speed.py                                    # all defaults (6 models x 3 methods)
  python benchmarks/prune_speed.py --models yolov8n yolo11n --methods naive expert --timeout 30
`--cap as` (RLIMIT_AS) also counts the ~3.5 GB of address space torch maps at import, so it stops runs at ~3.3 GB
RSS; the default polls the RSS instead. Children use 1 torch thread (`--threads`; see `harness.setup`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from typing import Any

import harness
from harness import markdown_table

DEFAULT_MODELS = ["yolov8n", "yolov8s", "yolo11n", "yolo11s", "yolo26n", "yolo26s"]
DEFAULT_METHODS = ["naive", "expert", "yolo_ext"]
# Limit for the child's phases other than the pruning itself (imports, model build, validation, MACs counting).
OTHER_PHASE_LIMIT_S = 300.0
RSS_POLL_S = 0.02
ERR_CHARS = 80


# --------------------------------------------------------------------------------------------------------------------
# Child side: one model, one method, one run. Heavy imports live here so the parent stays small.
# --------------------------------------------------------------------------------------------------------------------


def _maxrss_kb() -> int:
    """Peak RSS of this process so far, in kB (Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _short(e: BaseException | str, n: int = ERR_CHARS) -> str:
    """One-line error text short enough for a table cell."""
    s = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    s = " ".join(s.split()).replace("|", "/")
    return s if len(s) <= n else s[: n - 3] + "..."


def _is_oom(e: BaseException) -> bool:
    """True for the ways an allocation failure under RLIMIT_AS surfaces from torch/Python."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "cannot allocate memory" in text


def _importance(criterion: str) -> Any:
    """The same Torch-Pruning importance for the naive and expert methods."""
    import torch_pruning as tp

    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown criterion {criterion!r}")


def _count(model: Any, imgsz: int) -> tuple[float, int]:
    """(MACs, params) as Torch-Pruning counts MACs (eval mode, batch 1) and every parameter of the model."""
    import torch
    import torch_pruning as tp

    model.eval()
    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, imgsz, imgsz))
    return float(macs), harness.n_params(model)


def _shapes(out: Any) -> Any:
    """Output structure with tensors replaced by shapes; Detect's "feats" (the pruned neck outputs) are left out."""
    import torch

    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items() if k != "feats"}
    if isinstance(out, (list, tuple)):
        return [_shapes(v) for v in out]
    return type(out).__name__


def _forward_shapes(model: Any, sizes: tuple[int, ...]) -> dict[int, Any]:
    """Eval-mode output shapes per input size: a pruned model must keep them to count as working."""
    import torch

    model.eval()
    with torch.no_grad():
        return {s: _shapes(model(torch.zeros(1, 3, s, s))) for s in sizes}


def _prune_naive(model: Any, example: Any, importance: Any, ratio: float) -> tuple[Any, dict[str, float]]:
    """What a new user writes after reading the Torch-Pruning README."""
    import torch_pruning as tp

    model.requires_grad_(True)  # Ultralytics freezes the DFL conv; Torch-Pruning traces through autograd
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, example, importance, pruning_ratio=ratio, ignored_layers=[model.model[-1]])
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return model, {"graph": t1 - t0, "step": t2 - t1}


def _split_conv(cv1: Any, lo: int, hi: int) -> Any:
    """A copy of the Conv `cv1` holding only its output channels lo:hi (conv rows, BN statistics and affine)."""
    import torch
    from torch import nn

    new = copy.deepcopy(cv1)  # keeps kernel, stride, padding, activation and train/eval state as they were
    conv, bn = new.conv, new.bn
    with torch.no_grad():
        conv.weight = nn.Parameter(cv1.conv.weight[lo:hi].clone())
        if conv.bias is not None:  # Ultralytics' Conv has none, but stay faithful if one appears
            conv.bias = nn.Parameter(cv1.conv.bias[lo:hi].clone())
        conv.out_channels = hi - lo
        bn.weight = nn.Parameter(cv1.bn.weight[lo:hi].clone())
        bn.bias = nn.Parameter(cv1.bn.bias[lo:hi].clone())
        bn.running_mean = cv1.bn.running_mean[lo:hi].clone()
        bn.running_var = cv1.bn.running_var[lo:hi].clone()
        bn.num_features = hi - lo
    return new


def _c2f_split_forward(self: Any, x: Any) -> Any:
    """C2f/C3k2 forward with cv1 as two convs: no chunk for the tracer to map indices through."""
    import torch

    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2psa_split_forward(self: Any, x: Any) -> Any:
    """C2PSA forward with cv1 as two convs instead of split((c, c))."""
    import torch

    a, b = self.cv1a(x), self.cv1b(x)
    return self.cv2(torch.cat((a, self.m(b)), 1))


def _split_cv1_blocks(model: Any) -> int:
    """Rewrite every C2f-family and C2PSA cv1 as cv1a/cv1b (same function, same MACs); returns how many."""
    from ultralytics.nn.modules.block import C2PSA, C2f, C2fAttn

    n = 0
    for m in model.modules():
        if isinstance(m, C2fAttn) or not isinstance(m, (C2f, C2PSA)) or not hasattr(m, "cv1"):
            continue  # C2fAttn's forward takes a guide tensor; not in the default models
        c = m.c
        m.cv1a, m.cv1b = _split_conv(m.cv1, 0, c), _split_conv(m.cv1, c, 2 * c)
        del m.cv1
        fwd = _c2psa_split_forward if isinstance(m, C2PSA) else _c2f_split_forward
        m.forward = types.MethodType(fwd, m)
        n += 1
    return n


def _frozen_pruner_cls() -> type:
    """A Torch-Pruning pruner that never changes its layer and reports no channel count.

    Registered for Ultralytics' Attention and listed in ignored_layers, it turns every attention block into one graph
    node whose groups are never prunable, so the residual stream around it keeps its width.
    """
    import torch_pruning as tp
    from ultralytics.nn.modules.block import Attention

    class FrozenPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = (Attention,)

        def prune_out_channels(self, layer: Any, idxs: Any) -> Any:
            return layer

        def prune_in_channels(self, layer: Any, idxs: Any) -> Any:
            return layer

        def get_out_channels(self, layer: Any) -> None:
            return None

        def get_in_channels(self, layer: Any) -> None:
            return None

    return FrozenPruner


def _attention_clone_forward(self: Any, x: Any) -> Any:
    """Stand-in Attention forward while the graph is traced: same shape, one op, none of the head reshapes."""
    return x.clone()


def _prune_expert(model: Any, example: Any, importance: Any, ratio: float) -> tuple[Any, dict[str, float]]:
    """The hand recipe: split cv1s, keep Detect and Attention unpruned and the tracer out of Attention."""
    import torch_pruning as tp
    from ultralytics.nn.modules.block import Attention

    model.requires_grad_(True)
    t0 = time.perf_counter()
    _split_cv1_blocks(model)
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    for m in attns:  # instance attribute shadows the class forward only while the graph is built
        m.forward = types.MethodType(_attention_clone_forward, m)
    t1 = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance,
            pruning_ratio=ratio,
            ignored_layers=[model.model[-1], *attns],
            customized_pruners={Attention: _frozen_pruner_cls()()},
        )
    finally:
        for m in attns:
            del m.forward
    t2 = time.perf_counter()
    pruner.step()
    t3 = time.perf_counter()
    return model, {"prep": t1 - t0, "graph": t2 - t1, "step": t3 - t2}


def _prune_yolo_ext(model: Any, cfg: Any, prune_model: Any) -> tuple[Any, dict[str, float]]:
    """Everything yolo_ext's prune_model does, timed as one."""
    t0 = time.perf_counter()
    result = prune_model(model, cfg)
    t1 = time.perf_counter()
    return getattr(result, "model", model), {"prune_model": t1 - t0}


def run_child(spec: dict[str, Any], proto: Any) -> None:
    """One pruning run; reports phases and the final record as JSON lines on `proto`."""

    def emit(**kw: Any) -> None:
        proto.write(json.dumps(kw) + "\n")
        proto.flush()

    rec: dict[str, Any] = {"model": spec["model"], "method": spec["method"], "status": "error"}
    try:
        if spec["cap"] == "as":
            cap = int(spec["max_gb"] * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        import torch  # import costs land here, before the model is built, not in the pruning
        import torch_pruning  # noqa: F401
        import ultralytics  # noqa: F401

        if spec.get("threads", 0) > 0:
            torch.set_num_threads(spec["threads"])
        rec["threads"] = torch.get_num_threads()

        method = spec["method"]
        if method == "yolo_ext":
            try:
                from yolo_ext.prune import PruneConfig, prune_model
            except Exception as e:  # the API may not exist yet: report, do not crash the table
                rec.update(status="unavailable", error=_short(f"unavailable: {type(e).__name__}: {e}"))
                emit(final=rec)
                return
        elif method not in ("naive", "expert"):
            raise ValueError(f"unknown method {method!r}")

        model = harness.build_model(spec["model"])
        rec["rss_build_gb"] = harness.proc_status_kb("VmRSS") / 2**20
        rec["maxrss_build_gb"] = _maxrss_kb() / 2**20
        imgsz, ratio = spec["imgsz"], spec["ratio"]
        example = torch.randn(1, 3, imgsz, imgsz)

        emit(phase="prune")
        cpu0, wall0 = time.process_time(), time.perf_counter()  # process_time: all threads (contention vs work)
        try:
            if method == "naive":
                model, times = _prune_naive(model, example, _importance(spec["criterion"]), ratio)
            elif method == "expert":
                model, times = _prune_expert(model, example, _importance(spec["criterion"]), ratio)
            else:
                cfg = PruneConfig(ratio=ratio, criterion=spec["criterion"], imgsz=imgsz)
                model, times = _prune_yolo_ext(model, cfg, prune_model)
        except Exception as e:
            rec["maxrss_gb"] = _maxrss_kb() / 2**20
            rec["elapsed_s"] = time.perf_counter() - wall0
            rec.update(status="oom" if _is_oom(e) else "error", error=_short(e))
            emit(final=rec)
            return
        rec["maxrss_gb"] = _maxrss_kb() / 2**20  # peak through the pruning, before validation adds its own
        rec["cpu_s"] = time.process_time() - cpu0
        rec["times"] = times
        rec["time_s"] = sum(times.values())
        emit(phase="validate")

        sizes = tuple(dict.fromkeys((imgsz, 320)))
        try:
            got = _forward_shapes(model, sizes)
            rec["macs_after"], rec["params_after"] = _count(model, imgsz)
        except Exception as e:
            rec.update(status="broken", error=_short(f"broken: {type(e).__name__}: {e}"))
        del model
        ref_model = harness.build_model(spec["model"])  # same YAML, same seed: the unpruned reference
        want = _forward_shapes(ref_model, sizes)
        rec["macs_before"], rec["params_before"] = _count(ref_model, imgsz)
        if rec["status"] != "broken":
            bad = [s for s in sizes if got[s] != want[s]]
            if bad:
                rec.update(status="broken", error=_short(f"broken: output shapes at {bad[0]}: {got[bad[0]]}"))
            else:
                rec["status"] = "ok"
        rec["maxrss_end_gb"] = _maxrss_kb() / 2**20
    except Exception as e:
        rec.update(status="oom" if _is_oom(e) else "error", error=_short(e))
    emit(final=rec)


# --------------------------------------------------------------------------------------------------------------------
# Parent side: spawn, watch (time, RSS), collect, tabulate.
# --------------------------------------------------------------------------------------------------------------------


def _child_main(spec_json: str) -> None:
    """Entry of the subprocess: protocol on the real stdout, library chatter moved to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints from Ultralytics/Torch-Pruning must not interleave with the JSON lines
    run_child(json.loads(spec_json), proto)
    proto.flush()
    os._exit(0)  # skip interpreter teardown of torch: it is not part of what we measure


def run_one(spec: dict[str, Any], timeout: float, max_gb: float) -> dict[str, Any]:
    """Run one child, enforce the limits, return its record (or one describing how it was stopped)."""
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        phase, phase_t0, final, killed = "setup", time.monotonic(), None, None
        peak_poll_kb, eof = 0, False
        while True:
            try:
                line = lines.get(timeout=RSS_POLL_S)
                if line is None:
                    eof = True
                else:
                    try:
                        msg = json.loads(line)
                    except json.JSONDecodeError:
                        msg = {}
                    if "phase" in msg:
                        phase, phase_t0 = msg["phase"], time.monotonic()
                    if "final" in msg:
                        final = msg["final"]
            except queue.Empty:
                pass
            rss = harness.proc_status_kb("VmRSS", proc.pid)
            peak_poll_kb = max(peak_poll_kb, rss)
            limit = timeout if phase == "prune" else OTHER_PHASE_LIMIT_S
            if spec["cap"] == "rss" and rss > max_gb * 2**20:
                killed = "oom"
            elif time.monotonic() - phase_t0 > limit:
                killed = "timeout"
            if killed:
                stop_t = time.monotonic()
                proc.kill()
                proc.wait()
                break
            if eof and proc.poll() is not None:
                break
            if eof:
                proc.wait()
        err.seek(0)
        stderr_tail = err.read().decode(errors="replace")[-2000:]

    base = {"model": spec["model"], "method": spec["method"], "poll_peak_gb": peak_poll_kb / 2**20}
    if killed == "oom":
        at = f" ({phase} phase, after {stop_t - phase_t0:.0f}s)"
        return {**base, "status": "oom", "error": f"OOM>{max_gb:g}GB{at}", "killed_in": phase,
                "elapsed_s": stop_t - phase_t0}
    if killed == "timeout":
        where = "" if phase == "prune" else f" ({phase})"
        return {**base, "status": "timeout", "error": f"timeout>{limit:g}s{where}", "killed_in": phase,
                "elapsed_s": stop_t - phase_t0}
    if final is None:  # died without a record: a signal (RLIMIT_AS can end in SIGSEGV/abort) or an import failure
        rc = proc.returncode
        why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
        status = "oom" if spec["cap"] == "as" and rc < 0 else "error"
        error = f"OOM>{max_gb:g}GB ({why})" if status == "oom" else _short(f"crashed ({why}): {last}")
        return {**base, "status": status, "error": error, "killed_in": phase}
    if final.get("status") == "oom":
        final["error"] = _short(f"OOM>{max_gb:g}GB address space ({final.get('error', '')})")
    return {**base, **final}


def _fmt_params(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _reduction(rec: dict[str, Any]) -> float | None:
    """MACs reduction in % of the unpruned model (only for runs that produced a working model)."""
    if rec.get("status") != "ok":
        return None
    return 100.0 * (1.0 - rec["macs_after"] / rec["macs_before"])


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the repeats of one (model, method): median time, highest peak RSS, first failure if any."""
    bad = [r for r in runs if r.get("status") != "ok"]
    timed = [r for r in runs if "time_s" in r]
    times = [r["time_s"] for r in timed]
    med = statistics.median(times) if times else None
    # the split and CPU time shown come from the run closest to the median, so they add up to about what is shown
    rec = dict(bad[0] if bad else min(timed, key=lambda r: abs(r["time_s"] - med)) if timed else runs[0])
    if times:
        rec["time_s"] = med
        rec["times_all"] = times
    peaks = [r["maxrss_gb"] for r in runs if "maxrss_gb" in r]
    if peaks:
        rec["maxrss_gb"] = max(peaks)
    rec["repeats"] = len(runs)
    return rec


def result_cell(rec: dict[str, Any]) -> str:
    status = rec.get("status")
    if status == "ok":
        return "ok"
    return _short(rec.get("error") or status or "?")


def _row(r: dict[str, Any]) -> list[str]:
    """One run's cells: what it cost (time, CPU, memory) and what it gave (params, MACs)."""
    t = f"{r['time_s']:.2f}" if "time_s" in r else f"({r['elapsed_s']:.1f})" if "elapsed_s" in r else "-"
    if len(r.get("times_all", [])) > 1:
        t += f" (min {min(r['times_all']):.2f})"
    split = " + ".join(f"{k} {v:.2f}" for k, v in r.get("times", {}).items()) or "-"
    if "maxrss_gb" in r:
        base = r.get("rss_build_gb", 0.0)
        mem = f"{r['maxrss_gb']:.2f} ({base:.2f} → +{max(0.0, r['maxrss_gb'] - base):.2f})"
    else:
        mem = f"≥{r['poll_peak_gb']:.2f} (polled)" if r.get("poll_peak_gb") else "-"
    params = (f"{_fmt_params(r.get('params_before'))} → {_fmt_params(r.get('params_after'))}"
              if "params_after" in r else "-")
    macs = f"{r['macs_before'] / 1e9:.2f} → {r['macs_after'] / 1e9:.2f}" if "macs_after" in r else "-"
    red = _reduction(r)
    return [r["model"], r["method"], result_cell(r), t, f"{r['cpu_s']:.2f}" if "cpu_s" in r else "-", split, mem,
            params, macs, "-" if red is None else f"{red:.1f}"]


def print_table(recs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The per-run Markdown table and, per model, yolo_ext relative to the expert recipe."""
    print(
        f"\n### Pruning at ratio {args.ratio}, criterion {args.criterion}, imgsz {args.imgsz} "
        f"(median of {args.repeat} run(s); MACs from torch_pruning count_ops_and_params; "
        f"prune s in parentheses: seconds until the run failed or was stopped)\n"
    )
    print(markdown_table(["model", "method", "result", "prune s", "CPU s", "time split s",
                          "peak RSS GB (after build → +pruning)", "params", "GMACs", "MACs −%"], "lllrrlrllr",
                         [_row(r) for r in recs]))
    if "yolo_ext" not in args.methods or "expert" not in args.methods:
        return
    rows = []
    for model in args.models:
        by = {r["method"]: r for r in recs if r["model"] == model}
        ext, exp = by.get("yolo_ext", {}), by.get("expert", {})
        r_ext, r_exp = _reduction(ext), _reduction(exp)
        if r_ext is None or r_exp is None:
            why = "yolo_ext " + result_cell(ext) if r_ext is None else "expert " + result_cell(exp)
            rows.append([model, f"n/a ({why})", "n/a"])
        else:
            mac = f"{r_ext / r_exp:.2f}x" if r_exp else "n/a"
            rows.append([model, f"{mac} ({r_ext:.1f}% vs {r_exp:.1f}%)", f"{ext['time_s'] / exp['time_s']:.2f}x"])
    print("\n### yolo_ext relative to the expert recipe\n")
    print(markdown_table(["model", "MACs reduction yolo_ext / expert", "time yolo_ext / expert"], "lrr", rows))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="Ultralytics model names (YAML stems)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=DEFAULT_METHODS)
    parser.add_argument("--ratio", type=float, default=0.4, help="channel pruning ratio")
    parser.add_argument("--imgsz", type=int, default=640, help="example input size for tracing and MACs")
    parser.add_argument("--criterion", default="l1", choices=["l1", "l2", "random"])
    parser.add_argument("--timeout", type=float, default=120.0, help="wall-clock limit of the pruning, seconds")
    parser.add_argument("--max-gb", type=float, default=6.0, help="memory cap per run, GiB")
    parser.add_argument(
        "--cap",
        default="rss",
        choices=["rss", "as"],
        help="rss: parent kills the child above --max-gb RSS; as: RLIMIT_AS=--max-gb in the child (counts the "
        "~3.5 GiB of address space torch maps at import, so it is much stricter than RSS)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (0: torch's default, 2 here). 1 by default: with 2 threads, any other busy process "
        "on this 2-core machine makes every OpenMP barrier wait for a descheduled thread (pruning ~15x slower)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per (model, method); the median time is shown")
    parser.add_argument("--json", default="", help="also write every run's raw record to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.child:
        _child_main(args.child)
        return
    t_start = time.monotonic()
    all_runs: list[dict[str, Any]] = []
    recs: list[dict[str, Any]] = []
    for model in args.models:  # interleaved: all methods of one repeat before the next repeat
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
        for rep in range(args.repeat):
            for method in args.methods:
                if runs[method] and runs[method][-1].get("status") != "ok":
                    continue  # failures are deterministic; do not pay for another timeout
                spec = {
                    "model": model,
                    "method": method,
                    "ratio": args.ratio,
                    "imgsz": args.imgsz,
                    "criterion": args.criterion,
                    "cap": args.cap,
                    "max_gb": args.max_gb,
                    "threads": args.threads,
                }
                load = os.getloadavg()[0]
                t0 = time.monotonic()
                rec = run_one(spec, args.timeout, args.max_gb)
                rec.update(repeat=rep, wall_child_s=time.monotonic() - t0, loadavg_before=load)
                runs[method].append(rec)
                all_runs.append(rec)
                t = f"{rec['time_s']:.2f}s" if "time_s" in rec else "-"
                harness.log(f"[{model} {method} #{rep}] {result_cell(rec)}  prune {t}  "
                            f"(child {rec['wall_child_s']:.0f}s, load {load:.1f})")
        recs.extend(combine(runs[m]) for m in args.methods)
    print_table(recs, args)
    loads = [r["loadavg_before"] for r in all_runs]
    print(
        f"\nTotal {time.monotonic() - t_start:.0f} s for {len(all_runs)} runs; 1-min load average before runs "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs, {args.threads or 'default'} torch thread(s) "
        "per run (timings are wall-clock; a busy machine inflates them)."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"}, "runs": all_runs}, f, indent=1)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
