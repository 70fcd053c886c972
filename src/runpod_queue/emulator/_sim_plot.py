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


# Points drawn per panel. A day sampled every few seconds drawn step by step is a solid block of ink;
# above this many samples each point stands for a window: workers as the window's mean, the queue as its
# worst moment (a short spike must stay visible).
_POINTS = 400


def coarse(
    at: tuple[float, ...], workers: tuple[int, ...], running: tuple[int, ...], queued: tuple[int, ...]
) -> tuple[int, list[float], list[float], list[float], list[int]]:
    """Samples per window (1: as sampled), each window's start, mean workers, mean running, max queued."""
    width = max(1, -(-len(at) // _POINTS))  # ceiling division
    if width == 1:
        return 1, list(at), [float(w) for w in workers], [float(r) for r in running], list(queued)
    starts: list[float] = []
    mean_workers: list[float] = []
    mean_running: list[float] = []
    max_queued: list[int] = []
    for i in range(0, len(at), width):
        n = len(at[i : i + width])
        starts.append(at[i])
        mean_workers.append(sum(workers[i : i + width]) / n)
        mean_running.append(sum(running[i : i + width]) / n)
        max_queued.append(max(queued[i : i + width]))
    return width, starts, mean_workers, mean_running, max_queued


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
        line = c.timeline
        width, at, workers, running, queued = coarse(line.at, line.workers, line.running, line.queued)
        t = [x / scale for x in at]
        window = "" if width == 1 else f" ({_seconds(width * line.step)} windows)"
        raw = width == 1
        workers_label = "workers (billed)" if raw else "workers (billed, mean)"
        ax.step(t, workers, where="post", label=workers_label, color="tab:blue")
        running_label = "running" if raw else "running (mean)"
        ax.step(t, running, where="post", label=running_label, color="tab:green", linewidth=0.8)
        ax.set_ylabel("workers")
        ax.set_title(c.label + window, fontsize=10, loc="left")
        queue_ax = ax.twinx()
        queued_label = "queued" if raw else "queued (most in window)"
        queue_ax.fill_between(t, queued, step="post", alpha=0.25, color="tab:red", label=queued_label)
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


def _seconds(value: float) -> str:
    """A window's length as people say it: 45 s, 4 min, 2 h."""
    if value < 120:
        return f"{value:g} s"
    if value < 7200:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"
