"""How a command shows what it got: results on stdout, progress and verdicts on stderr.

Human output for people (a job's output as text or indented JSON, a one-line verdict with the error parsed,
a health table, a live status line); ``--json`` prints exactly RunPod's JSON, one document per line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

from runpod_queue import Endpoint, Health, Job, JobStatus, RunpodQueueError
from runpod_queue.cli._app import EXIT_INTERRUPTED, EXIT_JOB, EXIT_OK
from runpod_queue.cli._interrupt import deferred_interrupt
from runpod_queue.cli._retrying import RetryLine, spinner_line

if TYPE_CHECKING:  # the batch package loads aiohttp: only `rpq batch` imports it
    from runpod_queue.batch import BatchSummary

__all__ = ["Printer", "Progress", "exit_code_for"]


def exit_code_for(result: Job | BatchSummary) -> int:
    """A job: 0 unless it ended FAILED, CANCELLED or TIMED_OUT (a pending job is not a failure). A batch:
    130 when it was stopped (the same command resumes it), else 0 unless some item did not complete."""
    if isinstance(result, Job):
        return EXIT_JOB if result.is_terminal and not result.is_completed else EXIT_OK
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_JOB


def _error_type(job: Job) -> str | None:
    kind = job.error_type
    if kind and kind.startswith("<class '") and kind.endswith("'>"):
        kind = kind[8:-2]  # "<class 'ValueError'>" as RunPod's worker writes it
    return kind.rpartition(".")[2] if kind and "." in kind else kind


def _error_line(job: Job) -> str:
    """``Type: message`` from RunPod's JSON error string (or the plain message a handler returned)."""
    kind = _error_type(job)
    return f"{kind}: {job.error_message}" if kind else str(job.error_message)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


_ENDED = frozenset(status.value for status in JobStatus if status.is_terminal)


@dataclass
class Progress:
    """A job's status and elapsed time on stderr while waiting: a live spinner on a terminal, else one
    line per status change (readable in CI logs)."""

    console: Console
    label: str
    enabled: bool
    status: str = "SUBMITTING"
    job_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    _live: Live | None = None
    _spinner: Spinner = field(default_factory=lambda: Spinner("dots"))
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    retry: RetryLine | None = None  # the client's retries, told in this line while it is live

    def __enter__(self) -> Self:
        if self.enabled and self.console.is_terminal:
            self._live = Live(self, console=self.console, transient=True, refresh_per_second=10)
            with deferred_interrupt():  # Live.start() starts its refresh thread
                self._live.start()
            if self.retry is not None:
                self.retry.in_status_line = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=0.5)
        if self._live is not None:
            self._live.stop()
            if self.retry is not None:
                self.retry.in_status_line = False
                self.retry.answered()

    def watch(self, endpoint: Endpoint, job_id: str, interval: float = 0.5) -> None:
        """Poll the job's status in the background while the caller blocks in ``wait``: RunPod's
        status-sync long-poll answers only once the job ends, so without this the line would show
        IN_QUEUE while the job runs."""
        if not self.enabled or self._watcher is not None:
            return

        def poll() -> None:
            pause = 0.2  # a job usually starts at once: show IN_PROGRESS soon, then settle
            while not self._stop.wait(pause):
                pause = interval
                try:
                    job = endpoint.status(job_id)
                except RunpodQueueError:
                    continue  # the wait itself reports real errors
                if not self._stop.is_set():
                    self.update(job)

        watcher = threading.Thread(target=poll, name="rpq-progress", daemon=True)
        with deferred_interrupt():
            watcher.start()
        self._watcher = watcher

    def line(self) -> str:
        """The status line's text, as drawn next to its spinner (or printed once when not live)."""
        job = f" {self.job_id}" if self.job_id else ""
        retrying = self.retry.describe() if self.retry is not None and self._live is not None else ""
        retrying = f"  · {retrying}" if retrying else ""
        return f"{self.status:<11} {time.monotonic() - self.started:5.1f} s  {self.label}{job}{retrying}"

    def __rich__(self) -> RenderableType:
        return spinner_line(self._spinner, self.line())

    def update(self, job: Job) -> None:
        if self.retry is not None:
            self.retry.answered()
        if job.is_pending and self.status in _ENDED:
            return  # a background poll answered after the wait saw the end
        changed = job.status_text != self.status
        self.status, self.job_id = job.status_text, job.id
        # Off a terminal, one line per change; the terminal state itself is the caller's verdict line.
        if changed and self.enabled and self._live is None and not job.is_terminal:
            self.console.print(self.line(), highlight=False, soft_wrap=True)


@dataclass
class Printer:
    """One command's output: results on stdout (``out``), progress and messages on stderr (``err``)."""

    json: bool
    debug: bool
    out: Console
    err: Console
    retrying: RetryLine | None = None  # the "retrying" line: cleared before anything else is printed

    def settle(self) -> None:
        """Clear the "retrying" line: an answer came, and output follows."""
        if self.retrying is not None:
            self.retrying.clear()

    def pause_retry_line(self, paused: bool) -> None:
        """Streamed text ends mid-line on stdout: no spinner on that line until it is finished."""
        if self.retrying is not None:
            self.retrying.paused = paused

    def progress(self, label: str) -> Progress:
        # In --json mode a script reads stdout; keep stderr quiet unless a person is watching.
        enabled = not self.json or self.err.is_terminal
        self.settle()
        return Progress(self.err, label, enabled, retry=self.retrying)

    def print_json(self, data: Any) -> None:
        """Exactly the server's JSON, one document per line (no rich markup, wrapping or colour)."""
        self.settle()
        sys.stdout.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def print_value(self, value: Any) -> None:
        """A job's output as a person or a pipe wants it: text as is, anything else as indented JSON."""
        if value is None:
            return
        self.settle()
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, message: str, style: str | None = None) -> None:
        self.settle()
        self.err.print(message, style=style, markup=False, highlight=False, soft_wrap=True)

    def describe_end(self, job: Job) -> None:
        """The one-line verdict on stderr; a failure's error parsed into type and message."""
        timing = f"queued {_seconds(job.delay_time)}, ran {_seconds(job.execution_time)}"
        if job.is_completed:
            self.note(f"COMPLETED  job {job.id}  ({timing})", "green")
            return
        if not job.is_terminal:
            self.note(f"{job.status_text}  job {job.id}")
            return
        self.note(f"{job.status_text}  job {job.id}  ({timing})", "bold red")
        if job.error is not None:
            self.note(f"  {_error_line(job)}", "red")
            if job.error_traceback and self.debug:
                self.note(job.error_traceback.rstrip())

    def finish(self, job: Job) -> NoReturn:
        """Print a job that has ended (the output on stdout) and exit with its code."""
        if self.json:
            self.print_json(dict(job.raw))
        else:
            if job.is_completed:
                self.print_value(job.output)
            self.describe_end(job)
        raise typer.Exit(exit_code_for(job))

    def show_job(self, job: Job) -> None:
        """A snapshot as a small key/value listing (``status``, ``cancel``, ``retry``)."""
        if self.json:
            self.print_json(dict(job.raw))
            return
        rows: list[tuple[str, Any]] = [
            ("id", job.id),
            ("status", job.status_text),
            ("queued", None if job.delay_time is None else _seconds(job.delay_time)),
            ("ran", None if job.execution_time is None else _seconds(job.execution_time)),
            ("worker", job.worker_id),
            ("retries", job.retries),
            ("error", None if job.error is None else _error_line(job)),
            ("output", None if job.output is None else _compact(job.output)),
        ]
        # Plain lines, no table padding: `rpq status … | grep ^status` should just work.
        self.settle()
        sys.stdout.write("".join(f"{name:<8}{value}\n" for name, value in rows if value is not None))
        sys.stdout.flush()

    def health_table(self, endpoint_id: str, health: Health) -> Table:
        self.settle()
        jobs, workers = health.jobs, health.workers
        table = Table(title=f"endpoint {endpoint_id}", title_justify="left")
        table.add_column("jobs")
        table.add_column("", justify="right")
        table.add_column("workers")
        table.add_column("", justify="right")
        job_rows = [
            ("in queue", jobs.in_queue),
            ("in progress", jobs.in_progress),
            ("completed", jobs.completed),
            ("failed", jobs.failed),
            ("retried", jobs.retried),
            ("", None),
        ]
        worker_rows = [
            ("idle", workers.idle),
            ("running", workers.running),
            ("ready", workers.ready),
            ("initializing", workers.initializing),
            ("throttled", workers.throttled),
            ("unhealthy", workers.unhealthy),
        ]
        for (jname, jcount), (wname, wcount) in zip(job_rows, worker_rows, strict=True):
            table.add_row(jname, "" if jcount is None else str(jcount), wname, str(wcount))
        return table
