"""One run of a batch: the state that feeding, submitting and collecting share, and the transitions that
must happen the same way wherever they start (a result recorded, an item released, the batch stopped).

Lives for one ``arun``; the runner builds it once the endpoint answered and the journal is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runpod_queue._limits import AsyncLimiter
from runpod_queue._models import Policy
from runpod_queue._retry import Retries, backoff_delay
from runpod_queue.batch._journal import Journal
from runpod_queue.batch._output import OutputFile
from runpod_queue.batch._schedule import Schedule, Watched
from runpod_queue.batch._types import BatchResult, BatchSummary, ItemStatus

if TYPE_CHECKING:
    from runpod_queue._aio import AsyncEndpoint
    from runpod_queue.batch._uploads import BatchUploads
    from runpod_queue.webhooks import WebhookSigner

__all__ = ["Fatal", "RunConfig", "RunState"]

log = logging.getLogger("runpod_queue.batch")

_MAX_BACKOFF_STEP = 8  # attempts beyond this do not lengthen the backoff further
# A 429 without Retry-After pauses its operation this long: about when a 10 s window frees its next slot.
_PAUSE_WITHOUT_RETRY_AFTER_S = 1.0


class Fatal(Exception):
    """An error no resend will fix (bad key, unknown endpoint): the batch stops, the journal stays valid."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What a run needs from the runner's options (validated there)."""

    max_in_flight: int
    retry_failed: int
    policy: Policy | None
    poll_concurrency: int
    long_polls: int  # /status-sync long-polls held at once (0: short polls only)
    hold: float  # seconds the server may hold each
    backoff: Retries  # timing of the runner's own resends: the user's client's Retries
    request_timeout: float  # how long a request on the wire may take (a stop waits this long for it)
    on_warning: Callable[[str], object] | None


class RunState:
    """Counts, journal, output, schedule and stop flags of one run, on one event loop."""

    def __init__(
        self,
        config: RunConfig,
        *,
        endpoint: AsyncEndpoint,
        limiter: AsyncLimiter,
        journal: Journal,
        output: OutputFile,
        schedule: Schedule,
        summary: BatchSummary,
        wake: asyncio.Event,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.limiter = limiter  # the runner's own: granted before the client's limiter is asked
        self.journal = journal
        self.output = output
        self.schedule = schedule
        self.summary = summary
        self.by_id: dict[str, Watched] = {}
        self.signer: WebhookSigner | None = None
        self.webhook_url: str | None = None  # the base URL each submission's signed webhook is made from
        self.uploads: BatchUploads | None = None  # resolves Upload values in inputs (set by the runner)
        self.stopping = False
        self.fatal: BaseException | None = None
        self.fed_all = False
        self.left_over = 0  # items read but not submitted because of a stop: the next run sends them
        self.in_flight_changed = asyncio.Event()
        self.wake = wake  # set by the schedule when a job is (re)scheduled: the dispatcher looks again
        self._wire: set[asyncio.Task[Any]] = set()
        self._pause_until: dict[str, float] = {}
        self._rng = random.Random()

    # -- results -----------------------------------------------------------------------------------

    def finish(self, key: str, line: int, result: BatchResult) -> None:
        """An item in flight has its final result: journal first, then the file follows it."""
        self.record(key, line, result)
        self.released()

    def record(self, key: str, line: int, result: BatchResult) -> None:
        """A final result (also for an item never in flight, such as a malformed line)."""
        text = result.to_json()
        self.journal.terminal(key, line, result.status, text)
        self.output.deliver(key, text)
        if result.status != ItemStatus.INVALID:  # the rate is of work done: a malformed line costs no time
            self.summary.done_this_run += 1

    def released(self) -> None:
        """An item left the in-flight count (finished, or left for the next run)."""
        self.summary.in_flight -= 1
        self.in_flight_changed.set()

    def warn(self, message: str) -> None:
        on_warning = self.config.on_warning
        if on_warning is not None:
            on_warning(message)
        else:
            log.warning("%s", message)

    # -- pacing ------------------------------------------------------------------------------------

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Pause before resending after failed attempt ``attempt``, with the client's Retries timing."""
        return backoff_delay(self.config.backoff, min(attempt, _MAX_BACKOFF_STEP), retry_after, self._rng)

    def pause(self, op: str, retry_after: float | None) -> None:
        """A 429 despite the limiter (another client on the same key?): every request of that operation
        waits, instead of each queued one collecting its own 429. ``Retries(wait=False)``: no pause."""
        if not self.config.backoff.wait:
            return
        pause = min(
            self.config.backoff.max_retry_after,
            _PAUSE_WITHOUT_RETRY_AFTER_S if retry_after is None else retry_after,
        )
        until = time.monotonic() + pause
        self._pause_until[op] = max(self._pause_until.get(op, 0.0), until)

    async def paused(self, op: str) -> None:
        while (wait := self._pause_until.get(op, 0.0) - time.monotonic()) > 0:  # noqa: ASYNC110 - may grow
            await asyncio.sleep(wait)

    # -- stopping ----------------------------------------------------------------------------------

    def fail_batch(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.begin_stop()

    def begin_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.wake.set()
            self.in_flight_changed.set()

    @contextlib.contextmanager
    def on_the_wire(self) -> Iterator[None]:
        """Marks a request whose answer must be journaled (/run, /retry): a stop waits for it."""
        task = asyncio.current_task()
        assert task is not None
        self._wire.add(task)
        try:
            yield
        finally:
            self._wire.discard(task)

    async def drain(self, tasks: list[asyncio.Task[Any]]) -> None:
        """After a stop: requests on the wire finish (their answers get journaled); everything else — waits
        for a rate-limit slot, status checks, which only read — is cancelled at once."""
        for task in tasks:
            if task not in self._wire:
                task.cancel()
        on_wire = [task for task in tasks if task in self._wire]
        if on_wire:
            await asyncio.wait(on_wire, timeout=self.config.request_timeout + 5)
        for task in on_wire:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
