"""Answers: read each success answer into a model, and turn every failure into the public error tree.

An answer that breaks the contract (not JSON, no id, an unknown status, ...) is an APIResponseError; a
4xx/5xx maps to its APIStatusError subclass with the server's own message and a hint; a transport failure
becomes APIConnectionError / APITimeoutError that says whether the request may have been acted on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from runpod_queue._calls import Call
from runpod_queue._models import Health, Job, MalformedError, StreamChunk, job_from_answer
from runpod_queue._retry import Safety, parse_retry_after
from runpod_queue._transport import Answer, TransportFailure
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
)

__all__ = [
    "connection_error",
    "error_for_status",
    "parse_health",
    "parse_job",
    "parse_purge",
    "parse_stream",
]


def _malformed(answer: Answer, reason: str) -> APIResponseError:
    return APIResponseError(reason, request=answer.request(), response=answer.as_httpx())


# json.loads(text) is three Python frames and two whitespace-regex matches around the C scanner, about as
# much as the scan of a status answer itself. A text that starts with a JSON value and ends where that value
# does (RunPod's answers) gets the scanner alone: json.loads would return the very same object. Anything
# else — leading or trailing whitespace, a BOM, invalid JSON — goes to json.loads, which decides as before.
# (The decoder's own scanner, the one json.loads uses; an instance attribute typeshed does not declare.)
_scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def _loads(text: str) -> Any:
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _decode(answer: Answer) -> Any:
    content = answer.content
    if not content:
        raise _malformed(answer, "empty body")
    try:
        try:
            # Decoded first: json.loads(bytes) sniffs for UTF-16/32 on every call, and RunPod sends UTF-8.
            return _loads(content.decode())
        except ValueError:  # not UTF-8 (or not JSON): the bytes path, as before, decides
            return json.loads(content)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        snippet = content[:80].decode("utf-8", "replace")
        raise _malformed(answer, f"body is not JSON: {snippet!r}") from None


def parse_job(answer: Answer) -> Job:
    data = _decode(answer)
    try:
        return job_from_answer(data)
    except MalformedError as exc:
        raise _malformed(answer, str(exc)) from None


def parse_stream(answer: Answer, job_id: str) -> tuple[Job, list[StreamChunk]]:
    """The job as this ``/stream`` answer shows it (status, and output/error when present; the chunks are
    not part of it), and the chunks it carried."""
    data = _decode(answer)
    if not isinstance(data, Mapping):
        raise _malformed(answer, f"expected a JSON object, got {type(data).__name__}")
    items = data.get("stream") or []
    if not isinstance(items, list):
        raise _malformed(answer, "'stream' should be a list")
    chunks = []
    for item in items:
        if not isinstance(item, Mapping) or "output" not in item:
            raise _malformed(answer, f"stream chunk without 'output': {item!r:.80}")
        chunks.append(StreamChunk(item["output"], item))
    snapshot = {key: value for key, value in data.items() if key != "stream"}
    snapshot.setdefault("id", job_id)
    try:
        return Job.from_dict(snapshot), chunks
    except MalformedError as exc:
        raise _malformed(answer, str(exc)) from None


def parse_purge(answer: Answer) -> int:
    data = _decode(answer)
    removed = data.get("removed") if isinstance(data, Mapping) else None
    if isinstance(removed, bool) or not isinstance(removed, int):
        raise _malformed(answer, f"missing integer 'removed' in {data!r:.80}")
    return removed


def parse_health(answer: Answer) -> Health:
    data = _decode(answer)
    try:
        return Health.from_dict(data)
    except MalformedError as exc:
        raise _malformed(answer, str(exc)) from None


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
    413: " (put large inputs in object storage and pass s3_config / URLs)",
}


def _server_message(response: httpx.Response) -> str:
    content = response.content
    if not content:
        return response.reason_phrase or "no body"
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return content[:200].decode("utf-8", "replace").strip() or "no body"
    if isinstance(data, Mapping):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(data)[:200]


_JOB_OPS = frozenset({"status", "status-sync", "stream", "cancel", "retry"})


def _not_found_hint(url: str, message: str) -> str:
    """What a 404 most likely means, from the URL: which thing is missing, said once.

    A path without ``/v2/`` is a base URL missing it; an endpoint-only call (run, health, ...) means the
    endpoint does not exist; a job call, that the job is unknown or gone. The job's reasons are added
    only when the server's message does not already give them (the emulator's does) or blame the endpoint.
    """
    path = httpx.URL(url).path
    if "/v2/" not in path:
        return f" (the URL {path!r} has no /v2: a base URL ends in /v2, e.g. https://api.runpod.ai/v2)"
    endpoint, _, rest = path.partition("/v2/")[2].partition("/")
    op, _, job = rest.partition("/")
    said = message.lower()
    if op in _JOB_OPS and job:
        if "retention" in said or "endpoint" in said:
            return ""
        return (
            " (unknown job id, or the job passed its retention window — 30 min after run, 1 min after "
            "runsync — or its ttl)"
        )
    if "endpoint" in said:
        return ""
    return f" (no endpoint {endpoint!r} at this base URL: check the endpoint id)"


def error_for_status(answer: Answer) -> APIStatusError:
    """The error for a 4xx/5xx answer: its class by status, the server's message plus a hint."""
    response = answer.as_httpx()
    code = answer.status
    cls = _BY_STATUS.get(code) or (ServerError if code >= 500 else APIStatusError)
    message = _server_message(response)
    message += _not_found_hint(answer.url, message) if code == 404 else _HINTS.get(code, "")
    err = cls(message, request=response.request, response=response, status_code=code)
    if isinstance(err, RateLimitError):
        err.retry_after = parse_retry_after(response.headers.get("retry-after"))
    return err


def _host_port(url: str) -> str:
    """``host:port`` of a request's URL, as a user would type it (the port the scheme implies included)."""
    parsed = httpx.URL(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{host}:{port}"


def connection_error(failure: TransportFailure, call: Call, url: str) -> APIConnectionError:
    """No answer: say whether the server may have acted on it, which decides whether a job may exist."""
    where = _host_port(url)
    if not failure.sent:
        message = f"cannot connect to {where}: {failure.detail}"
    else:
        lost = f"no answer from {where}" if failure.timeout else f"connection to {where} lost"
        message = f"{lost} ({failure.detail})"
        if call.safety is Safety.CREATES:
            message += "; the server may have acted on it (a job may exist), so it was not re-sent"
    cls = APITimeoutError if failure.timeout else APIConnectionError
    error = cls(message, request=httpx.Request(call.method, url), sent=failure.sent)
    error.__cause__ = failure.__cause__  # the library's own exception, for a full traceback
    return error
