"""The per-layer latency table: what each conv of a network costs on a backend, measured, fitted and cached on disk.

Built the HALP / NetAdapt way: the runtime's own profiler times every layer of the network at a few widths (the
``probes``: the same architecture with every prunable group narrowed to 100%, 75%, 50%, ... of its channels, at
channel counts the runtime likes), and each conv gets a fit ``ms = a + b * GMACs + c * Melements`` (non-negative:
a fixed cost, compute, and memory traffic) over those measurements. Time the profiler cannot place on a conv (the
DFL softmax, concatenations, layout reorders) is the ``rest``: a constant plus a share of all activations. The
table only guides the allocation; the pruned network is then measured whole (:mod:`yolo_ext.prune.latency`).

The table is cached under :func:`cache_dir`, keyed by everything that changes timings: the architecture (every
layer's type and weight shape), the backend and its runtime version, the machine (CPU model, or GPU name in the
runtime version), input size, batch and threads. A different key is a different file; a file that does not parse
or whose key differs is rebuilt.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolo_ext.latency.backends import Backend
from yolo_ext.latency.costs import ConvShape, CostModel, conv_shapes
from yolo_ext.latency.deploy import Deployment, deployed_copy

#: bump when the table's content or fitting changes: older cache files are then rebuilt
FORMAT = 1
#: profiled inferences per probe
PROFILE_REPS = 6


# ---------------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$YOLO_EXT_CACHE``, else ``$XDG_CACHE_HOME/yolo_ext``, else ``~/.cache/yolo_ext``."""
    if os.environ.get("YOLO_EXT_CACHE"):
        return Path(os.environ["YOLO_EXT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yolo_ext"


def machine_id() -> str:
    """The processor timings belong to (model name, cores), as the OS reports it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {name} x{os.cpu_count()}"


def architecture(model: nn.Module) -> str:
    """A digest of every module's name, type and weight shape: two networks with the same digest time the same."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else ()
        h.update(f"{name}|{type(m).__name__}|{shape};".encode())
    return h.hexdigest()[:24]


def table_key(model: nn.Module, backend: Backend, deployment: Deployment, multiple: int) -> dict:
    """Everything a measured table depends on."""
    return {
        "format": FORMAT, "architecture": architecture(model), "backend": backend.name, "runtime": backend.version(),
        "machine": machine_id(), "imgsz": list(deployment.imgsz), "batch": deployment.batch,
        "threads": deployment.threads, "multiple": multiple,
    }


def _digest(key: Mapping) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(key: Mapping, kind: str = "table") -> Path:
    return cache_dir() / "latency" / f"{kind}-{key.get('backend', 'any')}-{_digest(key)}.json"


def read_cache(key: Mapping, kind: str = "table") -> dict | None:
    """The cached record for ``key``, or None (missing, unreadable, or stored under another key)."""
    path = cache_path(key, kind)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == dict(key) else None


def write_cache(key: Mapping, record: Mapping, kind: str = "table") -> Path:
    """Store ``record`` under ``key`` (written to a temporary name, then moved: readers never see half a file)."""
    path = cache_path(key, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": dict(key), **record}, indent=1))
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------------------


def unit_of(module: str, convs: Mapping[str, object] | set[str]) -> str:
    """The conv a profiled module's time belongs to: itself, or the ``conv`` of the nearest enclosing Ultralytics
    ``Conv`` (conv + activation: ``model.5.act`` -> ``model.5.conv``); ``""`` (the rest) when there is none."""
    parts = module.split(".") if module else []
    while parts:
        name = ".".join(parts)
        if name in convs:
            return name
        if f"{name}.conv" in convs:
            return f"{name}.conv"
        parts.pop()
    return ""


def nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients, by trying every subset of the (few) columns."""
    best, best_err = np.zeros(x.shape[1]), float(np.sum(y**2))
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.all(coef >= 0):
                err = float(np.sum((x[:, cols] @ coef - y) ** 2))
                if err < best_err - 1e-12:
                    best, best_err = np.zeros(x.shape[1]), err
                    best[list(cols)] = coef
    return best


def _features(shape: ConvShape) -> tuple[float, float, float]:
    return 1.0, shape.macs(shape.cin, shape.cout) / 1e9, shape.activations(shape.cin, shape.cout) / 1e6


@dataclass
class LatencyTable:
    """Fitted per-conv latency (``units``: name -> (a, b, c)) and the rest (a, c), with the measurements."""

    key: dict
    units: dict[str, list[float]]
    rest: list[float]
    probes: list[dict] = field(default_factory=list)

    @classmethod
    def fit(
        cls, key: dict, measured: Sequence[tuple[Mapping[str, ConvShape], Mapping[str, float], float]]
    ) -> LatencyTable:
        """``measured``: per probe, (conv shapes, profiled ms by module name, end-to-end ms)."""
        samples: dict[str, list[tuple[tuple[float, float, float], float]]] = {}
        rest_samples = []
        probes = []
        for shapes, layer_ms, total in measured:
            own: dict[str, float] = {}
            for module, ms in layer_ms.items():
                unit = unit_of(module, shapes)
                own[unit] = own.get(unit, 0.0) + ms
            for name, shape in shapes.items():
                samples.setdefault(name, []).append((_features(shape), own.get(name, 0.0)))
            out_elements = sum(s.cout * s.hw for s in shapes.values()) / 1e6
            rest_samples.append(((1.0, out_elements), own.get("", 0.0)))
            probes.append({
                "total_ms": round(total, 4),
                "channels": {n: [s.cin, s.cout] for n, s in shapes.items()},
                "ms": {n: round(v, 4) for n, v in sorted(own.items())},
            })
        units = {}
        for name, rows in samples.items():
            x, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            units[name] = [float(v) for v in nnls(x, y)]
        rx, ry = np.array([r[0] for r in rest_samples]), np.array([r[1] for r in rest_samples])
        rest = [float(v) for v in nnls(rx, ry)]
        return cls(key, units, rest, probes)

    def to_record(self) -> dict:
        return {"units": self.units, "rest": self.rest, "probes": self.probes}

    @classmethod
    def from_record(cls, record: Mapping) -> LatencyTable:
        return cls(dict(record["key"]), {k: list(v) for k, v in record["units"].items()}, list(record["rest"]),
                   list(record.get("probes", [])))

    def cost_model(self) -> LatencyCost:
        return LatencyCost(self)


class LatencyCost(CostModel):
    """Predicted milliseconds from a :class:`LatencyTable`. The halves of a split ``cv1`` (``x.a.conv``,
    ``x.b.conv``, see :mod:`yolo_ext.prune.split`) each take half of ``x.conv``'s fixed cost and input traffic."""

    unit = "ms"

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.constant = table.rest[0]
        self._rest_per_element = table.rest[1] / 1e6

    def _unit(self, name: str) -> tuple[list[float] | None, float]:
        fit = self.table.units.get(name)
        if fit is not None:
            return fit, 1.0
        for half in (".a.conv", ".b.conv"):
            if name.endswith(half):
                return self.table.units.get(name[: -len(half)] + ".conv"), 0.5
        return None, 1.0

    def conv_cost(self, shape: ConvShape, cin: int, cout: int) -> float:
        fit, share = self._unit(shape.name)
        rest = self._rest_per_element * cout * shape.hw
        if fit is None:
            return rest
        a, b, c = fit
        act = share * cin * shape.in_hw + cout * shape.hw
        return share * a + b * shape.macs(cin, cout) / 1e9 + c * act / 1e6 + rest


# ---------------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------------


def measure_probes(
    probes: Sequence[nn.Module], backend: Backend, deployment: Deployment, reps: int = PROFILE_REPS,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[dict[str, ConvShape], dict[str, float], float]]:
    """Profile each probe network on ``backend``: (conv shapes, ms by module, end-to-end ms per inference)."""
    import time

    measured = []
    for i, probe in enumerate(probes):
        deployed = deployed_copy(probe)
        shapes = conv_shapes(deployed, deployment.imgsz)
        runner = backend.runner(deployed, deployment)
        try:
            runner()
            t = time.perf_counter()
            for _ in range(3):
                runner()
            total = 1000 * (time.perf_counter() - t) / 3
            layer_ms = runner.layer_ms(reps)
        finally:
            runner.close()
        measured.append((shapes, layer_ms, total))
        if progress:
            progress(f"probe {i + 1}/{len(probes)}")
    return measured


def load_or_build_table(
    model: nn.Module, backend: Backend, deployment: Deployment, multiple: int,
    make_probes: Callable[[], Sequence[nn.Module]], progress: bool = True,
) -> tuple[LatencyTable, bool]:
    """The cached table for ``model`` on ``backend``, or a new one built from ``make_probes()`` and cached.
    Returns (table, whether it came from the cache)."""
    key = table_key(model, backend, deployment, multiple)
    cached = read_cache(key)
    if cached is not None:
        try:
            return LatencyTable.from_record(cached), True
        except (KeyError, TypeError, ValueError):
            pass  # an older or damaged file: rebuild it
    probes = make_probes()
    bar = _bar(len(probes), f"Latency table ({backend.name}, {deployment.describe()})") if progress else None
    try:
        measured = measure_probes(probes, backend, deployment, progress=(lambda _: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
    table = LatencyTable.fit(key, measured)
    write_cache(key, table.to_record())
    return table, False


def _bar(total: int, desc: str):
    from ultralytics.utils import TQDM

    return TQDM(total=total, desc=desc, unit="probe")


__all__ = [
    "FORMAT", "LatencyCost", "LatencyTable", "architecture", "cache_dir", "cache_path", "load_or_build_table",
    "machine_id", "measure_probes", "nnls", "read_cache", "table_key", "unit_of", "write_cache",
]
