"""The endpoint commands: run, status, wait, stream, cancel, retry, purge, health.

Each is a thin layer over `Client`: parse arguments, make one or a few calls, print, exit with the code
docs/cli.md documents. Connection options sit on every command so they can come last
(`rpq status EP JOB --json`).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from runpod_queue import ConfigurationError, Endpoint, Job, Policy, StorageError
from runpod_queue._contract import RUNSYNC_MIN_WAIT_MS
from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._duration import within
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._input import parse_input
from runpod_queue.cli._options import (
    DURATIONS_HELP,
    ApiKeyOpt,
    BaseUrlOpt,
    DebugOpt,
    JsonOpt,
    LocalOpt,
    duration_option,
)
from runpod_queue.cli._render import exit_code_for
from runpod_queue.cli._session import Session, session

EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="Endpoint id.", show_default=False)]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id.", show_default=False)]
# No --timeout means "until the job ends"; run_sync needs a bound: a job cannot outlive RunPod's longest ttl.
_UNTIL_IT_ENDS = timedelta(days=7)
_RUNSYNC_MIN_WAIT = RUNSYNC_MIN_WAIT_MS / 1000
_MAX_SHOWN_INPUT = 200  # a longer INPUT is not repeated in a hint: it would bury the hint


def _policy(execution_timeout: float | None, ttl: float | None, low_priority: bool) -> Policy | None:
    if execution_timeout is None and ttl is None and not low_priority:
        return None
    try:
        return Policy(execution_timeout=execution_timeout, ttl=ttl, low_priority=low_priority or None)
    except (TypeError, ValueError) as exc:  # Policy's own bounds, named as the options are
        message = str(exc).replace("Policy.execution_timeout", "--execution-timeout")
        raise UsageProblem(message.replace("Policy.ttl", "--ttl")) from None


def _follow(s: Session, ep: Endpoint, job_id: str, timeout: float | None) -> Job:
    """Wait for a job submitted earlier with the live status line (``wait``)."""
    s.job_id = job_id
    with s.progress(ep.id) as progress:
        progress.job_id, progress.status = job_id, "WAITING"
        progress.watch(ep, job_id)
        return ep.wait(job_id, timeout=timeout, on_update=progress.update)


def _print_chunks(s: Session, ep: Endpoint, job_id: str, timeout: float | None, progress: ExitStack) -> Job:
    """Print a job's chunks as they arrive, then its output if it adds anything; the ended Job.

    ``progress`` (the live status line, if any) closes at the first chunk, so tokens never share a line
    with the spinner. RunPod hands each chunk out once: a job that streamed before (another ``rpq stream``
    took the chunks) would print nothing, so that is said instead.
    """
    chunks = ep.stream(job_id, timeout=timeout)
    seen: list[object] = []
    open_line = False
    for chunk in chunks:
        if not seen:
            progress.close()
            s.streaming = True  # a generator: an interrupt now also offers `rpq stream` for the rest
        s.settle()  # a "retrying" line would hold back stdout until a newline
        seen.append(chunk.output)
        if s.json:
            s.print_json(dict(chunk.raw))
        elif isinstance(chunk.output, str):
            sys.stdout.write(chunk.output)
            sys.stdout.flush()
            open_line = not chunk.output.endswith("\n")
        else:
            if open_line:
                sys.stdout.write("\n")
                open_line = False
            s.print_value(json.dumps(chunk.output, ensure_ascii=False))
        s.pause_retry_line(open_line)
    progress.close()
    if open_line:
        sys.stdout.write("\n")
        sys.stdout.flush()
        s.pause_retry_line(False)
    final = chunks.job
    assert final is not None  # iteration ended without an error
    if final.is_completed and "output" not in final.raw:
        final = ep.status(job_id)  # /stream answers carry no output or timings; the verdict shows both
    if s.json or not final.is_completed:
        return final
    # The worker reports a generator without return_aggregate_stream as output [], and with it the
    # chunks again: neither adds anything to what was printed.
    if not seen and final.output == []:
        s.note(
            f"no chunks left to print: job {job_id} streamed them to an earlier reader (RunPod hands each "
            "chunk out once), or streamed none; with return_aggregate_stream its output keeps them all"
        )
    elif final.output != seen and final.output != []:
        s.print_value(final.output)
    return final


def _status_with_chunks(
    s: Session, ep: Endpoint, job_id: str, timeout: float | None
) -> tuple[Job, dict[str, Any]]:
    """``run --json``: wait through /stream, then the ended job's /status document.

    A generator without return_aggregate_stream ends with ``"output": []``, and /stream hands each chunk
    out once — to this command. So the chunks become the output, as return_aggregate_stream would make
    them: a script reads what the handler yielded instead of an empty list.
    """
    streamed: list[object] = []
    for chunk in ep.stream(job_id, timeout=timeout):
        streamed.append(chunk.output)
        s.streaming = True  # an interrupt now also offers `rpq stream` for the rest
    job = ep.status(job_id)
    document = dict(job.raw)
    if streamed and job.is_completed and job.output == []:
        document["output"] = streamed
    return job, document


TimeoutOpt = Annotated[
    float | None,
    duration_option(
        help="Stop waiting after this long (exit 1; the job keeps running). Default: until it ends."
    ),
]


@app.command(cls=RpqCommand, epilog=DURATIONS_HELP)
def run(
    endpoint: EndpointArg,
    input: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="The job's input: inline JSON, @file.json, or - to read stdin.",
            show_default=False,
        ),
    ],
    sync: Annotated[
        bool, typer.Option("--sync", help="Use /runsync (one held request) instead of /run + wait.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Queue the job, print its id and return.")
    ] = False,
    webhook: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="URL RunPod POSTs the result to when the job ends (a signed one: `rpq webhook-url`).",
            show_default=False,
        ),
    ] = None,
    execution_timeout: Annotated[
        float | None,
        duration_option(
            help="policy.executionTimeout: how long a worker may run the job (5s to 7d), e.g. 2m."
        ),
    ] = None,
    ttl: Annotated[
        float | None,
        duration_option(
            help="policy.ttl: how long the job may live, queue time included (10s to 7d), e.g. 10m."
        ),
    ] = None,
    low_priority: Annotated[
        bool, typer.Option("--low-priority", help="policy.lowPriority: do not scale the endpoint up for it.")
    ] = False,
    download: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Save every http(s) URL in the output (results a worker put in object storage) into DIR; "
            "presigned URLs need nothing, others the BUCKET_* variables.",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Submit a job and wait for its result (output on stdout, progress on stderr)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        if sync and no_wait:
            raise UsageProblem("--sync and --no-wait exclude each other")
        payload = parse_input(input, warn=lambda message: s.note(message, "yellow"))
        policy = _policy(execution_timeout, ttl, low_priority)
        wait_for = within(timeout, "--timeout")
        ep = s.endpoint(endpoint)
        # Until the answer names the job, an interrupt can only say it may exist, and how to resubmit.
        s.submitting, s.sync = ["run", endpoint, input if len(input) <= _MAX_SHOWN_INPUT else "INPUT"], sync
        if no_wait:
            job = ep.run(payload, webhook=webhook, policy=policy)
            s.job_id = job.id
            if s.json:
                s.print_json(dict(job.raw))
            else:
                s.print_value(job.id)
                s.note(f"queued job {job.id}\n{s.next_steps(job.id)}")
            return
        if sync:
            # runsync holds at least a second; a shorter --timeout waits that second.
            limit = _UNTIL_IT_ENDS if wait_for is None else max(_RUNSYNC_MIN_WAIT, wait_for)
            with s.progress(endpoint) as progress:
                progress.status = "RUNSYNC"

                def on_update(job: Job) -> None:
                    s.job_id = job.id  # the held request ended unfinished: the client now waits for it
                    progress.update(job)

                job = ep.run_sync(payload, timeout=limit, webhook=webhook, policy=policy, on_update=on_update)
        elif s.json:  # RunPod's /status answer, as documented (a generator's chunks in its output)
            queued = ep.run(payload, webhook=webhook, policy=policy)
            s.job_id = queued.id
            with s.progress(endpoint) as progress:
                progress.job_id = queued.id
                progress.update(queued)
                progress.watch(ep, queued.id)
                job, document = _status_with_chunks(s, ep, queued.id, wait_for)
            s.print_json(document)
            _save_outputs(job, download)
            raise typer.Exit(exit_code_for(job))
        else:
            # Waiting through /stream: a generator's chunks print as they come instead of being left
            # behind (its final output is often just []); any other job simply ends the stream.
            queued = ep.run(payload, webhook=webhook, policy=policy)
            s.job_id = queued.id
            with ExitStack() as spinner:
                progress = spinner.enter_context(s.progress(endpoint))
                progress.job_id = queued.id
                progress.update(queued)
                progress.watch(ep, queued.id)
                job = _print_chunks(s, ep, queued.id, wait_for, spinner)
            s.describe_end(job)
            _save_outputs(job, download)
            raise typer.Exit(exit_code_for(job))
        _save_outputs(job, download)
        s.finish(job)


@app.command(cls=RpqCommand, epilog=DURATIONS_HELP)
def status(
    endpoint: EndpointArg,
    job: JobArg,
    keep_result_for: Annotated[
        float | None,
        duration_option(
            help="Keep a finished job's result only this much longer, e.g. 30s (RunPod's /status?ttl=)."
        ),
    ] = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a job's current state (exit 1 if it ended FAILED, CANCELLED or TIMED_OUT)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        keep = within(keep_result_for, "--keep-result-for")
        snapshot = s.endpoint(endpoint).status(job, keep_result_for=keep)
        s.show_job(snapshot)
        raise typer.Exit(exit_code_for(snapshot))


@app.command(cls=RpqCommand, epilog=DURATIONS_HELP)
def wait(
    endpoint: EndpointArg,
    job: JobArg,
    timeout: TimeoutOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Wait for a job to end, with a live status line; print its output."""
    with session(api_key, base_url, local, json_out, debug) as s:
        result = _follow(s, s.endpoint(endpoint), job, within(timeout, "--timeout"))
        s.finish(result)


@app.command(cls=RpqCommand, epilog=DURATIONS_HELP)
def stream(
    endpoint: EndpointArg,
    job: JobArg,
    timeout: Annotated[float | None, duration_option(help="Give up after this long (exit 1).")] = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print a generator job's chunks as they arrive, then exit by how the job ended.

    Text chunks are joined as they come; with --json, one chunk object per line."""
    with session(api_key, base_url, local, json_out, debug) as s:
        s.job_id, s.streaming = job, True
        final = _print_chunks(s, s.endpoint(endpoint), job, within(timeout, "--timeout"), ExitStack())
        if not s.json:
            s.describe_end(final)
        raise typer.Exit(exit_code_for(final))


@app.command(cls=RpqCommand)
def cancel(
    endpoint: EndpointArg,
    job: JobArg,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Cancel a queued or running job (exit 0 once it is CANCELLED; 3 if it had already ended)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        s.show_job(s.endpoint(endpoint).cancel(job))


@app.command(cls=RpqCommand)
def retry(
    endpoint: EndpointArg,
    job: JobArg,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Requeue a FAILED or TIMED_OUT job under the same id (follow it with `rpq wait`)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        requeued = s.endpoint(endpoint).retry(job)
        s.show_job(requeued)
        if not s.json:
            s.note(f"requeued job {requeued.id}\n{s.next_steps(requeued.id)}")


@app.command(cls=RpqCommand)
def purge(
    endpoint: EndpointArg,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Remove every IN_QUEUE job of the endpoint (running jobs continue)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        removed = s.endpoint(endpoint).purge_queue()
        if s.json:
            # Endpoint.purge_queue keeps only the count; this is RunPod's documented answer around it.
            s.print_json({"removed": removed, "status": "completed"})
        else:
            s.out.print(f"removed {removed} queued job{'' if removed == 1 else 's'}")


_MIN_INTERVAL = 0.1  # a health poll is cheap, but not free: RunPod rate-limits it


@app.command(cls=RpqCommand, epilog=DURATIONS_HELP)
def health(
    endpoint: EndpointArg,
    watch: Annotated[bool, typer.Option("--watch", help="Keep refreshing until Ctrl-C.")] = False,
    interval: Annotated[
        float, duration_option(help="Time between refreshes with --watch (at least 100ms; default 2s).")
    ] = 2.0,
    count: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="With --watch, stop after N refreshes.", show_default=False),
    ] = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the endpoint's job and worker counts as a table (--watch: keep it live)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        pause = within(interval, "--interval", low=_MIN_INTERVAL)
        ep = s.endpoint(endpoint)
        if not watch:
            snapshot = ep.health()
            if s.json:
                s.print_json(dict(snapshot.raw))
            else:
                s.out.print(s.health_table(endpoint, snapshot))
            return
        live = Live(console=s.out, auto_refresh=False) if s.out.is_terminal and not s.json else None
        shown = 0
        try:
            if live is not None:
                live.start()
            while count is None or shown < count:
                if shown:
                    time.sleep(pause)
                snapshot = ep.health()
                shown += 1
                if s.json:
                    s.print_json(dict(snapshot.raw))
                elif live is not None:
                    live.update(s.health_table(endpoint, snapshot), refresh=True)
                else:
                    s.out.print(s.health_table(endpoint, snapshot))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how --watch is meant to end: exit 0
        finally:
            if live is not None:
                live.stop()


def _save_outputs(job: Job, directory: Path | None) -> None:
    """``--download DIR``: every URL of a finished job's output into DIR, named after the URL's last path
    part (a number added when two share a name); one line per file on stderr, the URL redacted."""
    if directory is None or not job.output_urls():
        return
    from urllib.parse import unquote, urlsplit

    from runpod_queue._storage import S3Store, redact_url
    from runpod_queue.cli._storage import _config_for

    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for url in job.output_urls():
        name = unquote(urlsplit(url).path).rsplit("/", 1)[-1] or "output"
        stem, dot, suffix = name.partition(".")
        number = 1
        while name in taken:
            number += 1
            name = f"{stem}-{number}{dot}{suffix}"
        taken.add(name)
        try:
            written = S3Store(_config_for(url, None)).download(url, to=directory / name)
        except (StorageError, ConfigurationError, ValueError) as exc:
            raise UsageProblem(f"--download: {exc}") from None
        assert isinstance(written, Path)
        typer.echo(f"saved {redact_url(url)} -> {written}", err=True)
