"""`rpq why ENDPOINT JOB`: why a job waits (`Endpoint.diagnose`), in one sentence and the facts behind it."""

from __future__ import annotations

from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._fleet import EndpointArg, ManagementUrlOpt
from runpod_queue.cli._jobs import JobArg
from runpod_queue.cli._options import ApiKeyOpt, BaseUrlOpt, DebugOpt, JsonOpt, LocalOpt
from runpod_queue.cli._session import session


@app.command(cls=RpqCommand)
def why(
    endpoint: EndpointArg,
    job: JobArg,
    management_url: ManagementUrlOpt = None,
    api_key: ApiKeyOpt = None,
    base_url: BaseUrlOpt = None,
    local: LocalOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Say why a job waits: cold start, busy, throttled or unhealthy workers, no workers allowed.

    Reads the job, /health and the management API (REST v2). A key that may
    not read the management API gets an answer from /status and /health
    alone, which says what it could not see.
    """
    with session(api_key, base_url, local, json_out, debug) as s:
        found = s.endpoint(endpoint).diagnose(job, management_url=management_url)
        if s.json:
            s.print_json(found.as_dict())
            return
        s.out.print(f"{found.reason.value}: {found.message}", soft_wrap=True, markup=False)
        summary = found.summary
        if summary is not None:
            limits = ""
            if found.workers_min is not None and found.workers_max is not None:
                limits = f" (min {found.workers_min}, max {found.workers_max})"
            s.out.print(
                f"  workers  {summary.running} running, {summary.idle} idle, {summary.initializing} "
                f"initializing, {summary.throttled} throttled, {summary.unhealthy} unhealthy{limits}",
                soft_wrap=True,
                markup=False,
            )
        if found.hint:
            s.out.print(f"  try      {found.hint}", soft_wrap=True, markup=False)
        if found.unseen:
            s.out.print(f"  unseen   {found.unseen}", soft_wrap=True, markup=False)
