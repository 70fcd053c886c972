"""Webhook delivery with RunPod's retries: the first POST plus up to 2 more, ~10 s (scaled) apart.

Only a 200 answer counts as delivered, as RunPod documents; any other status or a connection error is
retried. A delivery that finally fails is logged and recorded, and never changes the job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from runpod_queue._contract import WEBHOOK_ATTEMPTS
from runpod_queue.emulator.queue import Core, JobRecord

__all__ = ["WebhookAttempt", "WebhookDelivery"]

log = logging.getLogger("runpod_queue.emulator")


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST to a webhook, as recorded in `Emulator.webhook_attempts`."""

    job_id: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code == 200


class WebhookDelivery:
    def __init__(self, core: Core, *, timeout_s: float = 10.0, attempts: int = WEBHOOK_ATTEMPTS) -> None:
        self.core = core
        self.timeout_s = timeout_s
        self.attempts_allowed = attempts
        self.attempts: list[WebhookAttempt] = []
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        core.on_webhook = self.schedule

    def schedule(self, job: JobRecord, payload: bytes) -> None:
        assert self.core.loop is not None and job.webhook is not None
        task = self.core.loop.create_task(self._deliver(job.id, job.webhook, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job_id: str, url: str, payload: bytes) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        gap = self.core.clock.seconds(self.core.timings.webhook_retry_gap_ms)
        for attempt in range(1, self.attempts_allowed + 1):
            status_code: int | None = None
            error: str | None = None
            try:
                response = await self._client.post(
                    url, content=payload, headers={"content-type": "application/json"}
                )
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.attempts.append(WebhookAttempt(job_id, url, attempt, status_code, error))
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
                await asyncio.sleep(gap)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
