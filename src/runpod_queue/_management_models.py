"""The management API's answers as typed values: `EndpointInfo`, `WorkerInfo`, `WorkerSummary`, `Workers`.

Apart from `_management` (the clients) so that `_diagnosis`, which the queue client imports, can read these
answers without importing the management clients, which import the queue client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from runpod_queue._transport import Answer
from runpod_queue.errors import APIResponseError

__all__ = ["EndpointInfo", "WorkerInfo", "WorkerSummary", "Workers", "parse_endpoint", "parse_workers"]


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """An endpoint's settings, as ``GET /serverless/{id}`` answers.

    Args:
        id: The endpoint's id.
        name: Its display name.
        type: ``"QUEUE"`` or ``"LOAD_BALANCER"`` (a load balancer has no queue).
        workers_min: Workers kept running ("active workers").
        workers_max: The most workers the scaler may run.
        idle_timeout: Seconds an idle worker lives; ``None`` under request-count scaling (REST v2 omits it).
        scaler: ``"queue_delay"`` or ``"request_count"``.
        scaler_value: The scaler's threshold (seconds of queue delay, or requests per worker).
        timeout: The jobs' default execution timeout, in seconds.
        flashboot: ``"OFF"``, ``"FLASHBOOT"`` or ``"PRIORITY_FLASHBOOT"``.
        raw: The whole answer, for fields not named here.
    """

    id: str
    name: str
    type: str
    workers_min: int
    workers_max: int
    idle_timeout: float | None
    scaler: Literal["queue_delay", "request_count"]
    scaler_value: float
    timeout: float
    flashboot: str
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker, as ``GET /serverless/{id}/workers`` lists it.

    Args:
        id: The worker's id (what a job's ``worker_id`` names).
        status: ``RUNNING``, ``IDLE``, ``INITIALIZING``, ``THROTTLED`` or ``UNHEALTHY`` (kept as sent).
        is_stale: It runs an older endpoint configuration than the current one.
        uptime: Seconds it has been running; ``None`` until it is placed and running.
        started_at: When it last started (ISO 8601), or ``None``.
        reason: Why it is UNHEALTHY or THROTTLED, when the server says (the emulator does).
    """

    id: str
    status: str
    is_stale: bool
    uptime: float | None
    started_at: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """How many workers are in each state.

    Args:
        running: Workers running a job.
        idle: Ready workers waiting for one.
        initializing: Workers in their cold start.
        throttled: Workers waiting for a GPU.
        unhealthy: Workers failing their health checks.
        total: All of them.
    """

    running: int
    idle: int
    initializing: int
    throttled: int
    unhealthy: int
    total: int


@dataclass(frozen=True, slots=True)
class Workers:
    """An endpoint's workers and their summary.

    Args:
        workers: Each worker.
        summary: The counts by state.
        endpoint_version: The endpoint's configuration version, when known.
    """

    workers: list[WorkerInfo]
    summary: WorkerSummary
    endpoint_version: int | None


def _json(answer: Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise APIResponseError(
            f"the management API answered {answer.url} with something that is not a JSON object",
            request=answer.request(),
            response=answer.as_httpx(),
        )
    return body


def parse_endpoint(answer: Answer) -> EndpointInfo:
    body = _json(answer)
    try:
        workers = body["workers"]
        scaling = body.get("scaling") or {}
        request_count = scaling.get("type") == "REQUEST_COUNT"
        idle = workers.get("idleTimeout")
        return EndpointInfo(
            id=str(body["id"]),
            name=str(body.get("name") or body["id"]),
            type=str(body.get("type") or "QUEUE"),
            workers_min=int(workers["min"]),
            workers_max=int(workers["max"]),
            idle_timeout=float(idle) if idle is not None else None,
            scaler="request_count" if request_count else "queue_delay",
            scaler_value=float(scaling.get("requestCount" if request_count else "queueDelay", 4)),
            timeout=float(body.get("timeout", 600_000)) / 1000,
            flashboot=str(body.get("flashboot", "OFF")),
            raw=body,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise APIResponseError(
            f"the management API's endpoint answer lacks a field ({exc!r})",
            request=answer.request(),
            response=answer.as_httpx(),
        ) from None


def parse_workers(answer: Answer) -> Workers:
    body = _json(answer)
    try:
        summary = body["summary"]
        return Workers(
            workers=[
                WorkerInfo(
                    id=str(w["id"]),
                    status=str(w["status"]),
                    is_stale=bool(w.get("isStale", False)),
                    uptime=float(w["uptimeSeconds"]) if w.get("uptimeSeconds") is not None else None,
                    started_at=w.get("startedAt"),
                    reason=w.get("reason"),
                )
                for w in body["workers"]
            ],
            summary=WorkerSummary(
                running=int(summary["running"]),
                idle=int(summary["idle"]),
                initializing=int(summary["initializing"]),
                throttled=int(summary["throttled"]),
                unhealthy=int(summary["unhealthy"]),
                total=int(summary["total"]),
            ),
            endpoint_version=body.get("endpointVersion"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise APIResponseError(
            f"the management API's workers answer lacks a field ({exc!r})",
            request=answer.request(),
            response=answer.as_httpx(),
        ) from None
