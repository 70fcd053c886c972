"""When each submitted job is next asked about: one shared status budget, spent where it pays.

Pure: every method that depends on time takes ``now`` (seconds on any monotonic scale the caller keeps
to) and nothing here reads a clock, sleeps or does I/O — so the rules below are unit-tested without a
server or an event loop.

* Jobs wait in one heap ordered by when they are next due; the most overdue goes to the next free check.
* The first check of a job comes a little before jobs have been taking to finish (learnt from RunPod's
  own ``delayTime`` + ``executionTime``); later checks come after half the job's age, between
  ``min_interval`` and ``max_interval`` — a long job costs a few calls, not one per interval.
* RunPod's queue is first in, first out: a job that entered after one seen ``IN_QUEUE`` more recently
  than its own last check is still queued too, and is rescheduled without a call.
* With webhooks (``late_after``), a job is checked only once its delivery is late.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from runpod_queue._contract import JobStatus

__all__ = ["Schedule", "Watched"]

# The first check comes at this share of the latency estimate: a little before a typical job ends, so a
# job that ends on time is seen with at most one early call.
FIRST_CHECK_SHARE = 0.8
# Later checks come after this share of a job's age: a long job costs a few calls (log of its length).
AGE_SHARE = 0.5
# Weight of the newest sample in the latency estimate (an EWMA): smooths one odd job, yet follows a
# change of workload within some ten jobs.
LATENCY_SAMPLE_WEIGHT = 0.1
# With webhooks, a delivery is late once it is this many typical latencies overdue.
LATE_LATENCIES = 2.0


@dataclass(slots=True, eq=False)
class Watched:
    """A submitted job being collected."""

    key: str  # key text (see ``key_text``)
    line: int
    job_id: str
    attempts: int  # executions the service confirmed: 1 + confirmed /retry calls
    since: float  # start of the current attempt (submission or /retry)
    status: JobStatus | None = None  # IN_QUEUE / IN_PROGRESS as last known; None: unknown or ended
    checked: float | None = None  # when its status was last known (None: never)
    failures: int = 0  # consecutive failed status calls
    done: bool = False  # its result is recorded (a webhook may beat a status check to it)
    checking: bool = False  # a status check is under way
    due_seq: int = 0  # the heap entry that counts; older entries of this job are skipped
    retry_for: str | None = None  # a /retry sent, not yet confirmed: the failure it was sent for
    unreadable: int = 0  # consecutive status answers that broke the contract


class Schedule:
    """The heap of due times, the latency estimate, and the counts of jobs queued / in progress.

    ``on_due`` is called whenever a job is (re)scheduled, so a waiting dispatcher can look again.
    """

    def __init__(
        self,
        *,
        min_interval: float,
        max_interval: float,
        late_after: float | None = None,
        on_due: Callable[[], object] | None = None,
    ) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError("intervals must satisfy 0 < min_interval <= max_interval")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.late_after = late_after
        self.latency: float | None = None  # running estimate of a job's submission-to-end time
        self.in_queue = 0
        self.in_progress = 0
        self._on_due = on_due
        self._heap: list[tuple[float, int, Watched]] = []
        self._seq = 0
        self._queued_seen: tuple[float, float] | None = None  # (since, seen) of the latest job IN_QUEUE

    def __len__(self) -> int:
        """Heap entries, stale ones included (for tests and debugging)."""
        return len(self._heap)

    # -- intervals ----------------------------------------------------------------------------------

    def late(self) -> float:
        """With webhooks: how long a job may go without a delivery before it is polled."""
        assert self.late_after is not None
        usual = 0.0 if self.latency is None else LATE_LATENCIES * self.latency
        return max(self.late_after, usual)

    def first_interval(self) -> float:
        """From submission (or /retry) to the first check: a little before jobs have been taking."""
        if self.late_after is not None:
            return self.late()
        if self.latency is None:
            return self.min_interval
        return self._clamp(FIRST_CHECK_SHARE * self.latency)

    def interval(self, job: Watched, now: float) -> float:
        """Between later checks: half the job's age, so a long job costs a few calls."""
        gap = self._clamp(AGE_SHARE * (now - job.since))
        return max(gap, self.late()) if self.late_after is not None else gap

    def _clamp(self, value: float) -> float:
        return min(self.max_interval, max(self.min_interval, value))

    # -- what happened to a job -----------------------------------------------------------------------

    def submitted(self, job: Watched, now: float) -> None:
        """A job just got its id (``job.since`` is its submission)."""
        self.at(job, now + self.first_interval())

    def retried(self, job: Watched, now: float) -> None:
        """A /retry was accepted: a new attempt starts now."""
        job.since = now
        self.at(job, now + self.first_interval())

    def observed(self, job: Watched, status: JobStatus | str, now: float) -> None:
        """A status check found the job not finished: note it and check again later. A status this
        version does not know counts as neither queued nor in progress (it is polled like them)."""
        job.failures = 0
        job.checked = now
        self.set_status(job, status if isinstance(status, JobStatus) else None)
        if status is JobStatus.IN_QUEUE:
            self._queued_seen = (job.since, now)
        self.at(job, now + self.interval(job, now))

    def ended(self, job: Watched, delay_time: float | None, execution_time: float | None, now: float) -> None:
        """A status check or a delivery found the job finished; learn how long jobs take.

        RunPod's own delayTime + executionTime when present: what we observe is inflated by our polling
        interval, and an estimate built on it would only ever grow.
        """
        job.failures = 0
        job.checked = now
        self.set_status(job, None)
        if delay_time is not None and execution_time is not None:
            sample = delay_time + execution_time
        else:
            sample = now - job.since
        if self.latency is None:
            self.latency = sample
        else:
            weight = LATENCY_SAMPLE_WEIGHT
            self.latency = (1 - weight) * self.latency + weight * sample

    def check_failed(self, job: Watched, backoff: float, now: float) -> None:
        """A call about the job failed (transiently): ask again after ``backoff``, never sooner than the
        minimum interval. The caller counts ``job.failures`` (its backoff grows with them)."""
        self.at(job, now + max(backoff, self.min_interval))

    def finished(self, job: Watched) -> None:
        """Its result is recorded: any heap entry left for it is skipped."""
        job.done = True
        self.set_status(job, None)

    def set_status(self, job: Watched, status: JobStatus | None) -> None:
        """Keep the queued / in-progress counts in step with each job's last known status."""
        if job.status is JobStatus.IN_QUEUE:
            self.in_queue -= 1
        elif job.status is JobStatus.IN_PROGRESS:
            self.in_progress -= 1
        if status is JobStatus.IN_QUEUE:
            self.in_queue += 1
        elif status is JobStatus.IN_PROGRESS:
            self.in_progress += 1
        job.status = status

    # -- the heap ----------------------------------------------------------------------------------

    def at(self, job: Watched, due: float) -> None:
        """(Re)schedule ``job`` at ``due``; an earlier entry for it is left in the heap and skipped."""
        self._seq += 1
        job.due_seq = self._seq
        heapq.heappush(self._heap, (due, self._seq, job))
        if self._on_due is not None:
            self._on_due()

    def pop_due(self, now: float) -> Watched | None:
        """The most overdue job that needs a status call, removed from the heap; None if none is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, job = heapq.heappop(heap)
            if job.done or seq != job.due_seq:
                continue  # finished by a webhook, or rescheduled since
            if self._implied_queued(job, now):
                continue
            return job
        return None

    def wait(self, now: float) -> float | None:
        """Seconds until the next entry is due (0 if one is); None when nothing is scheduled."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - now)

    def _implied_queued(self, job: Watched, now: float) -> bool:
        """The queue is first in, first out: a job that entered after one seen IN_QUEUE more recently than
        this job's own last check is still queued too — reschedule it without spending a status call.

        With a backlog (thousands submitted at once, few workers) this keeps polling on the queue's front
        instead of on jobs that cannot have started; a wrong guess only delays one check by one interval.
        """
        evidence = self._queued_seen
        if evidence is None or (job.checked is not None and job.status is not JobStatus.IN_QUEUE):
            return False  # a job seen running is not inferred back into the queue
        entered, seen = evidence
        if job.since <= entered or (job.checked is not None and seen <= job.checked):
            return False  # it may have started before the evidence job; or its own check is fresher
        due = seen + self.interval(job, seen)
        if due <= now:
            return False
        job.checked = seen
        self.set_status(job, JobStatus.IN_QUEUE)
        self.at(job, due)
        return True
