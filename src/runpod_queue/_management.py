"""`Management` / `AsyncManagement`: RunPod's REST v2 management routes a queue user needs.

`GET`/`PATCH /serverless/{id}` and `GET /serverless/{id}/workers` at `https://api.runpod.io/v2` (field
names from `api-reference-v2/openapi.json` in `runpod/docs`). Each sends through a `Client` /
`AsyncClient` of its own, so the key, the transport, the retries (429 and 5xx, a PATCH included: it sets
absolute values, so repeating it is harmless) and the error types are the queue client's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from runpod_queue._aio import AsyncClient
from runpod_queue._answers import connection_error, error_for_status
from runpod_queue._attempts import attempts
from runpod_queue._calls import Call, _id
from runpod_queue._client import Client
from runpod_queue._management_models import (
    EndpointInfo,
    WorkerInfo,
    Workers,
    WorkerSummary,
    parse_endpoint,
    parse_workers,
)
from runpod_queue._retry import Retries, RetryNotice, Safety
from runpod_queue._settings import default_headers
from runpod_queue._transport import Answer, _tls_context, httpx_failure
from runpod_queue._units import Duration, seconds
from runpod_queue.errors import APIResponseError

__all__ = [
    "AsyncManagement",
    "EndpointInfo",
    "LogLine",
    "Management",
    "WorkerInfo",
    "WorkerSummary",
    "Workers",
]

MANAGEMENT_BASE_URL = "https://api.runpod.io/v2"
_OP = "management"  # the rate limiter's key: not in RunPod's queue table, so 429s are retried instead


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a worker's log, as ``GET /serverless/{id}/workers/{workerId}/logs`` streams it.

    Args:
        ts: When the line was written (UTC).
        source: ``"container"`` (the worker's stdout, stderr and logging) or ``"system"`` (the host's
            lifecycle lines; on the emulator, its own: worker started, job started/ended, stopped).
        line: The text, without its newline.
        id: The server-sent event's id (``ts/sequence``), a resume point; ``None`` if the server sent none.
        job_id: The job running when the line was written, when the server says (the emulator does;
            RunPod's events carry no job id).
    """

    ts: datetime
    source: str
    line: str
    id: str | None
    job_id: str | None


def _count(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def _patch_body(
    workers_min: int | None,
    workers_max: int | None,
    idle_timeout: Duration | None,
    scaler: str | None,
    scaler_value: float | None,
    execution_timeout: Duration | None,
) -> bytes:
    """The PATCH body: only what is given (REST v2 changes only the fields present)."""
    body: dict[str, Any] = {}
    workers: dict[str, Any] = {}
    if _count("workers_min", workers_min) is not None:
        workers["min"] = workers_min
    if _count("workers_max", workers_max) is not None:
        workers["max"] = workers_max
    if workers_min is not None and workers_max is not None and workers_min > workers_max:
        raise ValueError(f"workers_min ({workers_min}) is above workers_max ({workers_max})")
    if idle_timeout is not None:
        workers["idleTimeout"] = round(seconds(idle_timeout, "idle_timeout", low=1, high=3600))
    if workers:
        body["workers"] = workers
    if scaler is not None or scaler_value is not None:
        if scaler not in ("queue_delay", "request_count") or scaler_value is None:
            raise ValueError(
                "give scaler ('queue_delay' or 'request_count') and scaler_value together, e.g. "
                "scaler='queue_delay', scaler_value=4"
            )
        if scaler == "queue_delay":
            body["scaling"] = {
                "type": "QUEUE_DELAY",
                "queueDelay": seconds(scaler_value, "scaler_value", low=0.5),
            }
        else:
            if not isinstance(scaler_value, int) or isinstance(scaler_value, bool) or scaler_value < 1:
                raise ValueError(f"scaler_value for request_count is an int >= 1, got {scaler_value!r}")
            body["scaling"] = {"type": "REQUEST_COUNT", "requestCount": scaler_value}
    if execution_timeout is not None:
        body["timeout"] = round(seconds(execution_timeout, "execution_timeout", low=5) * 1000)
    if not body:
        raise ValueError("update_endpoint needs at least one setting to change (workers_min=..., ...)")
    return json.dumps(body).encode()


def _calls_get(endpoint_id: str, workers: bool = False) -> Call:
    path = f"/serverless/{_id('endpoint_id', endpoint_id)}" + ("/workers" if workers else "")
    return Call(endpoint_id, _OP, "GET", path, Safety.IDEMPOTENT)


def _call_patch(endpoint_id: str, body: bytes) -> Call:
    path = f"/serverless/{_id('endpoint_id', endpoint_id)}"
    return Call(endpoint_id, _OP, "PATCH", path, Safety.IDEMPOTENT, content=body)


# Following off against a server that keeps the stream open (RunPod): the backfill is over once no line
# came for this long. The emulator marks the backfill's end, so against it nothing waits.
_QUIET_END_S = 2.0
_BACKFILL_END = "end of backfill"


class _SSE:
    """Server-sent events → ``LogLine``s, a line at a time (WHATWG's event stream rules, the subset
    this stream uses: ``id``, ``data``, comments)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._data: list[str] = []
        self._id: str | None = None
        self.backfilled = False

    def feed(self, raw: str) -> LogLine | None:
        line = raw.rstrip("\r")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            if line[1:].strip() == _BACKFILL_END:
                self.backfilled = True
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None

    def _dispatch(self) -> LogLine | None:
        if not self._data:
            return None
        text, self._data = "\n".join(self._data), []
        try:
            data = json.loads(text)
            ts = datetime.fromisoformat(str(data["ts"]).replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            job = data.get("jobId")
            return LogLine(
                ts=ts,
                source=str(data.get("source", "container")),
                line=str(data.get("line", "")),
                id=self._id,
                job_id=None if job is None else str(job),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise APIResponseError(
                f"the worker logs stream sent an event that is not {{ts, source, line}} JSON ({exc!r})",
                request=httpx.Request("GET", self._url),
                response=httpx.Response(200, request=httpx.Request("GET", self._url)),
            ) from None


def _since(since: datetime | str | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, str):
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"since must be an RFC 3339 time, e.g. 2026-06-01T12:05:04Z, got {since!r}"
            ) from None
        return since
    if not isinstance(since, datetime):
        raise TypeError(f"since must be a datetime or an RFC 3339 string, got {type(since).__name__}")
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware (e.g. datetime.now(UTC)); a naive time is ambiguous")
    return since.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _logs_request(
    base_url: str,
    endpoint_id: str,
    worker_id: str,
    since: datetime | str | None,
    tail: int | None,
    source: str | None,
) -> tuple[str, dict[str, str], Call]:
    path = f"/serverless/{_id('endpoint_id', endpoint_id)}/workers/{_id('worker_id', worker_id)}/logs"
    params: dict[str, str] = {}
    stamp = _since(since)
    if stamp is not None:
        params["since"] = stamp
    if tail is not None:
        if not isinstance(tail, int) or isinstance(tail, bool) or not 0 <= tail <= 5000:
            raise ValueError(f"tail must be an int from 0 to 5000, got {tail!r}")
        params["tail"] = str(tail)
    if source is not None:
        if source not in ("container", "system"):
            raise ValueError(f"source must be 'container' or 'system', got {source!r}")
        params["source"] = source
    return base_url.rstrip("/") + path, params, Call(endpoint_id, _OP, "GET", path, Safety.IDEMPOTENT)


def _logs_timeout(follow: bool) -> httpx.Timeout:
    # Following, a quiet worker is not an error: no read timeout; the caller stops when it wants.
    return httpx.Timeout(30.0, connect=10.0, read=None if follow else _QUIET_END_S)


def _refused(response: httpx.Response, body: bytes, url: str) -> Exception:
    answer = Answer(response.status_code, body, response.headers, response.reason_phrase, "GET", url)
    return error_for_status(answer)


def _base_url(base_url: str | None) -> str:
    return base_url or os.environ.get("RUNPOD_MANAGEMENT_BASE_URL") or MANAGEMENT_BASE_URL


class Management:
    """Sync client for RunPod's management API (REST v2): see and steer an endpoint's workers.

    ```python
    with Management() as mgmt:                       # $RUNPOD_API_KEY
        mgmt.update_endpoint("my-endpoint", workers_min=1)
        print(mgmt.workers("my-endpoint").summary)
    ```

    Args:
        api_key: RunPod API key; defaults to ``$RUNPOD_API_KEY``. A loopback ``base_url`` needs none.
        base_url: Where the API lives; defaults to ``$RUNPOD_MANAGEMENT_BASE_URL``, else
            ``https://api.runpod.io/v2``. The emulator's is ``emu.management_url``.
        timeout: Seconds (or a ``timedelta``) one request may take.
        retries: How often and how patiently to retry; ``None`` takes ``Retries()``.
        transport: An ``httpx.BaseTransport`` to send through instead of the network (tests).
        on_retry: Called with a ``RetryNotice`` before every retry's pause.

    Raises:
        ConfigurationError: No API key for a remote ``base_url``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: Duration = 30.0,
        retries: Retries | None = None,
        transport: httpx.BaseTransport | None = None,
        on_retry: Callable[[RetryNotice], object] | None = None,
    ) -> None:
        self._client = Client(
            api_key,
            base_url=_base_url(base_url),
            timeout=timeout,
            retries=retries,
            rate_limits=False,
            transport=transport,
            on_retry=on_retry,
        )
        self.base_url: str = self._client.base_url
        self._transport = transport

    def _send(self, call: Call) -> Answer:
        return self._client._run(attempts(call, self._client._rules))

    def endpoint(self, endpoint_id: str) -> EndpointInfo:
        """An endpoint's settings (``GET /serverless/{id}``).

        Args:
            endpoint_id: The endpoint's id.

        Returns:
            Its ``EndpointInfo``.

        Raises:
            APIStatusError: RunPod refused (404: no such endpoint; 401/403: the key may not read it).
            APIConnectionError: No answer arrived.
        """
        return parse_endpoint(self._send(_calls_get(endpoint_id)))

    def update_endpoint(
        self,
        endpoint_id: str,
        *,
        workers_min: int | None = None,
        workers_max: int | None = None,
        idle_timeout: Duration | None = None,
        scaler: Literal["queue_delay", "request_count"] | None = None,
        scaler_value: float | None = None,
        execution_timeout: Duration | None = None,
    ) -> EndpointInfo:
        """Change an endpoint's scaling settings (``PATCH /serverless/{id}``); only what is given changes.

        Args:
            endpoint_id: The endpoint's id.
            workers_min: Workers kept running (raising it starts workers, cold).
            workers_max: The most workers the scaler may run.
            idle_timeout: Seconds (1 to 3600) an idle worker lives.
            scaler: ``"queue_delay"`` or ``"request_count"``, with ``scaler_value``.
            scaler_value: Seconds of queue delay (>= 0.5), or requests per worker (an int >= 1).
            execution_timeout: The jobs' default execution timeout (>= 5 s; REST v2's ``timeout``).

        Returns:
            The endpoint's settings after the change.

        Raises:
            ValueError: Nothing to change, or a value out of range (nothing is sent).
            APIStatusError: RunPod refused (400 with the invalid fields in its message).
            APIConnectionError: No answer arrived.
        """
        body = _patch_body(workers_min, workers_max, idle_timeout, scaler, scaler_value, execution_timeout)
        return parse_endpoint(self._send(_call_patch(endpoint_id, body)))

    def workers(self, endpoint_id: str) -> Workers:
        """An endpoint's workers and a summary by state (``GET /serverless/{id}/workers``).

        Args:
            endpoint_id: The endpoint's id.

        Returns:
            ``Workers``: each ``WorkerInfo`` and the ``WorkerSummary``.

        Raises:
            APIStatusError: RunPod refused.
            APIConnectionError: No answer arrived.
        """
        return parse_workers(self._send(_calls_get(endpoint_id, workers=True)))

    def worker_logs(
        self,
        endpoint_id: str,
        worker_id: str,
        *,
        follow: bool = False,
        since: datetime | str | None = None,
        tail: int | None = None,
        source: Literal["container", "system"] | None = None,
    ) -> Iterator[LogLine]:
        """A worker's log lines (``GET /serverless/{id}/workers/{workerId}/logs``, server-sent events).

        ```python
        for line in mgmt.worker_logs("my-endpoint", "worker-id", tail=20):
            print(line.ts, line.line)
        ```

        The request is sent when iteration starts, so errors are raised there. Without ``follow`` it
        ends after the lines written so far (the emulator marks where they end; against RunPod, whose
        stream stays open, after 2 s without a line). With ``follow`` it goes on with each new line
        until the server ends the stream (the worker stopped) or the caller stops iterating (break, or
        ``close()`` on the iterator); it is not retried.

        Args:
            endpoint_id: The endpoint's id.
            worker_id: The worker's id (``workers(...)`` lists them; a job's ``worker_id`` names one).
            follow: Keep streaming new lines.
            since: Start at this time (a timezone-aware ``datetime`` or an RFC 3339 string) instead of
                the last ``tail`` lines.
            tail: How many earlier lines to send first (0 to 5000); ``None`` takes the server's default
                (100).
            source: Only ``"container"`` or only ``"system"`` lines; ``None`` sends both.

        Returns:
            An iterator of ``LogLine``.

        Raises:
            ValueError: A bad ``since``, ``tail`` or ``source`` (nothing is sent).
            NotFoundError: No such endpoint, or no such worker on it (the message says which).
            APIStatusError: RunPod refused otherwise (401/403: the key may not read logs).
            APIConnectionError: No answer arrived, or the stream broke off.
        """
        url, params, call = _logs_request(self.base_url, endpoint_id, worker_id, since, tail, source)
        return self._log_lines(url, params, call, follow)

    def _log_lines(self, url: str, params: dict[str, str], call: Call, follow: bool) -> Iterator[LogLine]:
        headers = {**default_headers(self._client._settings.api_key), "Accept": "text/event-stream"}
        parser = _SSE(url)
        with httpx.Client(
            transport=self._transport, verify=_tls_context(), timeout=_logs_timeout(follow)
        ) as http:
            try:
                with http.stream("GET", url, params=params, headers=headers) as response:
                    if response.status_code != 200:
                        raise _refused(response, response.read(), url)
                    for raw in response.iter_lines():
                        line = parser.feed(raw)
                        if line is not None:
                            yield line
                        if parser.backfilled and not follow:
                            return
            except httpx.ReadTimeout:
                if not follow:
                    return  # quiet for _QUIET_END_S: the backfill is over
                raise connection_error(httpx_failure(httpx.ReadTimeout("")), call, url) from None
            except httpx.RequestError as exc:
                raise connection_error(httpx_failure(exc), call, url) from exc
            last = parser.feed("")
            if last is not None:
                yield last

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        """Use it in a ``with`` block; it closes at the block's end."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connection pool."""
        self.close()


class AsyncManagement:
    """Asyncio client for RunPod's management API (REST v2); ``Management``'s twin.

    Args:
        api_key: RunPod API key; defaults to ``$RUNPOD_API_KEY``. A loopback ``base_url`` needs none.
        base_url: Where the API lives; defaults to ``$RUNPOD_MANAGEMENT_BASE_URL``, else
            ``https://api.runpod.io/v2``.
        timeout: Seconds (or a ``timedelta``) one request may take.
        retries: How often and how patiently to retry; ``None`` takes ``Retries()``.
        transport: An ``httpx.AsyncBaseTransport`` to send through instead of the network (tests).
        on_retry: Called with a ``RetryNotice`` before every retry's pause.

    Raises:
        ConfigurationError: No API key for a remote ``base_url``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: Duration = 30.0,
        retries: Retries | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_retry: Callable[[RetryNotice], object] | None = None,
    ) -> None:
        self._client = AsyncClient(
            api_key,
            base_url=_base_url(base_url),
            timeout=timeout,
            retries=retries,
            rate_limits=False,
            transport=transport,
            on_retry=on_retry,
        )
        self.base_url: str = self._client.base_url
        self._transport = transport

    async def _send(self, call: Call) -> Answer:
        return await self._client._run(attempts(call, self._client._rules))

    async def endpoint(self, endpoint_id: str) -> EndpointInfo:
        """An endpoint's settings (``GET /serverless/{id}``); see ``Management.endpoint``.

        Args:
            endpoint_id: The endpoint's id.

        Returns:
            Its ``EndpointInfo``.

        Raises:
            APIStatusError: RunPod refused.
            APIConnectionError: No answer arrived.
        """
        return parse_endpoint(await self._send(_calls_get(endpoint_id)))

    async def update_endpoint(
        self,
        endpoint_id: str,
        *,
        workers_min: int | None = None,
        workers_max: int | None = None,
        idle_timeout: Duration | None = None,
        scaler: Literal["queue_delay", "request_count"] | None = None,
        scaler_value: float | None = None,
        execution_timeout: Duration | None = None,
    ) -> EndpointInfo:
        """Change an endpoint's scaling settings; see ``Management.update_endpoint``.

        Args:
            endpoint_id: The endpoint's id.
            workers_min: Workers kept running.
            workers_max: The most workers the scaler may run.
            idle_timeout: Seconds (1 to 3600) an idle worker lives.
            scaler: ``"queue_delay"`` or ``"request_count"``, with ``scaler_value``.
            scaler_value: Seconds of queue delay (>= 0.5), or requests per worker (an int >= 1).
            execution_timeout: The jobs' default execution timeout (>= 5 s; REST v2's ``timeout``).

        Returns:
            The endpoint's settings after the change.

        Raises:
            ValueError: Nothing to change, or a value out of range (nothing is sent).
            APIStatusError: RunPod refused.
            APIConnectionError: No answer arrived.
        """
        body = _patch_body(workers_min, workers_max, idle_timeout, scaler, scaler_value, execution_timeout)
        return parse_endpoint(await self._send(_call_patch(endpoint_id, body)))

    async def workers(self, endpoint_id: str) -> Workers:
        """An endpoint's workers and a summary by state; see ``Management.workers``.

        Args:
            endpoint_id: The endpoint's id.

        Returns:
            ``Workers``: each ``WorkerInfo`` and the ``WorkerSummary``.

        Raises:
            APIStatusError: RunPod refused.
            APIConnectionError: No answer arrived.
        """
        return parse_workers(await self._send(_calls_get(endpoint_id, workers=True)))

    async def worker_logs(
        self,
        endpoint_id: str,
        worker_id: str,
        *,
        follow: bool = False,
        since: datetime | str | None = None,
        tail: int | None = None,
        source: Literal["container", "system"] | None = None,
    ) -> AsyncIterator[LogLine]:
        """A worker's log lines, as an async iterator; see ``Management.worker_logs``.

        Args:
            endpoint_id: The endpoint's id.
            worker_id: The worker's id.
            follow: Keep streaming new lines until the server ends the stream or the caller stops.
            since: Start at this time (a timezone-aware ``datetime`` or an RFC 3339 string).
            tail: How many earlier lines to send first (0 to 5000); ``None``: the server's default (100).
            source: Only ``"container"`` or only ``"system"`` lines; ``None`` sends both.

        Yields:
            Each ``LogLine``.

        Raises:
            ValueError: A bad ``since``, ``tail`` or ``source`` (nothing is sent).
            NotFoundError: No such endpoint, or no such worker on it.
            APIStatusError: RunPod refused otherwise.
            APIConnectionError: No answer arrived, or the stream broke off.
        """
        url, params, call = _logs_request(self.base_url, endpoint_id, worker_id, since, tail, source)
        headers = {**default_headers(self._client._settings.api_key), "Accept": "text/event-stream"}
        parser = _SSE(url)
        async with httpx.AsyncClient(
            transport=self._transport, verify=_tls_context(), timeout=_logs_timeout(follow)
        ) as http:
            try:
                async with http.stream("GET", url, params=params, headers=headers) as response:
                    if response.status_code != 200:
                        raise _refused(response, await response.aread(), url)
                    async for raw in response.aiter_lines():
                        line = parser.feed(raw)
                        if line is not None:
                            yield line
                        if parser.backfilled and not follow:
                            return
            except httpx.ReadTimeout:
                if not follow:
                    return
                raise connection_error(httpx_failure(httpx.ReadTimeout("")), call, url) from None
            except httpx.RequestError as exc:
                raise connection_error(httpx_failure(exc), call, url) from exc
            last = parser.feed("")
            if last is not None:
                yield last

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        """Use it in an ``async with`` block; it closes at the block's end."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connection pool."""
        await self.aclose()
