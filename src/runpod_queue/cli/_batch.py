"""`rpq batch`: a file of inputs through one endpoint, every result into a file, resumable after any crash."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runpod_queue._logs import debug_to_stderr
from runpod_queue.cli._app import EXIT_API, EXIT_JOB, EXIT_OK, EXIT_USAGE, app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._duration import DURATION_METAVAR, duration
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._next import Connection, failure_hint
from runpod_queue.cli._options import ApiKeyOpt, BaseUrlOpt, DebugOpt, LocalOpt
from runpod_queue.cli._session import resolve as _resolve

if TYPE_CHECKING:
    from runpod_queue import Policy
    from runpod_queue.batch import BatchSummary, WebhookOptions

# Exit codes, as for every command: 0 every item completed, 1 some items did not (failed, lost, invalid,
# rejected, duplicate), 2 usage error, 3 API or connection error, 130 stopped (the same command resumes).
EXIT_INTERRUPTED = 130
_MAX_WARNINGS = 20
_RUNNER = "Batch"
_WEBHOOKS = "Webhooks"
EXIT_HELP = (
    "Exit codes: 0 every item completed · 1 some did not (failed, lost, malformed, rejected, duplicate key) "
    "· 2 usage error · 3 API or connection error · 130 stopped: run the same command again to resume."
)


class _Usage(Exception):
    """A bad option value, reported as a usage error (exit 2)."""


def _count_lines(path: Path) -> int:
    """Non-blank lines, streamed: the total for the ETA, without holding the file."""
    count = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                count += 1
    return count


def _policy(ttl: float | None, execution_timeout: float | None) -> Policy | None:
    from runpod_queue import Policy

    if ttl is None and execution_timeout is None:
        return None
    try:
        return Policy(execution_timeout=execution_timeout, ttl=ttl)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _webhooks(listen: str | None, webhook_url: str | None, grace: float) -> WebhookOptions | None:
    from runpod_queue.batch import WebhookOptions

    if listen is None:
        if webhook_url is not None:
            raise _Usage("--webhook-url needs --listen (where the receiver it leads to binds)")
        return None
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise _Usage(f"--listen takes HOST:PORT (e.g. 127.0.0.1:8787; port 0: any free one), got {listen!r}")
    try:
        return WebhookOptions(listen=(host.strip("[]"), int(port_text)), url=webhook_url, grace=grace)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


@app.command(cls=RpqCommand, epilog=EXIT_HELP)
def batch(
    inputs: Annotated[
        Path,
        typer.Argument(
            metavar="INPUTS",
            help='JSONL file: each line is the handler input, or {"key": ..., "input": {...}}.',
            show_default=False,
        ),
    ],
    endpoint: Annotated[
        str, typer.Option("--endpoint", "-e", metavar="ENDPOINT", help="Endpoint id.", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="OUT", help="Results file (JSONL, one line per input).", show_default=False
        ),
    ],
    journal: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="SQLite journal that makes the batch resumable (default: OUT.journal).",
            rich_help_panel=_RUNNER,
        ),
    ] = None,
    max_in_flight: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Items between submission and result at any moment.",
            rich_help_panel=_RUNNER,
        ),
    ] = 1000,
    retry_failed: Annotated[
        int,
        typer.Option(
            "--retry-failed",
            min=0,
            metavar="N",
            help="Send a FAILED or TIMED_OUT job to /retry up to N times.",
            rich_help_panel=_RUNNER,
        ),
    ] = 2,
    resubmit_lost: Annotated[
        bool,
        typer.Option(
            "--resubmit-lost",
            help="Submit anew the items an earlier run recorded LOST (their job may have run: counted as "
            "ambiguous).",
            rich_help_panel=_RUNNER,
        ),
    ] = False,
    policy_ttl: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="Job policy ttl (10s to 7d), queue time included, e.g. 10m.",
            rich_help_panel=_RUNNER,
        ),
    ] = None,
    execution_timeout: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="Job policy executionTimeout (5s to 7d), counted from when a worker starts it, e.g. 2m.",
            rich_help_panel=_RUNNER,
        ),
    ] = None,
    no_rate_limits: Annotated[
        bool,
        typer.Option(
            "--no-rate-limits",
            help="Do not pace requests to RunPod's documented limits (e.g. for a local emulator).",
            rich_help_panel=_RUNNER,
        ),
    ] = False,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Take results by webhook: every job gets a signed webhook to a receiver bound here (e.g. "
            "127.0.0.1:8787 behind a tunnel; port 0: any free one), and only jobs whose delivery is late "
            "are polled.",
            rich_help_panel=_WEBHOOKS,
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(
            "--webhook-url",
            metavar="URL",
            help="Public URL that reaches --listen (a tunnel or a public host); default: the --listen "
            "address itself.",
            rich_help_panel=_WEBHOOKS,
        ),
    ] = None,
    webhook_grace: Annotated[
        float,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="How long a job may go without a delivery before it is polled (default 30s).",
            show_default=False,
            rich_help_panel=_WEBHOOKS,
        ),
    ] = 30.0,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Live progress on stderr when it is a terminal.",
            rich_help_panel="Output",
        ),
    ] = True,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run every input through ENDPOINT and write every result to OUT — durably.

    Stopped (Ctrl-C, kill, crash, sleep)? Run the same command again to resume: nothing is paid twice.
    """
    from rich.console import Console

    from runpod_queue import Client, RateLimits
    from runpod_queue.batch import BatchRunner, JournalError
    from runpod_queue.batch._progress import LiveProgress, summary_lines, summary_table
    from runpod_queue.errors import RunpodQueueError

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out_console = Console(highlight=False)
    if not inputs.is_file():
        what = "is a directory, not an input file" if inputs.is_dir() else "no such input file"
        err.print(f"error: {inputs}: {what}")
        raise typer.Exit(EXIT_USAGE)
    try:
        total = _count_lines(inputs)  # also proves the file readable, before anything is created
    except OSError as exc:
        err.print(f"error: cannot read the input file {_os_error(exc)}")
        raise typer.Exit(EXIT_USAGE) from None
    journal_path = journal if journal is not None else out.with_name(out.name + ".journal")
    try:
        key, url = _resolve(api_key, base_url, local)
        policy = _policy(policy_ttl, execution_timeout)
        webhooks = _webhooks(listen, webhook_url, webhook_grace)
    except (UsageProblem, _Usage) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None

    warnings = 0

    def warn(message: str) -> None:
        nonlocal warnings
        warnings += 1
        if warnings <= _MAX_WARNINGS:
            err.print(f"[yellow]warning:[/] {message}", markup=True, soft_wrap=True)
        elif warnings == _MAX_WARNINGS + 1:
            err.print("[yellow]warning:[/] more warnings follow; see the summary", markup=True)

    live = LiveProgress(err) if progress and err.is_terminal else None
    announced = False

    def on_progress(summary: BatchSummary) -> None:
        nonlocal announced
        address = runner.webhook_address
        if not announced and address is not None:  # the first snapshot comes once the receiver is up
            announced = True
            host, port = address
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            via = f" (public URL {webhook_url})" if webhook_url is not None else ""
            err.print(f"receiving webhooks on {where}{via}")
        if live is not None:
            live(summary)

    limits = RateLimits.off() if no_rate_limits else RateLimits.runpod()
    client = Client(key, base_url=url, rate_limits=limits)
    runner = BatchRunner(
        client.endpoint(endpoint),
        journal=journal_path,
        output=out,
        max_in_flight=max_in_flight,
        retry_failed=retry_failed,
        resubmit_lost=resubmit_lost,
        policy=policy,
        rate_limits=limits,
        webhooks=webhooks,
        total=total,
        on_progress=on_progress,
        on_warning=warn,
    )

    stops = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stops
        stops += 1
        if stops == 1:
            err.print("stopping: no new submissions; finishing requests on the wire (Ctrl-C again: now)")
            runner.stop()
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    # The command that resumes this batch; the key, if it came with --api-key, is read from the
    # environment instead (never printed, nor put in `ps` again).
    extra = ["--endpoint", endpoint, "--out", str(out), "--journal", str(journal_path)]
    if no_rate_limits:
        extra.append("--no-rate-limits")
    if listen is not None:
        extra += ["--listen", listen]
    if webhook_url is not None:
        extra += ["--webhook-url", webhook_url]
    resume = Connection.given(api_key, base_url, local).script("batch", str(inputs), *extra)
    handler = debug_to_stderr() if debug else None
    try:
        with client, open(inputs, "rb") as lines:  # bytes: a line that is not UTF-8 is reported as malformed
            if live is not None:
                with live:
                    summary = runner.run(lines)
            else:
                summary = runner.run(lines)
    except KeyboardInterrupt:
        err.print(f"interrupted; the journal is consistent. Resume with:\n  {resume}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except JournalError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except RunpodQueueError as exc:
        err.print(f"error: {exc}{_hint(exc, local is not None, url, endpoint)}")
        err.print(_after_error(exc, journal_path, resume))
        raise typer.Exit(EXIT_API) from None
    except OSError as exc:
        err.print(f"error: {_os_error(exc)}")
        raise typer.Exit(EXIT_USAGE) from None
    finally:
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)
        if handler is not None:
            logging.getLogger("runpod_queue").removeHandler(handler)
    short = summary_lines(summary, str(out))
    for line in short:  # a clean success: one line, the breakdown is for batches that need a look
        out_console.print(line, soft_wrap=True)  # a path is copied, not broken across lines
    if short:
        raise typer.Exit(EXIT_OK)
    out_console.print(summary_table(summary))
    if summary.interrupted:
        running = (
            f"{summary.in_flight} jobs keep running on the endpoint; they and the remaining inputs are"
            if summary.in_flight
            else "the remaining inputs are"
        )
        err.print(f"stopped: {running} picked up by running the same command again:\n  {resume}")
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.ambiguous:
        err.print(f"{summary.ambiguous} submissions were ambiguous and resubmitted: they may have run twice")
    if summary.resubmitted_lost:
        err.print(f"{summary.resubmitted_lost} items recorded LOST were submitted anew (--resubmit-lost)")
    if summary.lost:
        err.print(f"{summary.lost} items are LOST; run again with --resubmit-lost to submit them anew")
    if not summary.ok:
        kinds = {
            "failed": summary.failed,
            "lost": summary.lost,
            "invalid": summary.invalid,
            "rejected": summary.rejected,
            "duplicate": summary.duplicates,
        }
        which = ", ".join(f"{count} {word}" for word, count in kinds.items() if count)
        err.print(f"{summary.failures} items did not complete ({which}); see 'error' in {out}")
        raise typer.Exit(EXIT_JOB)
    err.print(f"all {summary.completed} items completed: {out}")
    raise typer.Exit(EXIT_OK)


def _hint(exc: Exception, local: bool, url: str, endpoint: str) -> str:
    from runpod_queue.errors import APIConnectionError, AuthenticationError, NotFoundError

    if isinstance(exc, APIConnectionError):
        return failure_hint(exc, local, url)  # as every command says it
    if isinstance(exc, AuthenticationError):
        return "\n  the API key was refused: set the right one with `export RUNPOD_API_KEY=...`"
    if isinstance(exc, NotFoundError):  # a batch only meets a 404 on endpoint calls (health, /run)
        # The error already says the endpoint is not there (said once): add where to look.
        return f"\n  check --endpoint ({endpoint}) and the base URL ({url})"
    return ""


def _after_error(exc: Exception, journal: Path, resume: str) -> str:
    """What the user can do next. The resume command only when there is something to resume: a refused
    run leaves no journal, and a refusal (key, endpoint) is not cured by running the same command."""
    from runpod_queue.errors import AuthenticationError, NotFoundError, PermissionDeniedError

    if not journal.exists():
        return "nothing was submitted"
    if isinstance(exc, AuthenticationError | NotFoundError | PermissionDeniedError):
        return (
            f"the journal {journal} keeps the work done so far: the same command resumes once this is fixed"
        )
    return f"nothing is lost; fix the cause and resume with:\n  {resume}"


def _os_error(exc: OSError) -> str:
    """``path: reason`` rather than Python's ``[Errno 2] No such file or directory: 'path'``."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    return str(exc)
