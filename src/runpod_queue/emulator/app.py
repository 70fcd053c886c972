"""The emulator's HTTP surface: a lean ASGI app (no framework) serving RunPod's public routes.

Why no Starlette/FastAPI: the emulator's hot path (run, runsync, status) is measured against the
official test server, and perf-notes.md shows a framework's per-request cost is most of the budget on
these machines. Routing here is a split of the path and a dict lookup; bodies are orjson.

Every 4xx/5xx answer is `{"error": "<what is wrong and how to fix it>"}` [ours].
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from runpod_queue import _contract as contract
from runpod_queue._contract import JobStatus
from runpod_queue.emulator._config import Faults
from runpod_queue.emulator._ratelimit import RateLimiter
from runpod_queue.emulator.delivery import WebhookDelivery
from runpod_queue.emulator.queue import Core, EndpointState, JobRecord, encode_json
from runpod_queue.emulator.workers import InProcessRunner

__all__ = ["EmulatorApp", "HTTPError", "Request"]

log = logging.getLogger("runpod_queue.emulator")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_MB: Final = 1_000_000
_POLICY_KEYS: Final = frozenset({"executionTimeout", "ttl", "lowPriority"})
_S3_KEYS: Final = ("accessId", "accessSecret", "bucketName", "endpointUrl")
_BODY_KEYS: Final = frozenset({"input", "webhook", "policy", "s3Config"})
_MAX_WAIT_MS: Final = contract.RUNSYNC_MAX_WAIT_MS


class HTTPError(Exception):
    """Raised inside a route: becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Request:
    """What a route needs from the ASGI scope, parsed lazily."""

    __slots__ = ("_query", "endpoint", "method", "raw_query", "receive", "rest", "scope")

    def __init__(self, scope: Scope, receive: Receive, endpoint: EndpointState, rest: list[str]):
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.endpoint = endpoint
        self.rest = rest
        self.raw_query: bytes = scope.get("query_string", b"")
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.raw_query.decode("latin-1"))) if self.raw_query else {}
        return self._query

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return value  # type: ignore[no-any-return]
        return None

    async def body(self, limit: int, what: str) -> bytes:
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit, what)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit, what)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def int_query(self, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"query parameter {name}={raw!r} must be an integer number of ms") from None
        if not low <= value <= high:
            raise HTTPError(400, f"query parameter {name}={value} is out of range: use {low}..{high} ms")
        return value


def _too_large(size: int, limit: int, what: str) -> HTTPError:
    return HTTPError(
        413,
        f"request body is {size / _MB:.1f} MB; {what} accepts at most {limit // _MB} MB. "
        "Put large inputs in object storage and pass a URL (see s3Config)",
    )


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise HTTPError(400, 'request body is empty: send a JSON object such as {"input": {...}}')
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPError(400, f"request body must be a JSON object, got {_type_name(data)}")
    return data


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _duration(policy: dict[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in policy:
        return None
    value = policy[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise HTTPError(
            400, f"policy.{key} must be an integer number of ms, got {_type_name(value)} {value!r}"
        )
    if not low <= value <= high:
        raise HTTPError(
            400,
            f"policy.{key}={int(value)} is out of range: allowed {low}..{high} ms "
            f"({low // 1000} s to 7 days)",
        )
    return int(value)


class _Submission:
    __slots__ = ("execution_timeout_ms", "input", "low_priority", "s3_config", "ttl_ms", "webhook")

    def __init__(self, data: dict[str, Any]) -> None:
        unknown = data.keys() - _BODY_KEYS
        if unknown:
            raise HTTPError(
                400,
                f"unknown field(s) {sorted(unknown)} in request body; "
                "allowed: input, webhook, policy, s3Config",
            )
        if "input" not in data:
            raise HTTPError(400, 'field "input" is required: send {"input": {...}}')
        job_input = data["input"]
        if not isinstance(job_input, dict):
            raise HTTPError(400, f'field "input" must be a JSON object, got {_type_name(job_input)}')
        self.input = job_input
        webhook = data.get("webhook")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
        ):
            raise HTTPError(400, f'field "webhook" must be an http(s) URL string, got {webhook!r}')
        self.webhook: str | None = webhook
        self.execution_timeout_ms: int | None = None
        self.ttl_ms: int | None = None
        self.low_priority = False
        policy = data.get("policy")
        if policy is not None:
            if not isinstance(policy, dict):
                raise HTTPError(400, f'field "policy" must be a JSON object, got {_type_name(policy)}')
            unknown = policy.keys() - _POLICY_KEYS
            if unknown:
                raise HTTPError(
                    400,
                    f"unknown policy field(s) {sorted(unknown)}; allowed: executionTimeout, ttl, lowPriority",
                )
            self.execution_timeout_ms = _duration(
                policy, "executionTimeout", contract.MIN_EXECUTION_TIMEOUT_MS, contract.MAX_DURATION_MS
            )
            self.ttl_ms = _duration(policy, "ttl", contract.MIN_TTL_MS, contract.MAX_DURATION_MS)
            low = policy.get("lowPriority", False)
            if not isinstance(low, bool):
                raise HTTPError(
                    400, f"policy.lowPriority must be true or false, got {_type_name(low)} {low!r}"
                )
            self.low_priority = low
        s3 = data.get("s3Config")
        self.s3_config: dict[str, str] | None = None
        if s3 is not None:
            if not isinstance(s3, dict):
                raise HTTPError(400, f'field "s3Config" must be a JSON object, got {_type_name(s3)}')
            missing = [k for k in _S3_KEYS if not isinstance(s3.get(k), str) or not s3[k]]
            if missing:
                raise HTTPError(400, f"s3Config needs non-empty strings for {', '.join(missing)}")
            extra = s3.keys() - set(_S3_KEYS)
            if extra:
                raise HTTPError(
                    400, f"unknown s3Config field(s) {sorted(extra)}; allowed: {', '.join(_S3_KEYS)}"
                )
            self.s3_config = {k: s3[k] for k in _S3_KEYS}


Route = Callable[[Request], Awaitable[tuple[int, Any]]]


class EmulatorApp:
    """ASGI application. `core.bind` happens at lifespan startup or, without a lifespan (e.g.
    `httpx.ASGITransport`), on the first request."""

    def __init__(
        self,
        core: Core,
        *,
        api_key: str | None,
        limiter: RateLimiter,
        faults: Faults | None = None,
    ) -> None:
        self.core = core
        self.runner = InProcessRunner(core)
        self.delivery = WebhookDelivery(core)
        self.limiter = limiter
        self._api_key = api_key.encode() if api_key else None
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        # operation → (route, allowed methods, needs a job id, rate-limit name or None)
        self.routes: dict[str, tuple[Route, frozenset[str], bool, str | None]] = {
            "run": (self.run, frozenset({"POST"}), False, "run"),
            "runsync": (self.runsync, frozenset({"POST"}), False, "runsync"),
            "status": (self.status, frozenset({"GET", "POST"}), True, "status"),
            "status-sync": (self.status_sync, frozenset({"GET", "POST"}), True, "status-sync"),
            "stream": (self.stream, frozenset({"GET", "POST"}), True, "stream"),
            "cancel": (self.cancel, frozenset({"POST"}), True, "cancel"),
            "retry": (self.retry, frozenset({"POST"}), True, None),
            "purge-queue": (self.purge_queue, frozenset({"POST"}), False, "purge-queue"),
            "health": (self.health, frozenset({"GET"}), False, None),
        }
        # Routes of the worker protocol (issue 5) are registered here, never fault-injected.
        self.worker_routes: dict[str, Callable[[Request], Awaitable[tuple[int, Any]]]] = {}
        # Imported here: external.py builds on this module's Request and HTTPError.
        from runpod_queue.emulator.external import ExternalWorkers

        self.external = ExternalWorkers(self)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:  # forced exit: nothing left to report
                await self.aclose()
                return
            if message["type"] == "lifespan.startup":
                self.core.bind(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.runner.aclose()
        await self.delivery.aclose()
        await self.external.aclose()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.core.loop is None:
            self.core.bind(asyncio.get_running_loop())
        parts = scope["path"].split("/")
        # ["", "v2", endpoint, operation, *rest]
        if len(parts) < 4 or parts[1] != "v2":
            return await _respond(
                send, 404, {"error": f"no route {scope['path']}; routes live under /v2/<endpoint_id>/"}
            )
        endpoint = self.core.endpoints.get(parts[2])
        if endpoint is None:
            known = ", ".join(sorted(self.core.endpoints)) or "none"
            return await _respond(
                send, 404, {"error": f"endpoint {parts[2]!r} not found (this emulator serves: {known})"}
            )
        if not self._authorized(scope):
            return await _respond(
                send, 401, {"error": "missing or invalid API key: send 'Authorization: Bearer <key>'"}
            )
        operation = parts[3]
        rest = parts[4:]
        if rest and rest[-1] == "":
            rest.pop()
        request = Request(scope, receive, endpoint, rest)
        entry = self.routes.get(operation)
        if entry is None:
            worker_route = self.worker_routes.get(operation)
            if worker_route is None:
                return await _respond(
                    send, 404, {"error": f"unknown operation {operation!r} on endpoint {endpoint.id}"}
                )
            return await self._serve(send, worker_route, request)
        route, methods, needs_id, limit_name = entry
        if request.method not in methods:
            return await _respond(
                send,
                405,
                {"error": f"{operation} takes {' or '.join(sorted(methods))}, not {request.method}"},
            )
        if needs_id != (len(rest) == 1):
            usage = (
                f"/v2/{endpoint.id}/{operation}/<job_id>" if needs_id else f"/v2/{endpoint.id}/{operation}"
            )
            return await _respond(send, 404, {"error": f"no route {scope['path']}; use {usage}"})
        drop = False
        if self.faults.active:
            injected, drop = await self._inject_fault()
            if injected is not None:
                return await _respond(send, injected[0], injected[1], injected[2])
        gate = self.limiter.gate(endpoint.id, limit_name) if limit_name else None
        if gate is not None:
            wait = gate.try_acquire(self._worker_allowance(endpoint))
            if wait is not None:
                return await _respond(
                    send,
                    429,
                    {"error": f"rate limit for {operation} on endpoint {endpoint.id} exceeded; retry later"},
                    [(b"retry-after", RateLimiter.retry_after_header(wait))],
                )
            try:
                await self._serve(send, route, request, drop=drop)
            finally:
                gate.release()
        else:
            await self._serve(send, route, request, drop=drop)

    def _worker_allowance(self, endpoint: EndpointState) -> int:
        if not self.limiter.per_worker_allowance:
            return 0
        running = sum(1 for w in endpoint.workers if w.job is not None)
        return running * self.limiter.per_worker_allowance

    async def _serve(
        self,
        send: Send,
        route: Route,
        request: Request,
        *,
        drop: bool = False,
    ) -> None:
        try:
            status, payload = await route(request)
        except HTTPError as exc:
            return await _respond(send, exc.status, {"error": exc.message}, exc.headers)
        except Exception:
            log.exception("emulator route %s failed", request.scope["path"])
            return await _respond(send, 500, {"error": "internal emulator error; see the server log"})
        if drop:
            return await _drop(send)
        if status == 204:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return None
        return await _respond(send, status, payload)

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
    ) -> tuple[tuple[int, dict[str, str], list[tuple[bytes, bytes]]] | None, bool]:
        faults, rng = self.faults, self._rng
        if faults.latency_ms:
            await asyncio.sleep(rng.uniform(0, faults.latency_ms) / 1000)
        if faults.error_429 and rng.random() < faults.error_429:
            return (429, {"error": "injected fault: too many requests"}, [(b"retry-after", b"1")]), False
        if faults.error_503 and rng.random() < faults.error_503:
            return (503, {"error": "injected fault: service unavailable"}, []), False
        if faults.error_500 and rng.random() < faults.error_500:
            return (500, {"error": "injected fault: internal server error"}, []), False
        return None, bool(faults.drop and rng.random() < faults.drop)

    # -- public routes --------------------------------------------------------------------------

    def _job(self, request: Request) -> JobRecord:
        job_id = request.rest[0]
        job = request.endpoint.jobs.get(job_id)
        if job is None:
            raise HTTPError(
                404,
                f"job {job_id} not found on endpoint {request.endpoint.id}: unknown id, or its result "
                "passed the retention window (30 min after /run, 1 min after /runsync) or its ttl",
            )
        return job

    def _submit(self, request: Request, body: bytes, *, sync: bool) -> JobRecord:
        sub = _Submission(_json_object(body))
        return self.core.submit(
            request.endpoint,
            sub.input,
            webhook=sub.webhook,
            execution_timeout_ms=sub.execution_timeout_ms,
            ttl_ms=sub.ttl_ms,
            low_priority=sub.low_priority,
            s3_config=sub.s3_config,
            sync=sync,
            raw_body=body,
        )

    async def run(self, request: Request) -> tuple[int, Any]:
        body = await request.body(contract.RUN_PAYLOAD_LIMIT, "/run")
        job = self._submit(request, body, sync=False)
        return 200, {"id": job.id, "status": JobStatus.IN_QUEUE.value}

    async def runsync(self, request: Request) -> tuple[int, Any]:
        wait_ms = request.int_query(
            "wait",
            low=contract.RUNSYNC_MIN_WAIT_MS,
            high=contract.RUNSYNC_MAX_WAIT_MS,
            default=int(self.core.timings.runsync_default_wait_ms),
        )
        assert wait_ms is not None
        body = await request.body(contract.RUNSYNC_PAYLOAD_LIMIT, "/runsync")
        job = self._submit(request, body, sync=True)
        await self.core.wait_terminal(job, self.core.clock.seconds(wait_ms))
        return self._status_answer(request, job, partial=True)

    def _status_answer(self, request: Request, job: JobRecord, *, partial: bool = False) -> tuple[int, Any]:
        if request.endpoint.jobs.get(job.id) is not job:
            raise HTTPError(404, f"job {job.id} was removed: its ttl ran out while it was running")
        if partial and not job.status.is_terminal:
            return 200, {"id": job.id, "status": job.status.value}
        return 200, job.status_dict()

    async def status(self, request: Request) -> tuple[int, Any]:
        job = self._job(request)
        ttl = request.int_query("ttl", low=1, high=contract.MAX_DURATION_MS)
        if ttl is not None:
            self.core.shorten_retention(job, ttl)
        return 200, job.status_dict()

    async def status_sync(self, request: Request) -> tuple[int, Any]:
        job = self._job(request)
        wait_ms = request.int_query(
            "wait", low=0, high=_MAX_WAIT_MS, default=int(self.core.timings.status_sync_default_wait_ms)
        )
        assert wait_ms is not None
        await self.core.wait_terminal(job, self.core.clock.seconds(wait_ms))
        return self._status_answer(request, job)

    async def stream(self, request: Request) -> tuple[int, Any]:
        job = self._job(request)
        wait_ms = request.int_query(
            "wait", low=0, high=_MAX_WAIT_MS, default=int(self.core.timings.stream_default_wait_ms)
        )
        assert wait_ms is not None
        await self.core.wait_stream(job, self.core.clock.seconds(wait_ms))
        if request.endpoint.jobs.get(job.id) is not job:
            raise HTTPError(404, f"job {job.id} was removed: its ttl ran out while it was running")
        chunks = job.chunks
        job.chunks = []
        return 200, {
            "id": job.id,
            "status": job.status.value,
            "stream": [{"output": orjson.Fragment(c)} for c in chunks],
        }

    async def cancel(self, request: Request) -> tuple[int, Any]:
        job = self._job(request)
        problem = self.core.cancel(job)
        if problem is not None:
            raise HTTPError(400, problem)
        return 200, {"id": job.id, "status": JobStatus.CANCELLED.value}

    async def retry(self, request: Request) -> tuple[int, Any]:
        job = self._job(request)
        problem = self.core.retry(job)
        if problem is not None:
            raise HTTPError(400, problem)
        return 200, {"id": job.id, "status": JobStatus.IN_QUEUE.value}

    async def purge_queue(self, request: Request) -> tuple[int, Any]:
        return 200, {"removed": self.core.purge(request.endpoint), "status": "completed"}

    async def health(self, request: Request) -> tuple[int, Any]:
        return 200, self.core.health(request.endpoint)


async def _respond(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = payload if isinstance(payload, bytes) else encode_json(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send) -> None:
    """Start an answer and never finish it: the server closes the connection mid-body."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b'{"id', "more_body": True})
