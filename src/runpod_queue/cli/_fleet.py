"""The fleet commands: `rpq workers`, `rpq logs`, `rpq endpoint show|scale` (RunPod's REST v2).

They talk to the management API: `--management-url`, else `$RUNPOD_MANAGEMENT_BASE_URL`, else the
emulator's own (`…/_management/v2`) when the queue URL is a loopback emulator (`--local`), else RunPod's
`https://api.runpod.io/v2`. Key, errors and exit codes are the other commands'.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Annotated

import typer

from runpod_queue._diagnosis import management_url_for
from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._duration import DURATION_METAVAR, duration, within
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._options import ApiKeyOpt, BaseUrlOpt, DebugOpt, JsonOpt, LocalOpt
from runpod_queue.cli._session import Session, session

if TYPE_CHECKING:
    from runpod_queue import LogLine, Management

EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT", help="Endpoint id.", show_default=False)]
ManagementUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--management-url",
        metavar="URL",
        help="RunPod's management API (default: $RUNPOD_MANAGEMENT_BASE_URL, the emulator's own with "
        "--local, else https://api.runpod.io/v2).",
    ),
]

endpoint_app = typer.Typer(help="See and change an endpoint's scaling settings (RunPod's REST v2).")
app.add_typer(endpoint_app, name="endpoint")


def _management_url(s: Session, given: str | None) -> str:
    return management_url_for(s.base_url, given)  # the one resolution, shared with Endpoint.diagnose


def _management(s: Session, given: str | None) -> Management:
    from runpod_queue import Management  # on first use: it loads the asyncio client's aiohttp

    return Management(s._api_key, base_url=_management_url(s, given), on_retry=s.retrying)


@endpoint_app.command("show", cls=RpqCommand)
def show(
    endpoint: EndpointArg,
    management_url: ManagementUrlOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show an endpoint's workers min/max, idle timeout, scaler and execution timeout."""
    with session(api_key, base_url, local, json_out, debug) as s, _management(s, management_url) as mgmt:
        info = mgmt.endpoint(endpoint)
        if s.json:
            s.print_json(info.raw)
            return
        idle = f"{info.idle_timeout:g}s" if info.idle_timeout is not None else "-"
        s.out.print(
            f"{info.id}  {info.type}  workers {info.workers_min}..{info.workers_max}  idle timeout {idle}  "
            f"scaler {info.scaler} {info.scaler_value:g}  execution timeout {info.timeout:g}s  "
            f"flashboot {info.flashboot}",
            soft_wrap=True,
        )


@endpoint_app.command("scale", cls=RpqCommand)
def scale(
    endpoint: EndpointArg,
    workers_min: Annotated[
        int | None, typer.Option("--min", metavar="N", min=0, help="Workers kept running.")
    ] = None,
    workers_max: Annotated[
        int | None, typer.Option("--max", metavar="N", min=0, help="The most workers the scaler may run.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="How long an idle worker lives (1s to 1h).",
            show_default=False,
        ),
    ] = None,
    management_url: ManagementUrlOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Change an endpoint's workers min/max or idle timeout; what is not given stays."""
    with session(api_key, base_url, local, json_out, debug) as s:
        if workers_min is None and workers_max is None and idle_timeout is None:
            raise UsageProblem("give --min N, --max N and/or --idle-timeout D")
        if workers_min is not None and workers_max is not None and workers_min > workers_max:
            raise UsageProblem(f"--min ({workers_min}) is above --max ({workers_max})")
        idle = within(idle_timeout, "--idle-timeout", low=1, high=3600)
        with _management(s, management_url) as mgmt:
            info = mgmt.update_endpoint(
                endpoint, workers_min=workers_min, workers_max=workers_max, idle_timeout=idle
            )
        if s.json:
            s.print_json(info.raw)
        else:
            s.out.print(f"{info.id}: workers {info.workers_min}..{info.workers_max}")


@app.command(cls=RpqCommand)
def workers(
    endpoint: EndpointArg,
    watch: Annotated[
        bool, typer.Option("--watch", help="Print the workers again every second until Ctrl-C.")
    ] = False,
    management_url: ManagementUrlOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List an endpoint's workers: id, status (INITIALIZING, IDLE, RUNNING, THROTTLED, UNHEALTHY), why."""
    with session(api_key, base_url, local, json_out, debug) as s, _management(s, management_url) as mgmt:
        while True:
            listed = mgmt.workers(endpoint)
            if s.json:
                s.print_json(
                    {
                        "workers": [
                            {"id": w.id, "status": w.status, "uptimeSeconds": w.uptime, "reason": w.reason}
                            for w in listed.workers
                        ],
                        "summary": dataclasses.asdict(listed.summary),
                    }
                )
            else:
                summary = listed.summary
                s.out.print(
                    f"{summary.total} workers: {summary.running} running, {summary.idle} idle, "
                    f"{summary.initializing} initializing, {summary.throttled} throttled, "
                    f"{summary.unhealthy} unhealthy"
                )
                for w in listed.workers:
                    why = f"  {w.reason}" if w.reason else ""
                    s.out.print(f"  {w.id}  {w.status}{why}", soft_wrap=True, markup=False)
            if not watch:
                return
            time.sleep(1.0)


def _log_text(line: LogLine) -> str:
    stamp = line.ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{line.ts.microsecond // 1000:03d}"
    return f"{stamp}  {line.source:<9}  {line.line}"


def _job_worker(s: Session, endpoint: str, job_id: str, follow: bool) -> str:
    """The worker that ran (or runs) the job: its ``workerId`` on ``/status``; following, wait for one."""
    while True:
        job = s.endpoint(endpoint).status(job_id)
        if job.worker_id is not None:
            return job.worker_id
        if job.is_terminal:
            raise UsageProblem(f"job {job_id} is {job.status!s} and never ran on a worker: it has no logs")
        if not follow:
            raise UsageProblem(
                f"job {job_id} is {job.status!s} and has no worker yet: add --follow to wait for it"
            )
        time.sleep(1.0)


@app.command(cls=RpqCommand)
def logs(
    endpoint: EndpointArg,
    job: Annotated[
        str | None,
        typer.Argument(
            metavar="[JOB]", help="A job id: the lines its worker wrote while running it.", show_default=False
        ),
    ] = None,
    worker: Annotated[
        str | None,
        typer.Option("--worker", metavar="W", help="A worker id: all its lines.", show_default=False),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing new lines until the worker stops (or the job ends), or Ctrl-C.",
        ),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=0,
            max=5000,
            help="Earlier lines to print first (default 100; by job 5000).",
            show_default=False,
        ),
    ] = None,
    management_url: ManagementUrlOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print a worker's log lines, by job (the worker that ran it) or by --worker; --json prints JSON lines.

    By job, the lines are the ones the server tags with the job (the
    emulator does) or, where it does not (RunPod), the ones that name the
    job id, as the official worker's own lines do.
    """
    with session(api_key, base_url, local, json_out, debug) as s:
        if (job is None) == (worker is None):
            raise UsageProblem("give a JOB id or --worker W (one of them)")
        s.on_interrupt = lambda: "stopped"
        worker_id = worker if worker is not None else _job_worker(s, endpoint, str(job), follow)
        with _management(s, management_url) as mgmt:
            lines = mgmt.worker_logs(
                endpoint, worker_id, follow=follow, tail=tail if tail is not None or job is None else 5000
            )
            try:
                for line in lines:
                    if (
                        job is not None
                        and line.job_id != job
                        and (line.job_id is not None or job not in line.line)
                    ):
                        continue
                    if s.json:
                        s.print_json(
                            {
                                "ts": line.ts.isoformat().replace("+00:00", "Z"),
                                "source": line.source,
                                "line": line.line,
                                "jobId": line.job_id,
                                "workerId": worker_id,
                            }
                        )
                    else:
                        s.out.print(_log_text(line), soft_wrap=True, markup=False, highlight=False)
                    if (
                        job is not None
                        and line.source == "system"
                        and line.line.startswith(f"job {job} ended")
                    ):
                        return  # the emulator's mark of the job's end: nothing more of it will come
            finally:
                close = getattr(lines, "close", None)
                if close is not None:
                    close()
