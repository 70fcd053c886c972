"""The synchronous client: a driver that runs the shared flows with blocking I/O, and nothing else.

``Client`` owns the transport (connection pool), the retry settings and the rate limiter shared by every
thread; ``Endpoint`` is a cheap handle for one endpoint id. Every decision — what to send, what an answer
means, when to retry or give up — is made in the flows (``_attempts``, ``_flows``), which ``AsyncClient``
runs the same way with ``await``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from runpod_queue._actions import Exchange, Expired, Finished, Flow, Notify, Sleep
from runpod_queue._answers import parse_health, parse_job, parse_purge
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._batch_jobs import Batches
from runpod_queue._calls import health_call, purge_call, retry_call, run_call, status_call
from runpod_queue._diagnosis import Diagnosis, diagnose_flow
from runpod_queue._flows import cancel_flow, run_sync_flow, stream_flow, wait_flow
from runpod_queue._limits import RateLimits, SyncLimiter
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._openai import openai_base_url, openai_client
from runpod_queue._retry import Retries, RetryNotice, check_on_retry
from runpod_queue._settings import client_settings, default_headers
from runpod_queue._storage import AsyncS3Store, S3Store, resolve_uploads, sync_store
from runpod_queue._transport import Answer, HttpxTransport, SyncTransport
from runpod_queue._units import Duration

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = ["Client", "Endpoint", "JobStream"]

T = TypeVar("T")
OnUpdate = Callable[[Job], object]


class Client:
    """Sync client for RunPod queue endpoints: thread-safe, reuses connections, closes with ``with``.

    One client serves every endpoint and thread of a program: it owns the connection pool, the retry
    settings and the rate limiter that keeps all of them under RunPod's per-endpoint limits.

    Args:
        api_key: RunPod API key; defaults to ``$RUNPOD_API_KEY``. A loopback ``base_url`` (the emulator)
            needs none.
        base_url: Where the queue API lives; defaults to ``$RUNPOD_ENDPOINT_BASE_URL``, else RunPod's own
            (``https://api.runpod.ai/v2``). ``http://127.0.0.1:8000/v2`` reaches ``rpq serve``.
        timeout: Seconds (or a ``timedelta``) one request may take; a long-poll's hold comes on top.
        retries: How often and how patiently to retry; ``None`` takes ``Retries()`` (5 attempts).
        rate_limits: The per-operation limits to keep to, RunPod's published table by default; ``False``
            turns limiting off.
        transport: An ``httpx.BaseTransport`` to send through instead of the network (tests).
        on_retry: Called with a ``RetryNotice`` before every retry's pause (retry metrics, a
            "retrying" line); it runs in the calling thread, so keep it quick. Clients made by
            ``with_options`` keep it.
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
        transport: httpx.BaseTransport | None = None,
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
        self._limiter = SyncLimiter(settings.rate_limits)
        self._long_poll: dict[str, bool] = {}
        self._store = sync_store(store)
        self._transport: SyncTransport = HttpxTransport(
            default_headers(settings.api_key), transport, settings.max_connections
        )
        self._owner = True

    def endpoint(self, endpoint_id: str) -> Endpoint:
        """A handle for one endpoint; cheap, make one whenever convenient.

        Args:
            endpoint_id: The endpoint's id, as in its URL (``https://api.runpod.ai/v2/<id>/run``).

        Returns:
            An ``Endpoint`` that sends through this client.

        Raises:
            ValueError: ``endpoint_id`` is empty or not a string.
        """
        return Endpoint(self, endpoint_id)

    @property
    def timeout(self) -> float:
        """Seconds each request may take (the constructor's or ``with_options``'s ``timeout``)."""
        return self._settings.timeout

    @property
    def retries(self) -> Retries:
        """How failed requests are retried (the constructor's or ``with_options``'s ``retries``)."""
        return self._settings.retries

    def with_options(self, *, timeout: Duration | None = None, retries: Retries | None = None) -> Client:
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

    def close(self) -> None:
        """Close the connection pool (``with Client() as client:`` does it on exit).

        A client made by ``with_options`` leaves the pool open: it belongs to the client it came from.
        """
        if self._owner:
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    # The driver: the only code here that does I/O.
    def _exchange(self, action: Exchange) -> Answer:
        call = action.call
        if not self._limiter.enabled:
            return self._transport.send(call.method, action.url, call.content, call.headers, action.budget)
        try:
            window = self._limiter.acquire(call.endpoint_id, call.op, action.deadline)
        except TimeoutError:
            raise Expired from None
        try:
            return self._transport.send(call.method, action.url, call.content, call.headers, action.budget)
        finally:
            self._limiter.release(window)

    def _advance(self, flow: Flow[T], on_update: OnUpdate | None = None) -> StreamChunk | Finished[T]:
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
                    value = self._exchange(action)
                except BaseException as exc:  # the flow decides; what it does not handle comes back out
                    error = exc
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            elif isinstance(action, Notify):
                if on_update is not None:
                    on_update(action.job)
            else:
                return action.chunk

    def _run(self, flow: Flow[T], on_update: OnUpdate | None = None) -> T:
        step = self._advance(flow, on_update)
        if not isinstance(step, Finished):  # pragma: no cover - only stream flows emit
            raise RuntimeError("a flow that is not a stream emitted a chunk")
        return step.value


class JobStream(Iterator[StreamChunk]):
    """The chunks of one job, each once, in order, from ``Endpoint.stream``.

    Iteration ends when the job reaches any terminal state; ``job`` is then that terminal ``Job``, so how
    it ended (COMPLETED, FAILED, CANCELLED, TIMED_OUT) needs no second call. The terminal Job is the last
    ``/stream`` answer's view of the job: status, and output/error when the answer has them; when a
    FAILED job's answer carries no error, one ``/status`` call fetches it.

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

    def __init__(self, client: Client, job_id: str, flow: Flow[Job]) -> None:
        self._client = client
        self._flow = flow
        self._done = False
        self.job_id: str = job_id
        self.job: Job | None = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StreamChunk:
        if self._done:
            raise StopIteration
        try:
            step = self._client._advance(self._flow)
        except BaseException:
            self._done = True
            raise
        if isinstance(step, Finished):
            self._done = True
            self.job = step.value
            raise StopIteration
        return step

    def close(self) -> None:
        """Stop early: no further request is sent, and iteration ends."""
        self._done = True
        self._flow.close()

    def __repr__(self) -> str:
        ended = f", ended {self.job.status_text}" if self.job is not None else ""
        return f"JobStream({self.job_id!r}{ended})"


class Endpoint:
    """One endpoint through a ``Client``: every queue operation, each call self-contained.

    Made by ``Client.endpoint(id)``. Every method retries what is safe to retry (see ``Retries``) and
    keeps to the client's rate limits; none keeps state between calls.

    Attributes:
        id: The endpoint's id.
    """

    __slots__ = ("_client", "id")

    def __init__(self, client: Client, endpoint_id: str) -> None:
        if not isinstance(endpoint_id, str) or not endpoint_id:
            raise ValueError(f"endpoint_id must be a non-empty string, got {endpoint_id!r}")
        self._client = client
        self.id: str = endpoint_id

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r})"

    @property
    def client(self) -> Client:
        """The client this endpoint sends through."""
        return self._client

    @property
    def batches(self) -> Batches:
        """RunPod's Batch Jobs (beta) on this endpoint: create, add, finalize, wait, results."""
        return Batches(self._client, self.id)

    @property
    def openai_base_url(self) -> str:
        """The base URL of this endpoint's OpenAI-compatible routes, for ``openai.OpenAI(base_url=...)``."""
        return openai_base_url(self._client.base_url, self.id)

    def openai(self, **options: Any) -> openai_sdk.OpenAI:
        """An ``openai.OpenAI`` for this endpoint's OpenAI-compatible routes (worker-vllm).

        It carries this client's key and base URL, so ``client.chat.completions.create(...)`` reaches the
        endpoint's ``/openai/v1`` routes.

        Args:
            **options: Passed to ``openai.OpenAI`` (``max_retries``, ``timeout``, ...).

        Returns:
            A configured ``openai.OpenAI``.

        Raises:
            ConfigurationError: The ``openai`` package is missing (``pip install 'runpod-queue[openai]'``).
        """
        return openai_client(self._client._settings.api_key, self._client.base_url, self.id, options)

    def run(
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
        input = resolve_uploads(input, sync_store(store) or self._client._store)
        call = run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config)
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def run_sync(
        self,
        input: Any,
        *,
        timeout: Duration = 90.0,  # RUNSYNC_DEFAULT_WAIT_MS, as a value the signature shows
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
        store: S3Store | AsyncS3Store | None = None,
        on_update: OnUpdate | None = None,
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
            on_update: Called with every new snapshot while waiting (progress display).

        Returns:
            The terminal ``Job``: COMPLETED, FAILED, CANCELLED or TIMED_OUT.

        Raises:
            WaitTimeoutError: ``timeout`` ran out; the job keeps running and the error carries it.
            APIConnectionError: No answer arrived; ``sent=True`` means the job may exist.
            APIStatusError: RunPod refused a request.
            ConfigurationError: The input holds an ``Upload`` and there is no store.
        """
        client = self._client
        input = resolve_uploads(input, sync_store(store) or client._store)
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
        return client._run(flow, on_update)

    def status(self, job_id: str, *, keep_result_for: Duration | None = None) -> Job:
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
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def wait(self, job_id: str, *, timeout: Duration | None = None, on_update: OnUpdate | None = None) -> Job:
        """Block until the job is terminal and return it, long-polling where RunPod allows.

        Args:
            job_id: The job's id.
            timeout: Seconds (wall clock) to wait; ``None`` waits as long as the job runs.
            on_update: Called with every new snapshot while waiting.

        Returns:
            The terminal ``Job``; a FAILED one is returned, not raised.

        Raises:
            WaitTimeoutError: ``timeout`` ran out; the error carries the last snapshot.
            NotFoundError: Unknown job, or one past its retention window.
            APIStatusError: RunPod refused a request.
            APIConnectionError: No answer arrived.
        """
        client = self._client
        return client._run(wait_flow(client._rules, self.id, job_id, timeout, client._long_poll), on_update)

    def stream(self, job_id: str, *, timeout: Duration | None = None) -> JobStream:
        """The job's streamed outputs (a generator handler's yields), each once, in order.

        Nothing is sent until iteration starts. When it ends, the stream's ``job`` is the terminal Job.

        Args:
            job_id: The job's id.
            timeout: Seconds the whole stream may take; ``None`` for no bound.

        Returns:
            A ``JobStream`` to iterate with ``for``.
        """
        return JobStream(self._client, job_id, stream_flow(self._client._rules, self.id, job_id, timeout))

    def cancel(self, job_id: str) -> Job:
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
        return self._client._run(cancel_flow(self._client._rules, self.id, job_id))

    def retry(self, job_id: str) -> Job:
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
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def purge_queue(self) -> int:
        """Remove every IN_QUEUE job; running ones continue.

        Returns:
            How many jobs were removed.

        Raises:
            APIStatusError: RunPod refused the request (``RateLimitError``: 2 purges per 10 s).
            APIConnectionError: No answer arrived.
        """
        return parse_purge(self._client._run(attempts(purge_call(self.id), self._client._rules)))

    def health(self) -> Health:
        """The endpoint's job and worker counts.

        Returns:
            A ``Health`` snapshot (``health.jobs.in_queue``, ``health.workers.idle``, ...).

        Raises:
            APIStatusError: RunPod refused the request.
            APIConnectionError: No answer arrived.
        """
        return parse_health(self._client._run(attempts(health_call(self.id), self._client._rules)))

    def diagnose(self, job_id: str, *, management_url: str | None = None) -> Diagnosis:
        """Why the job waits: cold start, busy, throttled or unhealthy workers, no workers allowed, ...

        Reads the job (``/status``), the queue (``/health``) and, through RunPod's management API (REST
        v2, same key and transport), the endpoint's settings and workers; picks the first reason that
        explains the wait (the order is ``WaitReason``'s). When the key may not read the management API
        (401/403), the answer comes from ``/status`` and ``/health`` alone and ``unseen`` says so.

        ```python
        why = client.endpoint("abc123").diagnose(job.id)
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
        return self._client._run(diagnose_flow(self._client._rules, self.id, job_id, management_url))
