"""The endpoint commands: run, status, wait, stream, cancel, retry, purge, health.

Each is a thin layer over `Client`: parse arguments, make one or a few calls, print, exit with the code
the README documents. Connection options sit on every command so they can come last
(`rpq status EP JOB --json`).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.live import Live

from runpod_queue import Endpoint, Job, Policy
from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._input import parse_input
from runpod_queue.cli._options import ApiKeyOpt, BaseUrlOpt, DebugOpt, JsonOpt, LocalOpt
from runpod_queue.cli._render import exit_code_for
from runpod_queue.cli._session import Session, session

EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="Endpoint id.", show_default=False)]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id.", show_default=False)]
# No timeout means "until the job ends"; run_sync needs a number, so a week (RunPod's longest ttl).
_FOREVER_MS = 7 * 24 * 3600 * 1000


def _policy(execution_timeout: int | None, ttl: int | None, low_priority: bool) -> Policy | None:
    if execution_timeout is None and ttl is None and not low_priority:
        return None
    try:
        return Policy(
            execution_timeout=None if execution_timeout is None else execution_timeout / 1000,
            ttl=None if ttl is None else ttl / 1000,
            low_priority=low_priority or None,
        )
    except (TypeError, ValueError) as exc:  # Policy's own bounds, named as the options are
        message = str(exc).replace("Policy.execution_timeout", "--execution-timeout")
        raise UsageProblem(message.replace("Policy.ttl", "--ttl")) from None


def _follow(s: Session, ep: Endpoint, job_id: str, timeout: float | None, first: Job | None = None) -> Job:
    """Wait for a submitted job with the live status line (``run`` and ``wait``)."""
    s.job_id = job_id
    with s.progress(ep.id) as progress:
        progress.job_id, progress.status = job_id, "WAITING"
        if first is not None:
            progress.update(first)
        progress.watch(ep, job_id)
        return ep.wait(job_id, timeout=timeout, on_update=progress.update)


TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        metavar="S",
        min=0,
        help="Stop waiting after S seconds (exit 1; the job keeps running).",
        show_default=False,
    ),
]


@app.command(cls=RpqCommand)
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
        str | None, typer.Option(help="URL RunPod POSTs the result to when the job ends.", show_default=False)
    ] = None,
    execution_timeout: Annotated[
        int | None,
        typer.Option(
            metavar="MS",
            help="policy.executionTimeout: ms a worker may run it (>= 5000).",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            metavar="MS",
            help="policy.ttl: ms the job may live, queue time included (>= 10000).",
            show_default=False,
        ),
    ] = None,
    low_priority: Annotated[
        bool, typer.Option("--low-priority", help="policy.lowPriority: do not scale the endpoint up for it.")
    ] = False,
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
        payload = parse_input(input)
        policy = _policy(execution_timeout, ttl, low_priority)
        ep = s.endpoint(endpoint)
        if no_wait:
            job = ep.run(payload, webhook=webhook, policy=policy)
            if s.json:
                s.print_json(dict(job.raw))
            else:
                s.print_value(job.id)
                s.note(f"queued; follow it with: rpq wait {endpoint} {job.id}")
            return
        if sync:
            wait_s = _FOREVER_MS / 1000 if timeout is None else max(1.0, timeout)
            with s.progress(endpoint) as progress:
                progress.status = "RUNSYNC"
                job = ep.run_sync(
                    payload, timeout=wait_s, webhook=webhook, policy=policy, on_update=progress.update
                )
        else:
            queued = ep.run(payload, webhook=webhook, policy=policy)
            job = _follow(s, ep, queued.id, timeout, first=queued)
        s.finish(job)


@app.command(cls=RpqCommand)
def status(
    endpoint: EndpointArg,
    job: JobArg,
    ttl: Annotated[
        int | None,
        typer.Option(metavar="MS", help="Shorten how long RunPod keeps the result.", show_default=False),
    ] = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a job's current state (exit 1 if it ended FAILED, CANCELLED or TIMED_OUT)."""
    with session(api_key, base_url, local, json_out, debug) as s:
        snapshot = s.endpoint(endpoint).status(job, keep_result_for=None if ttl is None else ttl / 1000)
        s.show_job(snapshot)
        raise typer.Exit(exit_code_for(snapshot))


@app.command(cls=RpqCommand)
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
        result = _follow(s, s.endpoint(endpoint), job, timeout)
        s.finish(result)


@app.command(cls=RpqCommand)
def stream(
    endpoint: EndpointArg,
    job: JobArg,
    timeout: Annotated[
        float | None,
        typer.Option(metavar="S", min=0, help="Give up after S seconds (exit 1).", show_default=False),
    ] = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print a generator job's chunks as they arrive (text chunks joined as they come; --json: one chunk
    object per line), then exit by how the job ended."""
    with session(api_key, base_url, local, json_out, debug) as s:
        s.job_id = job
        ep = s.endpoint(endpoint)
        open_line = False
        for chunk in ep.stream(job, timeout=timeout):
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
        if open_line:
            sys.stdout.write("\n")
            sys.stdout.flush()
        final = ep.status(job)
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
            s.note(f"requeued; follow it with: rpq wait {endpoint} {requeued.id}")


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


@app.command(cls=RpqCommand)
def health(
    endpoint: EndpointArg,
    watch: Annotated[bool, typer.Option("--watch", help="Keep refreshing until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(metavar="S", min=0.1, help="Seconds between refreshes with --watch.")
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
                    time.sleep(interval)
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
