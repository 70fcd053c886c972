"""The queue's state machine: queue order, ttl, executionTimeout, retention, cancel, retry, purge, health.

Everything here runs on the server's event loop (one thread), so no locks: handler threads report back
through the in-process runner, which hands their results to the loop. Time comes from the `Clock` only;
RunPod durations (seconds) are multiplied by `clock.scale` (the real clock's `time_scale`) when they are
scheduled.

`Core` receives its collaborators: the clock, the timings, the in-process runner (`RunStarter`) and the
webhook sender (`WebhookSender`). External workers are not one of them: they drive the core through its
public methods (`start`, `complete`, `requeue_lost`, ...), wait on `EndpointState.take_waiters` and learn
that a run was stopped through the `JobRecord.stop_run` they set.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final, Protocol

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._cassette import ReplayHandler
from runpod_queue.emulator._clock import Clock, FifoTimers, TimerHandle
from runpod_queue.emulator._config import EndpointSpec, Timings
from runpod_queue.emulator._fleet import Fleet, WorkerState
from runpod_queue.emulator._jobs import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TERMINAL,
    EndpointState,
    JobRecord,
    RunRef,
    WorkerSlot,
    encode_json,
    new_job_id,
)
from runpod_queue.emulator._notices import Notices
from runpod_queue.emulator._oversize import RESULT_LIMIT, dropped_warning
from runpod_queue.emulator._readings import Readings
from runpod_queue.emulator._worker_logs import WorkerLogs

__all__ = ["Core", "RunStarter", "WebhookSender"]

# The official worker pings at most once a second: on a real clock, a shorter silence must not mark an
# external worker lost (or unhealthy), whatever the time scale. A virtual clock does not move while the
# worker is busy pinging, so it needs no floor.
_MIN_LOST_AFTER_REAL_S: Final = 2.5


class RunStarter(Protocol):
    """Runs handlers for in-process workers; reports each run's end back to `core`."""

    def start(self, job: JobRecord, worker: WorkerSlot, core: Core) -> None:
        """Run ``job`` on ``worker`` now; report its end through ``core``."""


class WebhookSender(Protocol):
    """Delivers a finished job's webhook (the emulator's ``WebhookDelivery``)."""

    def send(self, job_id: str, url: str, payload: bytes) -> None:
        """Deliver ``payload`` to ``url`` for ``job_id``, retrying as RunPod does."""


class Core:
    """The queue logic of every endpoint of one emulator."""

    def __init__(
        self,
        endpoints: Mapping[str, EndpointSpec],
        *,
        default_workers: int,
        clock: Clock,
        timings: Timings,
        runner: RunStarter,
        webhooks: WebhookSender,
        notices: Notices | None = None,
        readings: Readings | None = None,
    ) -> None:
        self.clock = clock
        self.readings: Readings = readings or Readings()
        self.notices: Notices = notices or Notices()
        self.timings = timings
        # Finished jobs kept for their retention, oldest first (keyed by id(): one entry per record),
        # when Timings.max_retained_jobs caps them; `forgotten` counts the ones evicted early.
        self._retain_cap = timings.max_retained_jobs
        self._retained: OrderedDict[int, JobRecord] = OrderedDict()
        self.forgotten: int = 0
        self._scale = clock.scale
        self._reports = clock.reports  # a real clock needs no activity reports: skip the calls
        self._runner = runner
        self._webhooks = webhooks
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every per-job timer (ttl, executionTimeout, a client's hold, retention) is made through this;
        # on a real clock `bind` makes it `FifoTimers`: one loop timer per delay, not one per job.
        self._job_later: Any = self._clock_later
        self.endpoints: dict[str, EndpointState] = {}
        # Each worker's log lines (REST v2's worker logs route).
        self.logs: WorkerLogs = WorkerLogs(clock)
        for eid, spec in endpoints.items():
            if spec.fleet:  # its workers come and go (`_fleet`): none is ready before it starts
                ep = self.endpoints[eid] = EndpointState(eid, spec, 0)
                ep.fleet = Fleet(self, ep)
                continue
            ep = self.endpoints[eid] = EndpointState(
                eid, spec, default_workers if spec.workers is None else spec.workers
            )
            for _ in range(ep.in_process_workers):
                self._add_worker(ep)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the loop the emulator serves on (client holds make their futures on it)."""
        self._loop = loop
        if self.clock.kind == "real":
            self._job_later = FifoTimers(loop).call_later
        self.logs.bind(loop)
        for ep in self.endpoints.values():
            if ep.fleet is not None:
                ep.fleet.begin()

    def running_jobs(self) -> list[str]:
        """``endpoint/job-id`` of every job a worker runs now (for the loop watchdog's warning)."""
        return [
            f"{ep.id}/{worker.job.id}"
            for ep in list(self.endpoints.values())
            for worker in list(ep.workers)
            if worker.job is not None
        ]

    def span(self, duration: float) -> float:
        """Clock seconds a RunPod duration (seconds) lasts: `time_scale` applies on a real clock."""
        return duration * self._scale

    def worker_lost_after(self) -> float:
        """Clock seconds of silence after which an external worker is lost."""
        lost = self.span(self.timings.worker_lost_after)
        return max(lost, _MIN_LOST_AFTER_REAL_S) if self.clock.kind == "real" else lost

    def _add_worker(self, ep: EndpointState) -> WorkerSlot:
        worker = WorkerSlot(ep)
        ep.workers.append(worker)
        ep.idle.append(worker)
        self.logs.system(ep.id, worker.id, "worker started: ready (no cold start)")
        return worker

    def _later(self, duration: float, callback: Any, *args: Any) -> TimerHandle:
        return self._job_later(duration * self._scale, callback, *args)  # type: ignore[no-any-return]

    def _clock_later(self, delay: float, callback: Any, *args: Any) -> TimerHandle:
        return self.clock.call_later(delay, callback, *args)

    # -- submission -----------------------------------------------------------------------------

    def submit(
        self,
        ep: EndpointState,
        job_input: Any,
        *,
        webhook: str | None = None,
        execution_timeout: float | None = None,
        ttl: float | None = None,
        low_priority: bool = False,
        s3_config: dict[str, str] | None = None,
        sync: bool = False,
        raw_body: bytes | None = None,
    ) -> JobRecord:
        """Queue a job; `execution_timeout` and `ttl` are RunPod seconds (None: the Timings default)."""
        job_id = new_job_id(sync)
        timings = self.timings
        job = JobRecord(
            job_id,
            ep,
            job_input,
            webhook=webhook,
            execution_timeout=(
                execution_timeout
                if execution_timeout is not None
                else ep.execution_timeout
                if ep.execution_timeout is not None
                else timings.default_execution_timeout
            ),
            ttl=timings.default_ttl if ttl is None else ttl,
            low_priority=low_priority,
            s3_config=s3_config,
            sync=sync,
            now=self.clock.now(),
        )
        job.raw_body = raw_body if raw_body is not None else encode_json({"input": job_input})
        ep.jobs[job_id] = job
        if ep.fleet is not None:
            ep.fleet.on_request()
        handler = ep.spec.handler
        # A replayed endpoint: the job waits in the queue as long as recorded. (`type(...) is`, not a
        # getattr: a missed getattr costs 150 ns per job, this half of it; timeit on the shared machine.)
        if type(handler) is ReplayHandler:
            self._enqueue(job, hold=handler.admit(job))
        else:
            self._enqueue(job)
        return job

    def submit_batch_request(self, ep: EndpointState, job_id: str, raw_body: bytes, batch: Any) -> JobRecord:
        """Queue one request of a finalized batch in the endpoint's batch lane, under its `req_` id."""
        timings = self.timings
        job = JobRecord(
            job_id,
            ep,
            None,  # re-read from raw_body when it runs: thousands of parsed inputs need not wait in memory
            webhook=None,
            execution_timeout=timings.default_execution_timeout,
            ttl=timings.default_ttl,
            low_priority=True,
            s3_config=None,
            sync=False,
            now=self.clock.now(),
        )
        job.raw_body = raw_body
        job.batch = batch
        ep.jobs[job_id] = job
        self._enqueue(job)
        return job

    def _enqueue(self, job: JobRecord, *, front: bool = False, hold: float = 0.0) -> None:
        """Queue `job`; with `hold` (RunPod seconds) it is IN_QUEUE at once but no worker may take it
        before then (a replayed job's recorded queue wait)."""
        ep = job.endpoint
        job.status = IN_QUEUE
        ep.in_queue += 1
        _cancel_timer(job, "ttl_handle")
        attempt = job.attempt
        # A job an idle worker starts at once needs no ttl timer when its executionTimeout ends the run
        # first and a finished job's ttl does not matter (Readings.finished_ttl "retention"): the timer
        # would only be made and cancelled (an idle endpoint's every job). Otherwise it starts now. A held
        # (replayed) job waits in the queue by design: it gets its timer now.
        later = (
            hold <= 0
            and job.policy_ttl > job.policy_execution_timeout
            and self.readings.finished_ttl == "retention"
        )
        if not later:
            job.ttl_handle = self._later(job.policy_ttl, self._ttl_expired, job, attempt)
        entry = RunRef(job, attempt)
        if hold > 0:
            self._later(hold, self._release_held, entry)
            return
        q = ep.batch_queue if job.batch is not None else ep.low_queue if job.low_priority else ep.queue
        if front:
            q.appendleft(entry)
        else:
            q.append(entry)
        if self._reports:
            self.clock.activity()
        self.dispatch(ep)
        if later and job.status is IN_QUEUE and job.attempt == attempt and job.ttl_handle is None:
            job.ttl_handle = self._later(job.policy_ttl, self._ttl_expired, job, attempt)

    def _release_held(self, entry: RunRef) -> None:
        job = entry[0]
        ep = job.endpoint
        if job.attempt != entry[1] or job.status is not IN_QUEUE or job.id not in ep.jobs:
            return  # cancelled, purged or expired while held
        (ep.low_queue if job.low_priority else ep.queue).append(entry)
        if self._reports:
            self.clock.activity()
        self.dispatch(ep)

    def dispatch(self, ep: EndpointState) -> None:
        """Hand queued jobs to idle in-process workers, then wake one external worker's held job-take."""
        while ep.idle and ep.in_queue:
            job = ep.next_queued()
            if job is None:
                break
            worker = ep.idle.popleft()
            self.start(job, worker)
            self._runner.start(job, worker, self)
        while ep.take_waiters and ep.in_queue:
            fut = ep.take_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        if ep.fleet is not None:
            ep.fleet.scale()

    def start(self, job: JobRecord, worker: WorkerSlot) -> None:
        """IN_QUEUE → IN_PROGRESS on `worker`."""
        ep = job.endpoint
        now = self.clock.now()
        ep.in_queue -= 1
        ep.in_progress += 1
        if self._reports:
            self.clock.work_started()
        job.status = IN_PROGRESS
        job.started_at = now
        job.delay_ms = int((now - job.queued_at) * 1000)
        job.worker = worker
        worker.job = job
        self.logs.system(ep.id, worker.id, f"job {job.id} started", job.id)
        if job.batch is not None:
            job.batch.in_progress += 1
        if ep.fleet is not None:
            ep.fleet.on_start(worker)
        job.timer_handle = self._job_later(
            job.policy_execution_timeout * self._scale, self._execution_timed_out, job, job.attempt
        )

    def _leave_progress(self, job: JobRecord) -> None:
        job.endpoint.in_progress -= 1
        if job.batch is not None:
            job.batch.in_progress -= 1
        job.stop_run = None
        if self._reports:
            self.clock.work_ended()

    # -- results --------------------------------------------------------------------------------

    def is_current(self, job: JobRecord, attempt: int) -> bool:
        """Whether ``attempt`` is still the job's running attempt (a stale worker's report is dropped)."""
        return job.attempt == attempt and job.status is IN_PROGRESS and job.id in job.endpoint.jobs

    def push_chunk(self, job: JobRecord, attempt: int, chunk_json: bytes) -> None:
        """Add one streamed chunk of the current attempt and wake ``/stream`` waiters."""
        if not self.is_current(job, attempt):
            return
        job.chunks.append(chunk_json)
        job.log_chunk(chunk_json)
        _wake(job, stream_only=True)

    def set_progress(self, job: JobRecord, attempt: int, output_json: bytes) -> None:
        """Record a progress update of the current attempt (shown as ``output`` while running)."""
        if self.is_current(job, attempt):
            job.progress_json = output_json

    def complete(
        self,
        job: JobRecord,
        attempt: int,
        *,
        output_json: bytes | None,
        error: str | None,
    ) -> bool:
        """A run ended with a result (COMPLETED) or an error (FAILED). False if the run was stale."""
        if job.attempt != attempt or job.status is not IN_PROGRESS or job.id not in job.endpoint.jobs:
            return False  # not `is_current`: one frame less per job
        if output_json is not None and len(output_json) > RESULT_LIMIT:
            self.drop_result(job, len(output_json))
            output_json = None
        job.output_json = output_json
        job.error = error
        self._finish(job, FAILED if error is not None else COMPLETED)
        return True

    def drop_result(self, job: JobRecord, size: int) -> None:
        """A result over RunPod's 20 MB is lost there (COMPLETED, no `output`); here too, but loudly."""
        job.warning = dropped_warning(job, size)
        self.notices.warn(job.warning, "result_dropped")

    def release_worker(self, worker: WorkerSlot, *, replace: bool = False) -> None:
        """A worker finished its run (or was abandoned): make it idle again, or replace it."""
        if worker.retired:
            return
        worker.job = None
        ep = worker.endpoint
        if ep.fleet is not None and not worker.external:
            if replace:
                ep.fleet.replace(worker)  # the scaler starts its successor, cold
            else:
                ep.fleet.on_release(worker)
            self.dispatch(ep)
            return
        if replace:
            self._retire(worker)
            if not worker.external:
                self._add_worker(ep)
        elif not worker.external:
            ep.idle.append(worker)
        self.dispatch(ep)

    def _retire(self, worker: WorkerSlot) -> None:
        worker.retired = True
        ep = worker.endpoint
        self.logs.end(ep.id, worker.id, "replaced")
        if worker in ep.workers:
            ep.workers.remove(worker)
        if worker in ep.idle:
            ep.idle.remove(worker)

    def _abandon_run(self, job: JobRecord) -> None:
        """Stop the run of an IN_PROGRESS job we are ending (cancel, timeout, ttl)."""
        stop, job.stop_run = job.stop_run, None
        if stop is not None:
            stop()
        worker = job.worker
        if worker is None or worker.external or worker.job is not job:
            # An external worker learns it through job-stop (its `stop_run`) and stays the same worker.
            return
        worker.job = None
        # The handler may not stop (a sync function cannot be interrupted): as RunPod replaces a worker
        # whose job timed out, the slot gets a fresh worker and the old thread's result is discarded.
        self.release_worker(worker, replace=True)

    def _finish(self, job: JobRecord, status: JobStatus) -> None:
        ep = job.endpoint
        previous = job.status
        now = self.clock.now()
        if previous is IN_QUEUE:
            ep.in_queue -= 1
        elif previous is IN_PROGRESS:
            self._leave_progress(job)
            if job.started_at is not None:
                job.execution_ms = int((now - job.started_at) * 1000)
            if job.worker is not None:
                self.logs.system(ep.id, job.worker.id, f"job {job.id} ended: {status.value}", job.id)
        job.status = status
        job.finished_at = now
        job.progress_json = None
        if status is COMPLETED:
            ep.completed += 1
        elif status is FAILED or status is JobStatus.TIMED_OUT:
            ep.failed += 1
        # Timers cancelled inline (not `_cancel_timer`): this runs once per job.
        handle = job.ttl_handle
        if handle is not None and self.readings.finished_ttl == "retention":
            handle.cancel()  # else the ttl still runs: it may end retention early
            job.ttl_handle = None
        handle = job.timer_handle
        if handle is not None:
            handle.cancel()
            job.timer_handle = None
        retention = self.timings.retention_sync if job.sync else self.timings.retention_run
        if job.retention_override is not None:
            retention = min(retention, job.retention_override)
        retention *= self._scale
        job.expires_at = now + retention
        job.retention_handle = self._job_later(retention, self._remove, job)
        cap = self._retain_cap
        if cap is not None:
            retained = self._retained
            retained[id(job)] = job
            if len(retained) > cap:
                self._retain(job, cap)
        if job.webhook is not None:
            # RunPod's delivery has no workerId (runpod-python issue 409 shows a real one).
            payload = job.status_dict()
            payload.pop("workerId", None)
            payload["input"] = orjson.Fragment(job.original_input_json())
            payload["webhook"] = job.webhook
            self._webhooks.send(job.id, job.webhook, encode_json(payload))
        if job.batch is not None:
            job.batch.request_ended(job)
        if job.waiters is not None or job.stream_waiters is not None:
            _wake(job)

    def _retain(self, job: JobRecord, cap: int) -> None:
        """Count `job` among the finished jobs kept; past `cap`, forget the oldest first (as RunPod
        forgets a result after its retention: it answers 404)."""
        retained = self._retained
        retained[id(job)] = job
        while len(retained) > cap:
            _, oldest = retained.popitem(last=False)
            self.forgotten += 1
            if self.forgotten == 1:
                self.notices.warn(
                    f"more than {cap} finished jobs retained: forgetting the oldest first, before their "
                    "retention ends (they answer 404, as after it). Raise Timings(max_retained_jobs=...) "
                    "(`rpq serve --max-retained-jobs`) if a client still needs them; warned once, "
                    "counted in Emulator.forgotten_jobs",
                    "jobs_forgotten",
                )
            self._remove(oldest)

    def _remove(self, job: JobRecord) -> None:
        self._retained.pop(id(job), None)
        ep = job.endpoint
        if ep.jobs.get(job.id) is job:
            del ep.jobs[job.id]
        handler = ep.spec.handler
        if type(handler) is ReplayHandler:
            handler.forget(job.id)  # a job cancelled or purged before it ran leaves no choice behind
        for name in ("ttl_handle", "timer_handle", "retention_handle"):
            _cancel_timer(job, name)
        _wake(job)

    # -- timers ---------------------------------------------------------------------------------

    def _ttl_expired(self, job: JobRecord, attempt: int) -> None:
        if job.attempt != attempt or job.id not in job.endpoint.jobs:
            return
        if job.status.is_terminal:
            self._remove(job)  # Readings.finished_ttl == "deleted"
        elif job.status is JobStatus.IN_QUEUE and self.readings.queued_ttl == "deleted":
            job.endpoint.in_queue -= 1
            job.status = JobStatus.CANCELLED
            self._remove(job)
            if job.batch is not None:
                job.batch.request_ended(job)
        elif job.status is JobStatus.IN_QUEUE:
            self._finish(job, JobStatus.TIMED_OUT)
        elif job.status is JobStatus.IN_PROGRESS:
            # Mid-run: the platform removes the job; status answers 404 from now on.
            self._abandon_run(job)
            self._leave_progress(job)
            job.status = JobStatus.CANCELLED
            self._remove(job)
            if job.batch is not None:
                job.batch.request_ended(job)

    def _execution_timed_out(self, job: JobRecord, attempt: int) -> None:
        if not self.is_current(job, attempt):
            return
        self._abandon_run(job)
        if self.readings.execution_timeout == "FAILED":
            job.error = f"job exceeded its executionTimeout ({job.policy_execution_timeout:g} s)"
            self._finish(job, JobStatus.FAILED)
        else:
            self._finish(job, JobStatus.TIMED_OUT)

    # -- operations -----------------------------------------------------------------------------

    def cancel(self, job: JobRecord) -> str | None:
        """Cancel; returns an error message when the job's state does not allow it."""
        if job.status is JobStatus.IN_QUEUE:
            self._finish(job, JobStatus.CANCELLED)
            return None
        if job.status is JobStatus.IN_PROGRESS:
            self._abandon_run(job)
            self._finish(job, JobStatus.CANCELLED)
            return None
        return (
            f"job {job.id} is already {job.status.value}; only IN_QUEUE or IN_PROGRESS jobs can be cancelled"
        )

    def retry(self, job: JobRecord) -> str | None:
        """Requeue a FAILED or TIMED_OUT job under the same id, its old result removed."""
        if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            return f"job {job.id} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried"
        _cancel_timer(job, "retention_handle")
        self._retained.pop(id(job), None)  # running again: no longer a finished job kept
        job.archive_attempt(self.clock.now(), "retry")
        job.attempt += 1
        job.output_json = None
        job.progress_json = None
        job.error = None
        job.chunks.clear()
        job.worker = None
        job.started_at = job.finished_at = job.expires_at = None
        job.delay_ms = job.execution_ms = None
        job.queued_at = self.clock.now()
        self._enqueue(job)
        return None

    def requeue_lost(self, job: JobRecord) -> None:
        """A worker vanished holding this job: requeue it once, then fail it, as the platform does."""
        if job.status is not JobStatus.IN_PROGRESS:
            return
        ep = job.endpoint
        if job.retries >= 1:
            job.error = "job timed out after 1 retries"
            self._finish(job, JobStatus.FAILED)
            return
        job.archive_attempt(self.clock.now(), "worker lost: requeued")
        self._leave_progress(job)
        _cancel_timer(job, "timer_handle")
        _cancel_timer(job, "ttl_handle")
        job.retries += 1
        ep.retried += 1
        job.attempt += 1
        job.worker = None
        job.started_at = None
        job.delay_ms = None
        job.progress_json = None
        job.chunks.clear()
        self._enqueue(job, front=True)

    def purge(self, ep: EndpointState) -> int:
        """Remove every IN_QUEUE job (they answer 404 afterwards); running jobs are untouched."""
        removed = 0
        for q in (ep.queue, ep.low_queue):  # Batch Jobs requests belong to their batch: cancel it instead
            while q:
                job, attempt = q.popleft()
                if job.attempt == attempt and job.status is JobStatus.IN_QUEUE and job.id in ep.jobs:
                    ep.in_queue -= 1
                    job.status = JobStatus.CANCELLED
                    self._remove(job)
                    removed += 1
        if type(ep.spec.handler) is ReplayHandler:  # replayed jobs still held in the queue
            for job in [j for j in ep.jobs.values() if j.status is JobStatus.IN_QUEUE and j.batch is None]:
                ep.in_queue -= 1
                job.status = JobStatus.CANCELLED
                self._remove(job)
                removed += 1
        return removed

    def status_ttl(self, job: JobRecord, ttl: float) -> None:
        """`/status?ttl=` (RunPod seconds), read as `Readings.status_ttl` says."""
        if self.readings.status_ttl == "retention":
            self.shorten_retention(job, ttl)
        elif job.status.is_terminal:
            # The job's ttl is now `ttl` from now: a finished job is kept exactly that long.
            _cancel_timer(job, "retention_handle")
            job.expires_at = self.clock.now() + self.span(ttl)
            job.retention_handle = self._later(ttl, self._remove, job)
        else:
            _cancel_timer(job, "ttl_handle")
            job.ttl_handle = self._later(ttl, self._ttl_expired, job, job.attempt)

    def shorten_retention(self, job: JobRecord, ttl: float) -> None:
        """`/status?ttl=`: keep the result at most `ttl` RunPod seconds from now (never longer)."""
        if job.status.is_terminal:
            new_expiry = self.clock.now() + self.span(ttl)
            if job.expires_at is None or new_expiry < job.expires_at:
                _cancel_timer(job, "retention_handle")
                job.expires_at = new_expiry
                job.retention_handle = self._later(ttl, self._remove, job)
        elif job.retention_override is None or ttl < job.retention_override:
            job.retention_override = ttl

    def health(self, ep: EndpointState) -> dict[str, Any]:
        """The ``/health`` answer for one endpoint: job counts and worker states."""
        now = self.clock.now()
        lost_after = self.worker_lost_after()
        idle = running = unhealthy = initializing = throttled = 0
        if ep.fleet is not None:
            counts = ep.fleet.counts()
            idle, running = counts[WorkerState.IDLE], counts[WorkerState.RUNNING]
            initializing, throttled = counts[WorkerState.INITIALIZING], counts[WorkerState.THROTTLED]
            unhealthy = counts[WorkerState.UNHEALTHY]
        for worker in ep.workers:
            if ep.fleet is not None and not worker.external:
                continue  # counted by the fleet
            if worker.external and (worker.unhealthy is not None or now - worker.last_seen >= lost_after):
                unhealthy += 1
            elif worker.job is not None:
                running += 1
            else:
                idle += 1
        return {
            "jobs": {
                "completed": ep.completed,
                "failed": ep.failed,
                "inProgress": ep.in_progress,
                "inQueue": ep.in_queue,
                "retried": ep.retried,
            },
            "workers": {
                "idle": idle,
                "initializing": initializing,
                "ready": idle,
                "running": running,
                "throttled": throttled,
                "unhealthy": unhealthy,
            },
        }

    # -- waiting --------------------------------------------------------------------------------

    async def wait_terminal(self, job: JobRecord, wait: float) -> None:
        """Return when the job is terminal or removed, or after `wait` RunPod seconds (a client's hold)."""
        if job.status in TERMINAL or job.id not in job.endpoint.jobs or wait <= 0:
            return
        await self._park(job, "waiters", wait)

    async def wait_stream(self, job: JobRecord, wait: float) -> None:
        """Return when the job has unread chunks, ends, is removed, or after `wait` RunPod seconds."""
        if job.chunks or job.status.is_terminal or job.id not in job.endpoint.jobs or wait <= 0:
            return
        await self._park(job, "stream_waiters", wait)

    async def _park(self, job: JobRecord, attr: str, wait: float) -> None:
        # The bound loop, not get_running_loop(): that one makes a getpid() syscall on every call.
        fut: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        waiters = getattr(job, attr)
        if waiters is None:
            waiters = []
            setattr(job, attr, waiters)
        waiters.append(fut)
        handle = self._job_later(wait * self._scale, _resolve, fut)
        clock = self.clock if self._reports else None
        if clock is not None:
            clock.hold_started()
        try:
            await fut
        finally:
            if clock is not None:
                clock.hold_ended()
            handle.cancel()
            if not fut.done():
                fut.cancel()
            current = getattr(job, attr)
            if current is not None and fut in current:
                current.remove(fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake(job: JobRecord, *, stream_only: bool = False) -> None:
    attrs = ("stream_waiters",) if stream_only else ("waiters", "stream_waiters")
    for attr in attrs:
        waiters = getattr(job, attr)
        if waiters:
            setattr(job, attr, None)
            for fut in waiters:
                _resolve(fut)


def _cancel_timer(job: JobRecord, attr: str) -> None:
    handle = getattr(job, attr)
    if handle is not None:
        handle.cancel()
        setattr(job, attr, None)
