"""The emulator's console: a page at `/` and its JSON / server-sent-event routes under `/_console/`.

Same process, same port, same key as the API. The page and its static files are served to anyone (they
hold no data); every data route needs the key, sent by the page as `Authorization: Bearer` from the
browser's session storage, never in a URL. Actions (submit, cancel, retry, purge, advance) are not here:
the page calls the public API routes and `/_emulator/advance`, so the same rules and rate limits apply.

- `GET /_console/api/snapshot?endpoint=&status=&limit=` — clock, endpoints (counts, workers, the fleet:
  min/max, scaler, each worker's REST v2 status and reason; chart series) and the newest jobs matching
  the filter.
- `GET /_console/api/events?endpoint=&status=&limit=&interval=` — the same snapshot as a server-sent
  event every `interval` ms (default 500), until the client goes away.
- `GET /_console/api/job?endpoint=E&id=J` — one job in full: input, output, parsed error, stream chunks,
  webhook attempts, history of state changes.

Reading the core never slows the API: every route reads on the server's loop, bounded — the job window
scans at most `SCAN_LIMIT` of the newest jobs, big values are cut at `VALUE_LIMIT` bytes — and the chart
sampler costs one pass over the endpoints per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue._models import _parse_error
from runpod_queue.emulator._fleet import WorkerState, fixed_worker_views
from runpod_queue.emulator._http import HTTPError, Receive, Request, Scope, Send, respond
from runpod_queue.emulator._jobs import StateChange, encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._delivery import WebhookDelivery
    from runpod_queue.emulator._jobs import EndpointState, JobRecord

__all__ = ["Console"]

_WARNINGS_SHOWN: Final = 5  # the page shows the last few; Emulator.warnings keeps 1000
_FLEET_SHOWN: Final = 50  # workers listed per endpoint (the summary counts them all)

log = logging.getLogger("runpod_queue.emulator")

SCAN_LIMIT: Final = 20_000  # newest jobs a filtered window looks through
WINDOW_DEFAULT: Final = 100
WINDOW_MAX: Final = 500
VALUE_LIMIT: Final = 256_000  # bytes of input / output / error shown on a job's page
SAMPLE_EVERY: Final = 1.0  # wall-clock seconds between chart samples
SAMPLES_KEPT: Final = 300  # five minutes of chart
INTERVAL_DEFAULT_MS: Final = 500
INTERVAL_RANGE_MS: Final = (200, 10_000)

_STATUSES: Final = tuple(s.value for s in JobStatus)
_STATIC: Final = {
    "index.html": b"text/html; charset=utf-8",
    "console.js": b"text/javascript; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
}
# The page loads nothing from elsewhere and runs no inline script: job data shown in it is text only.
_PAGE_HEADERS: Final = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
    (b"referrer-policy", b"no-referrer"),
]


class Console:
    """Serves the console; `bind(loop)` starts the chart sampler, `aclose()` stops it and the streams."""

    def __init__(self, core: Core, delivery: WebhookDelivery) -> None:
        self.core = core
        self.delivery = delivery
        self._static: dict[str, bytes] = {}
        # Per endpoint: (wall time, finished total, in queue, in progress), one per SAMPLE_EVERY.
        self.samples: dict[str, deque[tuple[float, int, int, int]]] = {
            eid: deque(maxlen=SAMPLES_KEPT) for eid in core.endpoints
        }
        self._sampler: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sampling the endpoints' counts for the charts, on the serving loop."""
        self._loop = loop
        self._closing = asyncio.Event()
        self._sample()

    def _sample(self) -> None:
        now = time.time()
        samples = self.samples
        for eid in samples.keys() - self.core.endpoints.keys():  # removed at run time (control plane)
            del samples[eid]
        for eid, ep in self.core.endpoints.items():
            if eid not in samples:  # added at run time
                samples[eid] = deque(maxlen=SAMPLES_KEPT)
            samples[eid].append((now, ep.completed + ep.failed, ep.in_queue, ep.in_progress))
        if self._loop is not None:
            self._sampler = self._loop.call_later(SAMPLE_EVERY, self._sample)

    async def aclose(self) -> None:
        """Stop sampling and end the open live-update streams."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._closing is not None:
            self._closing.set()

    # -- HTTP -----------------------------------------------------------------------------------

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, authorized: Callable[[Scope], bool]
    ) -> None:
        """`/` and `/_console/…` (the app routes both here)."""
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/", "/_console", "/_console/"):
            return await self._file(send, method, "index.html")
        if path.startswith("/_console/static/"):
            return await self._file(send, method, path[len("/_console/static/") :])
        if not path.startswith("/_console/api/"):
            return await respond(send, 404, {"error": f"no route {path}; the console is at /"})
        if not authorized(scope):
            return await respond(
                send, 401, {"error": "missing or invalid API key: send 'Authorization: Bearer <key>'"}
            )
        name = path[len("/_console/api/") :].rstrip("/")
        request = Request(scope, receive, [name])
        if method != "GET":
            return await respond(send, 405, {"error": f"/_console/api/{name} takes GET, not {method}"})
        try:
            if name == "events":
                return await self._events(request, send)
            if name == "snapshot":
                payload = self.snapshot(request.query)
            elif name == "job":
                payload = self.job(request.query)
            else:
                raise HTTPError(404, f"no console route /_console/api/{name}; routes: snapshot, events, job")
        except HTTPError as exc:
            return await respond(send, exc.status, {"error": exc.message})
        except Exception:  # as the API's routes: a bug is a 500 with a log line, never a dropped answer
            log.exception("console route %s failed", path)
            return await respond(send, 500, {"error": "internal emulator error; see the server log"})
        await respond(send, 200, payload)

    def _read_static(self, name: str) -> bytes | None:
        if name not in _STATIC:
            return None
        if name not in self._static:
            files = resources.files("runpod_queue.emulator").joinpath("console_static")
            self._static[name] = files.joinpath(name).read_bytes()
        return self._static[name]

    async def _file(self, send: Send, method: str, name: str) -> None:
        if method not in ("GET", "HEAD"):
            return await respond(send, 405, {"error": f"the console's pages take GET, not {method}"})
        body = self._read_static(name)
        if body is None:
            return await respond(send, 404, {"error": f"no console file {name!r}"})
        headers = [
            (b"content-type", _STATIC[name]),
            (b"content-length", str(len(body)).encode()),
            *_PAGE_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _events(self, request: Request, send: Send) -> None:
        """Server-sent events: one `snapshot` event per interval until the client disconnects."""
        query = request.query
        interval = _int(query, "interval", *INTERVAL_RANGE_MS, INTERVAL_DEFAULT_MS) / 1000
        first = self.snapshot(query)  # checks the filter before the stream starts: a 400 stays a 400
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.get_running_loop().create_task(watch())
        closing = self._closing
        try:
            payload = first
            while True:
                event = b"event: snapshot\ndata: " + encode_json(payload) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), interval)
                if gone.is_set() or (closing is not None and closing.is_set()):
                    break
                payload = self.snapshot(query)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # The server is stopping with this stream open: end it quietly (the page reconnects).
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    # -- data -----------------------------------------------------------------------------------

    def snapshot(self, query: dict[str, str]) -> dict[str, Any]:
        """Clock, endpoints and the job window the page shows; `query` is the filter (checked)."""
        endpoint, status = self._filter(query)
        limit = _int(query, "limit", 1, WINDOW_MAX, WINDOW_DEFAULT)
        clock = self.core.clock
        return {
            "clock": {"kind": clock.kind, "now": round(clock.now(), 3)},
            "endpoints": [self._endpoint(ep) for ep in self.core.endpoints.values()],
            "jobs": self._window(endpoint, status, limit),
            "statuses": list(_STATUSES),
            # The emulator's latest warnings (a held loop, jobs forgotten past the cap, ...), newest last.
            "warnings": [
                {"kind": w.kind, "message": str(w)} for w in self.core.notices.snapshot()[-_WARNINGS_SHOWN:]
            ],
        }

    def _filter(self, query: dict[str, str]) -> tuple[EndpointState | None, str | None]:
        endpoint = None
        eid = query.get("endpoint") or None
        if eid is not None:
            endpoint = self.core.endpoints.get(eid)
            if endpoint is None:
                known = ", ".join(sorted(self.core.endpoints)) or "none"
                raise HTTPError(404, f"endpoint {eid!r} not found (this emulator serves: {known})")
        status = query.get("status") or None
        if status is not None and status not in _STATUSES:
            raise HTTPError(400, f"status={status!r} is not a job status; use one of {', '.join(_STATUSES)}")
        return endpoint, status

    def _endpoint(self, ep: EndpointState) -> dict[str, Any]:
        now = self.core.clock.now()
        lost_after = self.core.worker_lost_after()
        counts = {
            "inProcess": {"idle": 0, "running": 0},
            "external": {"idle": 0, "running": 0, "unhealthy": 0},
        }
        workers: list[dict[str, Any]] = []
        for worker in ep.workers:
            kind = "external" if worker.external else "inProcess"
            if worker.external and now - worker.last_seen >= lost_after:
                state = "unhealthy"
            elif worker.job is not None:
                state = "running"
            else:
                state = "idle"
            counts[kind][state] += 1
            if len(workers) < 50:
                workers.append(
                    {
                        "id": worker.id,
                        "kind": kind,
                        "state": state,
                        "jobId": worker.job.id if worker.job is not None else None,
                    }
                )
        samples = self.samples.get(ep.id, ())
        return {
            "fleet": self._fleet(ep, now, lost_after),
            "id": ep.id,
            "handler": "in-process" if ep.spec.handler is not None else "external workers",
            "inQueue": ep.in_queue,
            "inProgress": ep.in_progress,
            "completed": ep.completed,
            "failed": ep.failed,
            "retried": ep.retried,
            "retained": len(ep.jobs),
            "workers": counts,
            "workerList": workers,
            # [wall time s, finished total, in queue, in progress] every second: the page draws
            # jobs/s from the differences and queue depth as is.
            "series": [list(s) for s in samples],
        }

    def _fleet(self, ep: EndpointState, now: float, lost_after: float) -> dict[str, Any]:
        """The endpoint's workers as REST v2 shows them (status, why), its min/max and scaler settings."""
        fleet = ep.fleet
        if fleet is not None:
            views = fleet.views()
            settings: dict[str, Any] = {
                "fixed": False,
                "min": fleet.workers_min,
                "max": fleet.workers_max,
                # Lowered by the idle-endpoint cap while it holds (RunPod: 3 days idle -> 2, 7 days -> 0).
                "effectiveMax": fleet.effective_max,
                "idleTimeout": fleet.idle_timeout,
                "coldStart": fleet.cold_start,
                "scaler": fleet.scaler,
                "scalerValue": fleet.scaler_value,
                "flashboot": fleet.flashboot,
                "capacity": fleet.capacity,
                "started": fleet.started,
            }
        else:
            views = fixed_worker_views(ep, now=now, lost_after=lost_after)
            settings = {
                "fixed": True,
                "min": ep.in_process_workers,
                "max": ep.in_process_workers,
                "effectiveMax": ep.in_process_workers,
                "idleTimeout": None,
                "coldStart": 0,
                "scaler": None,
                "scalerValue": None,
                "flashboot": False,
                "capacity": None,
                "started": None,
            }
        summary = dict.fromkeys((s.value for s in WorkerState), 0)
        for view in views:
            summary[view.status.value] += 1
        settings["summary"] = summary
        settings["total"] = len(views)
        settings["workers"] = [
            {
                "id": view.id,
                "status": view.status.value,
                "reason": view.reason,
                "jobId": view.job_id,
                # Clock seconds since it was asked for, and since its cold start ended (None: not yet).
                "age": round(now - view.created_at, 3),
                "uptime": round(now - view.ready_at, 3) if view.ready_at is not None else None,
            }
            for view in views[:_FLEET_SHOWN]
        ]
        return settings

    def _window(self, endpoint: EndpointState | None, status: str | None, limit: int) -> dict[str, Any]:
        """The newest jobs (by submission) matching the filter, scanning at most SCAN_LIMIT."""
        endpoints = [endpoint] if endpoint is not None else list(self.core.endpoints.values())
        retained = sum(len(ep.jobs) for ep in endpoints)
        newest: Iterator[JobRecord]
        if len(endpoints) == 1:
            newest = reversed(endpoints[0].jobs.values())
        else:
            newest = heapq.merge(
                *(reversed(ep.jobs.values()) for ep in endpoints), key=_created, reverse=True
            )
        items: list[dict[str, Any]] = []
        scanned = 0
        for job in newest:
            if scanned >= SCAN_LIMIT:
                break
            scanned += 1
            if status is None or job.status.value == status:
                items.append(_row(job))
                if len(items) >= limit:
                    break
        return {
            "items": items,
            "retained": retained,
            "scanned": scanned,
            "complete": scanned >= retained or len(items) >= limit,
        }

    def job(self, query: dict[str, str]) -> dict[str, Any]:
        """One job in full, for its page."""
        eid, job_id = query.get("endpoint"), query.get("id")
        if not eid or not job_id:
            raise HTTPError(400, "give the job as ?endpoint=<endpoint id>&id=<job id>")
        ep = self.core.endpoints.get(eid)
        if ep is None:
            known = ", ".join(sorted(self.core.endpoints)) or "none"
            raise HTTPError(404, f"endpoint {eid!r} not found (this emulator serves: {known})")
        job = ep.jobs.get(job_id)
        if job is None:
            raise HTTPError(
                404,
                f"job {job_id} not found on endpoint {eid}: unknown id, or its result passed the "
                "retention window or its ttl",
            )
        detail = _row(job)
        error_type, error_message, error_trace = _parse_error(job.error)
        output = job.output_json if job.output_json is not None else job.progress_json
        log = job.chunk_log or []
        detail.update(
            {
                "attempt": job.attempt,
                "retries": job.retries,
                "sync": job.sync,
                "lowPriority": job.low_priority,
                "webhook": job.webhook,
                "s3Config": job.s3_config is not None,  # never its secret
                "policy": {"executionTimeout": job.policy_execution_timeout, "ttl": job.policy_ttl},
                "expiresAt": job.expires_at,
                "input": _value(_input_json(job)),
                "output": None if output is None else _value(output),
                "outputIsProgress": job.output_json is None and job.progress_json is not None,
                "error": None
                if job.error is None
                else {
                    "raw": _cut(job.error),
                    "type": error_type,
                    "message": _cut(error_message or ""),
                    "traceback": None if error_trace is None else _cut(error_trace),
                },
                "chunks": {
                    "items": [_value(c) for c in log],
                    "shown": len(log),
                    "unread": len(job.chunks),
                },
                "webhookAttempts": [
                    {
                        "attempt": a.attempt,
                        "at": a.at,
                        "statusCode": a.status_code,
                        "error": a.error,
                        "delivered": a.delivered,
                    }
                    for a in self.delivery.attempts
                    if a.job_id == job.id
                ],
                "history": history(job),
            }
        )
        return detail


def history(job: JobRecord) -> list[dict[str, Any]]:
    """Every state change of the job with its time on the emulator's clock, oldest first."""
    entries = list(job.history or [StateChange(JobStatus.IN_QUEUE, job.created_at, "submitted")])
    if job.started_at is not None:
        entries.append(
            StateChange(JobStatus.IN_PROGRESS, job.started_at, job.worker.id if job.worker else "")
        )
    if job.finished_at is not None:
        entries.append(StateChange(job.status, job.finished_at, ""))
    return [{"status": e.status.value, "at": round(e.at, 3), "note": e.note} for e in entries]


def _created(job: JobRecord) -> float:
    return job.created_at


def _row(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "endpoint": job.endpoint.id,
        "status": job.status.value,
        "delayTime": job.delay_ms,
        "executionTime": job.execution_ms,
        "workerId": job.worker.id if job.worker is not None else None,
        "createdAt": round(job.created_at, 3),
    }


def _input_json(job: JobRecord) -> bytes:
    """The original input as submitted (not the handler's possibly mutated copy; never s3Config)."""
    return b"null" if job.raw_body is None else job.original_input_json()


def _value(raw: bytes) -> dict[str, Any]:
    """A JSON value for the page (the core only holds valid JSON): as is when small, else its first
    VALUE_LIMIT bytes as text, so a 20 MB input never reaches the browser whole."""
    if len(raw) <= VALUE_LIMIT:
        return {"json": orjson.Fragment(raw), "bytes": len(raw)}
    return {"text": raw[:VALUE_LIMIT].decode("utf-8", "replace"), "bytes": len(raw), "cut": True}


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + "…"


def _int(query: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name}={raw!r} must be an integer") from None
    if not low <= value <= high:
        raise HTTPError(400, f"{name}={value} is out of range: use {low}..{high}")
    return value
