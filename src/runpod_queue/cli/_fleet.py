"""The fleet commands: `rpq workers`, `rpq endpoint show`, `rpq endpoint scale` (RunPod's REST v2).

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
    from runpod_queue import Management

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
