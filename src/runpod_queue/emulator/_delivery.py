"""Webhook delivery with RunPod's retries: the first POST plus up to 2 more, 10 s apart on the clock.

Only a 200 answer counts as delivered, as RunPod documents; any other status or a connection error is
retried. A delivery that finally fails is logged and recorded, and never changes the job. The gap between
attempts is a clock timer (virtual on a virtual clock); each POST itself is real I/O, reported to the
clock so that `advance()` waits for it before moving on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from runpod_queue._contract import WEBHOOK_ATTEMPTS
from runpod_queue._transport import _tls_context, failure_reason

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import Clock, TimerHandle

__all__ = ["WebhookAttempt", "WebhookDelivery"]

log = logging.getLogger("runpod_queue.emulator")


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST to a webhook, as recorded in `Emulator.webhook_attempts`.

    `at` is when it was sent, in seconds on the emulator's clock (`Emulator.now`)."""

    job_id: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    at: float

    @property
    def delivered(self) -> bool:
        """The receiver answered 200: RunPod stops delivering."""
        return self.status_code == 200


class WebhookDelivery:
    """Sends webhooks for the core (`send`); `retry_gap` is in clock seconds (already scaled)."""

    def __init__(
        self,
        clock: Clock,
        *,
        retry_gap: float,
        timeout_s: float = 10.0,
        attempts: int = WEBHOOK_ATTEMPTS,
    ) -> None:
        self.clock = clock
        self.retry_gap = retry_gap
        self.timeout_s = timeout_s
        self.attempts_allowed = attempts
        self.attempts: list[WebhookAttempt] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: set[TimerHandle] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the serving loop that deliveries run on."""
        self._loop = loop

    def send(self, job_id: str, url: str, payload: bytes) -> None:
        """Deliver `payload` to `url` (the first attempt starts now, on the loop)."""
        self._attempt(job_id, url, payload, 1)

    def _attempt(self, job_id: str, url: str, payload: bytes, attempt: int) -> None:
        assert self._loop is not None
        # Reported before the task runs, so an advance() that fired this retry waits for its answer.
        self.clock.io_started()
        task = self._loop.create_task(self._post(job_id, url, payload, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry(self, holder: list[TimerHandle], job_id: str, url: str, payload: bytes, attempt: int) -> None:
        self._retries.discard(holder[0])
        self._attempt(job_id, url, payload, attempt)

    async def _post(self, job_id: str, url: str, payload: bytes, attempt: int) -> None:
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(
                    timeout=self.timeout_s, follow_redirects=False, verify=_tls_context()
                )
            at = self.clock.now()
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._client.post(
                    url, content=payload, headers={"content-type": "application/json"}
                )
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = failure_reason(exc)  # "connection refused", as the client words it
            except Exception as exc:
                # (an unsendable URL, a TLS setup error): a delivery task must never die unseen.
                error = f"{type(exc).__name__}: {exc}"
            self.attempts.append(WebhookAttempt(job_id, url, attempt, status_code, error, at))
            if status_code == 200:
                return
            log.warning(
                "webhook for job %s: attempt %d/%d failed (%s)",
                job_id,
                attempt,
                self.attempts_allowed,
                error or f"HTTP {status_code}",
            )
            if attempt < self.attempts_allowed:
                holder: list[TimerHandle] = []
                handle = self.clock.call_later(
                    self.retry_gap, self._retry, holder, job_id, url, payload, attempt + 1
                )
                holder.append(handle)
                self._retries.add(handle)
        finally:
            self.clock.io_ended()

    def reset(self) -> None:
        """Forget every attempt and drop the deliveries still owed (``POST /_emulator/reset``)."""
        for handle in list(self._retries):
            handle.cancel()
        self._retries.clear()
        for task in list(self._tasks):
            task.cancel()  # its `finally` still reports the I/O as ended to the clock
        self.attempts.clear()

    async def aclose(self) -> None:
        """Cancel pending retries and deliveries in flight."""
        for handle in list(self._retries):
            handle.cancel()
        self._retries.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
