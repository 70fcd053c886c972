"""`Management` / `AsyncManagement`: RunPod's REST v2 management routes a queue user needs.

`GET`/`PATCH /serverless/{id}` and `GET /serverless/{id}/workers` at `https://api.runpod.io/v2` (field
names from `api-reference-v2/openapi.json` in `runpod/docs`). Each sends through a `Client` /
`AsyncClient` of its own, so the key, the transport, the retries (429 and 5xx, a PATCH included: it sets
absolute values, so repeating it is harmless) and the error types are the queue client's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from runpod_queue._aio import AsyncClient
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
from runpod_queue._transport import Answer
from runpod_queue._units import Duration, seconds

__all__ = ["AsyncManagement", "EndpointInfo", "Management", "WorkerInfo", "WorkerSummary", "Workers"]

MANAGEMENT_BASE_URL = "https://api.runpod.io/v2"
_OP = "management"  # the rate limiter's key: not in RunPod's queue table, so 429s are retried instead


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
