"""The management API subset a queue user needs, as RunPod's REST v2 serves it at `api.runpod.io/v2`.

Served by the emulator under `/_management/v2` (`Emulator.management_url`): `GET`/`PATCH
/serverless/{id}` and `GET /serverless/{id}/workers`. Field names follow `api-reference-v2/openapi.json`
in `runpod/docs` (schemas `Endpoint`, `UpdateEndpointRequest`, `ListEndpointWorkersResponse`); errors
are RFC 9457 `application/problem+json` (`ErrorResponse`: `title`, `status`, `detail`, `errors`); every
authenticated answer carries the IETF `RateLimit` / `RateLimit-Policy` headers, with the quotas of the
OpenAPI's example (60 a minute, 3000 an hour, 50000 a day; RunPod does not publish its own), counted in
real time as every rate window of the emulator is.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import orjson

from runpod_queue.emulator._fleet import WorkerState, WorkerView, fixed_worker_views
from runpod_queue.emulator._jobs import EndpointState, encode_json
from runpod_queue.emulator._worker_logs import LogEntry

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._http import Receive, Scope, Send

__all__ = ["MANAGEMENT_PREFIX", "ManagementRoutes"]

MANAGEMENT_PREFIX: Final = "/_management/v2"
# (name, quota, window seconds): the OpenAPI's RateLimit-Policy example.
_WINDOWS: Final = (("minute", 60, 60), ("hour", 3000, 3600), ("day", 50_000, 86_400))
_BODY_LIMIT: Final = 1_000_000
_ENDPOINT_VERSION: Final = 1  # ours: settings changes are not releases; every worker runs version 1
_PATCH_KEYS: Final = frozenset({"workers", "scaling", "timeout", "flashboot", "name"})


class _Problem(Exception):
    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


class _Windows:
    """Fixed request windows per caller, starting at its first request (real time), for the RateLimit
    headers and 429s."""

    def __init__(self, origin: float) -> None:
        self._origin = origin
        self._counts: dict[str, tuple[int, int]] = {}  # window name -> (window index, requests in it)

    def take(self, now: float) -> tuple[bool, list[tuple[bytes, bytes]], int]:
        """Count one request; (allowed, headers, seconds until the exhausted window resets)."""
        elapsed = now - self._origin
        allowed, retry = True, 0
        states: list[str] = []
        current: dict[str, tuple[int, int]] = {}
        for name, quota, window in _WINDOWS:
            index = int(elapsed // window)
            counted_index, used = self._counts.get(name, (index, 0))
            if counted_index != index:
                used = 0
            current[name] = (index, used)
            reset = max(1, round(window - elapsed % window))
            if used >= quota:
                allowed, retry = False, max(retry, reset)
            states.append(f'"{name}";r={max(0, quota - used - (1 if used < quota else 0))};t={reset}')
        if allowed:
            current = {name: (index, used + 1) for name, (index, used) in current.items()}
        self._counts = current
        headers = [
            (b"ratelimit", ", ".join(states).encode()),
            (b"ratelimit-policy", ", ".join(f'"{n}";q={q};w={w}' for n, q, w in _WINDOWS).encode()),
        ]
        return allowed, headers, retry


class ManagementRoutes:
    """REST v2's serverless routes over the emulator's endpoints (`Core`) and fleets."""

    def __init__(
        self,
        core: Core,
        *,
        api_key: str | None,
        lost_after: Callable[[], float],
        started: datetime | None = None,
    ) -> None:
        self.core = core
        self._api_key = api_key.encode() if api_key is not None else None
        self._lost_after = lost_after
        # Clock seconds → wall time for the `*At` fields: the emulator's start is "now" in UTC.
        self._origin = started or datetime.now(UTC)
        self._windows: dict[bytes, _Windows] = {}
        self.created_at: str = self._iso(0.0)

    def _iso(self, at: float) -> str:
        return (self._origin + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _iso_ms(self, at: float) -> str:
        return (
            (self._origin + timedelta(seconds=at)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )

    def _clock_at(self, text: str, name: str) -> float:
        """An RFC 3339 time → clock seconds."""
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            raise _Problem(
                400, f"{name} must be an RFC 3339 time, e.g. 2026-06-01T12:05:04Z, got {text!r}"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (when - self._origin).total_seconds()

    def _log_stream(self, scope: Scope, endpoint_id: str, worker_id: str) -> _LogStream:
        """Check a logs request (404 before a stream starts) and build its stream."""
        if scope["method"] != "GET":
            raise _Problem(
                405, f"/v2/serverless/{{id}}/workers/{{workerId}}/logs takes GET, not {scope['method']}"
            )
        ep = self.core.endpoints.get(endpoint_id)
        if ep is None:
            known = ", ".join(sorted(self.core.endpoints)) or "none"
            raise _Problem(
                404, f"serverless endpoint {endpoint_id!r} not found (this emulator serves: {known})"
            )
        if self.core.logs.owner(worker_id) != ep.id:
            raise _Problem(
                404,
                f"worker {worker_id!r} not found on endpoint {ep.id!r} (no log kept for it): "
                f"GET /v2/serverless/{ep.id}/workers lists its workers",
            )
        query = _query(scope)
        unknown = sorted(set(query) - {"source", "tail", "since", "follow"})
        if unknown:
            raise _Problem(
                400, "unknown query parameter", [f"{k}: not a parameter of this route" for k in unknown]
            )
        source = query.get("source")
        if source is not None and source not in ("container", "system"):
            raise _Problem(400, "the request is invalid", [f"source: container or system, got {source!r}"])
        tail = 100
        if "tail" in query:
            raw = query["tail"]
            if not raw.isdigit() or int(raw) > 5000:
                raise _Problem(400, "the request is invalid", [f"tail: an integer 0 to 5000, got {raw!r}"])
            tail = int(raw)
        follow = query.get("follow", "true").lower()
        if follow not in ("true", "false", "1", "0"):
            raise _Problem(400, "the request is invalid", [f"follow: true or false, got {follow!r}"])
        after_seq: int | None = None
        since: float | None = None
        last_id = _header(scope, b"last-event-id")
        if last_id:
            stamp, _, seq = last_id.partition("/")
            if seq.isdigit():
                after_seq = int(seq)
            else:
                since = self._clock_at(stamp, "Last-Event-ID")
        elif "since" in query:
            since = self._clock_at(query["since"], "since")
        return _LogStream(
            self,
            worker_id,
            source=source,
            tail=None if since is not None or after_seq is not None else tail,
            since=since,
            after_seq=after_seq,
            follow=follow in ("true", "1"),
        )

    # -- ASGI -----------------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        """Serve `/_management/v2/<parts…>`."""
        supplied = _bearer(scope)
        if self._api_key is not None and not hmac.compare_digest(supplied, self._api_key):
            return await _problem(
                send, _Problem(401, "missing or invalid API key: send Authorization: Bearer KEY")
            )
        now = time.monotonic()
        windows = self._windows.get(supplied)
        if windows is None:
            if len(self._windows) >= 1000:  # any key is accepted without api_key: keep the table bounded
                self._windows.clear()
            windows = self._windows[supplied] = _Windows(now)
        allowed, headers, retry = windows.take(now)
        if not allowed:
            headers.append((b"retry-after", str(retry).encode()))
            problem = _Problem(429, f"rate limit exceeded; retry in {retry} s")
            return await _problem(send, problem, headers)
        parts = [p for p in parts if p]
        if len(parts) == 5 and parts[0] == "serverless" and parts[2] == "workers" and parts[4] == "logs":
            try:
                stream = self._log_stream(scope, parts[1], parts[3])
            except _Problem as problem:
                return await _problem(send, problem, headers)
            return await stream.serve(receive, send, headers)
        try:
            status, payload = await self._route(scope, receive, parts)
        except _Problem as problem:
            return await _problem(send, problem, headers)
        body = encode_json(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive, parts: list[str]) -> tuple[int, Any]:
        method = scope["method"]
        if len(parts) < 2 or parts[0] != "serverless":
            raise _Problem(404, f"no route /v2/{'/'.join(parts)}; the emulator serves /v2/serverless/{{id}}")
        ep = self.core.endpoints.get(parts[1])
        if ep is None:
            known = ", ".join(sorted(self.core.endpoints)) or "none"
            raise _Problem(404, f"serverless endpoint {parts[1]!r} not found (this emulator serves: {known})")
        rest = parts[2:]
        if not rest:
            if method == "GET":
                return 200, self.endpoint(ep)
            if method == "PATCH":
                return 200, self.update(ep, await _read_json(receive, scope))
            raise _Problem(405, f"/v2/serverless/{{id}} takes GET or PATCH, not {method}")
        if rest == ["workers"]:
            if method != "GET":
                raise _Problem(405, f"/v2/serverless/{{id}}/workers takes GET, not {method}")
            return 200, self.workers(ep)
        raise _Problem(404, f"no route /v2/serverless/{ep.id}/{'/'.join(rest)} in the emulator")

    # -- answers --------------------------------------------------------------------------------

    def endpoint(self, ep: EndpointState) -> dict[str, Any]:
        """The `Endpoint` schema for one emulated endpoint."""
        fleet = ep.fleet
        if fleet is not None:
            low, high, idle = fleet.workers_min, fleet.workers_max, fleet.idle_timeout
            scaler, value, flashboot = fleet.scaler, fleet.scaler_value, fleet.flashboot
        else:  # fixed ready workers: always on, min = max (ours)
            low = high = ep.in_process_workers
            idle, scaler, value, flashboot = 5.0, "queue_delay", 4.0, False
        workers: dict[str, Any] = {"min": low, "max": high}
        if scaler == "request_count":
            scaling: dict[str, Any] = {"type": "REQUEST_COUNT", "requestCount": round(value)}
        else:  # REST v2 omits idleTimeout for request-count scaling
            workers["idleTimeout"] = round(idle)
            scaling = {"type": "QUEUE_DELAY", "queueDelay": value}
        timeout = (
            ep.execution_timeout
            if ep.execution_timeout is not None
            else self.core.timings.default_execution_timeout
        )
        base = "https://api.runpod.ai/v2/" + ep.id
        return {
            "id": ep.id,
            "name": ep.name or ep.id,
            "type": "QUEUE",
            "requestUrls": {
                "run": f"{base}/run",
                "runSync": f"{base}/runsync",
                "status": f"{base}/status/{{job_id}}",
                "stream": f"{base}/stream/{{job_id}}",
                "cancel": f"{base}/cancel/{{job_id}}",
                "retry": f"{base}/retry/{{job_id}}",
                "purgeQueue": f"{base}/purge-queue",
                "health": f"{base}/health",
            },
            "workers": workers,
            "scaling": scaling,
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": round(timeout * 1000),
            "flashboot": "FLASHBOOT" if flashboot else "OFF",
            "createdAt": self.created_at,
        }

    def update(self, ep: EndpointState, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH: only the fields present change; what the emulator cannot emulate is refused by name."""
        unknown = sorted(set(body) - _PATCH_KEYS)
        if unknown:
            raise _Problem(
                422,
                "the emulator changes only workers, scaling, timeout, flashboot and name",
                [f"$: property {k!r} is not emulated" for k in unknown],
            )
        errors: list[str] = []
        changes: dict[str, Any] = {}
        workers = body.get("workers")
        if workers is not None:
            if not isinstance(workers, dict) or set(workers) - {"min", "max", "idleTimeout"}:
                errors.append("$.workers: an object with min, max and/or idleTimeout")
            else:
                for key, field, low, high in (
                    ("min", "workers_min", 0, None),
                    ("max", "workers_max", 0, None),
                    ("idleTimeout", "idle_timeout", 1, 3600),
                ):
                    if key in workers:
                        value = workers[key]
                        if (
                            not isinstance(value, int)
                            or isinstance(value, bool)
                            or value < low
                            or (high is not None and value > high)
                        ):
                            bound = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
                            errors.append(f"$.workers.{key}: must be {bound}, got {value!r}")
                        else:
                            changes[field] = value
        scaling = body.get("scaling")
        if scaling is not None:
            kind = scaling.get("type") if isinstance(scaling, dict) else None
            if kind == "QUEUE_DELAY" and _number(scaling.get("queueDelay"), 0.5):
                changes["scaler"], changes["scaler_value"] = "queue_delay", float(scaling["queueDelay"])
            elif kind == "REQUEST_COUNT" and _number(scaling.get("requestCount"), 1, integer=True):
                changes["scaler"], changes["scaler_value"] = "request_count", float(scaling["requestCount"])
            else:
                errors.append(
                    '$.scaling: {"type": "QUEUE_DELAY", "queueDelay": >= 0.5} or '
                    '{"type": "REQUEST_COUNT", "requestCount": integer >= 1}'
                )
        timeout = body.get("timeout")
        if timeout is not None and not _number(timeout, 5000, integer=True):
            errors.append(f"$.timeout: milliseconds, an integer >= 5000, got {timeout!r}")
        flashboot = body.get("flashboot")
        if flashboot is not None and flashboot not in ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"):
            errors.append(f"$.flashboot: OFF, FLASHBOOT or PRIORITY_FLASHBOOT, got {flashboot!r}")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            errors.append("$.name: a non-empty string")
        if errors:
            raise _Problem(400, "the request body is invalid", errors)
        fleet = ep.fleet
        scales = changes or flashboot is not None
        if scales and fleet is None:
            raise _Problem(
                409,
                f"endpoint {ep.id!r} has fixed ready workers and cannot scale: serve it as a fleet "
                "(EndpointSpec(handler, workers_max=…), or rpq serve --workers-max N)",
            )
        if fleet is not None:
            low = changes.get("workers_min", fleet.workers_min)
            high = changes.get("workers_max", fleet.workers_max)
            if low > high:
                raise _Problem(
                    400, "the request body is invalid", [f"$.workers: min ({low}) is above max ({high})"]
                )
            if changes:
                fleet.update(**changes)
            if flashboot is not None:
                fleet.flashboot = flashboot != "OFF"
        if timeout is not None:
            ep.execution_timeout = timeout / 1000
        if name is not None:
            ep.name = name
        return self.endpoint(ep)

    def workers(self, ep: EndpointState) -> dict[str, Any]:
        """`ListEndpointWorkersResponse`: each worker and a summary by status."""
        now = self.core.clock.now()
        if ep.fleet is not None:
            views = ep.fleet.views()
        else:
            views = fixed_worker_views(ep, now=now, lost_after=self._lost_after())
        summary = dict.fromkeys(("running", "idle", "initializing", "throttled", "unhealthy"), 0)
        for view in views:
            summary[view.status.value.lower()] += 1
        summary["total"] = len(views)
        return {
            "workers": [self._worker(view, now) for view in views],
            "summary": summary,
            "endpointVersion": _ENDPOINT_VERSION,
        }

    def _worker(self, view: WorkerView, now: float) -> dict[str, Any]:
        placed = view.status is not WorkerState.THROTTLED
        ready = view.ready_at
        return {
            "id": view.id,
            "status": view.status.value,
            "isStale": False,
            "version": _ENDPOINT_VERSION,
            "gpuCount": 1 if placed else 0,
            "image": None,
            "uptimeSeconds": int(now - ready)
            if ready is not None and view.status is not WorkerState.UNHEALTHY
            else None,
            "gpuTypeId": "EMULATED" if placed else None,
            "dataCenterId": "LOCAL" if placed else None,
            # When its container started, i.e. its cold start began (REST v2: "when the worker last
            # started"); `uptimeSeconds` counts from the end of the cold start ("running").
            "startedAt": self._iso(view.started_at) if view.started_at is not None else None,
            # Not in REST v2: why a worker is UNHEALTHY or THROTTLED (RunPod shows it in its console).
            "reason": view.reason,
        }


# [ours] a comment line on a quiet stream this often, so proxies and clients see it is alive.
_KEEPALIVE_S: Final = 15.0


class _LogStream:
    """One worker's log as server-sent events: the backfill, then (following) each new line until the
    worker stops, the client goes away or the emulator stops."""

    def __init__(
        self,
        routes: ManagementRoutes,
        worker_id: str,
        *,
        source: str | None,
        tail: int | None,
        since: float | None,
        after_seq: int | None,
        follow: bool,
    ) -> None:
        self.routes = routes
        self.worker_id = worker_id
        self.source = source
        self.tail = tail
        self.since = since
        self.after_seq = after_seq
        self.follow = follow

    def _events(self, entries: list[LogEntry]) -> bytes:
        out: list[bytes] = []
        for entry in entries:
            if self.source is not None and entry.source != self.source:
                continue
            ts = self.routes._iso_ms(entry.at)
            data: dict[str, Any] = {"ts": ts, "source": entry.source, "line": entry.line}
            if entry.job_id is not None:
                data["jobId"] = entry.job_id  # ours: the job the line was written in
            out.append(b"id: %s/%012d\ndata: %s\n\n" % (ts.encode(), entry.seq, orjson.dumps(data)))
        return b"".join(out)

    async def serve(self, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        logs = self.routes.core.logs
        # Watch before reading: a line written in between wakes the follower instead of being missed.
        event = logs.watch(self.worker_id) if self.follow else None
        try:
            await self._serve(receive, send, headers, event)
        finally:
            if event is not None:
                logs.unwatch(self.worker_id, event)

    async def _serve(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        event: asyncio.Event | None,
    ) -> None:
        logs = self.routes.core.logs
        entries, ended = logs.read(self.worker_id, self.after_seq or 0)
        if self.since is not None:
            entries = [e for e in entries if e.at >= self.since]
        if self.source is not None:
            entries = [e for e in entries if e.source == self.source]
        if self.tail is not None:
            entries = entries[len(entries) - self.tail :] if self.tail else []
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    *headers,
                ],
            }
        )
        seen, _ = logs.read(self.worker_id, 0)
        last = seen[-1].seq if seen else 0
        # [ours] a comment after the backfill: a client that wants only the lines so far stops here (a
        # comment, so any SSE client ignores it; RunPod's stream has no such mark).
        body = self._events(entries) + b": end of backfill\n\n"
        if not self.follow or ended:
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.body", "body": body, "more_body": True})
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while event is not None and not gone.done():
                waiter = asyncio.ensure_future(event.wait())
                done, _ = await asyncio.wait(
                    {waiter, gone}, timeout=_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if gone.done():
                    return
                event.clear()
                entries, ended = logs.read(self.worker_id, last)
                if entries:
                    last = entries[-1].seq
                chunk = self._events(entries) if entries else (b": keep-alive\n\n" if not done else b"")
                if ended:
                    await send({"type": "http.response.body", "body": chunk})
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError:  # the client went away mid-write
            return
        finally:
            gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return {k: v for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            raw: bytes = value
            return raw.decode("latin-1").strip()
    return ""


def _number(value: Any, low: float, *, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return bool(value >= low)


def _bearer(scope: Scope) -> bytes:
    for key, value in scope["headers"]:
        if key == b"authorization":
            raw: bytes = value
            return raw[7:].strip() if raw[:7].lower() == b"bearer " else raw
    return b""


async def _read_json(receive: Receive, scope: Scope) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Problem(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _BODY_LIMIT:
            raise _Problem(413, f"the body is over {_BODY_LIMIT} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise _Problem(400, f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise _Problem(400, 'the body must be a JSON object, e.g. {"workers": {"min": 1}}')
    return body


async def _problem(send: Send, problem: _Problem, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload: dict[str, Any] = {
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors:
        payload["errors"] = problem.errors
    body = encode_json(payload)
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
