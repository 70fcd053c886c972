"""The pure half of the client: build each request, read each answer, map errors. No I/O.

Sync and async shells call these and differ only in how they send, so the two can never disagree about
what a request looks like or what an answer means.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from runpod_queue._contract import (
    DEFAULT_BASE_URL,
    RUN_PAYLOAD_LIMIT,
    RUNSYNC_MAX_WAIT_MS,
    RUNSYNC_MIN_WAIT_MS,
    RUNSYNC_PAYLOAD_LIMIT,
    JobStatus,
)
from runpod_queue._limits import RateLimits
from runpod_queue._models import Health, Job, MalformedError, Policy, S3Config, StreamChunk
from runpod_queue._retry import (
    Retries,
    Safety,
    backoff_delay,
    may_resend,
    parse_retry_after,
    was_not_sent,
)
from runpod_queue._units import Duration, seconds, to_ms
from runpod_queue._version import __version__
from runpod_queue.errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)

T = TypeVar("T")

__all__ = [
    "Call",
    "cancel_call",
    "error_for_response",
    "health_call",
    "parse_health",
    "parse_job",
    "parse_purge",
    "parse_stream",
    "payload_error",
    "purge_call",
    "retry_call",
    "run_call",
    "status_call",
    "status_sync_call",
    "stream_call",
]

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Call:
    """Everything needed to send one request, decided before any I/O."""

    op: str  # the LIMITS key, also used in logs
    method: str
    path: str  # relative to the base URL, ids already quoted
    safety: Safety
    content: bytes | None = None
    hold: float = 0.0  # seconds the server may hold the request open (long-poll): added to the read timeout
    limit: int | None = None  # body size limit (bytes), checked by payload_error before sending


def _id(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _ms(name: str, value: int | None, low: int = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer number of milliseconds >= {low}, got {value!r}")


def _body(input: Any, webhook: str | None, policy: Policy | None, s3_config: S3Config | None) -> bytes:
    body: dict[str, Any] = {"input": input}
    if webhook is not None:
        if not isinstance(webhook, str) or not webhook.strip():
            raise ValueError(f"webhook must be a non-empty URL string, got {webhook!r}")
        body["webhook"] = webhook
    if policy is not None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy, got {type(policy).__name__}")
        body["policy"] = policy.to_wire()
    if s3_config is not None:
        if not isinstance(s3_config, S3Config):
            raise TypeError(f"s3_config must be an S3Config, got {type(s3_config).__name__}")
        body["s3Config"] = s3_config.to_wire()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def run_call(
    endpoint_id: str, input: Any, *, webhook: str | None, policy: Policy | None, s3_config: S3Config | None
) -> Call:
    return Call(
        "run",
        "POST",
        f"/{_id('endpoint_id', endpoint_id)}/run",
        Safety.CREATES,
        content=_body(input, webhook, policy, s3_config),
        limit=RUN_PAYLOAD_LIMIT,
    )


def runsync_call(
    endpoint_id: str,
    input: Any,
    *,
    wait_ms: int,
    webhook: str | None,
    policy: Policy | None,
    s3_config: S3Config | None,
) -> Call:
    """``wait_ms`` is the server's hold, already clamped to its 1-300 s window by the caller."""
    _ms("wait", wait_ms, RUNSYNC_MIN_WAIT_MS)
    wait_ms = min(wait_ms, RUNSYNC_MAX_WAIT_MS)
    return Call(
        "runsync",
        "POST",
        f"/{_id('endpoint_id', endpoint_id)}/runsync?wait={wait_ms}",
        Safety.CREATES,
        content=_body(input, webhook, policy, s3_config),
        hold=wait_ms / 1000,
        limit=RUNSYNC_PAYLOAD_LIMIT,
    )


def status_call(endpoint_id: str, job_id: str, *, keep_result_for: Duration | None = None) -> Call:
    """``keep_result_for`` (s) becomes RunPod's ``?ttl=`` (ms): how much longer to keep the result."""
    query = ""
    if keep_result_for is not None:
        query = f"?ttl={to_ms(seconds(keep_result_for, 'keep_result_for'))}"
    return Call(
        "status",
        "GET",
        f"/{_id('endpoint_id', endpoint_id)}/status/{_id('job_id', job_id)}{query}",
        Safety.IDEMPOTENT,
    )


def status_sync_call(endpoint_id: str, job_id: str, *, wait_ms: int) -> Call:
    return Call(
        "status-sync",
        "GET",
        f"/{_id('endpoint_id', endpoint_id)}/status-sync/{_id('job_id', job_id)}?wait={wait_ms}",
        Safety.IDEMPOTENT,
        hold=wait_ms / 1000,
    )


def stream_call(endpoint_id: str, job_id: str, *, wait_ms: int) -> Call:
    return Call(
        "stream",
        "GET",
        f"/{_id('endpoint_id', endpoint_id)}/stream/{_id('job_id', job_id)}?wait={wait_ms}",
        Safety.IDEMPOTENT,
        hold=wait_ms / 1000,
    )


def cancel_call(endpoint_id: str, job_id: str) -> Call:
    return Call(
        "cancel",
        "POST",
        f"/{_id('endpoint_id', endpoint_id)}/cancel/{_id('job_id', job_id)}",
        Safety.IDEMPOTENT,
    )


def retry_call(endpoint_id: str, job_id: str) -> Call:
    # Re-sending a retry that went through could restart a job that failed again: treat it like run.
    return Call(
        "retry", "POST", f"/{_id('endpoint_id', endpoint_id)}/retry/{_id('job_id', job_id)}", Safety.CREATES
    )


def purge_call(endpoint_id: str) -> Call:
    return Call("purge-queue", "POST", f"/{_id('endpoint_id', endpoint_id)}/purge-queue", Safety.IDEMPOTENT)


def health_call(endpoint_id: str) -> Call:
    return Call("health", "GET", f"/{_id('endpoint_id', endpoint_id)}/health", Safety.IDEMPOTENT)


def payload_error(call: Call, request: httpx.Request) -> PayloadTooLargeError | None:
    """The error to raise instead of sending a body RunPod would refuse with 413 anyway."""
    if call.limit is None or call.content is None or len(call.content) <= call.limit:
        return None
    size = len(call.content)
    return PayloadTooLargeError(
        f"request body is {size:,} bytes, over the {call.limit:,}-byte limit of /{call.op}; not sent. "
        "Put large inputs in object storage and pass URLs (and s3_config=S3Config(...) for results).",
        request=request,
        response=None,
        size=size,
        limit=call.limit,
    )


def _decode(response: httpx.Response) -> Any:
    content = response.content
    if not content:
        raise APIResponseError("empty body", request=response.request, response=response)
    try:
        return json.loads(content)
    except ValueError:
        snippet = content[:80].decode("utf-8", "replace")
        raise APIResponseError(
            f"body is not JSON: {snippet!r}", request=response.request, response=response
        ) from None


def parse_job(response: httpx.Response) -> Job:
    data = _decode(response)
    try:
        return Job.from_dict(data)
    except MalformedError as exc:
        raise APIResponseError(str(exc), request=response.request, response=response) from None


def parse_stream(response: httpx.Response) -> tuple[JobStatus, list[StreamChunk]]:
    data = _decode(response)
    request = response.request
    if not isinstance(data, Mapping):
        raise APIResponseError(
            f"expected a JSON object, got {type(data).__name__}", request=request, response=response
        )
    status = data.get("status")
    if status is None:
        raise APIResponseError("missing 'status'", request=request, response=response)
    try:
        status = JobStatus(status)
    except ValueError:
        raise APIResponseError(f"unknown 'status' {status!r}", request=request, response=response) from None
    items = data.get("stream") or []
    if not isinstance(items, list):
        raise APIResponseError("'stream' should be a list", request=request, response=response)
    chunks = []
    for item in items:
        if not isinstance(item, Mapping) or "output" not in item:
            raise APIResponseError(
                f"stream chunk without 'output': {item!r:.80}", request=request, response=response
            )
        chunks.append(StreamChunk(item["output"], item))
    return status, chunks


def parse_purge(response: httpx.Response) -> int:
    data = _decode(response)
    removed = data.get("removed") if isinstance(data, Mapping) else None
    if isinstance(removed, bool) or not isinstance(removed, int):
        raise APIResponseError(
            f"missing integer 'removed' in {data!r:.80}", request=response.request, response=response
        )
    return removed


def parse_health(response: httpx.Response) -> Health:
    data = _decode(response)
    try:
        return Health.from_dict(data)
    except MalformedError as exc:
        raise APIResponseError(str(exc), request=response.request, response=response) from None


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitError,
}

_HINTS: dict[int, str] = {
    401: " (check the API key: RUNPOD_API_KEY or api_key=)",
    404: (
        " (unknown endpoint or job id, or the job passed its retention window — 30 min after run, 1 min "
        "after runsync — or its ttl)"
    ),
    413: " (put large inputs in object storage and pass s3_config / URLs)",
}


def _server_message(response: httpx.Response) -> str:
    content = response.content
    if not content:
        return response.reason_phrase or "no body"
    try:
        data = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", "replace").strip() or "no body"
    if isinstance(data, Mapping):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(data)[:200]


def error_for_response(response: httpx.Response) -> APIStatusError:
    code = response.status_code
    cls = _BY_STATUS.get(code) or (ServerError if code >= 500 else APIStatusError)
    message = _server_message(response) + _HINTS.get(code, "")
    err = cls(message, request=response.request, response=response, status_code=code)
    if isinstance(err, RateLimitError):
        err.retry_after = parse_retry_after(response.headers.get("retry-after"))
    return err


# --------------------------------------------------------------------------------------------------
# Settings, timeouts, attempts and logging shared by both shells.

logger = logging.getLogger("runpod_queue")

ENV_API_KEY = "RUNPOD_API_KEY"
ENV_BASE_URL = "RUNPOD_ENDPOINT_BASE_URL"
# A read cut at the caller's deadline still gets this long for the answer already on its way.
DEADLINE_GRACE = 0.25


def resolve_settings(api_key: str | None, base_url: str | None) -> tuple[str | None, str]:
    """Keyword arguments win over the environment; the base URL defaults to RunPod's."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ValueError("api_key must be a non-empty string")
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return key, url.rstrip("/")


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What a client was built with, so another client (sync ↔ async, or ``with_options``) can be made
    with the same connection settings. The key stays out of the repr."""

    api_key: str | None = field(repr=False)
    base_url: str
    timeout: float
    retries: Retries
    rate_limits: RateLimits
    max_connections: int


def limits_config(rate_limits: RateLimits | bool) -> RateLimits:
    if isinstance(rate_limits, RateLimits):
        return rate_limits
    return RateLimits() if rate_limits else RateLimits.off()


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"runpod-queue/{__version__}", "Accept": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def base_timeout(seconds: float) -> httpx.Timeout:
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {seconds!r}")
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def attempt_timeout(base: httpx.Timeout, hold: float, deadline: float | None) -> httpx.Timeout:
    """The base timeout, stretched by a long-poll's hold and cut at the caller's deadline."""
    if hold == 0.0 and deadline is None:
        return base
    read = (base.read or 0.0) + hold
    connect = base.connect
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Expired
        read = min(read, remaining + DEADLINE_GRACE)
        connect = min(connect or read, read)
    return httpx.Timeout(connect=connect, read=read, write=base.write, pool=read)


class Expired(Exception):
    """The caller's deadline passed inside a request; flows turn it into WaitTimeoutError."""


def _is_timeout(exc: httpx.TransportError) -> bool:
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp"):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def transport_error(exc: httpx.TransportError, call: Call) -> APIConnectionError:
    request = exc.request
    sent = not was_not_sent(exc)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not sent:
        message = f"could not connect ({detail})"
    elif call.safety is Safety.CREATES:
        message = (
            f"connection lost after sending ({detail}); the server may have acted on it (a job may exist), "
            "so it was not re-sent"
        )
    else:
        message = f"connection lost ({detail})"
    cls = APITimeoutError if _is_timeout(exc) else APIConnectionError
    return cls(message, request=request, sent=sent)


def retry_delay(
    call: Call,
    retries: Retries,
    attempt: int,
    error: APIConnectionError | APIStatusError,
    rng: random.Random,
    deadline: float | None,
) -> float:
    """Seconds to wait before the next attempt, or raise the error (Expired past the deadline)."""
    allowed = may_resend(call.safety, error)
    now = time.monotonic() if deadline is not None else 0.0
    if not allowed or attempt >= retries.attempts:
        if deadline is not None and now >= deadline and isinstance(error, APIConnectionError):
            raise Expired from error
        raise error
    retry_after = error.retry_after if isinstance(error, RateLimitError) else None
    delay = backoff_delay(retries, attempt, retry_after, rng)
    if deadline is not None and now + delay >= deadline:
        raise Expired from error
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("retrying %s %s in %.3f s after %s", call.method, call.path, delay, type(error).__name__)
    return delay


def log_attempt(call: Call, outcome: int | str, attempt: int, elapsed: float) -> None:
    logger.debug(
        "%s %s -> %s (attempt %d, %.1f ms)", call.method, call.path, outcome, attempt, elapsed * 1000.0
    )


# --------------------------------------------------------------------------------------------------
# Flows: the multi-request operations (wait, run_sync, stream, cancel) written once as generators that
# yield actions. The sync and async shells execute the actions; the logic cannot drift between them.


@dataclass(frozen=True, slots=True)
class Send:
    call: Call
    parse: Callable[[httpx.Response], Any]
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Notify:
    job: Job


@dataclass(frozen=True, slots=True)
class Emit:
    chunk: StreamChunk


Action = Send | Sleep | Notify | Emit
Flow = Generator[Action, Any, T]

# Long-poll holds asked of the server, and the adaptive pause used when it does not hold.
STATUS_SYNC_HOLD_MS = 30_000
STREAM_HOLD_MS = 10_000
MIN_HOLD_MS = 1_000
PAUSE_MIN = 0.05
PAUSE_MAX_LONG_POLL = 1.0
PAUSE_MAX_POLL = 3.0
HELD = 0.05  # an answer slower than this means the server really held the request


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def wait_flow(
    endpoint_id: str,
    job_id: str,
    timeout: float | None,
    long_poll: dict[str, bool],
    *,
    last: Job | None = None,
    reported_timeout: float | None = None,
) -> Flow[Job]:
    """Until the job is terminal: status-sync long-polls when the server offers them, else status with
    adaptive pauses. The deadline is monotonic wall-clock time, so a timeout is kept whatever happens."""
    if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    shown = timeout if reported_timeout is None else reported_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = PAUSE_MIN
    while True:
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(job_id, last, shown or 0.0)
        use_long_poll = long_poll.get(endpoint_id, True) and (remaining is None or remaining >= 1.0)
        started = time.monotonic()
        try:
            if use_long_poll:
                hold = (
                    STATUS_SYNC_HOLD_MS
                    if remaining is None
                    else min(STATUS_SYNC_HOLD_MS, int(remaining * 1000))
                )
                try:
                    call = status_sync_call(endpoint_id, job_id, wait_ms=hold)
                    job: Job = yield Send(call, parse_job, deadline)
                except APIStatusError as exc:
                    if exc.status_code not in (404, 405):
                        raise
                    # The job or the route? A plain status answers (or raises NotFoundError for the job).
                    job = yield Send(status_call(endpoint_id, job_id), parse_job, deadline)
                    long_poll[endpoint_id] = False
                    use_long_poll = False
            else:
                job = yield Send(status_call(endpoint_id, job_id), parse_job, deadline)
        except Expired as exc:
            raise WaitTimeoutError(job_id, last, shown or 0.0) from exc.__cause__
        if last is None or job != last:
            if last is not None and job.status is not last.status:
                pause = PAUSE_MIN
            yield Notify(job)
        last = job
        if job.is_terminal:
            return job
        if use_long_poll and time.monotonic() - started >= HELD:
            pause = PAUSE_MIN
            continue
        remaining = _remaining(deadline)
        yield Sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
        pause = min(pause * 1.5, PAUSE_MAX_LONG_POLL if use_long_poll else PAUSE_MAX_POLL)


def run_sync_flow(
    endpoint_id: str,
    input: Any,
    *,
    timeout: Duration,
    webhook: str | None,
    policy: Policy | None,
    s3_config: S3Config | None,
    long_poll: dict[str, bool],
) -> Flow[Job]:
    """runsync, then — if the server's window closed first — wait for the rest of ``timeout`` (s)."""
    timeout_s = seconds(timeout, "timeout", low=RUNSYNC_MIN_WAIT_MS / 1000)
    wait_ms = to_ms(timeout_s)
    deadline = time.monotonic() + timeout_s
    call = runsync_call(
        endpoint_id,
        input,
        wait_ms=min(wait_ms, RUNSYNC_MAX_WAIT_MS),
        webhook=webhook,
        policy=policy,
        s3_config=s3_config,
    )
    # No deadline on the runsync request itself: cutting it short would lose the id of a job that exists.
    job: Job = yield Send(call, parse_job, None)
    yield Notify(job)
    if job.is_terminal:
        return job
    remaining = max(0.0, deadline - time.monotonic())
    return (
        yield from wait_flow(endpoint_id, job.id, remaining, long_poll, last=job, reported_timeout=timeout_s)
    )


def stream_flow(endpoint_id: str, job_id: str, timeout: float | None) -> Flow[None]:
    """Each chunk once, in order; ends when the job is terminal (any terminal state), pausing between
    polls when the server does not hold them."""
    if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    last: Job | None = None
    pause = PAUSE_MIN
    while True:
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(job_id, last, timeout or 0.0)
        hold = STREAM_HOLD_MS if remaining is None else max(0, min(STREAM_HOLD_MS, int(remaining * 1000)))
        started = time.monotonic()
        try:
            status, chunks = yield Send(
                stream_call(endpoint_id, job_id, wait_ms=hold), parse_stream, deadline
            )
        except Expired as exc:
            raise WaitTimeoutError(job_id, last, timeout or 0.0) from exc.__cause__
        last = Job(job_id, status)
        for chunk in chunks:
            yield Emit(chunk)
        if status.is_terminal:
            return
        if chunks or time.monotonic() - started >= HELD:
            pause = PAUSE_MIN
            continue
        remaining = _remaining(deadline)
        yield Sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
        pause = min(pause * 1.5, PAUSE_MAX_LONG_POLL)


def cancel_flow(endpoint_id: str, job_id: str) -> Flow[Job]:
    """Cancel is idempotent: a job that is already CANCELLED (e.g. our own first attempt went through
    before its answer was lost) is returned instead of the server's 400."""
    try:
        job: Job = yield Send(cancel_call(endpoint_id, job_id), parse_job)
    except BadRequestError:
        current: Job = yield Send(status_call(endpoint_id, job_id), parse_job)
        if current.is_cancelled:
            return current
        raise
    return job
