"""The asyncio client: the same operations as ``client.py`` with ``await`` / ``async for``.

By default it sends through aiohttp directly: httpx's own async pool gets slower with every request in
flight (perf-notes.md), and httpx over ``httpx_aiohttp.AiohttpTransport`` measured about twice raw
aiohttp's cost per call (see ``_AiohttpSender``). The shell mirrors the sync one line for line; every
decision lives in ``_wire``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import httpx

from runpod_queue import _wire
from runpod_queue._contract import RUNSYNC_DEFAULT_WAIT_MS
from runpod_queue._limits import AsyncLimiter, RateLimits
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._retry import Retries
from runpod_queue._units import Duration
from runpod_queue._wire import Call, Emit, Expired, Flow, Notify, Send, Sleep
from runpod_queue.errors import APIConnectionError, APIStatusError, RunpodQueueError

__all__ = ["AsyncClient", "AsyncEndpoint"]

T = TypeVar("T")
AsyncOnUpdate = Callable[[Job], Awaitable[object] | object]


class _AiohttpSender:
    """Requests straight through one aiohttp session, answers as httpx.Response for the shared ``_wire``.

    Measured on loopback (sequential status calls): raw aiohttp ~270 us per call, httpx.AsyncClient over
    httpx_aiohttp's transport ~510 us — httpx's request/auth/redirect machinery and the transport's
    header and stream adaptation cost as much as the HTTP exchange itself. This skips that layer; errors
    are raised as httpx transport errors chained to the aiohttp cause, so classification (was the request
    sent?) is the same as on every other path.
    """

    def __init__(self, headers: dict[str, str], max_connections: int) -> None:
        self._headers = headers
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=4.0,  # under common 5 s server idle timeouts, so a reused socket is alive
        )
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        budget: httpx.Timeout,
    ) -> httpx.Response:
        session = self._session or self._open()
        limits = aiohttp.ClientTimeout(
            sock_connect=budget.connect, sock_read=budget.read, connect=budget.pool
        )
        try:
            async with session.request(
                method, url, data=content, headers=headers, timeout=limits, allow_redirects=False
            ) as answer:
                body = await answer.read()
                status, raw_headers, reason = answer.status, answer.raw_headers, answer.reason
        except (aiohttp.ClientError, TimeoutError) as exc:
            request = httpx.Request(method, url)
            raise _httpx_error(exc)(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            status,
            headers=raw_headers,
            content=body,
            request=httpx.Request(method, url),
            extensions={"reason_phrase": (reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _httpx_error(exc: BaseException) -> type[httpx.TransportError]:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout
    return httpx.ReadError


class AsyncClient:
    """Asyncio client; use from one event loop, as ``async with AsyncClient() as client:``.

    Same arguments as ``Client``. Without ``transport`` requests go straight through aiohttp (see
    ``_AiohttpSender``); with one (an ``httpx.AsyncBaseTransport``: a mock, or
    ``httpx_aiohttp.AiohttpTransport``) through ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retries: Retries | None = None,
        rate_limits: RateLimits | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        key, self.base_url = _wire.resolve_settings(api_key, base_url)
        self._timeout = _wire.base_timeout(timeout)
        self._retries = retries if retries is not None else Retries()
        limits = _wire.limits_config(rate_limits)
        self._settings = _wire.ClientSettings(
            key, self.base_url, float(timeout), self._retries, limits, max_connections
        )
        self._owner = True
        self._limiter = AsyncLimiter(limits)
        self._long_poll: dict[str, bool] = {}
        self._rng = random.Random()
        headers = _wire.default_headers(key)
        self._http: httpx.AsyncClient | None = None
        self._direct: _AiohttpSender | None = None
        if transport is None:
            self._direct = _AiohttpSender(headers, max_connections)
        else:
            self._http = httpx.AsyncClient(headers=headers, timeout=self._timeout, transport=transport)

    def endpoint(self, endpoint_id: str) -> AsyncEndpoint:
        return AsyncEndpoint(self, endpoint_id)

    @classmethod
    def _from_settings(cls, settings: _wire.ClientSettings) -> AsyncClient:
        """An async client with a sync client's connection settings (the batch runner's async engine
        over a user's ``Client``)."""
        return cls(
            settings.api_key,
            base_url=settings.base_url,
            timeout=settings.timeout,
            retries=settings.retries,
            rate_limits=settings.rate_limits,
            max_connections=settings.max_connections,
        )

    def with_options(self, *, timeout: float | None = None, retries: Retries | None = None) -> AsyncClient:
        """See ``Client.with_options``: same pool, limiter and key; other per-request settings."""
        derived = copy.copy(self)
        derived._owner = False
        if timeout is not None:
            derived._timeout = _wire.base_timeout(timeout)
        if retries is not None:
            derived._retries = retries
        derived._settings = dataclasses.replace(
            self._settings,
            timeout=self._settings.timeout if timeout is None else float(timeout),
            retries=derived._retries,
        )
        return derived

    async def aclose(self) -> None:
        if not self._owner:
            return
        if self._direct is not None:
            await self._direct.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        budget: httpx.Timeout,
    ) -> httpx.Response:
        if self._direct is not None:
            return await self._direct.send(method, url, content, headers, budget)
        assert self._http is not None
        return await self._http.request(method, url, content=content, headers=headers, timeout=budget)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r})"

    async def _execute(self, endpoint_id: str, call: Call, deadline: float | None = None) -> httpx.Response:
        url = self.base_url + call.path
        if call.limit is not None and call.content is not None and len(call.content) > call.limit:
            too_large = _wire.payload_error(call, httpx.Request(call.method, url))
            assert too_large is not None
            raise too_large
        headers = _wire.JSON_HEADERS if call.content is not None else None
        limiter = self._limiter
        attempt = 0
        # The deadline may pass between a failed attempt and the next one: the caller then learns why
        # the earlier attempts failed (the WaitTimeoutError's cause), not just that time ran out.
        last_error: APIConnectionError | APIStatusError | None = None
        while True:
            attempt += 1
            try:
                timeout = _wire.attempt_timeout(self._timeout, call.hold, deadline)
                window = await limiter.acquire(endpoint_id, call.op, deadline)
            except (Expired, TimeoutError):
                raise Expired from last_error
            started = time.perf_counter()
            error: APIConnectionError | APIStatusError
            outcome: int | str = "interrupted"
            try:
                response = await self._send(call.method, url, call.content, headers, timeout)
            except httpx.TransportError as exc:
                error = _wire.transport_error(exc, call)
                outcome = type(exc).__name__
            else:
                outcome = response.status_code
                if response.is_success:
                    return response
                error = _wire.error_for_response(response)
            finally:
                limiter.release(window)
                if _wire.logger.isEnabledFor(logging.DEBUG):
                    _wire.log_attempt(call, outcome, attempt, time.perf_counter() - started)
            last_error = error
            delay = _wire.retry_delay(call, self._retries, attempt, error, self._rng, deadline)
            if delay > 0:
                await asyncio.sleep(delay)

    async def _step(self, endpoint_id: str, action: Send) -> tuple[Any, BaseException | None]:
        try:
            return action.parse(await self._execute(endpoint_id, action.call, action.deadline)), None
        except (RunpodQueueError, Expired) as exc:
            return None, exc

    async def _complete(self, endpoint_id: str, flow: Flow[T], on_update: AsyncOnUpdate | None = None) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = error = None
            if isinstance(action, Send):
                value, error = await self._step(endpoint_id, action)
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Notify):
                if on_update is not None:
                    outcome = on_update(action.job)
                    if inspect.isawaitable(outcome):
                        await outcome
            elif isinstance(action, Emit):  # pragma: no cover - only stream flows emit
                raise RuntimeError("unexpected stream chunk")

    async def _stream(self, endpoint_id: str, flow: Flow[None]) -> AsyncIterator[StreamChunk]:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration:
                return
            value = error = None
            if isinstance(action, Send):
                value, error = await self._step(endpoint_id, action)
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Emit):
                yield action.chunk


class AsyncEndpoint:
    """One endpoint through an AsyncClient; mirrors ``Endpoint`` with coroutines."""

    __slots__ = ("_client", "id")

    def __init__(self, client: AsyncClient, endpoint_id: str) -> None:
        if not isinstance(endpoint_id, str) or not endpoint_id:
            raise ValueError(f"endpoint_id must be a non-empty string, got {endpoint_id!r}")
        self._client = client
        self.id = endpoint_id

    def __repr__(self) -> str:
        return f"AsyncEndpoint({self.id!r})"

    @property
    def client(self) -> AsyncClient:
        """The client this endpoint sends through."""
        return self._client

    async def _job(self, call: Call) -> Job:
        return _wire.parse_job(await self._client._execute(self.id, call))

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
    ) -> Job:
        """See ``Endpoint.run``."""
        return await self._job(
            _wire.run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config)
        )

    async def run_sync(
        self,
        input: Any,
        *,
        timeout: Duration = RUNSYNC_DEFAULT_WAIT_MS / 1000,  # noqa: ASYNC109
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
        on_update: AsyncOnUpdate | None = None,
    ) -> Job:
        """See ``Endpoint.run_sync``; ``on_update`` may be a coroutine function."""
        flow = _wire.run_sync_flow(
            self.id,
            input,
            timeout=timeout,
            webhook=webhook,
            policy=policy,
            s3_config=s3_config,
            long_poll=self._client._long_poll,
        )
        return await self._client._complete(self.id, flow, on_update)

    async def status(self, job_id: str, *, keep_result_for: Duration | None = None) -> Job:
        """See ``Endpoint.status``."""
        return await self._job(_wire.status_call(self.id, job_id, keep_result_for=keep_result_for))

    # The timeout mirrors Endpoint.wait; as a deadline it also bounds retries and pauses.
    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        on_update: AsyncOnUpdate | None = None,
    ) -> Job:
        """See ``Endpoint.wait``; ``on_update`` may be a coroutine function."""
        flow = _wire.wait_flow(self.id, job_id, timeout, self._client._long_poll)
        return await self._client._complete(self.id, flow, on_update)

    def stream(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[StreamChunk]:
        """See ``Endpoint.stream``; use with ``async for``."""
        return self._client._stream(self.id, _wire.stream_flow(self.id, job_id, timeout))

    async def cancel(self, job_id: str) -> Job:
        """See ``Endpoint.cancel``."""
        return await self._client._complete(self.id, _wire.cancel_flow(self.id, job_id))

    async def retry(self, job_id: str) -> Job:
        """See ``Endpoint.retry``."""
        return await self._job(_wire.retry_call(self.id, job_id))

    async def purge_queue(self) -> int:
        """See ``Endpoint.purge_queue``."""
        return _wire.parse_purge(await self._client._execute(self.id, _wire.purge_call(self.id)))

    async def health(self) -> Health:
        """See ``Endpoint.health``."""
        return _wire.parse_health(await self._client._execute(self.id, _wire.health_call(self.id)))
