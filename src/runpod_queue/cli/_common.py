"""What every endpoint command shares: connection options, input parsing, output, and exit codes.

One place turns the library's errors into one-line messages and exit codes, so no command can print a
traceback (unless ``--debug``) or a message that names the API key.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, NoReturn, Self
from urllib.parse import urlsplit

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from runpod_queue import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    Client,
    Endpoint,
    Health,
    Job,
    JobFailedError,
    JobStatus,
    RunpodQueueError,
    WaitTimeoutError,
)
from runpod_queue._contract import DEFAULT_BASE_URL
from runpod_queue._wire import ENV_API_KEY, ENV_BASE_URL
from runpod_queue.cli._app import EXIT_API, EXIT_JOB, EXIT_OK, EXIT_USAGE

__all__ = [
    "DEFAULT_LOCAL_PORT",
    "EXIT_API",
    "EXIT_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "ApiKeyOpt",
    "BaseUrlOpt",
    "DebugOpt",
    "JsonOpt",
    "LocalOpt",
    "RpqCommand",
    "Session",
    "UsageProblem",
    "exit_code_for",
    "local_base_url",
    "parse_input",
    "session",
]

DEFAULT_LOCAL_PORT = 8000  # where `rpq serve` listens by default
EXIT_INTERRUPTED = 130

_CONNECTION = "Connection"
_OUTPUT = "Output"

ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help=f"RunPod API key (default: ${ENV_API_KEY}). Never printed.",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help=f"API base URL (default: ${ENV_BASE_URL}, else {DEFAULT_BASE_URL}).",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
LocalOpt = Annotated[
    int | None,
    typer.Option(
        "--local",
        metavar="[PORT]",
        min=1,
        max=65535,
        help=f"Talk to a local emulator at http://127.0.0.1:PORT/v2 (PORT defaults to {DEFAULT_LOCAL_PORT}, "
        "where `rpq serve` listens); overrides --base-url.",
        show_default=False,
        rich_help_panel=_CONNECTION,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print exactly RunPod's JSON answer on stdout (for scripts).", rich_help_panel=_OUTPUT
    ),
]
DebugOpt = Annotated[
    bool,
    typer.Option("--debug", help="Log every request to stderr and show tracebacks.", rich_help_panel=_OUTPUT),
]


class RpqCommand(typer.core.TyperCommand):
    """Lets ``--local`` stand alone: click has no optional option values, so a bare ``--local`` (last, or
    followed by something that is not a port) gets the default port inserted before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's or typer's vendored Context
        fixed: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                fixed.extend(args[index:])
                break
            fixed.append(arg)
            if arg == "--local":
                following = args[index + 1] if index + 1 < len(args) else None
                if following is None or not following.isdigit():
                    fixed.append(str(DEFAULT_LOCAL_PORT))
        return super().parse_args(ctx, fixed)


class UsageProblem(Exception):
    """Bad input or configuration found by the CLI itself: one line on stderr, exit 2."""


def local_base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _resolve(api_key: str | None, base_url: str | None, local: int | None) -> tuple[str | None, str]:
    """Flags win over the environment; a remote base URL without a key is refused before any request."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
    if local is not None:
        url = local_base_url(local)
    else:
        url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise UsageProblem(f"--base-url must start with http:// or https://, got {url!r}")
    if key is not None and not key.strip():
        raise UsageProblem("the API key is empty: set RUNPOD_API_KEY or pass --api-key")
    if key is None and not _is_loopback(url):
        raise UsageProblem(
            f"no API key for {url}. Create one in the RunPod console (Settings > API Keys), then "
            f"`export {ENV_API_KEY}=...` or pass --api-key. For a local emulator, use --local."
        )
    return key, url.rstrip("/")


def parse_input(text: str) -> Any:
    """INPUT as inline JSON, ``@file.json``, or ``-`` for stdin; a bad one names where it breaks."""
    if text == "-":
        source, raw = "stdin", sys.stdin.read()
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"cannot read input file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageProblem(f"input file {path} is not UTF-8 text") from None
        source = str(path)
    else:
        source, raw = "INPUT", text
    if not raw.strip():
        raise UsageProblem(f'{source} is empty: give a JSON value, e.g. \'{{"prompt": "hi"}}\'')
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageProblem(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        # RunPod refuses anything else with a 400; saying so here makes it a usage error (exit 2).
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        raise UsageProblem(
            f'{source} must be a JSON object (the handler\'s input), got {kind}: e.g. \'{{"prompt": "hi"}}\''
        )
    return value


def exit_code_for(job: Job) -> int:
    """0 unless the job ended FAILED, CANCELLED or TIMED_OUT (a pending job is not a failure)."""
    return EXIT_JOB if job.is_terminal and not job.is_completed else EXIT_OK


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
class _Progress:
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

    def __enter__(self) -> Self:
        if self.enabled and self.console.is_terminal:
            self._live = Live(self, console=self.console, transient=True, refresh_per_second=10)
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=0.5)
        if self._live is not None:
            self._live.stop()

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

        self._watcher = threading.Thread(target=poll, name="rpq-progress", daemon=True)
        self._watcher.start()

    def _line(self) -> str:
        job = f" {self.job_id}" if self.job_id else ""
        return f"{self.status:<11} {time.monotonic() - self.started:5.1f} s  {self.label}{job}"

    def __rich__(self) -> RenderableType:
        self._spinner.update(text=Text(self._line(), no_wrap=True, overflow="ellipsis"))
        return self._spinner

    def update(self, job: Job) -> None:
        if job.is_pending and self.status in _ENDED:
            return  # a background poll answered after the wait saw the end
        changed = job.status.value != self.status
        self.status, self.job_id = job.status.value, job.id
        # Off a terminal, one line per change; the terminal state itself is the caller's verdict line.
        if changed and self.enabled and self._live is None and not job.is_terminal:
            self.console.print(self._line(), highlight=False, soft_wrap=True)


@dataclass
class Session:
    """One command's connection and output: results on stdout, progress and messages on stderr."""

    client: Client
    base_url: str
    local: bool
    json: bool
    debug: bool
    out: Console
    err: Console
    job_id: str | None = None  # the job in hand, named if the user interrupts

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return self.client.endpoint(endpoint_id)

    def progress(self, label: str) -> _Progress:
        # In --json mode a script reads stdout; keep stderr quiet unless a person is watching.
        enabled = not self.json or self.err.is_terminal
        return _Progress(self.err, label, enabled)

    # -- results ---------------------------------------------------------------------------------

    def print_json(self, data: Any) -> None:
        """Exactly the server's JSON, one document per line (no rich markup, wrapping or colour)."""
        sys.stdout.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def print_value(self, value: Any) -> None:
        """A job's output as a person or a pipe wants it: text as is, anything else as indented JSON."""
        if value is None:
            return
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, message: str, style: str | None = None) -> None:
        self.err.print(message, style=style, highlight=False, soft_wrap=True)

    def describe_end(self, job: Job) -> None:
        """The one-line verdict on stderr; a failure's error parsed into type and message."""
        timing = f"queued {_seconds(job.delay_time)}, ran {_seconds(job.execution_time)}"
        if job.is_completed:
            self.note(f"COMPLETED  job {job.id}  ({timing})", "green")
            return
        if not job.is_terminal:
            self.note(f"{job.status.value}  job {job.id}")
            return
        self.note(f"{job.status.value}  job {job.id}  ({timing})", "bold red")
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
            ("status", job.status.value),
            ("queued", None if job.delay_time is None else _seconds(job.delay_time)),
            ("ran", None if job.execution_time is None else _seconds(job.execution_time)),
            ("worker", job.worker_id),
            ("retries", job.retries),
            ("error", None if job.error is None else _error_line(job)),
            ("output", None if job.output is None else _compact(job.output)),
        ]
        # Plain lines, no table padding: `rpq status … | grep ^status` should just work.
        sys.stdout.write("".join(f"{name:<8}{value}\n" for name, value in rows if value is not None))
        sys.stdout.flush()

    def health_table(self, endpoint_id: str, health: Health) -> Table:
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


def _hint_for(exc: RunpodQueueError, s: Session | None) -> str:
    if isinstance(exc, APIConnectionError) and s is not None:
        if s.local:
            port = urlsplit(s.base_url).port
            return f"\n  is the emulator running? start one with: rpq serve HANDLER.py --port {port}"
        return f"\n  check --base-url / ${ENV_BASE_URL} ({s.base_url}) and your network"
    if isinstance(exc, AuthenticationError):
        return f"\n  set the right key with `export {ENV_API_KEY}=...` or --api-key"
    return ""


def _configure_debug_logging() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("runpod_queue")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


@contextmanager
def session(
    api_key: str | None, base_url: str | None, local: int | None, json_out: bool, debug: bool
) -> Iterator[Session]:
    """Open the client and map every failure to a message and an exit code (see ``rpq --help``)."""
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    handler = _configure_debug_logging() if debug else None
    current: Session | None = None

    def fail(code: int, message: str, exc: BaseException | None = None) -> NoReturn:
        if debug and exc is not None:
            err.print(Text("".join(traceback.format_exception(exc)).rstrip(), style="dim"))
        err.print(Text(f"error: {message}", style="red"), soft_wrap=True)
        raise typer.Exit(code)

    try:
        key, url = _resolve(api_key, base_url, local)
        with Client(api_key=key, base_url=url) as client:
            current = Session(client, url, local is not None, json_out, debug, out, err)
            yield current
    except UsageProblem as exc:
        fail(EXIT_USAGE, str(exc))
    except WaitTimeoutError as exc:
        last = f" (last seen {exc.job.status.value})" if exc.job is not None else ""
        fail(
            EXIT_JOB,
            f"job {exc.job_id} did not finish within {exc.timeout:g} s{last}; it keeps running",
            exc,
        )
    except JobFailedError as exc:
        fail(EXIT_JOB, str(exc), exc)
    except (APIStatusError, APIConnectionError, APIResponseError) as exc:
        fail(EXIT_API, f"{exc}{_hint_for(exc, current)}", exc)
    except RunpodQueueError as exc:
        fail(EXIT_API, str(exc), exc)
    except KeyboardInterrupt:
        job = current.job_id if current is not None else None
        message = "interrupted" + (f"; job {job} keeps running on the endpoint" if job else "")
        err.print(message, style="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if handler is not None:
            logging.getLogger("runpod_queue").removeHandler(handler)
