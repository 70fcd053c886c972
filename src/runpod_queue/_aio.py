"""The asyncio client: the same flows as ``_client.py``, driven with ``await`` / ``async for``.

Requests go through one transport seam (``_transport``): aiohttp by default (``_aiohttp``; httpx's own async
pool gets slower with every request in flight, httpcore 1.0.x), or any ``httpx.AsyncBaseTransport`` given as
``transport=``. Everything above the seam is the same code whichever runs, so tests over a mock transport
exercise the default path's logic too.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from runpod_queue._actions import Exchange, Expired, Finished, Flow, Notify, Sleep
from runpod_queue._aiohttp import AiohttpTransport
from runpod_queue._answers import parse_health, parse_job, parse_purge
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._batch_jobs import AsyncBatches
from runpod_queue._calls import health_call, purge_call, retry_call, run_call, status_call
from runpod_queue._diagnosis import Diagnosis, diagnose_flow
from runpod_queue._flows import cancel_flow, run_sync_flow, stream_flow, wait_flow
from runpod_queue._limits import AsyncLimiter, RateLimits
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._openai import async_openai_client, openai_base_url
from runpod_queue._public import publish as _publish
from runpod_queue._retry import Retries, RetryNotice, check_on_retry
from runpod_queue._settings import ClientSettings, client_settings, default_headers
from runpod_queue._storage import AsyncS3Store, S3Store, async_store, resolve_uploads_async
from runpod_queue._transport import Answer, AsyncTransport, HttpxAsyncTransport
from runpod_queue._units import Duration

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = ["AsyncClient", "AsyncEndpoint", "AsyncJobStream"]

T = TypeVar("T")
AsyncOnUpdate = Callable[[Job], Awaitable[object] | object]


class AsyncClient:
    """Asyncio client for RunPod queue endpoints; use it from one event loop, as ``async with``.

    The twin of ``Client``: the same arguments and the same decisions (retries, rate limits, waits), with
    coroutines. Requests go through aiohttp, which stays fast with many requests in flight.

    Args:
        api_key: RunPod API key; defaults to ``$RUNPOD_API_KEY``. A loopback ``base_url`` (the emulator)
            needs none.
        base_url: Where the queue API lives; defaults to ``$RUNPOD_ENDPOINT_BASE_URL``, else RunPod's own
            (``https://api.runpod.ai/v2``). ``http://127.0.0.1:8000/v2`` reaches ``rpq serve``.
        timeout: Seconds (or a ``timedelta``) one request may take; a long-poll's hold comes on top.
        retries: How often and how patiently to retry; ``None`` takes ``Retries()`` (5 attempts).
        rate_limits: The per-operation limits to keep to, RunPod's published table by default; ``False``
            turns limiting off.
        transport: Any ``httpx.AsyncBaseTransport`` (``httpx.MockTransport``, ...) to send through
            instead of aiohttp (tests).
        on_retry: Called with a ``RetryNotice`` before every retry's pause (retry metrics, a
            "retrying" line); a plain function, not ``async``, run on the event loop, so keep it quick.
            Clients made by ``with_options`` keep it.
        max_connections: Size of the connection pool.
        store: Object storage for ``Upload`` values in inputs (``S3Store`` or ``AsyncS3Store``): each is
            uploaded and replaced by its presigned URL before the request is sent.

    Raises:
        ConfigurationError: No API key for a remote ``base_url``.
        ValueError: An argument out of range (a non-positive timeout, a URL that is not http(s)).

    Attributes:
        base_url: The base URL requests go to.
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
        on_retry: Callable[[RetryNotice], object] | None = None,
        store: S3Store | AsyncS3Store | None = None,
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
        self.base_url: str = settings.base_url
        self._rules = AttemptRules.of(settings, on_retry=check_on_retry(on_retry))
        self._limiter = AsyncLimiter(settings.rate_limits)
        self._long_poll: dict[str, bool] = {}
        self._store = async_store(store)
        headers = default_headers(settings.api_key)
        self._transport: AsyncTransport = (
            AiohttpTransport(headers, settings.max_connections)
            if transport is None
            else HttpxAsyncTransport(transport, headers)
        )
        self._owner = True

    def endpoint(self, endpoint_id: str) -> AsyncEndpoint:
        """A handle for one endpoint; cheap, make one whenever convenient.

        Args:
            endpoint_id: The endpoint's id, as in its URL (``https://api.runpod.ai/v2/<id>/run``).

        Returns:
            An ``AsyncEndpoint`` that sends through this client.

        Raises:
            ValueError: ``endpoint_id`` is empty or not a string.
        """
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
        """A client with other per-request settings that shares this one's pool, limiter and key.

        As openai-python's ``with_options``: for one slow call or one call without retries, with no new
        connections. Closing the derived client leaves the pool to this one.

        Args:
            timeout: Seconds one request may take; ``None`` keeps this client's.
            retries: Retry settings; ``None`` keeps this client's.

        Returns:
            The derived client.
        """
        derived = copy.copy(self)
        derived._owner = False
        derived._settings = self._settings.with_options(timeout=timeout, retries=retries)
        derived._rules = AttemptRules.of(derived._settings, self._rules.rng, self._rules.on_retry)
        return derived

    async def aclose(self) -> None:
        """Close the connection pool (``async with AsyncClient() as client:`` does it on exit).

        A client made by ``with_options`` leaves the pool open: it belongs to the client it came from.
        """
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
        if not self._limiter.enabled:
            return await self._transport.send(
                call.method, action.url, call.content, call.headers, action.budget
            )
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
    """The chunks of one job, each once, in order, from ``AsyncEndpoint.stream``; use ``async for``.

    Iteration ends when the job reaches any terminal state; ``job`` is then that terminal ``Job``, so how
    it ended (COMPLETED, FAILED, CANCELLED, TIMED_OUT) needs no second call. When a FAILED job's last
    ``/stream`` answer carries no error, one ``/status`` call fetches it.

    Raises:
        WaitTimeoutError: The stream's ``timeout`` ran out before the job ended.
        APIStatusError: RunPod refused a request (after retries).
        APIConnectionError: No answer arrived (after retries).

    Attributes:
        job_id: The job being streamed.
        job: The terminal ``Job`` once iteration has ended; ``None`` before, and after an error (the error
            says what happened).
    """

    __slots__ = ("_client", "_done", "_flow", "job", "job_id")

    def __init__(self, client: AsyncClient, job_id: str, flow: Flow[Job]) -> None:
        self._client = client
        self._flow = flow
        self._done = False
        self.job_id: str = job_id
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
        """Stop early: no further request is sent, and iteration ends."""
        self._done = True
        self._flow.close()

    def __repr__(self) -> str:
        ended = f", ended {self.job.status_text}" if self.job is not None else ""
        return f"AsyncJobStream({self.job_id!r}{ended})"


class AsyncEndpoint:
    """One endpoint through an ``AsyncClient``: every queue operation as a coroutine, each self-contained.

    Made by ``AsyncClient.endpoint(id)``. Every method retries what is safe to retry (see ``Retries``) and
    keeps to the client's rate limits; none keeps state between calls.

    Attributes:
        id: The endpoint's id.
    """

    __slots__ = ("_client", "id")

    def __init__(self, client: AsyncClient, endpoint_id: str) -> None:
        if not isinstance(endpoint_id, str) or not endpoint_id:
            raise ValueError(f"endpoint_id must be a non-empty string, got {endpoint_id!r}")
        self._client = client
        self.id: str = endpoint_id

    def __repr__(self) -> str:
        return f"AsyncEndpoint({self.id!r})"

    @property
    def client(self) -> AsyncClient:
        """The client this endpoint sends through."""
        return self._client

    @property
    def batches(self) -> AsyncBatches:
        """RunPod's Batch Jobs (beta) on this endpoint: create, add, finalize, wait, results."""
        return AsyncBatches(self._client, self.id)

    @property
    def openai_base_url(self) -> str:
        """The base URL of this endpoint's OpenAI-compatible routes, for ``openai.OpenAI(base_url=...)``."""
        return openai_base_url(self._client.base_url, self.id)

    def openai(self, **options: Any) -> openai_sdk.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this endpoint's OpenAI-compatible routes (worker-vllm).

        It carries this client's key and base URL, so ``await client.chat.completions.create(...)``
        reaches the endpoint's ``/openai/v1`` routes.

        Args:
            **options: Passed to ``openai.AsyncOpenAI`` (``max_retries``, ``timeout``, ...).

        Returns:
            A configured ``openai.AsyncOpenAI``.

        Raises:
            ConfigurationError: The ``openai`` package is missing (``pip install 'runpod-queue[openai]'``).
        """
        return async_openai_client(self._client._settings.api_key, self._client.base_url, self.id, options)

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
        store: S3Store | AsyncS3Store | None = None,
    ) -> Job:
        """Queue a job and return at once with its id (status IN_QUEUE).

        Never sent twice: after a failure that RunPod may have acted on (a dropped connection), the error
        is raised instead of a retry that could create a second job.

        Args:
            input: The job's input, any JSON value; RunPod hands it to the handler as ``job["input"]``.
            webhook: A URL RunPod POSTs the finished job to (see ``runpod_queue.webhooks``).
            policy: Execution timeout, time to live and priority for this job.
            s3_config: Object storage credentials handed to the worker with the job.
            store: Object storage for this call's ``Upload`` values; default the client's.

        Returns:
            The new job's first snapshot; ``wait(job.id)`` or ``status(job.id)`` follow it.

        Raises:
            APIConnectionError: No answer arrived; ``sent=True`` means the job may exist.
            APIStatusError: RunPod refused the request (``PayloadTooLargeError`` for a body over its limit,
                checked after ``Upload`` values became URLs).
            ConfigurationError: The input holds an ``Upload`` and there is no store.
        """
        input = await resolve_uploads_async(input, async_store(store) or self._client._store)
        call = run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config)
        return parse_job(await self._client._run(attempts(call, self._client._rules)))

    async def run_sync(
        self,
        input: Any,
        *,
        timeout: Duration = 90.0,  # noqa: ASYNC109 - RUNSYNC_DEFAULT_WAIT_MS, as a value
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
        store: S3Store | AsyncS3Store | None = None,
        on_update: AsyncOnUpdate | None = None,
    ) -> Job:
        """Run a job and wait for its terminal snapshot, in one call.

        Polls past RunPod's ``/runsync`` window when the job needs longer. A FAILED job is returned, not
        raised: call ``raise_for_status()`` on it.

        Args:
            input: The job's input, any JSON value; RunPod hands it to the handler as ``job["input"]``.
            webhook: A URL RunPod POSTs the finished job to (see ``runpod_queue.webhooks``).
            policy: Execution timeout, time to live and priority for this job.
            s3_config: Object storage credentials handed to the worker with the job.
            store: Object storage for this call's ``Upload`` values; default the client's.
            timeout: Seconds (or a ``timedelta``, at least 1) to wait for the job to end.
            on_update: Called with every new snapshot while waiting (progress display); may be a
                coroutine function, then awaited.

        Returns:
            The terminal ``Job``: COMPLETED, FAILED, CANCELLED or TIMED_OUT.

        Raises:
            WaitTimeoutError: ``timeout`` ran out; the job keeps running and the error carries it.
            APIConnectionError: No answer arrived; ``sent=True`` means the job may exist.
            APIStatusError: RunPod refused a request.
            ConfigurationError: The input holds an ``Upload`` and there is no store.
        """
        client = self._client
        input = await resolve_uploads_async(input, async_store(store) or client._store)
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
        """The job's current snapshot.

        Args:
            job_id: The job's id.
            keep_result_for: Seconds from now that RunPod keeps a finished job's result (RunPod's
                ``/status?ttl=``), to free it sooner; ``None`` leaves RunPod's retention.

        Returns:
            The job as RunPod reports it now.

        Raises:
            NotFoundError: Unknown job, or one past its retention window.
            APIStatusError: RunPod refused the request.
            APIConnectionError: No answer arrived.
        """
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
        """Block until the job is terminal and return it, long-polling where RunPod allows.

        Args:
            job_id: The job's id.
            timeout: Seconds (wall clock) to wait; ``None`` waits as long as the job runs.
            on_update: Called with every new snapshot while waiting; may be a coroutine function, then
                awaited.

        Returns:
            The terminal ``Job``; a FAILED one is returned, not raised.

        Raises:
            WaitTimeoutError: ``timeout`` ran out; the error carries the last snapshot.
            NotFoundError: Unknown job, or one past its retention window.
            APIStatusError: RunPod refused a request.
            APIConnectionError: No answer arrived.
        """
        client = self._client
        flow = wait_flow(client._rules, self.id, job_id, timeout, client._long_poll)
        return await client._run(flow, on_update)

    def stream(self, job_id: str, *, timeout: Duration | None = None) -> AsyncJobStream:
        """The job's streamed outputs (a generator handler's yields), each once, in order.

        Nothing is sent until iteration starts. When it ends, the stream's ``job`` is the terminal Job.

        Args:
            job_id: The job's id.
            timeout: Seconds the whole stream may take; ``None`` for no bound.

        Returns:
            A ``AsyncJobStream`` to iterate with ``for``.
        """
        flow = stream_flow(self._client._rules, self.id, job_id, timeout)
        return AsyncJobStream(self._client, job_id, flow)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; idempotent.

        Args:
            job_id: The job's id.

        Returns:
            The job after the cancel (an already cancelled or finished job as it is).

        Raises:
            NotFoundError: Unknown job, or one past its retention window.
            APIStatusError: RunPod refused the request.
            APIConnectionError: No answer arrived.
        """
        return await self._client._run(cancel_flow(self._client._rules, self.id, job_id))

    async def retry(self, job_id: str) -> Job:
        """Requeue a FAILED or TIMED_OUT job under the same id, with its original input.

        Args:
            job_id: The job's id.

        Returns:
            The job, queued again.

        Raises:
            BadRequestError: The job is not FAILED or TIMED_OUT.
            NotFoundError: Unknown job, or one past its retention window.
            APIConnectionError: No answer arrived; ``sent=True`` means the retry may have happened.
        """
        call = retry_call(self.id, job_id)
        return parse_job(await self._client._run(attempts(call, self._client._rules)))

    async def purge_queue(self) -> int:
        """Remove every IN_QUEUE job; running ones continue.

        Returns:
            How many jobs were removed.

        Raises:
            APIStatusError: RunPod refused the request (``RateLimitError``: 2 purges per 10 s).
            APIConnectionError: No answer arrived.
        """
        return parse_purge(await self._client._run(attempts(purge_call(self.id), self._client._rules)))

    async def health(self) -> Health:
        """The endpoint's job and worker counts.

        Returns:
            A ``Health`` snapshot (``health.jobs.in_queue``, ``health.workers.idle``, ...).

        Raises:
            APIStatusError: RunPod refused the request.
            APIConnectionError: No answer arrived.
        """
        return parse_health(await self._client._run(attempts(health_call(self.id), self._client._rules)))

    async def diagnose(self, job_id: str, *, management_url: str | None = None) -> Diagnosis:
        """Why the job waits; see ``Endpoint.diagnose``.

        Reads the job (``/status``), the queue (``/health``) and, through RunPod's management API (REST
        v2, same key and transport), the endpoint's settings and workers; picks the first reason that
        explains the wait (the order is ``WaitReason``'s). When the key may not read the management API
        (401/403), the answer comes from ``/status`` and ``/health`` alone and ``unseen`` says so.

        ```python
        why = await client.endpoint("abc123").diagnose(job.id)
        print(why.reason, why.message)      # cold_start  Job … waits for a cold start: 1 worker …
        ```

        Args:
            job_id: The job's id.
            management_url: The management API's base URL; default ``$RUNPOD_MANAGEMENT_BASE_URL``, the
                emulator's own when this client talks to one on loopback, else ``https://api.runpod.io/v2``.

        Returns:
            A ``Diagnosis``: ``reason``, ``message``, ``hint`` and the facts used.

        Raises:
            NotFoundError: Unknown job, or one past its retention window.
            APIStatusError: ``/status`` or ``/health`` refused.
            APIConnectionError: No answer arrived from ``/status`` or ``/health``.
        """
        return await self._client._run(diagnose_flow(self._client._rules, self.id, job_id, management_url))


# AsyncClient & co. are exported by the root lazily: a direct import of this module (the CLI's) names them
# runpod_queue.AsyncClient too.
_publish(globals())
