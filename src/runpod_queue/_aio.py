"""The asyncio client: the same flows as ``_client.py``, driven with ``await`` / ``async for``.

Requests go through one transport seam (``_transport``): aiohttp by default (``_aiohttp``; httpx's own async
pool gets slower with every request in flight, httpcore 1.0.x), or any ``httpx.AsyncBaseTransport`` given as
``transport=``. Everything above the seam is the same code whichever runs, so tests over a mock transport
exercise the default path's logic too.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from runpod_queue._actions import Exchange, Expired, Finished, Flow, Notify, Sleep
from runpod_queue._aiohttp import AiohttpTransport
from runpod_queue._answers import parse_health, parse_job, parse_purge
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._calls import health_call, purge_call, retry_call, run_call, status_call
from runpod_queue._contract import RUNSYNC_DEFAULT_WAIT_MS
from runpod_queue._flows import cancel_flow, run_sync_flow, stream_flow, wait_flow
from runpod_queue._limits import AsyncLimiter, RateLimits
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._openai import async_openai_client, openai_base_url
from runpod_queue._retry import OnRetry, Retries
from runpod_queue._settings import ClientSettings, client_settings, default_headers
from runpod_queue._transport import Answer, AsyncTransport, HttpxAsyncTransport
from runpod_queue._units import Duration

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = ["AsyncClient", "AsyncEndpoint", "AsyncJobStream"]

T = TypeVar("T")
AsyncOnUpdate = Callable[[Job], Awaitable[object] | object]


class AsyncClient:
    """Asyncio client; use from one event loop, as ``async with AsyncClient() as client:``.

    Same arguments as ``Client``. Without ``transport`` requests go through aiohttp; with one (any
    ``httpx.AsyncBaseTransport``: ``httpx.MockTransport``, ``httpx.AsyncHTTPTransport``, ...) through it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: Duration = 30.0,
        retries: Retries | None = None,
        rate_limits: RateLimits | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self._settings = settings = client_settings(
            api_key,
            base_url,
            timeout,
            retries,
            rate_limits,
            max_connections,
            own_transport=transport is not None,
        )
        self.base_url = settings.base_url
        self._rules = AttemptRules.of(settings)
        self._limiter = AsyncLimiter(settings.rate_limits)
        self._long_poll: dict[str, bool] = {}
        headers = default_headers(settings.api_key)
        self._transport: AsyncTransport = (
            AiohttpTransport(headers, settings.max_connections)
            if transport is None
            else HttpxAsyncTransport(transport, headers)
        )
        self._owner = True

    def endpoint(self, endpoint_id: str) -> AsyncEndpoint:
        return AsyncEndpoint(self, endpoint_id)

    @property
    def timeout(self) -> float:
        """Seconds each request may take (the constructor's or ``with_options``'s ``timeout``)."""
        return self._settings.timeout

    @property
    def retries(self) -> Retries:
        """How failed requests are retried (the constructor's or ``with_options``'s ``retries``)."""
        return self._settings.retries

    @classmethod
    def _from_settings(cls, settings: ClientSettings) -> AsyncClient:
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

    def with_options(self, *, timeout: Duration | None = None, retries: Retries | None = None) -> AsyncClient:
        """See ``Client.with_options``: same pool, limiter and key; other per-request settings."""
        derived = copy.copy(self)
        derived._owner = False
        derived._settings = self._settings.with_options(timeout=timeout, retries=retries)
        derived._rules = AttemptRules.of(derived._settings, self._rules.rng, self._rules.on_retry)
        return derived

    def _observe_retries(self, on_retry: OnRetry | None) -> None:
        """Call ``on_retry`` before each retry's pause (and on clients made by ``with_options`` after
        this). Private: it is how `rpq` shows a "retrying" line; the public surface is the README's."""
        self._rules = dataclasses.replace(self._rules, on_retry=on_retry)

    async def aclose(self) -> None:
        if self._owner:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r})"

    # The driver: the only code here that does I/O. It mirrors Client's line for line.
    async def _exchange(self, action: Exchange) -> Answer:
        call = action.call
        try:
            window = await self._limiter.acquire(call.endpoint_id, call.op, action.deadline)
        except TimeoutError:
            raise Expired from None
        try:
            return await self._transport.send(
                call.method, action.url, call.content, call.headers, action.budget
            )
        finally:
            self._limiter.release(window)

    async def _advance(
        self, flow: Flow[T], on_update: AsyncOnUpdate | None = None
    ) -> StreamChunk | Finished[T]:
        """Run the flow's actions until it emits a chunk (returned) or ends (``Finished``)."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return Finished(stop.value)
            value = error = None
            if isinstance(action, Exchange):
                try:
                    value = await self._exchange(action)
                except BaseException as exc:  # the flow decides; what it does not handle comes back out
                    error = exc
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Notify):
                if on_update is not None:
                    outcome = on_update(action.job)
                    if inspect.isawaitable(outcome):
                        await outcome
            else:
                return action.chunk

    async def _run(self, flow: Flow[T], on_update: AsyncOnUpdate | None = None) -> T:
        step = await self._advance(flow, on_update)
        if not isinstance(step, Finished):  # pragma: no cover - only stream flows emit
            raise RuntimeError("a flow that is not a stream emitted a chunk")
        return step.value


class AsyncJobStream(AsyncIterator[StreamChunk]):
    """``JobStream`` for ``async for``: the chunks of one job, each once, in order; ``job`` is the
    terminal ``Job`` once iteration has ended (None before, or after an error)."""

    __slots__ = ("_client", "_done", "_flow", "job", "job_id")

    def __init__(self, client: AsyncClient, job_id: str, flow: Flow[Job]) -> None:
        self._client = client
        self._flow = flow
        self._done = False
        self.job_id = job_id
        self.job: Job | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._done:
            raise StopAsyncIteration
        try:
            step = await self._client._advance(self._flow)
        except BaseException:
            self._done = True
            raise
        if isinstance(step, Finished):
            self._done = True
            self.job = step.value
            raise StopAsyncIteration
        return step

    async def aclose(self) -> None:
        """Stop early: no further request is sent."""
        self._done = True
        self._flow.close()

    def __repr__(self) -> str:
        ended = f", ended {self.job.status_text}" if self.job is not None else ""
        return f"AsyncJobStream({self.job_id!r}{ended})"


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

    @property
    def openai_base_url(self) -> str:
        """The base URL of this endpoint's OpenAI-compatible routes, for ``openai.OpenAI(base_url=...)``."""
        return openai_base_url(self._client.base_url, self.id)

    def openai(self, **options: Any) -> openai_sdk.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this endpoint's OpenAI-compatible routes (worker-vllm), with this
        client's key and base URL; ``options`` go to its constructor (``max_retries``, ``timeout``...).
        Needs the ``openai`` extra (``pip install 'runpod-queue[openai]'``), else ConfigurationError."""
        return async_openai_client(self._client._settings.api_key, self._client.base_url, self.id, options)

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
    ) -> Job:
        """See ``Endpoint.run``."""
        call = run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config)
        return parse_job(await self._client._run(attempts(call, self._client._rules)))

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
        client = self._client
        flow = run_sync_flow(
            client._rules,
            self.id,
            input,
            timeout=timeout,
            webhook=webhook,
            policy=policy,
            s3_config=s3_config,
            long_poll=client._long_poll,
        )
        return await client._run(flow, on_update)

    async def status(self, job_id: str, *, keep_result_for: Duration | None = None) -> Job:
        """See ``Endpoint.status``."""
        call = status_call(self.id, job_id, keep_result_for=keep_result_for)
        return parse_job(await self._client._run(attempts(call, self._client._rules)))

    # The timeout mirrors Endpoint.wait; as a deadline it also bounds retries and pauses.
    async def wait(
        self,
        job_id: str,
        *,
        timeout: Duration | None = None,  # noqa: ASYNC109
        on_update: AsyncOnUpdate | None = None,
    ) -> Job:
        """See ``Endpoint.wait``; ``on_update`` may be a coroutine function."""
        client = self._client
        flow = wait_flow(client._rules, self.id, job_id, timeout, client._long_poll)
        return await client._run(flow, on_update)

    def stream(self, job_id: str, *, timeout: Duration | None = None) -> AsyncJobStream:
        """See ``Endpoint.stream``; use with ``async for``, then read ``.job``."""
        flow = stream_flow(self._client._rules, self.id, job_id, timeout)
        return AsyncJobStream(self._client, job_id, flow)

    async def cancel(self, job_id: str) -> Job:
        """See ``Endpoint.cancel``."""
        return await self._client._run(cancel_flow(self._client._rules, self.id, job_id))

    async def retry(self, job_id: str) -> Job:
        """See ``Endpoint.retry``."""
        call = retry_call(self.id, job_id)
        return parse_job(await self._client._run(attempts(call, self._client._rules)))

    async def purge_queue(self) -> int:
        """See ``Endpoint.purge_queue``."""
        return parse_purge(await self._client._run(attempts(purge_call(self.id), self._client._rules)))

    async def health(self) -> Health:
        """See ``Endpoint.health``."""
        return parse_health(await self._client._run(attempts(health_call(self.id), self._client._rules)))
