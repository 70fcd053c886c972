"""The synchronous client: a thin shell over ``_wire`` whose only job is to send and sleep.

``Client`` owns the connection pool, the retry settings and the rate limiter shared by every thread;
``Endpoint`` is a cheap handle for one endpoint id. Options given to a call apply to that call only.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from runpod_queue import _wire
from runpod_queue._contract import RUNSYNC_DEFAULT_WAIT_MS
from runpod_queue._limits import RateLimits, SyncLimiter
from runpod_queue._models import Health, Job, Policy, S3Config, StreamChunk
from runpod_queue._retry import Retries
from runpod_queue._units import Duration
from runpod_queue._wire import Call, Emit, Expired, Flow, Notify, Send, Sleep
from runpod_queue.errors import APIConnectionError, APIStatusError, RunpodQueueError

__all__ = ["Client", "Endpoint"]

T = TypeVar("T")
OnUpdate = Callable[[Job], object]


class Client:
    """Sync client for RunPod queue endpoints; thread-safe, reuses connections, closes with ``with``.

    ``api_key`` defaults to ``$RUNPOD_API_KEY`` and ``base_url`` to ``$RUNPOD_ENDPOINT_BASE_URL`` or
    RunPod's own. ``timeout`` bounds each request (long-polls get their hold on top). ``retries`` and
    ``rate_limits`` (``False`` turns limiting off) apply to every call; ``transport`` is for tests.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        retries: Retries | None = None,
        rate_limits: RateLimits | bool = True,
        transport: httpx.BaseTransport | None = None,
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
        self._limiter = SyncLimiter(limits)
        self._long_poll: dict[str, bool] = {}
        self._rng = random.Random()
        self._http = httpx.Client(
            headers=_wire.default_headers(key),
            timeout=self._timeout,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=4.0,  # under common 5 s server idle timeouts, so a reused socket is alive
            ),
        )

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return Endpoint(self, endpoint_id)

    def with_options(self, *, timeout: float | None = None, retries: Retries | None = None) -> Client:
        """A client with other per-request settings that shares this one's connection pool, rate limiter
        and API key (as openai-python's ``with_options``); closing it leaves the pool to this client."""
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

    def close(self) -> None:
        if self._owner:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    # The one place that does I/O.
    def _execute(self, endpoint_id: str, call: Call, deadline: float | None = None) -> httpx.Response:
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
                window = limiter.acquire(endpoint_id, call.op, deadline)
            except (Expired, TimeoutError):
                raise Expired from last_error
            started = time.perf_counter()
            error: APIConnectionError | APIStatusError
            outcome: int | str = "interrupted"
            try:
                response = self._http.request(
                    call.method, url, content=call.content, headers=headers, timeout=timeout
                )
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
                time.sleep(delay)

    def _drive(
        self, endpoint_id: str, flow: Flow[T], on_update: OnUpdate | None
    ) -> Generator[StreamChunk, None, T]:
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
                try:
                    value = action.parse(self._execute(endpoint_id, action.call, action.deadline))
                except (RunpodQueueError, Expired) as exc:
                    error = exc
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            elif isinstance(action, Notify):
                if on_update is not None:
                    on_update(action.job)
            elif isinstance(action, Emit):
                yield action.chunk

    def _complete(self, endpoint_id: str, flow: Flow[T], on_update: OnUpdate | None = None) -> T:
        steps = self._drive(endpoint_id, flow, on_update)
        try:
            while True:
                next(steps)
        except StopIteration as stop:
            result: T = stop.value
            return result


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

    def _job(self, call: Call) -> Job:
        return _wire.parse_job(self._client._execute(self.id, call))

    def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | None = None,
        s3_config: S3Config | None = None,
    ) -> Job:
        """Queue a job; returns at once with its id (IN_QUEUE). Never re-sent after an ambiguous failure."""
        return self._job(_wire.run_call(self.id, input, webhook=webhook, policy=policy, s3_config=s3_config))

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
        flow = _wire.run_sync_flow(
            self.id,
            input,
            timeout=timeout,
            webhook=webhook,
            policy=policy,
            s3_config=s3_config,
            long_poll=self._client._long_poll,
        )
        return self._client._complete(self.id, flow, on_update)

    def status(self, job_id: str, *, keep_result_for: Duration | None = None) -> Job:
        """The job's current snapshot; ``keep_result_for`` (s) shortens how long RunPod keeps a finished
        job's result from now (RunPod's ``/status?ttl=``)."""
        return self._job(_wire.status_call(self.id, job_id, keep_result_for=keep_result_for))

    def wait(self, job_id: str, *, timeout: float | None = None, on_update: OnUpdate | None = None) -> Job:
        """Block until the job is terminal and return it; ``timeout`` (s, wall clock) raises
        WaitTimeoutError on time. ``on_update`` sees every new snapshot."""
        flow = _wire.wait_flow(self.id, job_id, timeout, self._client._long_poll)
        return self._client._complete(self.id, flow, on_update)

    def stream(self, job_id: str, *, timeout: float | None = None) -> Iterator[StreamChunk]:
        """Yield each streamed chunk once, in order; ends on every terminal state (check ``status`` for
        how the job ended). ``timeout`` (s) bounds the whole stream."""
        return self._client._drive(self.id, _wire.stream_flow(self.id, job_id, timeout), None)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; idempotent (an already cancelled job is returned as is)."""
        return self._client._complete(self.id, _wire.cancel_flow(self.id, job_id))

    def retry(self, job_id: str) -> Job:
        """Requeue a FAILED or TIMED_OUT job under the same id (BadRequestError otherwise)."""
        return self._job(_wire.retry_call(self.id, job_id))

    def purge_queue(self) -> int:
        """Remove every IN_QUEUE job (running ones continue); returns how many were removed."""
        return _wire.parse_purge(self._client._execute(self.id, _wire.purge_call(self.id)))

    def health(self) -> Health:
        return _wire.parse_health(self._client._execute(self.id, _wire.health_call(self.id)))
