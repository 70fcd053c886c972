"""The synchronous client: a driver that runs the shared flows with blocking I/O, and nothing else.

``Client`` owns the transport (connection pool), the retry settings and the rate limiter shared by every
thread; ``Endpoint`` is a cheap handle for one endpoint id. Every decision — what to send, what an answer
means, when to retry or give up — is made in the flows (``_attempts``, ``_flows``), which ``AsyncClient``
runs the same way with ``await``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from runpod_queue._actions import Exchange, Expired, Finished, Flow, Notify, Sleep
from runpod_queue._answers import parse_health, parse_job, parse_purge
from runpod_queue._attempts import AttemptRules, attempts
from runpod_queue._calls import health_call, purge_call, retry_call, run_call, status_call
from runpod_queue._contract import RUNSYNC_DEFAULT_WAIT_MS
from runpod_queue._flows import cancel_flow, run_sync_flow, stream_flow, wait_flow
from runpod_queue._limits import RateLimits, SyncLimiter
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._openai import openai_base_url, openai_client
from runpod_queue._retry import OnRetry, Retries
from runpod_queue._settings import client_settings, default_headers
from runpod_queue._transport import Answer, HttpxTransport, SyncTransport
from runpod_queue._units import Duration

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = ["Client", "Endpoint", "JobStream"]

T = TypeVar("T")
OnUpdate = Callable[[Job], object]


class Client:
    """Sync client for RunPod queue endpoints; thread-safe, reuses connections, closes with ``with``.

    ``api_key`` defaults to ``$RUNPOD_API_KEY`` and ``base_url`` to ``$RUNPOD_ENDPOINT_BASE_URL`` or
    RunPod's own. ``timeout`` (s) bounds each request (long-polls get their hold on top). ``retries`` and
    ``rate_limits`` (``False`` turns limiting off) apply to every call; ``transport`` (an
    ``httpx.BaseTransport``) is for tests.
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
        self._limiter = SyncLimiter(settings.rate_limits)
        self._long_poll: dict[str, bool] = {}
        self._transport: SyncTransport = HttpxTransport(
            default_headers(settings.api_key), transport, settings.max_connections
        )
        self._owner = True

    def endpoint(self, endpoint_id: str) -> Endpoint:
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
        """A client with another per-request ``timeout`` (s) and/or ``retries`` that shares this one's
        connection pool, rate limiter and API key (as openai-python's ``with_options``); closing it leaves
        the pool to this client."""
        derived = copy.copy(self)
        derived._owner = False
        derived._settings = self._settings.with_options(timeout=timeout, retries=retries)
        derived._rules = AttemptRules.of(derived._settings, self._rules.rng, self._rules.on_retry)
        return derived

    def _observe_retries(self, on_retry: OnRetry | None) -> None:
        """Call ``on_retry`` before each retry's pause (and on clients made by ``with_options`` after
        this). Private: it is how `rpq` shows a "retrying" line; the public surface is the README's."""
        self._rules = dataclasses.replace(self._rules, on_retry=on_retry)

    def close(self) -> None:
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
    """The chunks of one job, each once, in order (``Endpoint.stream``). Iteration ends when the job
    reaches any terminal state; ``job`` is then that terminal ``Job`` (None until the end, and after a
    WaitTimeoutError or any other error: the error says what happened).

    The terminal Job is the last ``/stream`` answer's view of the job — status, and output/error when the
    answer has them; when a FAILED job's answer carries no error, one ``/status`` call fetches it.
    """

    __slots__ = ("_client", "_done", "_flow", "job", "job_id")

    def __init__(self, client: Client, job_id: str, flow: Flow[Job]) -> None:
        self._client = client
        self._flow = flow
        self._done = False
        self.job_id = job_id
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
        """Stop early: no further request is sent."""
        self._done = True
        self._flow.close()

    def __repr__(self) -> str:
        ended = f", ended {self.job.status_text}" if self.job is not None else ""
        return f"JobStream({self.job_id!r}{ended})"


class Endpoint:
    """One endpoint through a Client: every queue operation, each call self-contained."""

    __slots__ = ("_client", "id")

    def __init__(self, client: Client, endpoint_id: str) -> None:
        if not isinstance(endpoint_id, str) or not endpoint_id:
            raise ValueError(f"endpoint_id must be a non-empty string, got {endpoint_id!r}")
        self._client = client
        self.id = endpoint_id

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r})"

    @property
    def client(self) -> Client:
        """The client this endpoint sends through."""
        return self._client

    @property
    def openai_base_url(self) -> str:
        """The base URL of this endpoint's OpenAI-compatible routes, for ``openai.OpenAI(base_url=...)``."""
        return openai_base_url(self._client.base_url, self.id)

    def openai(self, **options: Any) -> openai_sdk.OpenAI:
        """An ``openai.OpenAI`` for this endpoint's OpenAI-compatible routes (worker-vllm), with this client's
        key and base URL; ``options`` go to its constructor (``max_retries``, ``timeout``...). Needs the
        ``openai`` extra (``pip install 'runpod-queue[openai]'``), else ConfigurationError."""
        return openai_client(self._client._settings.api_key, self._client.base_url, self.id, options)

    def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
    ) -> Job:
        """Queue a job; returns at once with its id (IN_QUEUE). Never re-sent after an ambiguous failure."""
        call = run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config)
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def run_sync(
        self,
        input: Any,
        *,
        timeout: Duration = RUNSYNC_DEFAULT_WAIT_MS / 1000,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
        on_update: OnUpdate | None = None,
    ) -> Job:
        """Run and wait up to ``timeout`` seconds (default 90, at least 1) for the terminal Job, polling
        past RunPod's 300 s runsync window if needed; WaitTimeoutError (with the job) when it runs out. A
        FAILED job is returned, not raised: call ``raise_for_status()``."""
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
        return client._run(flow, on_update)

    def status(self, job_id: str, *, keep_result_for: Duration | None = None) -> Job:
        """The job's current snapshot; ``keep_result_for`` (s) shortens how long RunPod keeps a finished
        job's result from now (RunPod's ``/status?ttl=``)."""
        call = status_call(self.id, job_id, keep_result_for=keep_result_for)
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def wait(self, job_id: str, *, timeout: Duration | None = None, on_update: OnUpdate | None = None) -> Job:
        """Block until the job is terminal and return it; ``timeout`` (s, wall clock) raises
        WaitTimeoutError on time. ``on_update`` sees every new snapshot."""
        client = self._client
        return client._run(wait_flow(client._rules, self.id, job_id, timeout, client._long_poll), on_update)

    def stream(self, job_id: str, *, timeout: Duration | None = None) -> JobStream:
        """Iterate over the job's streamed chunks, each once, in order; ``timeout`` (s) bounds the whole
        stream. When iteration ends, the returned stream's ``.job`` is the terminal Job, so how the job
        ended (COMPLETED, FAILED, CANCELLED, TIMED_OUT) needs no second call."""
        return JobStream(self._client, job_id, stream_flow(self._client._rules, self.id, job_id, timeout))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; idempotent (an already cancelled job is returned as is)."""
        return self._client._run(cancel_flow(self._client._rules, self.id, job_id))

    def retry(self, job_id: str) -> Job:
        """Requeue a FAILED or TIMED_OUT job under the same id (BadRequestError otherwise)."""
        call = retry_call(self.id, job_id)
        return parse_job(self._client._run(attempts(call, self._client._rules)))

    def purge_queue(self) -> int:
        """Remove every IN_QUEUE job (running ones continue); returns how many were removed."""
        return parse_purge(self._client._run(attempts(purge_call(self.id), self._client._rules)))

    def health(self) -> Health:
        return parse_health(self._client._run(attempts(health_call(self.id), self._client._rules)))
