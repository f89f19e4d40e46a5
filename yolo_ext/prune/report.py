"""Before/after numbers of a pruning: params, GFLOPs, latency on the deployment backend (speed-up, efficiency) and a
channel plot."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path


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


def latency_lines(latency, macs_ratio: float, config, search: dict | None = None) -> list[str]:
    """What the side-by-side timing says: backend and deployment, ms before -> after, speed-up, efficiency (speed-up
    / MACs ratio), and for a latency target how far the pruned network landed from it."""
    speedup = latency.speedup()
    lines = [
        f"Latency on {latency.label()}: {latency.ms[0]:.1f} -> {latency.ms[1]:.1f} ms, {speedup:.2f}x faster at "
        f"{macs_ratio:.2f}x fewer MACs: efficiency {speedup / macs_ratio:.2f}",
    ]
    if config.target_latency is not None:
        goal = 1 - config.target_latency
        landed = 1 / latency.speedup() / goal - 1
        lines.append(
            f"Target: -{config.target_latency:.0%} latency ({goal:.0%} of the original); measured here {landed:+.1%} "
            f"off it (the search measured {search['off_target']:+.1%} after {len(search['tries'])} tries, per-layer "
            f"table {search['table']})" if search else f"Target: -{config.target_latency:.0%} latency; measured here "
            f"{landed:+.1%} off it"
        )
    return lines


def format_table(rows: list[Row], title: str) -> str:
    """A fixed-width text table: quantity, before, after, reduction."""
    lines = [title, f"{'':<16}{'before':>14}{'after':>14}{'reduction':>12}"]
    for r in rows:
        lines.append(f"{r.name:<16}{r.fmt.format(r.before):>14}{r.fmt.format(r.after):>14}{r.change:>11.1f}%")
    return "\n".join(lines)


def plot_channels(before: dict[str, int], after: dict[str, int], path: Path, title: str,
                  summary: list[str] | None = None) -> Path:
    """Bar plot of output channels per conv layer, before and after (PNG whatever ``path`` ends in; no font download:
    Agg + DejaVu)."""
    # A Figure with its own Agg canvas: no pyplot, so the process's backend and figure registry stay as they were.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(before)
    lines = [piece for line in summary or [] for piece in textwrap.wrap(line, 120, subsequent_indent="    ")]
    fig = Figure(figsize=(max(10, len(names) * 0.08), 4 + 0.17 * len(lines)))
    FigureCanvasAgg(fig)
    if lines:  # the report's numbers under the bars: params, GFLOPs, latency, speed-up, efficiency
        ax, notes = fig.subplots(2, 1, gridspec_kw={"height_ratios": [4, 0.17 * len(lines)]})
        notes.axis("off")
        notes.text(0, 1, "\n".join(lines), fontsize=8, family="monospace", va="top", transform=notes.transAxes)
    else:
        ax = fig.add_subplot()
    ax.bar(range(len(names)), [before[n] for n in names], color="#bbbbbb", label="before", width=1.0)
    ax.bar(range(len(names)), [after.get(n, 0) for n in names], color="#1f77b4", label="after", width=1.0)
    ax.set_xlabel("conv layer (model order)")
    ax.set_ylabel("output channels")
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=10)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # explicit: the path may be a temporary name
    return path
