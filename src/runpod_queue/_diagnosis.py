"""Why is my job waiting: `Endpoint.diagnose` / `AsyncEndpoint.diagnose` and `rpq why`.

One flow (`diagnose_flow`) that both drivers run, as every other operation: it reads the endpoint's
settings (`GET /serverless/{id}`, RunPod's REST v2 management API), the job (`/status`), the queue
(`/health`) and the workers (`GET /serverless/{id}/workers`), then `conclude` picks the first reason that
explains the wait. A key that may not read the management API (401/403, or any management failure) still
gets an answer from `/status` and `/health`, and the diagnosis says what it could not see.

The management API's base URL follows the queue client's: ``$RUNPOD_MANAGEMENT_BASE_URL``, else the
emulator's own (``…/_management/v2``) when the queue URL is a loopback emulator, else RunPod's
``https://api.runpod.io/v2`` (which `mock_runpod` routes to the emulator).

Reason codes, their order and their sources are in docs/fleet.md ("Why is my job waiting").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from runpod_queue._answers import parse_health, parse_job
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._calls import Call, _id, health_call, status_call
from runpod_queue._contract import JobStatus
from runpod_queue._management_models import (
    EndpointInfo,
    Workers,
    WorkerSummary,
    parse_endpoint,
    parse_workers,
)
from runpod_queue._models import Health, Job
from runpod_queue._retry import Safety
from runpod_queue._settings import is_loopback
from runpod_queue.errors import APIError, APIStatusError

if TYPE_CHECKING:
    from runpod_queue._actions import Flow

__all__ = ["Diagnosis", "WaitReason", "diagnose_flow", "management_url_for"]

MANAGEMENT_BASE_URL: Final = "https://api.runpod.io/v2"
ENV_MANAGEMENT_BASE_URL: Final = "RUNPOD_MANAGEMENT_BASE_URL"
_OP: Final = "management"  # not in RunPod's queue rate-limit table: never limited, 429s retried


class WaitReason(StrEnum):
    """Why a job waits (or that it does not): the code of a ``Diagnosis``.

    The first that applies wins, in this order. Each one's rule and source is in the fleet guide.
    """

    NOT_A_QUEUE = "not_a_queue"
    """The endpoint is a load balancer (REST v2 ``type`` LOAD_BALANCER): it has no queue and no jobs."""
    NOT_WAITING = "not_waiting"
    """The job is not IN_QUEUE: it runs, or it has ended."""
    NO_WORKERS_ALLOWED = "no_workers_allowed"
    """No worker may run: ``workersMax`` is 0, or RunPod scaled an idle endpoint down (3 days: max 2,
    7 days: 0)."""
    WORKER_IDLE = "worker_idle"
    """A worker is idle: the job should start at once (if it stays queued, that worker is not taking jobs)."""
    CRASH_LOOP = "crash_loop"
    """Several workers are UNHEALTHY: a worker fails (a fitness check, a crash) on every restart."""
    UNHEALTHY = "unhealthy"
    """A worker is UNHEALTHY (a failed fitness check, or it went silent)."""
    COLD_START = "cold_start"
    """Workers are INITIALIZING: the job starts when a cold start ends."""
    THROTTLED = "throttled"
    """Workers wait THROTTLED: no GPU of the endpoint's types is free."""
    ALL_BUSY = "all_busy"
    """Every worker is RUNNING another job: the job waits its turn in the queue."""
    UNKNOWN = "unknown"
    """None of the above explains the wait from what could be seen."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Why a job waits: a reason code, one sentence, and the facts it was drawn from.

    Made by ``Endpoint.diagnose`` / ``AsyncEndpoint.diagnose`` (and printed by ``rpq why``). The facts
    from the management API (``endpoint``, ``workers``) are ``None`` when the key may not read it;
    ``unseen`` then says so.

    Args:
        reason: The reason code (``WaitReason``).
        message: One sentence saying why, with the numbers that show it.
        hint: What to do about it (a command or a setting), or ``None`` when nothing is to be done.
        endpoint_id: The endpoint diagnosed.
        job_id: The job diagnosed.
        job: The job as ``/status`` answered; ``None`` when the endpoint has no queue to ask.
        jobs_in_queue: Jobs IN_QUEUE on the endpoint, this one included (``/health``; RunPod does not
            report a job's place in the queue).
        jobs_in_progress: Jobs running on the endpoint (``/health``).
        summary: Workers by state, from the management API when it could be read, else from ``/health``.
        workers_min: The endpoint's ``workersMin`` (management API), or ``None`` when unseen.
        workers_max: The endpoint's ``workersMax`` (management API), or ``None`` when unseen.
        cold_start_since: When the oldest INITIALIZING worker started its cold start (ISO 8601, the
            worker's ``startedAt``), when one is cold-starting and the server says.
        fitness_reasons: Why the UNHEALTHY workers are unhealthy, each once, when the server says (the
            emulator does; RunPod's REST v2 has no such field).
        unseen: What could not be seen and why (the management API refused the key, ...), else ``None``.
        endpoint: The endpoint's settings (management API), or ``None`` when unseen.
        workers: The endpoint's workers (management API), or ``None`` when unseen.
        health: The endpoint's ``/health``, or ``None`` for a load balancer.
    """

    reason: WaitReason
    message: str
    hint: str | None
    endpoint_id: str
    job_id: str
    job: Job | None
    jobs_in_queue: int | None
    jobs_in_progress: int | None
    summary: WorkerSummary | None
    workers_min: int | None
    workers_max: int | None
    cold_start_since: str | None
    fitness_reasons: tuple[str, ...]
    unseen: str | None
    endpoint: EndpointInfo | None
    workers: Workers | None
    health: Health | None

    def as_dict(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values (what ``rpq why --json`` prints).

        Returns:
            A dict of the reason, sentence, hint and facts; the raw answers are left out.
        """
        return {
            "reason": self.reason.value,
            "message": self.message,
            "hint": self.hint,
            "endpointId": self.endpoint_id,
            "jobId": self.job_id,
            "jobStatus": str(self.job.status) if self.job is not None else None,
            "jobsInQueue": self.jobs_in_queue,
            "jobsInProgress": self.jobs_in_progress,
            "workers": dataclasses.asdict(self.summary) if self.summary is not None else None,
            "workersMin": self.workers_min,
            "workersMax": self.workers_max,
            "coldStartSince": self.cold_start_since,
            "fitnessReasons": list(self.fitness_reasons),
            "unseen": self.unseen,
        }


def management_url_for(queue_base_url: str, given: str | None = None) -> str:
    """The management API's base URL that goes with a queue base URL (see the module docstring)."""
    if given:
        return given.rstrip("/")
    env = os.environ.get(ENV_MANAGEMENT_BASE_URL)
    if env:
        return env.rstrip("/")
    if is_loopback(queue_base_url):  # the emulator serves both, on one port
        return queue_base_url.rstrip("/").removesuffix("/v2") + "/_management/v2"
    return MANAGEMENT_BASE_URL


def _get(endpoint_id: str, workers: bool = False) -> Call:
    path = f"/serverless/{_id('endpoint_id', endpoint_id)}" + ("/workers" if workers else "")
    return Call(endpoint_id, _OP, "GET", path, Safety.IDEMPOTENT)


def _refusal(error: APIError) -> str:
    if isinstance(error, APIStatusError):
        if error.status_code in (401, 403):
            what = f"refused this key ({error.status_code})"
        else:
            what = f"answered {error.status_code}"
    else:
        what = f"did not answer ({type(error).__name__})"
    return (
        f"the management API {what}: the endpoint's min/max and each worker's state and reason are not "
        "visible, so this comes from /status and /health alone"
    )


def diagnose_flow(
    rules: AttemptRules, endpoint_id: str, job_id: str, management_url: str | None = None
) -> Flow[Diagnosis]:
    """Read the endpoint, the job, the queue and the workers; conclude."""
    _id("job_id", job_id)
    manage = dataclasses.replace(rules, base_url=management_url_for(rules.base_url, management_url))
    unseen: str | None = None
    info: EndpointInfo | None = None
    try:
        info = parse_endpoint((yield from attempts(_get(endpoint_id), manage)))
    except APIError as error:
        unseen = _refusal(error)
    if info is not None and info.type.upper() == "LOAD_BALANCER":
        return conclude(endpoint_id, job_id, None, None, info, None, None)
    job = parse_job((yield from attempts(status_call(endpoint_id, job_id), rules)))
    health = parse_health((yield from attempts(health_call(endpoint_id), rules)))
    listed: Workers | None = None
    if info is not None and job.status is JobStatus.IN_QUEUE:
        try:
            listed = parse_workers((yield from attempts(_get(endpoint_id, workers=True), manage)))
        except APIError as error:
            unseen = _refusal(error)
            info = None  # what we show must be one consistent view: settings without workers mislead
    return conclude(endpoint_id, job_id, job, health, info, listed, unseen)


def _summary(health: Health, listed: Workers | None) -> WorkerSummary:
    if listed is not None:
        return listed.summary
    w = health.workers
    idle = max(w.idle, w.ready)
    return WorkerSummary(
        running=w.running,
        idle=idle,
        initializing=w.initializing,
        throttled=w.throttled,
        unhealthy=w.unhealthy,
        total=w.running + idle + w.initializing + w.throttled + w.unhealthy,
    )


def _once(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def conclude(
    endpoint_id: str,
    job_id: str,
    job: Job | None,
    health: Health | None,
    info: EndpointInfo | None,
    listed: Workers | None,
    unseen: str | None,
) -> Diagnosis:
    """The first reason that explains the wait, from what was read (see `WaitReason`'s order)."""
    facts: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "job_id": job_id,
        "job": job,
        "health": health,
        "endpoint": info,
        "workers": listed,
        "unseen": unseen,
        "workers_min": info.workers_min if info is not None else None,
        "workers_max": info.workers_max if info is not None else None,
        "jobs_in_queue": health.jobs.in_queue if health is not None else None,
        "jobs_in_progress": health.jobs.in_progress if health is not None else None,
        "summary": None,
        "cold_start_since": None,
        "fitness_reasons": (),
    }
    scale = f"rpq endpoint scale {endpoint_id}"

    def made(reason: WaitReason, message: str, hint: str | None = None) -> Diagnosis:
        return Diagnosis(reason=reason, message=message, hint=hint, **facts)

    if job is None or health is None:
        return made(
            WaitReason.NOT_A_QUEUE,
            f"Endpoint {endpoint_id} is a load balancer (type {info.type if info else '?'}): it has no "
            "queue, so no job waits in one; send HTTP requests to its URL instead.",
            "use a QUEUE endpoint for /run and /status",
        )
    summary = _summary(health, listed)
    facts["summary"] = summary
    if job.status is not JobStatus.IN_QUEUE:
        status = str(job.status)
        if job.status is JobStatus.IN_PROGRESS:
            on = f" on worker {job.worker_id}" if job.worker_id else ""
            message = f"Job {job_id} is not waiting: it is running{on}."
        elif isinstance(job.status, JobStatus) and job.status.is_terminal:
            message = f"Job {job_id} is not waiting: it ended {status}."
        else:
            message = f"Job {job_id} is not waiting: RunPod reports it {status}."
        return made(WaitReason.NOT_WAITING, message)

    queued = health.jobs.in_queue
    ahead = f"{_plural(queued, 'job')} queued (this one included)"
    at_max = info is not None and summary.total - summary.unhealthy >= info.workers_max
    if info is not None and info.workers_max == 0 and summary.total == 0:
        return made(
            WaitReason.NO_WORKERS_ALLOWED,
            f"Job {job_id} waits because endpoint {endpoint_id} allows no workers: its max workers is 0.",
            f"`{scale} --max N`",
        )
    if summary.idle > 0:
        return made(
            WaitReason.WORKER_IDLE,
            f"Job {job_id} should start at once: {_plural(summary.idle, 'worker')} idle, {ahead}; if it "
            "stays queued, the idle worker is not asking for jobs.",
        )
    if summary.unhealthy > 0:
        reasons = _once(w.reason for w in listed.workers if w.status == "UNHEALTHY") if listed else ()
        facts["fitness_reasons"] = reasons
        why = f" ({'; '.join(reasons)})" if reasons else ""
        see = "" if reasons else " RunPod does not say why here: read the workers' logs."
        if summary.unhealthy >= 2:
            return made(
                WaitReason.CRASH_LOOP,
                f"Job {job_id} waits because endpoint {endpoint_id}'s workers crash-loop: "
                f"{summary.unhealthy} workers are UNHEALTHY{why}, each restart fails again.{see}",
                "fix the worker (its image, model files, the failing fitness check), then release it; "
                f"`{scale} --max 0` stops the restarts meanwhile",
            )
        return made(
            WaitReason.UNHEALTHY,
            f"Job {job_id} waits because a worker of endpoint {endpoint_id} is UNHEALTHY{why}.{see}",
            "fix what the worker reports; RunPod restarts it",
        )
    if summary.initializing > 0:
        since = None
        if listed is not None:
            starts = sorted(
                w.started_at for w in listed.workers if w.status == "INITIALIZING" and w.started_at
            )
            since = starts[0] if starts else None
        facts["cold_start_since"] = since
        when = f" since {since}" if since else ""
        return made(
            WaitReason.COLD_START,
            f"Job {job_id} waits for a cold start: {_plural(summary.initializing, 'worker')} of endpoint "
            f"{endpoint_id} {'is' if summary.initializing == 1 else 'are'} INITIALIZING{when}, "
            f"{ahead}.",
            f"keep workers warm: `{scale} --min 1` (active workers), or enable FlashBoot",
        )
    if summary.throttled > 0:
        return made(
            WaitReason.THROTTLED,
            f"Job {job_id} waits because {_plural(summary.throttled, 'worker')} of endpoint {endpoint_id} "
            f"{'is' if summary.throttled == 1 else 'are'} THROTTLED: no GPU of its types is free, "
            f"{ahead}.",
            "add GPU types (or data centers) to the endpoint, or keep active workers (`--min`)",
        )
    if summary.running > 0:
        limit = ""
        hint: str | None = None
        if info is not None and at_max:
            limit = f", at its max of {info.workers_max}"
            hint = f"`{scale} --max {info.workers_max + 1}` or more"
        elif info is not None:
            limit = f" (max {info.workers_max}: the scaler adds workers as the queue grows)"
        return made(
            WaitReason.ALL_BUSY,
            f"Job {job_id} waits its turn: all {_plural(summary.running, 'worker')} of endpoint "
            f"{endpoint_id} {'is' if summary.running == 1 else 'are'} busy{limit}, {ahead}.",
            hint,
        )
    if summary.total == 0:
        if info is not None:
            message = (
                f"Job {job_id} waits because endpoint {endpoint_id} runs no worker though its max is "
                f"{info.workers_max}: RunPod lowers an idle endpoint's max to 2 after 3 days without "
                "requests and to 0 after 7, until its settings are updated."
            )
        else:
            message = (
                f"Job {job_id} waits because endpoint {endpoint_id} runs no worker: its max workers may "
                "be 0, or RunPod scaled the idle endpoint down (3 days without requests: max 2; 7 days: 0)."
            )
        return made(
            WaitReason.NO_WORKERS_ALLOWED, message, f"`{scale} --max N` (any update lifts the idle cap)"
        )
    return made(
        WaitReason.UNKNOWN,
        f"Job {job_id} is queued and nothing seen explains it: {ahead}, {summary.total} workers.",
    )
