"""Every error the client raises, so callers can catch exactly what they can handle.

::

    RunpodQueueError
    ├── APIError                  a request failed, whichever way (catch this for "the API call failed")
    │   ├── APIStatusError            an HTTP error answer (status_code, request, response, message)
    │   │   ├── BadRequestError           400
    │   │   ├── AuthenticationError       401
    │   │   ├── PermissionDeniedError     403
    │   │   ├── NotFoundError             404  (unknown endpoint or job, or past its retention / ttl)
    │   │   ├── PayloadTooLargeError      413, or raised before sending when the body is over the limit
    │   │   ├── RateLimitError            429
    │   │   └── ServerError               5xx
    │   ├── APIConnectionError        no usable answer: connection refused, reset or dropped
    │   │   └── APITimeoutError           the request timed out
    │   └── APIResponseError          an answer the contract does not allow (not JSON, no id/status, ...)
    ├── JobFailedError            raised by Job.raise_for_status() for FAILED / TIMED_OUT / CANCELLED
    ├── WaitTimeoutError          wait / run_sync / stream ran out of time; carries the last Job seen
    ├── WebhookVerificationError  a webhook delivery refused: no or bad token, expired, replayed (status)
    ├── JournalError              a batch journal that cannot be used for this batch
    ├── ConfigurationError        settings that cannot work: a handler that does not load, a missing key
    └── StorageError              an object storage transfer failed: no such object, cut short, corrupted

Misuse (bad arguments) raises ``ValueError`` / ``TypeError``, outside this tree, as in httpx: those are bugs
to fix, not conditions to handle. No message here ever contains the API key: messages are built from the
method, the path and the server's error text only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx

from runpod_queue._public import publish as _publish

if TYPE_CHECKING:
    from runpod_queue._models import Job

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "JobFailedError",
    "JournalError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunpodQueueError",
    "ServerError",
    "StorageError",
    "WaitTimeoutError",
    "WebhookVerificationError",
]


class RunpodQueueError(Exception):
    """Base of every error this package raises on purpose.

    Picklable (for multiprocessing, task queues): rebuilt from its message and attributes, not by calling
    ``__init__`` again with arguments it no longer has.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[RunpodQueueError], args: tuple[object, ...], state: dict[str, object]) -> object:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


_SECRET_HEADERS: Final = ("authorization", "proxy-authorization", "cookie", "x-api-key")


def _redacted(request: httpx.Request) -> httpx.Request:
    """The request an exception keeps, without credentials: an error may be logged, pickled or sent to an
    error tracker, and its request must not carry the API key there. The body stays behind too."""
    if not any(name in request.headers for name in _SECRET_HEADERS):
        return request
    headers = httpx.Headers(request.headers)
    for name in _SECRET_HEADERS:
        if name in headers:
            headers[name] = "[redacted]"
    return httpx.Request(request.method, request.url, headers=headers)


def _safe_response(response: httpx.Response | None) -> httpx.Response | None:
    if response is not None:
        try:
            kept = response.request
        except RuntimeError:  # a response built without one
            return response
        response.request = _redacted(kept)
    return response


def _describe(request: httpx.Request) -> str:
    # Method and path only: the query never carries secrets, but the host is noise in most messages.
    return f"{request.method} {request.url.path}"


class APIError(RunpodQueueError):
    """A request failed: an error answer, no answer, or an answer the contract does not allow. Every one
    carries the (redacted) ``request``; the subclasses say what went wrong and add what they know."""

    request: httpx.Request


class APIStatusError(APIError):
    """The server answered with a 4xx/5xx; ``message`` is its own error text when it sent one."""

    status_code: int
    request: httpx.Request
    response: httpx.Response | None
    message: str

    def __init__(
        self, message: str, *, request: httpx.Request, response: httpx.Response | None, status_code: int
    ) -> None:
        self.message = message
        self.request = _redacted(request)
        self.response = _safe_response(response)
        self.status_code = status_code
        super().__init__(f"{status_code} on {_describe(request)}: {message}")


class BadRequestError(APIStatusError):
    """400: the request was refused as malformed or not allowed in the job's current state."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong (set RUNPOD_API_KEY or pass api_key=)."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not use this endpoint."""


class NotFoundError(APIStatusError):
    """404: unknown endpoint or job — or a job past its retention window (30 min after run, 1 min after
    runsync) or its ttl, after which RunPod forgets it."""


class PayloadTooLargeError(APIStatusError):
    """413, or raised before sending when the encoded body is over RunPod's limit (``response`` is then
    None): move large inputs to object storage and pass ``s3_config`` / URLs instead."""

    size: int | None
    limit: int | None

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request,
        response: httpx.Response | None,
        status_code: int = 413,
        size: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, request=request, response=response, status_code=status_code)


class RateLimitError(APIStatusError):
    """429: over the endpoint's request rate or in-flight cap; ``retry_after`` is the server's hint (s)."""

    retry_after: float | None = None


class ServerError(APIStatusError):
    """5xx: a platform or worker error; idempotent calls are retried before this surfaces."""


class APIConnectionError(APIError):
    """No usable answer arrived. ``sent`` says whether the request may have reached the server: when it is
    True for ``run``/``runsync``, the job may exist even though no id came back."""

    request: httpx.Request
    sent: bool

    def __init__(self, message: str, *, request: httpx.Request, sent: bool) -> None:
        self.request = _redacted(request)
        self.sent = sent
        super().__init__(f"{_describe(request)}: {message}")


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read or write)."""


class APIResponseError(APIError):
    """The server answered 2xx with something the contract does not allow; ``reason`` says what."""

    request: httpx.Request
    response: httpx.Response
    reason: str

    def __init__(self, reason: str, *, request: httpx.Request, response: httpx.Response) -> None:
        self.reason = reason
        self.request = _redacted(request)
        _safe_response(response)
        self.response = response
        super().__init__(f"unexpected answer to {_describe(request)} ({response.status_code}): {reason}")


class JobFailedError(RunpodQueueError):
    """The job ended FAILED, TIMED_OUT or CANCELLED; ``job`` is the full snapshot, error included."""

    job: Job

    def __init__(self, job: Job) -> None:
        self.job = job
        detail = job.error_message
        text = f"job {job.id} ended {job.status_text}"
        super().__init__(f"{text}: {detail}" if detail else text)


class WaitTimeoutError(RunpodQueueError):
    """The caller's timeout ran out before the job reached a terminal state. The job keeps running on
    RunPod; ``job_id`` and ``job`` (the last snapshot seen, None if none arrived) let the caller resume."""

    job_id: str | None
    job: Job | None
    timeout: float

    def __init__(self, job_id: str | None, job: Job | None, timeout: float) -> None:
        self.job_id = job_id
        self.job = job
        self.timeout = timeout
        last = f", last seen {job.status_text}" if job is not None else ""
        super().__init__(f"job {job_id} not finished within {timeout:g} s{last}")


class WebhookVerificationError(RunpodQueueError):
    """A webhook delivery that must be refused; ``status`` is the HTTP answer to give (401 or 403)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class JournalError(RunpodQueueError):
    """The journal cannot be used for this batch: another endpoint's, another schema, not a journal, or in
    use by another running batch."""


class ConfigurationError(RunpodQueueError):
    """Settings that cannot work as given (a handler that does not load, a missing API key, ...)."""


class StorageError(RunpodQueueError):
    """An object storage transfer failed: the object does not exist, the transfer was cut short or arrived
    corrupted (its checksum did not match), or a presigned URL was refused. Messages never carry a
    credential or a URL's signature."""


_publish(globals())
