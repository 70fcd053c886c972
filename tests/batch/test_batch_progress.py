"""The rich display: a live line fed by summaries, and the final summary (rich is optional for the library).

The line must fit the terminal (a wrapped line repeats on every refresh) and name every count with the
summary's word: what the user saw last is what the summary says.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from batch_support import Recorder, batch_runner
from rich.console import Console

from runpod_queue import BatchSummary, Client
from runpod_queue.batch._progress import LiveProgress, format_duration, summary_lines, summary_table


def _shown(summary: BatchSummary, width: int) -> list[str]:
    """The live line as a terminal of ``width`` columns shows it once the batch ends."""
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(LiveProgress(console).line(summary))
    return [line for line in console.export_text().splitlines() if line.strip()]


def _counts(text: str) -> dict[str, int]:
    """``N word`` pairs of a live line."""
    return {word: int(n) for n, word in re.findall(r"(?<![/\d])(\d+) ([a-z]+)", text)}


def _table_counts(summary: BatchSummary) -> dict[str, int]:
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    console.print(summary_table(summary))
    text = console.export_text()
    for row in text.splitlines()[1:]:  # every row on one line of an 80-column terminal
        assert not row.strip() or re.match(r"^\s*[\d:]+  \S", row), text
    rows = re.findall(r"^\s*(\d+)\s+(\S+)", text, flags=re.MULTILINE)
    return {word: int(n) for n, word in rows}


def test_the_live_line_fits_80_columns_at_100000_items() -> None:
    summary = BatchSummary(
        total=100_000, completed=54_321, failed=12_345, invalid=10_234, reused=20_000, in_flight=1000,
        waiting=200, submitted=58_000, elapsed=3600.0,
    )  # fmt: skip
    summary.done_this_run = 56_900
    shown = _shown(summary, 80)
    assert len(shown) == 1 and len(shown[0]) <= 80, shown  # one line, not wrapped
    line = shown[0]
    assert line.startswith("76900/100000")
    for count in ("54321 ok", "12345 failed", "10234 invalid", "ETA 24:22"):
        assert count in line
    wide = _shown(summary, 200)[0]  # with room, nothing is left out
    assert "20000 reused" in wide and "800 running" in wide and "200 waiting" in wide and "16/s" in wide
    summary.interrupted = True  # stopped: the line it ends on promises no ETA
    assert "ETA" not in _shown(summary, 200)[0]


def test_malformed_lines_are_invalid_and_reused_results_are_not_submitted() -> None:
    # A resumed batch: 30 results from earlier runs, 2 malformed lines, 5 jobs collected now, none sent.
    summary = BatchSummary(total=40, completed=33, invalid=2, reused=30, resumed=5, elapsed=2.0)
    summary.done_this_run = 5
    line = _shown(summary, 200)[0]
    assert "2 invalid" in line and "failed" not in line and "submitted" not in line
    assert "30 reused" in line and "2.5/s" in line


def test_the_rate_counts_only_this_runs_work(client: Client, recorder: Recorder, tmp_path: Path) -> None:
    seen: list[BatchSummary] = []
    runner = batch_runner(client, tmp_path, on_progress=seen.append)
    assert runner.run(["not json", "{]"]).rate == 0.0  # malformed lines cost nothing: no rate
    items = [json.dumps({"key": f"k{n}", "input": {"n": n}}) for n in range(6)]
    runner.run(items)
    again = runner.run(items)
    assert again.reused == 8 and again.submitted == 0 and again.rate == 0.0  # all reused: nothing done
    assert "submitted" not in _shown(seen[-1], 200)[0]


def test_the_summary_says_what_the_last_line_said(client: Client, recorder: Recorder, tmp_path: Path) -> None:
    items = [json.dumps({"key": f"k{n}", "input": {"n": n, "fail": n % 5 == 0}}) for n in range(20)]
    items[3] = "not json"
    items[7] = '{"key": "k7", "input"'
    seen: list[BatchSummary] = []
    first = batch_runner(client, tmp_path, retry_failed=0, total=10).run(items[:10])
    assert first.invalid == 2 and first.failed == 2
    final = batch_runner(client, tmp_path, retry_failed=0, total=20, on_progress=seen.append).run(items)
    assert final.reused == 10 and final.invalid == 2 and final.failed == 4
    last = _counts(_shown(seen[-1], 200)[0])
    table = _table_counts(final)
    assert last == {w: n for w, n in table.items() if w in last}, (last, table)
    assert last["ok"] == 14 and last["failed"] == 4 and last["invalid"] == 2 and last["reused"] == 10
    assert summary_lines(final) == []  # something needs a look: the full breakdown, not one line


def test_every_summary_row_fits_80_columns() -> None:
    fields = [f for f in BatchSummary.__dataclass_fields__ if f not in ("total", "elapsed", "interrupted")]
    everything = BatchSummary(**dict.fromkeys(fields, 99_999), total=100_000, elapsed=36_000.0)
    assert _table_counts(everything)["ambiguous"] == 99_999


def test_a_clean_success_is_one_line() -> None:
    summary = BatchSummary(total=120, completed=120, submitted=120, elapsed=4.2)
    assert summary_lines(summary, "results.jsonl") == ["done: all 120 ok in 4.2s → results.jsonl"]
    summary.ambiguous = 1  # may have run twice: worth the breakdown
    assert summary_lines(summary, "results.jsonl") == []


def test_durations() -> None:
    assert format_duration(None) == "?"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"
