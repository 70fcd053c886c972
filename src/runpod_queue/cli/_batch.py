"""`rpq batch`: a file of inputs through one endpoint, every result into a file, resumable after any crash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._duration import DURATION_METAVAR, duration
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._interrupt import graceful_stop
from runpod_queue.cli._next import failure_hint
from runpod_queue.cli._options import ApiKeyOpt, BaseUrlOpt, DebugOpt, LocalOpt
from runpod_queue.cli._render import exit_code_for
from runpod_queue.cli._session import Session, session

if TYPE_CHECKING:
    from runpod_queue import Policy, S3Store
    from runpod_queue.batch import BatchSummary, WebhookOptions
    from runpod_queue.errors import RunpodQueueError

# Exit codes, as for every command (the session and exit_code_for): 0 every item completed, 1 some items
# did not (failed, lost, invalid, rejected, duplicate), 2 usage error, 3 API or connection error, 130
# stopped (the same command resumes).
_MAX_WARNINGS = 20
_RUNNER = "Batch"
_WEBHOOKS = "Webhooks"
EXIT_HELP = (
    "Exit codes: 0 every item completed · 1 some did not (failed, lost, malformed, rejected, duplicate key) "
    "· 2 usage error · 3 API or connection error · 130 stopped: run the same command again to resume."
)


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
        raise UsageProblem(str(exc)) from None


def _webhooks(listen: str | None, webhook_url: str | None, grace: float) -> WebhookOptions | None:
    from runpod_queue.batch import WebhookOptions

    if listen is None:
        if webhook_url is not None:
            raise UsageProblem("--webhook-url needs --listen (where the receiver it leads to binds)")
        return None
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise UsageProblem(
            f"--listen takes HOST:PORT (e.g. 127.0.0.1:8787; port 0: any free one), got {listen!r}"
        )
    try:
        return WebhookOptions(listen=(host.strip("[]"), int(port_text)), url=webhook_url, grace=grace)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None


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
    warm: Annotated[
        int | None,
        typer.Option(
            "--warm",
            metavar="N",
            min=1,
            help="Keep N workers running for the run (raises the endpoint's min workers, puts it back "
            "after, also after Ctrl-C or on the resume after a crash).",
            rich_help_panel=_RUNNER,
        ),
    ] = None,
    native: Annotated[
        bool,
        typer.Option(
            "--native",
            help="Send the file through RunPod's Batch Jobs (beta: batches of up to 5,000, cheaper "
            "off-peak capacity, results in hours) instead of /run; the handler must be wrapped with "
            "runpod_queue.worker.keep_key.",
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
    upload_from_env: Annotated[
        bool,
        typer.Option(
            "--upload-from-env",
            help='Upload the files inputs name as {"$upload": "PATH"} to the bucket of the BUCKET_* '
            "variables, and send their presigned URLs (with --local, the emulator's own S3 is used "
            "without this option when it serves one).",
            rich_help_panel=_RUNNER,
        ),
    ] = False,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run every input through ENDPOINT and write every result to OUT — durably.

    Stopped (Ctrl-C, kill, crash, sleep)? Run the same command again to resume: nothing is paid twice.
    """
    with session(api_key, base_url, local, False, debug) as s:
        if native:
            given = [
                flag
                for flag, value in (
                    ("--listen", listen),
                    ("--policy-ttl", policy_ttl),
                    ("--execution-timeout", execution_timeout),
                    ("--warm", warm),
                    ("--upload-from-env", upload_from_env or None),
                )
                if value is not None
            ]
            if given:
                raise UsageProblem(
                    f"--native sends Batch Jobs requests, which take no {given[0]}: drop one of the two"
                )
        s.store = _upload_store(upload_from_env, local, s._api_key)
        _run_batch(
            s,
            inputs,
            endpoint=endpoint,
            out=out,
            journal_path=journal if journal is not None else out.with_name(out.name + ".journal"),
            max_in_flight=max_in_flight,
            retry_failed=retry_failed,
            resubmit_lost=resubmit_lost,
            warm=warm,
            policy=_policy(policy_ttl, execution_timeout),
            webhooks=_webhooks(listen, webhook_url, webhook_grace),
            no_rate_limits=no_rate_limits,
            progress=progress,
            native=native,
            resume_options=_resume_options(no_rate_limits, listen, webhook_url, native, upload_from_env)
            + (["--warm", str(warm)] if warm is not None else []),
        )


def _upload_store(from_env: bool, local: int | None, api_key: str | None) -> S3Store | None:
    """Where ``{"$upload": PATH}`` files go: the BUCKET_* variables (--upload-from-env), else the local
    emulator's S3 when it serves one (--local), else nowhere (an item naming a file then stops the batch
    with the way to fix it). Asked once, before anything is read."""
    from runpod_queue import S3Config, S3Store
    from runpod_queue.errors import ConfigurationError

    if from_env:
        try:
            return S3Store(S3Config.from_env())
        except ConfigurationError as exc:
            raise UsageProblem(f"--upload-from-env: {exc}") from None
    if local is None:
        return None
    from runpod_queue.cli._local_s3 import emulator_s3

    try:
        config = emulator_s3(local, api_key=api_key)
    except ConfigurationError:
        return None  # the batch's own health check says what is wrong with the emulator
    return None if config is None else S3Store(config)


def _resume_options(
    no_rate_limits: bool,
    listen: str | None,
    webhook_url: str | None,
    native: bool = False,
    upload_from_env: bool = False,
) -> list[str]:
    """The options besides the connection's that the resume command repeats (the key never: see _next)."""
    extra = ["--no-rate-limits"] if no_rate_limits else []
    if native:
        extra.append("--native")
    if upload_from_env:
        extra.append("--upload-from-env")
    if listen is not None:
        extra += ["--listen", listen]
    if webhook_url is not None:
        extra += ["--webhook-url", webhook_url]
    return extra


def _run_batch(
    s: Session,
    inputs: Path,
    *,
    endpoint: str,
    out: Path,
    journal_path: Path,
    max_in_flight: int,
    retry_failed: int,
    resubmit_lost: bool,
    warm: int | None,
    policy: Policy | None,
    webhooks: WebhookOptions | None,
    no_rate_limits: bool,
    progress: bool,
    resume_options: list[str],
    native: bool = False,
) -> NoReturn:
    """The batch inside the shared session: it maps the errors to messages and exit codes, as for every
    command; what is the batch's own is said here (its journal, the resume command, the summary)."""
    from runpod_queue import RateLimits
    from runpod_queue.batch import BatchRunner
    from runpod_queue.batch._progress import LiveProgress, summary_lines, summary_table

    if not inputs.is_file():
        what = "is a directory, not an input file" if inputs.is_dir() else "no such input file"
        raise UsageProblem(f"{inputs}: {what}")
    try:
        total = _count_lines(inputs)  # also proves the file readable, before anything is created
    except OSError as exc:
        raise UsageProblem(f"cannot read the input file {_os_error(exc)}") from None

    err = s.err
    resume = s.connection.script(
        "batch", str(inputs), "--endpoint", endpoint, "--out", str(out), "--journal", str(journal_path),
        *resume_options,
    )  # fmt: skip

    def explain(exc: RunpodQueueError) -> str:
        return f"{_hint(exc, s.local, s.base_url, endpoint)}\n{_after_error(exc, journal_path, resume)}"

    s.explainer = explain
    s.on_interrupt = lambda: f"interrupted; the journal is consistent. Resume with:\n  {resume}"
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
            via = f" (public URL {webhooks.url})" if webhooks is not None and webhooks.url is not None else ""
            s.note(f"receiving webhooks on {where}{via}")
        if live is not None:
            live(summary)

    def stop() -> None:
        s.note("stopping: no new submissions; finishing requests on the wire (Ctrl-C again: now)")
        runner.stop()

    limits = RateLimits.off() if no_rate_limits else RateLimits.runpod()
    s.rate_limits = limits
    runner = BatchRunner(
        s.client.endpoint(endpoint),
        journal=journal_path,
        output=out,
        max_in_flight=max_in_flight,
        retry_failed=retry_failed,
        resubmit_lost=resubmit_lost,
        warm=warm,
        policy=policy,
        rate_limits=limits,
        webhooks=webhooks,
        total=total,
        on_progress=on_progress,
        on_warning=warn,
        native=native,
    )
    try:
        with (
            graceful_stop(stop),
            open(inputs, "rb") as lines,
        ):  # bytes: non-UTF-8 lines are reported malformed
            if live is not None:
                with live:
                    summary = runner.run(lines)
            else:
                summary = runner.run(lines)
    except OSError as exc:  # the output's directory missing, the --listen address taken, ...
        raise UsageProblem(_os_error(exc)) from None
    short = summary_lines(summary, str(out))
    for line in short:  # a clean success: one line, the breakdown is for batches that need a look
        s.out.print(line, soft_wrap=True)  # a path is copied, not broken across lines
    if short:
        raise typer.Exit(exit_code_for(summary))
    s.out.print(summary_table(summary))
    if summary.interrupted:
        running = (
            f"{summary.in_flight} jobs keep running on the endpoint; they and the remaining inputs are"
            if summary.in_flight
            else "the remaining inputs are"
        )
        s.note(f"stopped: {running} picked up by running the same command again:\n  {resume}")
    else:
        _report_failures(s, summary, out)
    raise typer.Exit(exit_code_for(summary))


def _report_failures(s: Session, summary: BatchSummary, out: Path) -> None:
    if summary.ambiguous:
        s.note(f"{summary.ambiguous} submissions were ambiguous and resubmitted: they may have run twice")
    if summary.resubmitted_lost:
        s.note(f"{summary.resubmitted_lost} items recorded LOST were submitted anew (--resubmit-lost)")
    if summary.lost:
        s.note(f"{summary.lost} items are LOST; run again with --resubmit-lost to submit them anew")
    if not summary.ok:
        kinds = {
            "failed": summary.failed,
            "lost": summary.lost,
            "invalid": summary.invalid,
            "rejected": summary.rejected,
            "unmatched": summary.unmatched,
            "duplicate": summary.duplicates,
        }
        which = ", ".join(f"{count} {word}" for word, count in kinds.items() if count)
        s.note(f"{summary.failures} items did not complete ({which}); see 'error' in {out}")
    else:
        s.note(f"all {summary.completed} items completed: {out}")


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
