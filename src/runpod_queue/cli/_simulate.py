"""`rpq simulate`: traffic against endpoint configurations on the emulator's core, in virtual time.

Prints one table with a column per configuration (or ``--json``) and writes the workers-and-queue plot
(``--plot``, default ``simulate.svg``; ``--no-plot`` skips it). Bad input is one line on stderr, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from runpod_queue.cli._app import EXIT_USAGE, app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._duration import DURATION_METAVAR, duration

if TYPE_CHECKING:
    from runpod_queue.emulator import ConfigReport, SimulationReport

__all__ = ["simulate_command"]

_TRAFFIC = "Traffic"
_WORK = "Work and workers"
_OUT = "Output"
DEFAULT_PLOT = "simulate.svg"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


@app.command("simulate", cls=RpqCommand)
def simulate_command(
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate", metavar="RATE", help="Poisson arrivals: 2/s, 120/min, 7200/h.", rich_help_panel=_TRAFFIC
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            metavar="FILE.csv",
            help="A rate per hour of the day, one per row (hour,rate); repeats daily.",
            rich_help_panel=_TRAFFIC,
        ),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            metavar="FILE",
            help='Arrivals: JSONL of {"at": s, "input": ..., "duration": s}, or an rpq batch journal.',
            rich_help_panel=_TRAFFIC,
        ),
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(
            "--hours",
            metavar="H",
            help="Span simulated (default: 1 for --rate, 24 for --profile, to the last arrival for --trace).",
            rich_help_panel=_TRAFFIC,
        ),
    ] = None,
    work: Annotated[
        str,
        typer.Option(
            "--duration",
            metavar="MODEL",
            help="Job duration: 4s, lognormal:median=4s,p95=12s or exponential:mean=4s (a trace's own win).",
            rich_help_panel=_WORK,
        ),
    ] = "4s",
    cold_start: Annotated[
        float,
        typer.Option(
            "--cold-start",
            parser=duration,
            metavar=DURATION_METAVAR,
            help="Seconds a new worker initializes.",
            rich_help_panel=_WORK,
        ),
    ] = 0.0,
    flashboot: Annotated[
        bool,
        typer.Option(
            "--flashboot",
            help="FlashBoot on for every config (a config's flashboot=off wins).",
            rich_help_panel=_WORK,
        ),
    ] = False,
    configs: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            metavar="SETTINGS",
            help="min=0,max=5,idle=5s,scaler=queue_delay:4 (also flashboot=on, cold=, timeout=, price=, "
            "name=); repeat to compare. Default: RunPod's min=0,max=3,idle=5s.",
            rich_help_panel=_WORK,
        ),
    ] = None,
    ttl: Annotated[
        float,
        typer.Option(
            "--ttl", parser=duration, metavar=DURATION_METAVAR, help="The jobs' ttl.", rich_help_panel=_WORK
        ),
    ] = 86_400.0,
    price: Annotated[
        float | None,
        typer.Option(
            "--price",
            metavar="USD",
            help="Price per worker-second (RunPod's pricing page).",
            rich_help_panel=_WORK,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed.", rich_help_panel=_WORK)] = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.", rich_help_panel=_OUT)
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help=f"Workers and queue over time, .svg or .png (default {DEFAULT_PLOT}; needs the plot extra).",
            rich_help_panel=_OUT,
        ),
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plot.", rich_help_panel=_OUT)] = False,
) -> None:
    """Simulate traffic against endpoint configurations: queue delay, cold starts, worker-seconds, cost.

    Runs the emulator's own queue and fleet on a virtual clock (no handler
    runs: the duration model stands in), so a day of traffic takes seconds.
    Every config sees the same arrivals and durations. See docs/simulate.md.
    """
    from runpod_queue.emulator import SimConfig, Traffic, simulate
    from runpod_queue.emulator._sim_plot import check_plot_path, plot_report

    given = [name for name, value in (("--rate", rate), ("--profile", profile), ("--trace", trace)) if value]
    if len(given) != 1:
        raise _fail(
            "give exactly one of --rate, --profile or --trace"
            + (f" (got {' and '.join(given)})" if given else ", e.g. --rate 2/s")
        )
    plot_path: Path | None = None
    try:
        if hours is not None and not 0 < hours <= 24 * 366:
            raise ValueError(f"--hours must be in (0, 8784], got {hours:g}")
        if price is not None and price < 0:
            raise ValueError(f"--price must be >= 0 per worker-second, got {price:g}")
        if rate is not None:
            traffic = Traffic.poisson(rate, hours=1.0 if hours is None else hours)
        else:
            source = profile if profile is not None else trace
            assert source is not None
            traffic = Traffic.from_file(source, hours=hours)
        parsed = [SimConfig.parse(text) for text in (configs or ["min=0,max=3,idle=5s"])]
        if not no_plot:
            try:
                plot_path = check_plot_path(plot if plot is not None else DEFAULT_PLOT)
            except ValueError as exc:
                if plot is not None:
                    raise
                typer.echo(f"note: no plot written: {exc}", err=True)
        report = simulate(
            traffic,
            parsed,
            duration=work,
            cold_start=cold_start,
            flashboot=flashboot,
            ttl=ttl,
            price=price,
            seed=seed,
        )
    except (ValueError, TypeError) as exc:
        raise _fail(str(exc)) from None
    if plot_path is not None:
        plot_report(report, plot_path)
    if json_out:
        data = report.to_dict()
        data["plot"] = None if plot_path is None else str(plot_path)
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(_table(report))
    console.print(
        f"{sum(c.jobs for c in report.configs)} jobs simulated in {report.elapsed:.1f} s "
        f"({report.jobs_per_second:,.0f} jobs/s), seed {report.seed}"
        + (f"; plot: {plot_path}" if plot_path is not None else "")
    )


def _s(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s"


def _table(report: SimulationReport) -> Table:
    table = Table(
        title=f"{report.traffic}, work {report.duration}, cold start {report.cold_start:g} s",
        title_justify="left",
    )
    table.add_column("")
    for c in report.configs:
        table.add_column(c.label, justify="right")

    def row(name: str, fn: _Cell) -> None:
        table.add_row(name, *(fn(c) for c in report.configs))

    row("jobs", lambda c: f"{c.jobs:,}")
    row("  completed", lambda c: f"{c.completed:,}")
    row("  timed out / expired", lambda c: f"{c.timed_out:,} / {c.expired:,}")
    row("jobs that waited", lambda c: f"{c.jobs_waited:,}")
    row("queue delay p50", lambda c: _s(c.queue_delay.p50))
    row("queue delay p95", lambda c: _s(c.queue_delay.p95))
    row("queue delay p99", lambda c: _s(c.queue_delay.p99))
    row("queue delay mean", lambda c: _s(c.queue_delay.mean))
    row("end-to-end p50", lambda c: _s(c.end_to_end.p50))
    row("end-to-end p95", lambda c: _s(c.end_to_end.p95))
    row("end-to-end p99", lambda c: _s(c.end_to_end.p99))
    row("cold starts (FlashBoot)", lambda c: f"{c.cold_starts:,} ({c.flashboot_starts:,})")
    row("jobs that waited on one", lambda c: f"{c.jobs_waited_on_cold_start:,}")
    row("workers peak / mean", lambda c: f"{c.workers_peak} / {c.workers_mean:.2f}")
    row("worker-seconds billed", lambda c: f"{c.worker_seconds:,.0f}")
    row("  busy", lambda c: f"{c.worker_seconds_busy:,.0f}")
    row("  starting", lambda c: f"{c.worker_seconds_starting:,.0f}")
    row("  idle", lambda c: f"{c.worker_seconds_idle:,.0f}")
    row("cost", lambda c: "-" if c.cost is None else f"${c.cost:,.2f}")
    return table


if TYPE_CHECKING:
    from collections.abc import Callable

    _Cell = Callable[[ConfigReport], str]
