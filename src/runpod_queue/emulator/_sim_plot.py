"""The picture of a simulation: workers and queue depth over time, one panel per configuration.

matplotlib is the optional ``plot`` extra, imported here only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runpod_queue.emulator._simulate import SimulationReport

__all__ = ["PLOT_SUFFIXES", "plot_report"]

PLOT_SUFFIXES = (".svg", ".png")
_MISSING = "plotting needs matplotlib, the 'plot' extra: pip install 'runpod-queue[plot]'"


def check_plot_path(path: str | Path) -> Path:
    """`path` if matplotlib is importable and the suffix is one it writes here; else a ValueError."""
    p = Path(path)
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(f"plot file {str(p)!r}: write .svg or .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(_MISSING) from None
    return p


def plot_report(report: SimulationReport, path: str | Path) -> Path:
    """Draw each configuration's workers and queue over time into `path` (.svg or .png)."""
    p = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all we write
    import matplotlib.pyplot as plt

    configs = report.configs
    fig, axes = plt.subplots(
        len(configs), 1, figsize=(10, 2.8 * len(configs) + 0.6), sharex=True, squeeze=False
    )
    span_h = max(c.span for c in configs) / 3600.0
    in_hours = span_h >= 2
    scale, unit = (3600.0, "hours") if in_hours else (60.0, "minutes")
    for ax, c in zip(axes[:, 0], configs, strict=True):
        t = [x / scale for x in c.timeline.at]
        ax.step(t, c.timeline.workers, where="post", label="workers (billed)", color="tab:blue")
        ax.step(t, c.timeline.running, where="post", label="running", color="tab:green", linewidth=0.8)
        ax.set_ylabel("workers")
        ax.set_title(c.label, fontsize=10, loc="left")
        queue_ax = ax.twinx()
        queue_ax.fill_between(t, c.timeline.queued, step="post", alpha=0.25, color="tab:red", label="queued")
        queue_ax.set_ylabel("jobs queued")
        lines = ax.get_legend_handles_labels()
        extra = queue_ax.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)
        ax.set_ylim(bottom=0)
        queue_ax.set_ylim(bottom=0)
    axes[-1, 0].set_xlabel(unit)
    fig.suptitle(f"rpq simulate: {report.traffic}, work {report.duration}", fontsize=11)
    fig.tight_layout()
    fig.savefig(p, metadata={"Date": None} if p.suffix.lower() == ".svg" else None)
    plt.close(fig)
    return p
