"""The emulator's HTTP surface: a lean ASGI app (no framework) serving RunPod's public routes.

Why no Starlette/FastAPI: the emulator's hot path (run, runsync, status) is measured against the
official test server, and a framework's per-request cost is most of the budget on 2 vCPU (8 connections:
FastAPI 9k POST/s, Starlette 26k, a bare ASGI app 44k, the official server 7k). Routing here is a split
of the path and a dict lookup; bodies are orjson.

Paths: `/v2/<endpoint>/<operation>[/…]` — the public operations below, then the worker protocol's
(`worker_routes`, from `ExternalWorkers.routes`); `/_emulator/<name>` — the emulator's own routes
(`control.Control`); `/` and `/_console/…` — the console (`console.Console`). The app is handed its
collaborators; it builds none of them (see `assembly`).
Milliseconds exist only here, at the wire: `?wait=`, `?ttl=` and `policy` become seconds for the core.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from runpod_queue import _contract as contract
from runpod_queue._contract import JobStatus
from runpod_queue.emulator._batches import BatchRoutes
from runpod_queue.emulator._bodies import Submission
from runpod_queue.emulator._config import Faults
from runpod_queue.emulator._http import (
    EndpointRequest,
    HTTPError,
    Receive,
    Request,
    Route,
    Scope,
    Send,
    answer,
    drop,
    json_object,
    respond_empty,
)
from runpod_queue.emulator._jobs import TERMINAL, WIRE
from runpod_queue.emulator._notices import Warned
from runpod_queue.emulator._openai import OpenAIRoutes, openai_unauthorized

if TYPE_CHECKING:
    from runpod_queue.emulator._console import Console
    from runpod_queue.emulator._control import Control
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._inspect import RequestLog
    from runpod_queue.emulator._jobs import EndpointState, JobRecord
    from runpod_queue.emulator._management import ManagementRoutes
    from runpod_queue.emulator._ratelimit import RateLimiter

__all__ = ["EmulatorApp"]

log = logging.getLogger("runpod_queue.emulator")

_MAX_WAIT_MS: Final = contract.RUNSYNC_MAX_WAIT_MS
_IN_QUEUE_TEXT: Final = JobStatus.IN_QUEUE.value

_POST: Final = frozenset({"POST"})
_GET: Final = frozenset({"GET"})
_GET_OR_POST: Final = frozenset({"GET", "POST"})


class ApiRoute(NamedTuple):
    """One public operation under `/v2/<endpoint>/`."""

    handler: Route
    methods: frozenset[str]
    needs_job_id: bool  # `/<operation>/<job_id>`, else `/<operation>`
    rate_limit: str | None  # the `RateLimits` operation it counts against; None: not limited


class EmulatorApp:
    """ASGI application over a `Core`. `on_startup(loop)` runs at lifespan startup or, without a lifespan
    (e.g. `httpx.ASGITransport`), on the first request; `on_shutdown()` at lifespan shutdown."""

    def __init__(
        self,
        core: Core,
        *,
        limiter: RateLimiter,
        worker_routes: Mapping[str, Route],
        control: Control,
        request_log: RequestLog,
        api_key: str | None,
        faults: Faults | None = None,
        strict: bool = False,
        on_startup: Callable[[asyncio.AbstractEventLoop], None],
        on_shutdown: Callable[[], Awaitable[None]],
        console: Console | None = None,
    ) -> None:
        self.core: Core = core
        self.console: Console | None = console
        # REST v2's serverless routes under /_management/v2 (`_management`); set by `assemble`.
        self.management: ManagementRoutes | None = None
        self._now = core.clock.now
        self.limiter: RateLimiter = limiter
        self.control: Control = control
        self._log_request = request_log.entries.append
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api_key = api_key.encode() if api_key else None
        self._faults = faults or Faults()
        self._faults_active = self._faults.active  # read per request: kept, not recomputed
        self.strict: bool = strict
        self._rng = random.Random(self._faults.seed)
        self.routes: dict[str, ApiRoute] = {
            "run": ApiRoute(self.run, _POST, False, "run"),
            "runsync": ApiRoute(self.runsync, _POST, False, "runsync"),
            "status": ApiRoute(self.status, _GET_OR_POST, True, "status"),
            "status-sync": ApiRoute(self.status_sync, _GET_OR_POST, True, "status-sync"),
            "stream": ApiRoute(self.stream, _GET_OR_POST, True, "stream"),
            "cancel": ApiRoute(self.cancel, _POST, True, "cancel"),
            "retry": ApiRoute(self.retry, _POST, True, None),
            "purge-queue": ApiRoute(self.purge_queue, _POST, False, "purge-queue"),
            "health": ApiRoute(self.health, _GET, False, None),
        }
        # Batch Jobs: nine routes under `/batch`, routed by method and path in `BatchRoutes`.
        self.batches: BatchRoutes = BatchRoutes(core)
        # The worker protocol: never rate-limited or fault-injected.
        self.worker_routes: dict[str, Route] = dict(worker_routes)
        # `/openai/v1/*`: queue jobs too, but with OpenAI's error bodies and streaming answers.
        self.openai: OpenAIRoutes = OpenAIRoutes(core, limiter)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the app serves on, once started."""
        return self._loop

    @property
    def faults(self) -> Faults:
        """The fault injection in force (see ``set_faults``)."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self._faults_active = faults.active

    def set_faults(self, faults: Faults) -> None:
        """Change fault injection while serving (tests turn errors on and off between calls).

        Args:
            faults: The new settings; its ``seed`` restarts the random draws.
        """
        self.faults = faults
        self._rng = random.Random(faults.seed)

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Every request is logged (when, method, path, query, status) for tests to assert on
            # (`inspect.RequestLog`); the status is None when the answer was never completed (a drop).
            # `_http` hands back the status it answered: no wrapper around `send` on the hot path.
            status: int | None = None
            try:
                status = await self._http(scope, receive, send)
            finally:
                path, query = scope["path"], scope["query_string"]
                self._log_request((self._now(), scope["method"], path, query, status))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._loop = loop
            self._on_startup(loop)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:  # forced exit: nothing left to report
                await self.aclose()
                return
            if message["type"] == "lifespan.startup":
                self._start(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Stop what the app started (timers, deliveries, workers); the server calls it on shutdown."""
        await self._on_shutdown()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Serve one request; returns the status answered, None when the answer was not completed."""
        if self._loop is None:
            self._start(asyncio.get_running_loop())
        parts = scope["path"].split("/")
        if self._api_key is None:
            worker = len(parts) >= 4 and parts[1] == "v2" and parts[3] in self.worker_routes
            refusal = _cross_site_refusal(scope, worker=worker)
            if refusal is not None:
                return await answer(send, refusal[0], {"error": refusal[1]})
        # ["", "v2", endpoint, operation, *rest] or ["", "_emulator", name, ...]
        if len(parts) < 4 or parts[1] != "v2":
            if len(parts) >= 3 and parts[1] == "_emulator":
                return await self._control(scope, receive, send, parts[2:])
            if len(parts) >= 3 and parts[1:3] == ["_management", "v2"] and self.management is not None:
                watch = _Watch(send)
                await self.management.handle(scope, receive, watch, parts[3:])
                return watch.answered()
            if self.console is not None and (parts[1] == "_console" or scope["path"] == "/"):
                # The page is public; its data routes check the key with `_authorized`.
                watch = _Watch(send)
                await self.console.handle(scope, receive, watch, self._authorized)
                return watch.answered()
            return await answer(
                send, 404, {"error": f"no route {scope['path']}; routes live under /v2/<endpoint_id>/"}
            )
        # The key first: a stranger learns nothing, not even which endpoint ids exist. The OpenAI routes
        # answer it in OpenAI's shape, the same bytes for a known and an unknown endpoint id.
        if not self._authorized(scope):
            if parts[3] == "openai":
                watch = _Watch(send)
                await openai_unauthorized(watch)
                return watch.answered()
            return await _unauthorized(send)
        endpoint = self.core.endpoints.get(parts[2])
        if endpoint is None:
            known = ", ".join(sorted(self.core.endpoints)) or "none"
            return await answer(
                send, 404, {"error": f"endpoint {parts[2]!r} not found (this emulator serves: {known})"}
            )
        operation = parts[3]
        if operation == "openai":  # answers its own errors in OpenAI's shape
            watch = _Watch(send)
            await self.openai(
                EndpointRequest(scope, receive, endpoint, parts[4:]),
                watch,
                worker_allowance=self._worker_allowance,
            )
            return watch.answered()
        rest = parts[4:]
        if rest and rest[-1] == "":
            rest.pop()
        request = EndpointRequest(scope, receive, endpoint, rest)
        if operation == "batch":
            return await self._serve(send, self.batches, request)
        entry = self.routes.get(operation)
        if entry is None:
            worker_route = self.worker_routes.get(operation)
            if worker_route is None:
                return await answer(
                    send, 404, {"error": f"unknown operation {operation!r} on endpoint {endpoint.id}"}
                )
            return await self._serve(send, worker_route, request)
        route, methods, needs_id, limit_name = (
            entry.handler,
            entry.methods,
            entry.needs_job_id,
            entry.rate_limit,
        )
        if request.method not in methods:
            return await answer(
                send,
                405,
                {"error": f"{operation} takes {' or '.join(sorted(methods))}, not {request.method}"},
            )
        if needs_id != (len(rest) == 1):
            usage = (
                f"/v2/{endpoint.id}/{operation}/<job_id>" if needs_id else f"/v2/{endpoint.id}/{operation}"
            )
            return await answer(send, 404, {"error": f"no route {scope['path']}; use {usage}"})
        dropped: str | None = None
        if self._faults_active:
            injected, dropped = await self._inject_fault()
            if injected is not None:
                return await answer(send, injected[0], injected[1], injected[2])
        limiter = self.limiter
        gate = limiter.gate(endpoint.id, limit_name) if limit_name and limiter.enabled else None
        if gate is not None:
            wait = gate.try_acquire(self._now(), self._worker_allowance(endpoint))
            if wait is not None:
                return await answer(
                    send,
                    429,
                    {"error": f"rate limit for {operation} on endpoint {endpoint.id} exceeded; retry later"},
                    [(b"retry-after", self.limiter.retry_after_header(wait))],
                )
            try:
                return await self._serve(send, route, request, dropped=dropped)
            finally:
                gate.release()
        return await self._serve(send, route, request, dropped=dropped)

    async def _control(self, scope: Scope, receive: Receive, send: Send, rest: list[str]) -> int | None:
        """`/_emulator/…`: same key as the API, then `Control`."""
        if not self._authorized(scope):
            return await _unauthorized(send)
        if rest and rest[-1] == "":
            rest.pop()
        return await self._serve(send, self.control.handle, Request(scope, receive, rest))

    def _worker_allowance(self, endpoint: EndpointState) -> int:
        if not self.limiter.per_worker_allowance:
            return 0
        running = sum(1 for w in endpoint.workers if w.job is not None)
        return running * self.limiter.per_worker_allowance

    async def _serve(
        self, send: Send, route: Route, request: Request, *, dropped: str | None = None
    ) -> int | None:
        """Run ``route`` and answer; ``dropped`` ("drop" or "500", an injected fault) replaces the answer
        of a request that was processed."""
        try:
            status, payload = await route(request)
        except HTTPError as exc:
            return await answer(send, exc.status, {"error": exc.message}, exc.headers)
        except Exception:
            log.exception("emulator route %s failed", request.scope["path"])
            return await answer(send, 500, {"error": "internal emulator error; see the server log"})
        if dropped == "500":
            return await answer(send, 500, {"error": "injected fault: internal server error"})
        if dropped:
            await drop(send)
            return None
        if status == 204:
            return await respond_empty(send)
        if isinstance(payload, Warned):
            return await answer(send, status, payload.payload, [payload.header()])
        return await answer(send, status, payload)

    def _authorized(self, scope: Scope) -> bool:
        if self._api_key is None:
            return True
        supplied = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                supplied = value
                break
        if supplied[:7].lower() == b"bearer ":
            supplied = supplied[7:].strip()
        return hmac.compare_digest(supplied, self._api_key)

    async def _inject_fault(
        self,
    ) -> tuple[tuple[int, dict[str, str], list[tuple[bytes, bytes]]] | None, str | None]:
        faults, rng = self.faults, self._rng
        if faults.latency:
            # Real time on purpose: latency stands for the network, not for RunPod's clock.
            await asyncio.sleep(rng.uniform(0, faults.latency))
        if faults.error_429 and rng.random() < faults.error_429:
            return (429, {"error": "injected fault: too many requests"}, [(b"retry-after", b"1")]), None
        if faults.error_503 and rng.random() < faults.error_503:
            return (503, {"error": "injected fault: service unavailable"}, []), None
        if faults.error_500 and rng.random() < faults.error_500:
            return (500, {"error": "injected fault: internal server error"}, []), None
        if faults.error_500_processed and rng.random() < faults.error_500_processed:
            return None, "500"  # processed first (a /run's job is created), then answered 500
        return None, "drop" if faults.drop and rng.random() < faults.drop else None

    # -- public routes --------------------------------------------------------------------------

    def _job(self, request: EndpointRequest) -> JobRecord:
        job_id = request.rest[0]
        job = request.endpoint.jobs.get(job_id)
        if job is None:
            raise HTTPError(
                404,
                f"job {job_id} not found on endpoint {request.endpoint.id}: unknown id, or its result "
                "passed the retention window (30 min after /run, 1 min after /runsync) or its ttl",
            )
        return job

    def _submit(self, request: EndpointRequest, body: bytes, *, sync: bool) -> tuple[JobRecord, list[str]]:
        """The job queued, and the warnings its answer carries (unknown keys ignored)."""
        sub = Submission(json_object(body), strict=self.strict)
        warnings: list[str] = []
        if sub.ignored:
            message = sub.warning("runsync" if sync else "run", request.endpoint.id)
            # Logged once per message: a client sending webhookV2 on every request must not flood the log.
            self.core.notices.warn(message, "ignored_keys", log_once=True)
            warnings.append(message)
        job = self.core.submit(
            request.endpoint,
            sub.input,
            webhook=sub.webhook,
            execution_timeout=sub.execution_timeout,
            ttl=sub.ttl,
            low_priority=sub.low_priority,
            s3_config=sub.s3_config,
            sync=sync,
            raw_body=body,
        )
        return job, warnings

    def _wait_query(self, request: EndpointRequest, default: float, low: int = 0) -> float:
        """`?wait=` ms (the wire) as seconds; `default` is seconds."""
        if not request.raw_query:  # the usual request: no query string to parse
            return round(default * 1000) / 1000
        wait_ms = request.int_query("wait", low=low, high=_MAX_WAIT_MS, default=round(default * 1000))
        assert wait_ms is not None
        return wait_ms / 1000

    async def run(self, request: EndpointRequest) -> tuple[int, Any]:
        """``POST /run``: queue a job and answer its id at once."""
        body = await request.body(contract.RUN_PAYLOAD_LIMIT, "/run")
        job, warnings = self._submit(request, body, sync=False)
        answer = {"id": job.id, "status": _IN_QUEUE_TEXT}
        return 200, Warned(answer, warnings) if warnings else answer

    async def runsync(self, request: EndpointRequest) -> tuple[int, Any]:
        """``POST /runsync``: queue a job and hold the answer until it ends or ``?wait=`` runs out."""
        wait = self._wait_query(request, self.core.timings.runsync_default_wait, contract.RUNSYNC_MIN_WAIT_MS)
        body = await request.body(contract.RUNSYNC_PAYLOAD_LIMIT, "/runsync")
        job, warnings = self._submit(request, body, sync=True)
        await self.core.wait_terminal(job, wait)
        return self._status_answer(request, job, partial=True, warnings=warnings)

    def _status_answer(
        self,
        request: EndpointRequest,
        job: JobRecord,
        *,
        partial: bool = False,
        warnings: list[str] | None = None,
    ) -> tuple[int, Any]:
        # A finished job answers its held request even when its retention has already run out by the
        # time the request resumes (retention 0, or a busy loop): the result exists, RunPod returns it.
        finished = job.status in TERMINAL
        if not finished and request.endpoint.jobs.get(job.id) is not job:
            raise HTTPError(404, f"job {job.id} was removed: its ttl ran out while it was running")
        if partial and not finished:
            answer: dict[str, Any] = {"id": job.id, "status": WIRE[job.status]}
        else:
            answer = job.status_dict()
        return 200, _warned(answer, job, warnings)

    async def status(self, request: EndpointRequest) -> tuple[int, Any]:
        """``GET|POST /status/<id>``: the job's snapshot; ``?ttl=`` shortens its retention."""
        job = self._job(request)
        ttl_ms = request.int_query("ttl", low=1, high=contract.MAX_DURATION_MS)
        if ttl_ms is not None:
            self.core.status_ttl(job, ttl_ms / 1000)
        return 200, _warned(job.status_dict(), job, None)

    async def status_sync(self, request: EndpointRequest) -> tuple[int, Any]:
        """``GET|POST /status-sync/<id>``: the snapshot, held until the job ends or ``?wait=``."""
        job = self._job(request)
        await self.core.wait_terminal(
            job, self._wait_query(request, self.core.timings.status_sync_default_wait)
        )
        return self._status_answer(request, job)

    async def stream(self, request: EndpointRequest) -> tuple[int, Any]:
        """``GET|POST /stream/<id>``: the chunks not yet handed out, held until one arrives."""
        job = self._job(request)
        await self.core.wait_stream(
            job, self._wait_query(request, self.core.timings.stream_default_wait, contract.MIN_HOLD_MS)
        )
        # A finished job answers its held request even when its retention has already run out by the
        # time the request resumes (retention 0, or a busy loop): the result exists, RunPod returns it.
        if request.endpoint.jobs.get(job.id) is not job and not job.status.is_terminal:
            raise HTTPError(404, f"job {job.id} was removed: its ttl ran out while it was running")
        chunks = job.chunks
        job.chunks = []
        return 200, {
            "id": job.id,
            "status": job.status.value,
            "stream": [{"output": orjson.Fragment(c)} for c in chunks],
        }

    async def cancel(self, request: EndpointRequest) -> tuple[int, Any]:
        """``POST /cancel/<id>``: cancel a queued or running job (400 for a finished one)."""
        job = self._job(request)
        problem = self.core.cancel(job)
        if problem is not None:
            raise HTTPError(400, problem)
        return 200, {"id": job.id, "status": JobStatus.CANCELLED.value}

    async def retry(self, request: EndpointRequest) -> tuple[int, Any]:
        """``POST /retry/<id>``: requeue a FAILED or TIMED_OUT job (400 otherwise)."""
        job = self._job(request)
        problem = self.core.retry(job)
        if problem is not None:
            raise HTTPError(400, problem)
        return 200, {"id": job.id, "status": JobStatus.IN_QUEUE.value}

    async def purge_queue(self, request: EndpointRequest) -> tuple[int, Any]:
        """``POST /purge-queue``: drop every queued job; running ones continue."""
        return 200, {"removed": self.core.purge(request.endpoint), "status": "completed"}

    async def health(self, request: EndpointRequest) -> tuple[int, Any]:
        """``GET /health``: the endpoint's job and worker counts."""
        return 200, self.core.health(request.endpoint)


class _Watch:
    """`send` for a part that answers by itself (the console, the management and OpenAI routes): notes the
    status it answered and whether the answer was completed, for the request log. (The public routes
    hand back their status instead: no wrapper around `send` on the hot path.)"""

    __slots__ = ("complete", "send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None
        self.complete = False

    def __call__(self, message: dict[str, Any]) -> Awaitable[None]:
        # Not a coroutine: hands back `send`'s own awaitable, so watching costs no extra frame.
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif not message.get("more_body"):
            self.complete = True
        return self.send(message)

    def answered(self) -> int | None:
        """The status answered, or None when the answer was not completed (a dropped connection)."""
        return self.status if self.complete else None


def _warned(answer: dict[str, Any], job: JobRecord, warnings: list[str] | None) -> Any:
    """The answer, with the request's warnings and the job's own (a result dropped) as a header."""
    if not warnings and job.warning is None:
        return answer
    messages = [*(warnings or ()), *([job.warning] if job.warning else ())]
    return Warned(answer, messages) if messages else answer


async def _unauthorized(send: Send) -> int:
    return await answer(
        send, 401, {"error": "missing or invalid API key: send 'Authorization: Bearer <key>'"}
    )


_SAME_SITE_FETCHES: Final = (b"same-origin", b"none")  # `none`: typed in the address bar, a bookmark


def _cross_site_refusal(scope: Scope, *, worker: bool) -> tuple[int, str] | None:
    """Why a keyless emulator refuses this request, or None. Any web page the user visits could
    otherwise drive it (a form or `fetch` to 127.0.0.1): a browser marks such a request with
    `Sec-Fetch-Site` and `Origin`, and cannot send a JSON `Content-Type` cross-site without a CORS
    preflight, which gets no CORS answer here. Clients outside a browser send neither header.

    The official worker POSTs its results as `application/x-www-form-urlencoded` (runpod-python's
    `rp_http`), so the worker protocol's routes are spared the Content-Type rule only. The emulator
    serves plain HTTP, so its own origin is `http://` + the Host header."""
    origin = site = content_type = host = None
    body = False
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value
        elif name == b"sec-fetch-site":
            site = value
        elif name == b"content-type":
            content_type = value
        elif name == b"host":
            host = value
        elif name == b"content-length":
            body = value.strip() != b"0"
        elif name == b"transfer-encoding":
            body = True
    if site is not None and site.lower() not in _SAME_SITE_FETCHES:
        return 403, (
            f"cross-site request refused (Sec-Fetch-Site: {site.decode('latin-1')}): this emulator has no "
            "API key, so only its own pages and non-browser clients may use it; start it with --api-key "
            "to serve other origins"
        )
    if origin is not None and (host is None or origin.lower() != b"http://" + host.lower()):
        return 403, (
            f"cross-origin request refused (Origin: {origin.decode('latin-1')}): this emulator has no API "
            "key, so only its own pages and non-browser clients may use it; start it with --api-key to "
            "serve other origins"
        )
    # Bodyless POSTs (cancel, retry, purge-queue) pass: aiohttp labels even those application/octet-stream,
    # and a browser's empty form still carries the Origin refused above.
    if scope["method"] == "POST" and body and not worker:
        media = (content_type or b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            shown = content_type.decode("latin-1") if content_type is not None else "none"
            return 415, (
                f"POST bodies must be sent with Content-Type: application/json (got {shown}); with curl, "
                "add -H 'Content-Type: application/json'"
            )
    return None
