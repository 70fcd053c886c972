"""A rich live view of a batch, and its final summary table (needs the `cli` extra: rich).

Kept apart from the runner so the library works without rich: the runner only calls
``on_progress(summary)``; this module turns those snapshots into a display.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from runpod_queue.batch._types import BatchSummary

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

__all__ = ["LiveProgress", "format_duration", "summary_table"]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _line(s: BatchSummary) -> str:
    total = f"/{s.total}" if s.total is not None else ""
    failed = s.failed + s.lost + s.invalid + s.rejected
    return (
        f"[bold]{s.finished}{total}[/] done · [green]{s.completed} ok[/] · [red]{failed} failed[/] · "
        f"{s.submitted + s.resumed} submitted · {s.running} running ({s.in_queue} queued, "
        f"{s.in_progress} in progress) · {s.waiting} waiting for /run · {s.retried} retried · "
        f"{s.rate:.1f}/s · ETA {format_duration(s.eta)}"
    )


def summary_table(s: BatchSummary) -> Table:
    """The final summary: every count a user needs to trust (or resume) the batch."""
    from rich.table import Table

    table = Table(title="batch summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, object]] = [
        ("completed", s.completed),
        ("failed (FAILED / TIMED_OUT / CANCELLED)", s.failed),
        ("lost (404 when collected)", s.lost),
        ("malformed input lines", s.invalid),
        ("rejected by the API", s.rejected),
        ("duplicate keys skipped", s.duplicates),
        ("still in flight", s.in_flight),
        ("submitted by this run", s.submitted),
        ("collected from an earlier run", s.resumed),
        ("results reused from the journal", s.reused),
        ("retried (/retry)", s.retried),
        ("ambiguous, resubmitted (may have run twice)", s.ambiguous),
        ("/run calls", s.run_calls),
        ("/status calls", s.status_calls),
        ("webhook deliveries", s.webhook_deliveries),
        ("429 answers", s.rate_limited),
        ("transient errors retried", s.transient_errors),
        ("elapsed", format_duration(s.elapsed)),
        ("rate (items/s)", f"{s.rate:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


class LiveProgress:
    """``with LiveProgress(console) as show: BatchRunner(..., on_progress=show)``: one refreshing line."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._live: Live | None = None

    def __call__(self, summary: BatchSummary) -> None:
        if self._live is not None:
            self._live.update(_line(summary))

    def __enter__(self) -> LiveProgress:
        from rich.live import Live

        self._live = Live("starting…", console=self.console, refresh_per_second=4, transient=False)
        self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
