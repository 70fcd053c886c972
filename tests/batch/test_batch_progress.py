"""The rich display: a live line fed by summaries, and the final table (rich is optional for the library)."""

from __future__ import annotations

import io

from rich.console import Console

from runpod_queue import BatchSummary
from runpod_queue.batch.progress import LiveProgress, format_duration, summary_table


def test_live_line_and_summary_table() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system=None, width=200)
    summary = BatchSummary(total=100, completed=40, failed=2, submitted=60, in_flight=18, elapsed=10.0)
    summary.done_this_run = 42
    with LiveProgress(console) as show:
        show(summary)
    text = buffer.getvalue()
    assert "42/100" in text and "40 ok" in text and "2 failed" in text and "4.2/s" in text
    assert "ETA 0:14" in text
    buffer.truncate(0)
    console.print(summary_table(summary))
    table = buffer.getvalue()
    for label in ("completed", "lost (404 when collected)", "ambiguous", "/status calls", "429 answers"):
        assert label in table


def test_durations() -> None:
    assert format_duration(None) == "?"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"
