"""Requests: each RunPod operation as a ``Call`` — method, path, body, retry safety — decided before any I/O.

Arguments are checked here, so a bad one is a ValueError/TypeError before anything is sent, and ids are
quoted here, so no id can change the path it is sent to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx

from runpod_queue._contract import (
    RUN_PAYLOAD_LIMIT,
    RUNSYNC_MAX_WAIT_MS,
    RUNSYNC_MIN_WAIT_MS,
    RUNSYNC_PAYLOAD_LIMIT,
)
from runpod_queue._models import Policy, S3Config
from runpod_queue._retry import Safety
from runpod_queue._units import Duration, seconds, to_ms
from runpod_queue.errors import PayloadTooLargeError

__all__ = [
    "JSON_HEADERS",
    "Call",
    "cancel_call",
    "health_call",
    "payload_error",
    "purge_call",
    "retry_call",
    "run_call",
    "runsync_call",
    "status_call",
    "status_sync_call",
    "stream_call",
]

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}


class Call(NamedTuple):
    """Everything needed to send one request, decided before any I/O.

    A NamedTuple rather than a frozen dataclass: one is built per request, and a frozen dataclass's
    ``__init__`` (an ``object.__setattr__`` per field) made building a status call ~3x slower.
    """

    endpoint_id: str  # with ``op``, the rate limiter's key
    op: str  # the LIMITS key, also used in logs
    method: str
    path: str  # relative to the base URL, ids already quoted
    safety: Safety
    content: bytes | None = None
    hold: float = 0.0  # seconds the server may hold the request open (long-poll): added to the read timeout
    limit: int | None = None  # body size limit (bytes), checked by payload_error before sending

    @property
    def headers(self) -> Mapping[str, str] | None:
        return JSON_HEADERS if self.content is not None else None


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch  # nothing to quote: ids nearly always are


def _id(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value if _PLAIN(value) else quote(value, safe="")


# An endpoint id comes back on every call, and checking it (the regex above) cost as much as building
# the rest of a status call: each one is checked once. Bounded, for a process that makes up endpoint ids.
_ENDPOINTS: dict[str, str] = {}
_ENDPOINTS_CAP = 1024


def _endpoint(endpoint_id: str) -> str:
    # Exact type: a str subclass may hash or compare as it likes, so it is checked every time.
    if type(endpoint_id) is str:
        quoted = _ENDPOINTS.get(endpoint_id)
        if quoted is not None:
            return quoted
    quoted = _id("endpoint_id", endpoint_id)
    if type(endpoint_id) is str:
        if len(_ENDPOINTS) >= _ENDPOINTS_CAP:
            _ENDPOINTS.clear()
        _ENDPOINTS[endpoint_id] = quoted
    return quoted


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
        endpoint_id,
        "run",
        "POST",
        f"/{_endpoint(endpoint_id)}/run",
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
    """``wait_ms`` is the server's hold, clamped here to its 1-300 s window."""
    wait_ms = max(RUNSYNC_MIN_WAIT_MS, min(wait_ms, RUNSYNC_MAX_WAIT_MS))
    return Call(
        endpoint_id,
        "runsync",
        "POST",
        f"/{_endpoint(endpoint_id)}/runsync?wait={wait_ms}",
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
        endpoint_id,
        "status",
        "GET",
        f"/{_endpoint(endpoint_id)}/status/{_id('job_id', job_id)}{query}",
        Safety.IDEMPOTENT,
    )


def status_sync_call(endpoint_id: str, job_id: str, *, wait_ms: int) -> Call:
    return Call(
        endpoint_id,
        "status-sync",
        "GET",
        f"/{_endpoint(endpoint_id)}/status-sync/{_id('job_id', job_id)}?wait={wait_ms}",
        Safety.IDEMPOTENT,
        hold=wait_ms / 1000,
    )


def stream_call(endpoint_id: str, job_id: str, *, wait_ms: int) -> Call:
    return Call(
        endpoint_id,
        "stream",
        "GET",
        f"/{_endpoint(endpoint_id)}/stream/{_id('job_id', job_id)}?wait={wait_ms}",
        Safety.IDEMPOTENT,
        hold=wait_ms / 1000,
    )


def cancel_call(endpoint_id: str, job_id: str) -> Call:
    return Call(
        endpoint_id,
        "cancel",
        "POST",
        f"/{_endpoint(endpoint_id)}/cancel/{_id('job_id', job_id)}",
        Safety.IDEMPOTENT,
    )


def retry_call(endpoint_id: str, job_id: str) -> Call:
    # Re-sending a retry that went through could restart a job that failed again: treat it like run.
    return Call(
        endpoint_id,
        "retry",
        "POST",
        f"/{_endpoint(endpoint_id)}/retry/{_id('job_id', job_id)}",
        Safety.CREATES,
    )


def purge_call(endpoint_id: str) -> Call:
    path = f"/{_endpoint(endpoint_id)}/purge-queue"
    return Call(endpoint_id, "purge-queue", "POST", path, Safety.IDEMPOTENT)


def health_call(endpoint_id: str) -> Call:
    return Call(endpoint_id, "health", "GET", f"/{_endpoint(endpoint_id)}/health", Safety.IDEMPOTENT)


def payload_error(call: Call, url: str) -> PayloadTooLargeError | None:
    """The error to raise instead of sending a body RunPod would refuse with 413 anyway."""
    if call.limit is None or call.content is None or len(call.content) <= call.limit:
        return None
    size = len(call.content)
    return PayloadTooLargeError(
        f"request body is {size:,} bytes, over the {call.limit:,}-byte limit of /{call.op}; not sent. "
        "Put large inputs in object storage and pass URLs (and s3_config=S3Config(...) for results).",
        request=httpx.Request(call.method, url),
        response=None,
        size=size,
        limit=call.limit,
    )
