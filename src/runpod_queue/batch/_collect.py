"""Collecting results: status checks handed out by the schedule, ``/retry`` for FAILED and TIMED_OUT jobs,
and webhook deliveries.

One dispatcher shares the status budget: the most overdue job goes to the next free check slot
(``PollOptions.concurrency``), and the runner's limiter holds all checks together under ``/status``'s
limit however many jobs are in flight. A verified COMPLETED delivery finishes its job at once; any other
terminal delivery makes the job due for a status check, which decides on ``/retry`` as polling does and
cannot be fooled by a late delivery of an earlier attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable
from typing import TypeVar

from runpod_queue._answers import parse_job
from runpod_queue._attempts import attempts
from runpod_queue._calls import status_sync_call
from runpod_queue._contract import RETENTION_RUN_MS, JobStatus
from runpod_queue._models import Job, Policy
from runpod_queue._units import to_ms
from runpod_queue.batch._schedule import Watched
from runpod_queue.batch._state import Fatal, RunState
from runpod_queue.batch._submit import resend_is_safe
from runpod_queue.batch._types import BatchResult, ItemStatus, item_status
from runpod_queue.errors import (
    APIError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

__all__ = ["Collector", "lost_message"]

T = TypeVar("T")

_UNREADABLE_AFTER = 3  # consecutive such status answers before the item is recorded and left


def lost_message(job_id: str, age: float, policy: Policy | None) -> str:
    """Why a job answered 404: retention or ttl only when enough time has passed for them to explain it
    (``age``: seconds since the job was submitted or retried)."""
    ttl = None if policy is None else policy.ttl
    if age >= RETENTION_RUN_MS / 1000 or (ttl is not None and age >= ttl):
        return (
            f"job {job_id} was gone (404) when collected: RunPod keeps a result 30 minutes after the job "
            "ends (and removes a job whose ttl ran out), and it expired before this batch fetched it; "
            "run again with --resubmit-lost to submit it anew"
        )
    return (
        f"job {job_id} was gone (404) when collected {age:.0f} s after it was submitted: the server no "
        "longer knows this job (too soon for RunPod's 30 minutes of retention or the job's ttl to "
        "explain it: was the endpoint reset?); run again with --resubmit-lost to submit it anew"
    )


def _failure(snapshot: Job) -> str:
    """What tells one failed execution from the next: a /retry that ran changes at least the timings."""
    return json.dumps(
        [snapshot.status_text, snapshot.delay_time, snapshot.execution_time, snapshot.error], default=str
    )


class Collector:
    """Status checks, retries and deliveries for the jobs of one run."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.checks: set[asyncio.Task[None]] = set()
        self.held = 0  # /status-sync long-polls under way
        # False once the server turns out not to offer /status-sync (404/405 for a job that exists).
        self.long_polls = run.config.long_polls > 0

    # -- dispatching -------------------------------------------------------------------------------

    async def dispatch(self) -> None:
        """Hand the most overdue job to a status check: a held ``/status-sync`` long-poll while fewer than
        ``long_polls`` are held (one call for the whole wait), else a short ``/status`` once one of the
        ``poll_concurrency`` slots is free.

        One waiter on the schedule (not one per slot), so a newly due job wakes one task, not the pool.
        """
        run = self.run
        slots = asyncio.Semaphore(run.config.poll_concurrency)
        while True:
            slot = False
            if not self._can_hold():  # wait for a free check before taking a job off the schedule
                await slots.acquire()
                slot = True
            await run.paused("status")
            job = await self._next_due()
            if job is None:
                if slot:
                    slots.release()
                return
            held = self._can_hold()  # a hold may have ended while we waited
            if held:
                if slot:
                    slots.release()
                self.held += 1
            elif not slot:
                await slots.acquire()
            task = asyncio.create_task(self._guarded_check(job, held=held))
            self.checks.add(task)
            task.add_done_callback(self.checks.discard)
            task.add_done_callback(self._hold_ended if held else lambda _: slots.release())

    def _can_hold(self) -> bool:
        return self.long_polls and self.held < self.run.config.long_polls

    def _hold_ended(self, _: object) -> None:
        self.held -= 1
        self.run.wake.set()  # a job waiting for a short check may take this hold instead

    async def _next_due(self) -> Watched | None:
        run = self.run
        while not run.stopping:
            now = time.monotonic()
            job = run.schedule.pop_due(now)
            if job is not None:
                return job
            run.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), run.schedule.wait(now))
        return None

    async def _guarded_check(self, job: Watched, *, held: bool) -> None:
        try:
            await self._check(job, held=held)
        except Fatal:
            pass
        except Exception as exc:  # a bug or a failing on_result callback: stop cleanly, report it
            self.run.fail_batch(exc)

    # -- one check ---------------------------------------------------------------------------------

    async def _check(self, job: Watched, *, held: bool) -> None:
        run = self.run
        if job.done:
            return  # a webhook delivered its result while it waited for a check
        job.checking = True
        asked = time.monotonic()
        try:
            snapshot = await (self._held_status(job) if held else self._status(job))
        except APIError as exc:
            if not job.done:
                self._check_failed(job, exc)
            return
        finally:
            job.checking = False
        job.unreadable = 0
        if job.done:
            return  # a webhook delivered its result while we asked
        self._settle_retry(job, snapshot)
        now = time.monotonic()
        if not snapshot.is_terminal:
            run.schedule.observed(job, snapshot.status, now)
            if held and now - asked >= run.config.hold / 2:
                run.schedule.at(job, now)  # the hold was the wait: hold again (a server that did not hold
            return  # is asked on the schedule instead)
        run.schedule.ended(job, snapshot.delay_time, snapshot.execution_time, now)
        retryable = snapshot.status in (JobStatus.FAILED, JobStatus.TIMED_OUT)
        if retryable and job.attempts <= run.config.retry_failed:
            if run.stopping:
                return  # the next run sees the failure again and retries it
            await self._retry(job, snapshot)
            return
        self._finish_job(job, snapshot)

    async def _status(self, job: Watched) -> Job:
        run = self.run
        window = await run.limiter.acquire(run.endpoint.id, "status")
        try:
            return await self._counted(run.endpoint.status(job.job_id))
        finally:
            run.limiter.release(window)

    async def _held_status(self, job: Watched) -> Job:
        """One ``/status-sync`` the server holds until the job ends (or ``hold`` passes): the whole wait
        for a job costs one call. Where the route is missing (404/405 for a job a plain ``/status`` still
        knows), this run goes back to short checks."""
        run = self.run
        client = run.endpoint.client
        call = status_sync_call(run.endpoint.id, job.job_id, wait_ms=to_ms(run.config.hold))
        window = await run.limiter.acquire(run.endpoint.id, "status-sync")
        try:
            answer = await self._counted(client._run(attempts(call, client._rules)))
            return parse_job(answer)
        except APIStatusError as exc:
            if exc.status_code not in (404, 405):
                raise
        finally:
            run.limiter.release(window)
        snapshot = await self._status(job)  # NotFoundError here: the job is gone, not the route
        self.long_polls = False
        return snapshot

    async def _counted(self, call: Awaitable[T]) -> T:
        """A status call that got an answer (or an error) is counted; one cancelled by a stop is not."""
        try:
            result = await call
        except APIError:
            self.run.summary.status_calls += 1
            raise
        self.run.summary.status_calls += 1
        return result

    def _check_failed(self, job: Watched, error: APIError) -> None:
        if isinstance(error, APIResponseError):
            job.unreadable += 1
            if job.unreadable >= _UNREADABLE_AFTER:  # not a glitch: asking again gets the same answer
                self._unreadable(job, error)
                return
        else:
            job.unreadable = 0
        if isinstance(error, NotFoundError):
            self._lost(job)
        elif isinstance(error, AuthenticationError | PermissionDeniedError):
            self.run.fail_batch(error)
            self.run.schedule.at(job, time.monotonic())  # stays submitted in the journal for the next run
            raise Fatal from error
        else:
            self._transient(job, error)

    def _transient(self, job: Watched, exc: APIError) -> None:
        run = self.run
        retry_after: float | None = None
        if isinstance(exc, RateLimitError):
            run.summary.rate_limited += 1
            retry_after = exc.retry_after
            run.pause("status", retry_after)
        else:
            run.summary.transient_errors += 1
        job.failures += 1
        run.schedule.check_failed(job, run.backoff(job.failures, retry_after), time.monotonic())

    def _settle_retry(self, job: Watched, snapshot: Job) -> None:
        """A /retry whose answer was lost (or a run killed around it): the job's status now tells. The
        same failure as before means it never ran again; anything else means it did."""
        if job.retry_for is None:
            return
        if _failure(snapshot) == job.retry_for:
            self.run.journal.retry_unsent(job.key)
        else:
            self._retry_confirmed(job)
        job.retry_for = None

    def _retry_confirmed(self, job: Watched) -> None:
        self.run.journal.retry_confirmed(job.key)
        job.attempts += 1
        self.run.summary.retried += 1

    async def _retry(self, job: Watched, failure: Job) -> None:
        run = self.run
        # Before sending: a kill after this leaves the failure it answers, which the resume compares
        # with the job's status to tell whether the retry ran. Counted once the service confirms it.
        job.retry_for = _failure(failure)
        run.journal.retrying(job.key, job.retry_for)
        try:
            with run.on_the_wire():
                await run.endpoint.retry(job.job_id)
        except BadRequestError:
            pass  # no longer FAILED/TIMED_OUT: it is running again (confirmed below)
        except NotFoundError:
            self._lost(job)
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            run.fail_batch(exc)
            raise Fatal from exc
        except APIError as exc:
            if resend_is_safe(exc):  # the retry certainly did not happen: it does not count
                run.journal.retry_unsent(job.key)
                job.retry_for = None
            # Otherwise it may have happened: the next status check settles it (_settle_retry).
            self._transient(job, exc)
            return
        job.retry_for = None
        self._retry_confirmed(job)
        run.schedule.retried(job, time.monotonic())

    # -- endings -----------------------------------------------------------------------------------

    def _lost(self, job: Watched) -> None:
        run = self.run
        if job.retry_for is not None:  # nothing left to confirm it by
            run.journal.retry_unsent(job.key)
            job.retry_for = None
        run.schedule.finished(job)
        run.by_id.pop(job.job_id, None)
        run.summary.lost += 1
        message = lost_message(job.job_id, time.monotonic() - job.since, run.config.policy)
        run.warn(f"line {job.line} (key {job.key}): lost: {message}")
        result = BatchResult(
            json.loads(job.key), job.job_id, ItemStatus.LOST, error=message, attempts=job.attempts
        )
        run.finish(job.key, job.line, result)

    def _unreadable(self, job: Watched, error: APIResponseError) -> None:
        """Record the item and go on: the batch must not stop, nor every resume hit the same job again."""
        run = self.run
        if job.retry_for is not None:
            run.journal.retry_unsent(job.key)
            job.retry_for = None
        run.schedule.finished(job)
        run.by_id.pop(job.job_id, None)
        run.summary.failed += 1
        message = f"the status answer broke the API contract ({error.reason}); the job may still have run"
        run.warn(f"line {job.line} (key {job.key}): job {job.job_id}: {message}")
        key = json.loads(job.key)
        result = BatchResult(key, job.job_id, ItemStatus.UNREADABLE, error=message, attempts=job.attempts)
        run.finish(job.key, job.line, result)

    def _finish_job(self, job: Watched, snapshot: Job) -> None:
        run = self.run
        run.schedule.finished(job)
        run.by_id.pop(job.job_id, None)
        if snapshot.status is JobStatus.COMPLETED:
            run.summary.completed += 1
        else:
            run.summary.failed += 1
        result = BatchResult(
            json.loads(job.key),
            job.job_id,
            item_status(snapshot.status_text),
            output=snapshot.output,
            error=snapshot.error,
            delay_time=snapshot.delay_time,
            execution_time=snapshot.execution_time,
            attempts=job.attempts,
        )
        run.finish(job.key, job.line, result)

    # -- webhooks ----------------------------------------------------------------------------------

    async def on_delivery(self, snapshot: Job) -> None:
        """A verified delivery (called once per job id and status by the receiver)."""
        run = self.run
        run.summary.webhook_deliveries += 1
        job = run.by_id.get(snapshot.id)
        if job is None or job.done or not snapshot.is_terminal:
            return
        if snapshot.status is JobStatus.COMPLETED:
            # Final: a COMPLETED job is never retried, so this cannot be a late word on an older attempt.
            self._settle_retry(job, snapshot)
            run.schedule.ended(job, snapshot.delay_time, snapshot.execution_time, time.monotonic())
            self._finish_job(job, snapshot)
        elif not job.checking:
            run.schedule.at(job, time.monotonic())  # the status check decides: /retry or record
