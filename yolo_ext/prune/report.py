"""Before/after numbers of a pruning: params, GFLOPs, CPU latency (interleaved runs, median) and a channel plot."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class Row:
    """One line of the report: a quantity before and after."""

    name: str
    before: float
    after: float
    fmt: str = "{:,.0f}"

    @property
    def change(self) -> float:
        """Relative reduction in percent (positive = smaller after)."""
        return 100.0 * (1 - self.after / self.before) if self.before else 0.0


def fused_copy(model: nn.Module) -> nn.Module:
    """An FP32 copy with BN folded, as deployed: latency is measured on what users would run."""
    model = copy.deepcopy(model).float().eval()
    return model.fuse(verbose=False) if hasattr(model, "fuse") else model


LATENCY_THREADS = 1


@torch.no_grad()
def interleaved_latency_ms(
    models: list[nn.Module], size: tuple[int, int], runs: int = 10, warmup: int = 2, threads: int = LATENCY_THREADS
) -> list[float]:
    """Median CPU latency (batch 1) of each model, runs alternating between models so machine noise hits all alike.

    Timed on ``threads`` torch threads (default one): with more, any other busy process on the machine stalls the
    OpenMP barriers and makes the numbers meaningless, while single-thread latency is stable and comparable.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(1, 3, *size)
        for m in models:
            m.eval()
            for _ in range(warmup):
                m(x)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(runs):
            for i, m in enumerate(models):
                t = time.perf_counter()
                m(x)
                times[i].append(1000 * (time.perf_counter() - t))
    finally:
        torch.set_num_threads(previous)
    return [statistics.median(t) for t in times]


def format_table(rows: list[Row], title: str) -> str:
    """A fixed-width text table: quantity, before, after, reduction."""
    lines = [title, f"{'':<16}{'before':>14}{'after':>14}{'reduction':>12}"]
    for r in rows:
        lines.append(f"{r.name:<16}{r.fmt.format(r.before):>14}{r.fmt.format(r.after):>14}{r.change:>11.1f}%")
    return "\n".join(lines)


def plot_channels(before: dict[str, int], after: dict[str, int], path: Path, title: str) -> Path:
    """Bar plot of output channels per conv layer, before and after (PNG whatever ``path`` ends in; no font download:
    Agg + DejaVu)."""
    # A Figure with its own Agg canvas: no pyplot, so the process's backend and figure registry stay as they were.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(before)
    fig = Figure(figsize=(max(8, len(names) * 0.08), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), [before[n] for n in names], color="#bbbbbb", label="before", width=1.0)
    ax.bar(range(len(names)), [after.get(n, 0) for n in names], color="#1f77b4", label="after", width=1.0)
    ax.set_xlabel("conv layer (model order)")
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # explicit: the path may be a temporary name
    return path
