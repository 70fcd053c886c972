"""A rich live view of a batch, and its final summary (needs the `cli` extra: rich).

Kept apart from the runner so the library works without rich: the runner only calls
``on_progress(summary)``; this module turns those snapshots into a display.

The live line and the summary name every count with the same word (``OUTCOMES``), so the last line a
user saw and the summary agree: a malformed input line is ``invalid``, never ``failed``; a result an
earlier run already had is ``reused``, never ``submitted``.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from runpod_queue.batch._types import BatchSummary

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

__all__ = ["OUTCOMES", "LiveProgress", "format_duration", "progress_line", "summary_lines", "summary_table"]

# word, BatchSummary field, what it means (the summary's third column), style
OUTCOMES: tuple[tuple[str, str, str, str], ...] = (
    ("ok", "completed", "COMPLETED", "green"),
    ("failed", "failed", "FAILED / TIMED_OUT / CANCELLED after every allowed retry", "red"),
    ("lost", "lost", "gone (404) before its result was collected", "red"),
    ("invalid", "invalid", "malformed input lines, never sent", "red"),
    ("rejected", "rejected", "refused by the API at submission (400, 413)", "red"),
    ("unmatched", "unmatched", "ran in a native batch; no result carries its key", "red"),
    ("duplicate", "duplicates", "input lines whose key was already used: skipped", "yellow"),
    ("reused", "reused", "results an earlier run journaled: not fetched again", ""),
    ("running", "running", "on the endpoint, not collected yet (a resume collects them)", ""),
    ("waiting", "waiting", "read, waiting for a /run slot", ""),
)
# Live-line segments dropped first when the terminal is too narrow (least telling first); the outcome
# counts and the ETA are never dropped, only cut with an ellipsis on a very narrow terminal.
_DROP_ORDER = ("waiting", "reused", "rate", "running")
_ALWAYS_SHOWN = frozenset({"ok", "running"})


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(rate: float) -> str:
    """Results per second: whole numbers from 10 up (the line has no room for noise digits)."""
    return f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


def _count(s: BatchSummary, field: str) -> int:
    return int(getattr(s, field))


def _segments(s: BatchSummary) -> list[tuple[str, str, str]]:
    """(name, text, style) of every segment the line could show, in display order."""
    done = s.finished + s.duplicates  # reaches the total: a skipped duplicate line is done with too
    head = f"{done}/{s.total}" if s.total is not None else f"{done} done"
    segments = [("progress", head, "bold")]
    for word, field, _meaning, style in OUTCOMES:
        n = _count(s, field)
        if n or word in _ALWAYS_SHOWN:
            segments.append((word, f"{n} {word}", style if n else ""))
    segments.append(("rate", format_rate(s.rate), ""))
    if s.eta is not None and s.total is not None and done < s.total and not s.interrupted:
        segments.append(("eta", f"ETA {format_duration(s.eta)}", ""))
    return segments


def progress_line(s: BatchSummary, width: int = 80) -> Text:
    """The live line, at most ``width`` cells: least telling segments dropped first, then cut."""
    from rich.text import Text

    segments = _segments(s)
    separator = " · "

    def length(parts: list[tuple[str, str, str]]) -> int:
        return sum(len(text) for _name, text, _style in parts) + len(separator) * (len(parts) - 1)

    for name in _DROP_ORDER:
        if length(segments) <= width:
            break
        segments = [segment for segment in segments if segment[0] != name]
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, (_name, text, style) in enumerate(segments):
        if i:
            line.append(separator, style="dim")
        line.append(text, style=style)
    line.truncate(width, overflow="ellipsis")
    return line


def _clean(s: BatchSummary) -> bool:
    """Nothing needs a look: every item ok, nothing in flight, nothing may have run twice."""
    return s.ok and not s.ambiguous and not s.resubmitted_lost


def summary_lines(s: BatchSummary, output: str | None = None) -> list[str]:
    """A clean success in one line (``done: all 120 ok in 0:04 → results.jsonl``); nothing otherwise
    (then ``summary_table`` says what needs a look)."""
    if not _clean(s):
        return []
    notes = [f"{s.reused} reused from earlier runs"] if s.reused else []
    if s.webhook_deliveries:
        notes.append(f"{s.webhook_deliveries} webhook deliveries")
    reused = f" ({', '.join(notes)})" if notes else ""
    where = f" → {output}" if output else ""
    took = f"{s.elapsed:.1f}s" if s.elapsed < 60 else format_duration(s.elapsed)
    return [f"done: all {s.completed} ok in {took}{reused}{where}"]


def summary_table(s: BatchSummary) -> RenderableType:
    """The full breakdown, for a batch that needs attention: every outcome with the live line's word,
    then what this run did (only the counts that happened)."""
    from rich.table import Table

    table = Table(title="batch summary", show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column("count", justify="right")
    table.add_column("word")
    table.add_column("meaning", style="dim")
    for word, field, meaning, style in OUTCOMES:
        n = _count(s, field)
        if n or word in ("ok", "failed", "invalid", "running"):
            table.add_row(str(n), word, meaning, style=style if n else "")
    this_run: list[tuple[int, str, str]] = [
        (s.submitted, "submitted", "jobs created by this run"),
        (s.resumed, "collected", "jobs an earlier run submitted, collected by this one"),
        (s.retried, "retried", "/retry calls the service confirmed"),
        (s.ambiguous, "ambiguous", "resent after no job id came back: may have run twice"),
        (s.run_calls, "/run", "calls"),
        (s.status_calls, "/status", f"calls ({s.status_calls_per_job:.2f} per job)"),
        (s.webhook_deliveries, "webhooks", "verified deliveries received"),
        (s.rate_limited, "429", "answers (another client on the same key?)"),
        (s.transient_errors, "transient", "connection errors and 5xx, retried"),
    ]
    table.add_section()
    for n, word, meaning in this_run:
        if n:
            table.add_row(str(n), word, meaning)
    table.add_row(format_duration(s.elapsed), "elapsed", f"{format_rate(s.rate)} results this run")
    return table


class LiveProgress:
    """``with LiveProgress(console) as show: BatchRunner(..., on_progress=show)``: one refreshing line,
    never wider than the terminal (a wrapped line would repeat on every refresh)."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._live: Live | None = None

    def line(self, summary: BatchSummary) -> Text:
        """What the live display shows for ``summary`` on this console."""
        return progress_line(summary, self.console.width)

    def __call__(self, summary: BatchSummary) -> None:
        if self._live is not None:
            self._live.update(self.line(summary))

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
