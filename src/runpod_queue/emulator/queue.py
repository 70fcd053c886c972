"""Jobs and their state machine: queue order, ttl, executionTimeout, retention, cancel, retry, purge.

Everything here runs on the server's event loop (one thread), so no locks: handler threads report back
through `loop.call_soon_threadsafe`. Time comes from one `Clock`; every RunPod duration goes through
`Clock.seconds`, which applies `time_scale`.

A run of a job is identified by `(job, attempt)`: retry and requeue bump `attempt`, so a late result
from an abandoned run (a sync handler that could not be interrupted, a lost external worker) is dropped
instead of overwriting the new run.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import string
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._config import Clock, EndpointSpec, Timings

__all__ = ["Core", "EndpointState", "JobRecord", "WorkerSlot", "encode_json"]

_JSON_OPTS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_WORKER_ALPHABET: Final = string.ascii_lowercase + string.digits


def encode_json(value: Any) -> bytes:
    """JSON as the official worker's `json.dumps` would accept it (non-str keys become strings)."""
    return orjson.dumps(value, option=_JSON_OPTS)


_ids = random.Random()


def new_job_id(sync: bool) -> str:
    """A UUID4-shaped id with RunPod's `-u1` suffix (`sync-` prefix for runsync).

    From a seeded PRNG, not `uuid.uuid4()`: its os.urandom syscall drops the GIL on every job, which
    measurably slows the server loop when handler threads are waiting for it. Ids need only be unique.
    """
    h = f"{_ids.getrandbits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{'sync-' if sync else ''}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}-u1"


_UUID4_MASK: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS: Final = (0x4000 << 64) | (0x8000 << 48)


def new_worker_id() -> str:
    # RunPod worker ids are 14 lowercase alphanumerics.
    return "".join(secrets.choice(_WORKER_ALPHABET) for _ in range(14))


class WorkerSlot:
    """One worker of an endpoint. In-process workers run handlers; external ones are HTTP processes."""

    __slots__ = ("endpoint", "external", "id", "job", "last_seen", "retired", "run_cancel")

    def __init__(self, endpoint: EndpointState, *, external: bool = False, worker_id: str | None = None):
        self.endpoint = endpoint
        self.id = worker_id or new_worker_id()
        self.external = external
        self.job: JobRecord | None = None
        self.retired = False
        # Called to stop the running handler (cancel, timeout, ttl); set by whoever runs it.
        self.run_cancel: Callable[[], object] | None = None
        self.last_seen = 0.0


class JobRecord:
    """One job as the queue holds it."""

    __slots__ = (
        "attempt",
        "chunks",
        "delay_ms",
        "endpoint",
        "error",
        "execution_ms",
        "expires_at",
        "finished_at",
        "id",
        "input",
        "low_priority",
        "output_json",
        "policy_execution_timeout_ms",
        "policy_ttl_ms",
        "progress_json",
        "queued_at",
        "raw_body",
        "retention_handle",
        "retention_override_ms",
        "retries",
        "s3_config",
        "started_at",
        "status",
        "stream_waiters",
        "sync",
        "timer_handle",
        "ttl_handle",
        "waiters",
        "webhook",
        "worker",
    )

    def __init__(
        self,
        job_id: str,
        endpoint: EndpointState,
        job_input: Any,
        *,
        webhook: str | None,
        execution_timeout_ms: float,
        ttl_ms: float,
        low_priority: bool,
        s3_config: dict[str, str] | None,
        sync: bool,
        now: float,
    ) -> None:
        self.id = job_id
        self.endpoint = endpoint
        self.input = job_input
        # The request body as received: the original input is re-read from it for a retry or a
        # webhook, since a handler may have mutated `input` in place.
        self.raw_body: bytes | None = None
        self.webhook = webhook
        self.policy_execution_timeout_ms = execution_timeout_ms
        self.policy_ttl_ms = ttl_ms
        self.low_priority = low_priority
        self.s3_config = s3_config
        self.sync = sync
        self.status = JobStatus.IN_QUEUE
        self.attempt = 0
        self.queued_at = now
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.delay_ms: int | None = None
        self.execution_ms: int | None = None
        self.worker: WorkerSlot | None = None
        self.retries = 0
        self.output_json: bytes | None = None
        self.progress_json: bytes | None = None
        self.error: str | None = None
        self.chunks: list[bytes] = []
        self.waiters: list[asyncio.Future[None]] | None = None
        self.stream_waiters: list[asyncio.Future[None]] | None = None
        self.ttl_handle: asyncio.TimerHandle | None = None
        self.timer_handle: asyncio.TimerHandle | None = None
        self.retention_handle: asyncio.TimerHandle | None = None
        self.retention_override_ms: float | None = None
        self.expires_at: float | None = None

    # -- answers ---------------------------------------------------------------------------------

    def status_dict(self) -> dict[str, Any]:
        """The job as GET /status shows it; `output` is embedded pre-encoded."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.delay_ms is not None:
            body["delayTime"] = self.delay_ms
        if self.execution_ms is not None:
            body["executionTime"] = self.execution_ms
        if self.output_json is not None:
            body["output"] = orjson.Fragment(self.output_json)
        elif self.progress_json is not None and self.status is JobStatus.IN_PROGRESS:
            body["output"] = orjson.Fragment(self.progress_json)
        if self.error is not None:
            body["error"] = self.error
        if self.worker is not None:
            body["workerId"] = self.worker.id
        if self.retries:
            body["retries"] = self.retries
        return body

    def original_input(self) -> Any:
        assert self.raw_body is not None
        return orjson.loads(self.raw_body)["input"]

    def original_input_json(self) -> bytes:
        return encode_json(self.original_input())

    def handler_job(self) -> dict[str, Any]:
        """The `job` dict a handler receives: a fresh copy of the input for every run."""
        if self.attempt == 0 and self.input is not None:
            # First run: hand over the parsed input itself; later runs re-read the original.
            data, self.input = self.input, None
        else:
            data = self.original_input()
        job: dict[str, Any] = {"id": self.id, "input": data}
        if self.webhook is not None:
            job["webhook"] = self.webhook
        if self.s3_config is not None:
            job["s3Config"] = dict(self.s3_config)
        return job


class EndpointState:
    """One endpoint: its queue, its workers, its jobs and its health counters."""

    def __init__(self, endpoint_id: str, spec: EndpointSpec, workers: int) -> None:
        self.id = endpoint_id
        self.spec = spec
        self.jobs: dict[str, JobRecord] = {}
        self.queue: deque[tuple[JobRecord, int]] = deque()
        self.low_queue: deque[tuple[JobRecord, int]] = deque()
        self.workers: list[WorkerSlot] = []
        self.idle: deque[WorkerSlot] = deque()
        self.in_process_workers = workers if spec.handler is not None else 0
        self.in_queue = 0
        self.in_progress = 0
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.replaced_workers = 0
        # External-worker long-polls waiting for a job (issue 5 fills these).
        self.take_waiters: deque[asyncio.Future[None]] = deque()

    def next_queued(self) -> JobRecord | None:
        """Pop the next runnable job: normal priority first, then lowPriority; stale entries skipped."""
        for q in (self.queue, self.low_queue):
            while q:
                job, attempt = q.popleft()
                if job.attempt == attempt and job.status is JobStatus.IN_QUEUE and job.id in self.jobs:
                    return job
        return None


class Core:
    """The queue logic of every endpoint of one emulator."""

    def __init__(
        self,
        endpoints: dict[str, EndpointSpec],
        *,
        default_workers: int,
        clock: Clock,
        timings: Timings,
    ) -> None:
        self.clock = clock
        self.timings = timings
        self.endpoints: dict[str, EndpointState] = {
            eid: EndpointState(eid, spec, default_workers if spec.workers is None else spec.workers)
            for eid, spec in endpoints.items()
        }
        self.loop: asyncio.AbstractEventLoop | None = None
        # Set by the runner module: starts a handler run for (job, worker) on an in-process worker.
        self.start_in_process: Callable[[JobRecord, WorkerSlot], None] | None = None
        # Set by the delivery module: called with (job, payload) on every terminal state with a webhook.
        self.on_webhook: Callable[[JobRecord, bytes], None] | None = None
        # Called after a job is taken by an external worker / when external waiters must be woken.
        self.on_terminal_hooks: list[Callable[[JobRecord], None]] = []
        # The official worker pings at most once a second: a shorter silence must not mark an external
        # worker lost (or unhealthy), whatever the time scale. Tests that play the worker may lower it.
        self.min_worker_lost_after_s = 2.5

    def worker_lost_after_s(self) -> float:
        """Real seconds of silence after which an external worker is lost (scaled, with a floor)."""
        return max(self.clock.seconds(self.timings.worker_lost_after_ms), self.min_worker_lost_after_s)

    # -- lifecycle ------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's loop and create the in-process workers (first request or startup)."""
        if self.loop is loop:
            return
        self.loop = loop
        for ep in self.endpoints.values():
            if not ep.workers:
                for _ in range(ep.in_process_workers):
                    self._add_worker(ep)

    def _add_worker(self, ep: EndpointState) -> WorkerSlot:
        worker = WorkerSlot(ep)
        ep.workers.append(worker)
        ep.idle.append(worker)
        return worker

    def _later(self, duration_ms: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        assert self.loop is not None
        return self.loop.call_later(self.clock.seconds(duration_ms), callback, *args)

    # -- submission -----------------------------------------------------------------------------

    def submit(
        self,
        ep: EndpointState,
        job_input: Any,
        *,
        webhook: str | None = None,
        execution_timeout_ms: float | None = None,
        ttl_ms: float | None = None,
        low_priority: bool = False,
        s3_config: dict[str, str] | None = None,
        sync: bool = False,
        raw_body: bytes | None = None,
    ) -> JobRecord:
        job_id = new_job_id(sync)
        job = JobRecord(
            job_id,
            ep,
            job_input,
            webhook=webhook,
            execution_timeout_ms=(
                self.timings.default_execution_timeout_ms
                if execution_timeout_ms is None
                else execution_timeout_ms
            ),
            ttl_ms=self.timings.default_ttl_ms if ttl_ms is None else ttl_ms,
            low_priority=low_priority,
            s3_config=s3_config,
            sync=sync,
            now=self.clock.now(),
        )
        job.raw_body = raw_body if raw_body is not None else encode_json({"input": job_input})
        ep.jobs[job_id] = job
        self._enqueue(job)
        return job

    def _enqueue(self, job: JobRecord, *, front: bool = False) -> None:
        ep = job.endpoint
        job.status = JobStatus.IN_QUEUE
        ep.in_queue += 1
        job.ttl_handle = self._later(job.policy_ttl_ms, self._ttl_expired, job, job.attempt)
        entry = (job, job.attempt)
        q = ep.low_queue if job.low_priority else ep.queue
        if front:
            q.appendleft(entry)
        else:
            q.append(entry)
        self.dispatch(ep)

    def dispatch(self, ep: EndpointState) -> None:
        """Hand queued jobs to idle in-process workers and wake external workers' long-polls."""
        while ep.idle and (ep.queue or ep.low_queue):
            job = ep.next_queued()
            if job is None:
                break
            worker = ep.idle.popleft()
            self.start(job, worker)
            assert self.start_in_process is not None
            self.start_in_process(job, worker)
        while ep.take_waiters and ep.in_queue:
            fut = ep.take_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def start(self, job: JobRecord, worker: WorkerSlot) -> None:
        """IN_QUEUE → IN_PROGRESS on `worker`."""
        ep = job.endpoint
        now = self.clock.now()
        ep.in_queue -= 1
        ep.in_progress += 1
        job.status = JobStatus.IN_PROGRESS
        job.started_at = now
        job.delay_ms = int((now - job.queued_at) * 1000)
        job.worker = worker
        worker.job = job
        job.timer_handle = self._later(
            job.policy_execution_timeout_ms, self._execution_timed_out, job, job.attempt
        )

    # -- results --------------------------------------------------------------------------------

    def is_current(self, job: JobRecord, attempt: int) -> bool:
        return job.attempt == attempt and job.status is JobStatus.IN_PROGRESS and job.id in job.endpoint.jobs

    def push_chunk(self, job: JobRecord, attempt: int, chunk_json: bytes) -> None:
        if not self.is_current(job, attempt):
            return
        job.chunks.append(chunk_json)
        _wake(job, stream_only=True)

    def set_progress(self, job: JobRecord, attempt: int, output_json: bytes) -> None:
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
        if not self.is_current(job, attempt):
            return False
        job.output_json = output_json
        job.error = error
        self._finish(job, JobStatus.FAILED if error is not None else JobStatus.COMPLETED)
        return True

    def release_worker(self, worker: WorkerSlot, *, replace: bool = False) -> None:
        """A worker finished its run (or was abandoned): make it idle again, or replace it."""
        if worker.retired:
            return
        worker.job = None
        worker.run_cancel = None
        ep = worker.endpoint
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
        if worker in ep.workers:
            ep.workers.remove(worker)
        if worker in ep.idle:
            ep.idle.remove(worker)
        ep.replaced_workers += 1

    def _abandon_run(self, job: JobRecord) -> None:
        """Stop the handler of an IN_PROGRESS job we are ending (cancel, timeout, ttl)."""
        worker = job.worker
        if worker is None or worker.job is not job:
            return
        cancel = worker.run_cancel
        worker.job = None
        if worker.external:
            # The external worker learns it through job-stop; it stays the same worker.
            if cancel is not None:
                cancel()
            return
        if cancel is not None:
            cancel()
        # The handler may not stop (a sync function cannot be interrupted): as RunPod replaces a worker
        # whose job timed out, the slot gets a fresh worker and the old thread's result is discarded.
        self.release_worker(worker, replace=True)

    def _finish(self, job: JobRecord, status: JobStatus) -> None:
        ep = job.endpoint
        previous = job.status
        now = self.clock.now()
        if previous is JobStatus.IN_QUEUE:
            ep.in_queue -= 1
        elif previous is JobStatus.IN_PROGRESS:
            ep.in_progress -= 1
            if job.started_at is not None:
                job.execution_ms = int((now - job.started_at) * 1000)
        job.status = status
        job.finished_at = now
        job.progress_json = None
        if status is JobStatus.COMPLETED:
            ep.completed += 1
        elif status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            ep.failed += 1
        _cancel_timer(job, "ttl_handle")
        _cancel_timer(job, "timer_handle")
        retention = self.timings.retention_sync_ms if job.sync else self.timings.retention_run_ms
        if job.retention_override_ms is not None:
            retention = min(retention, job.retention_override_ms)
        job.expires_at = now + self.clock.seconds(retention)
        job.retention_handle = self._later(retention, self._remove, job)
        if job.webhook is not None and self.on_webhook is not None:
            payload = job.status_dict()
            payload["input"] = orjson.Fragment(job.original_input_json())
            payload["webhook"] = job.webhook
            self.on_webhook(job, encode_json(payload))
        for hook in self.on_terminal_hooks:
            hook(job)
        _wake(job)

    def _remove(self, job: JobRecord) -> None:
        ep = job.endpoint
        if ep.jobs.get(job.id) is job:
            del ep.jobs[job.id]
        for name in ("ttl_handle", "timer_handle", "retention_handle"):
            _cancel_timer(job, name)
        _wake(job)

    # -- timers ---------------------------------------------------------------------------------

    def _ttl_expired(self, job: JobRecord, attempt: int) -> None:
        if job.attempt != attempt or job.id not in job.endpoint.jobs:
            return
        if job.status is JobStatus.IN_QUEUE:
            self._finish(job, JobStatus.TIMED_OUT)
        elif job.status is JobStatus.IN_PROGRESS:
            # Mid-run: the platform removes the job; status answers 404 from now on.
            job.endpoint.in_progress -= 1
            job.status = JobStatus.CANCELLED
            self._abandon_run(job)
            self._remove(job)

    def _execution_timed_out(self, job: JobRecord, attempt: int) -> None:
        if not self.is_current(job, attempt):
            return
        self._abandon_run(job)
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
        ep.in_progress -= 1
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
        for q in (ep.queue, ep.low_queue):
            while q:
                job, attempt = q.popleft()
                if job.attempt == attempt and job.status is JobStatus.IN_QUEUE and job.id in ep.jobs:
                    ep.in_queue -= 1
                    job.status = JobStatus.CANCELLED
                    self._remove(job)
                    removed += 1
        return removed

    def shorten_retention(self, job: JobRecord, ttl_ms: float) -> None:
        """`/status?ttl=MS`: keep the result at most `ttl_ms` from now."""
        if job.status.is_terminal:
            new_expiry = self.clock.now() + self.clock.seconds(ttl_ms)
            if job.expires_at is None or new_expiry < job.expires_at:
                _cancel_timer(job, "retention_handle")
                job.expires_at = new_expiry
                job.retention_handle = self._later(ttl_ms, self._remove, job)
        elif job.retention_override_ms is None or ttl_ms < job.retention_override_ms:
            job.retention_override_ms = ttl_ms

    def health(self, ep: EndpointState) -> dict[str, Any]:
        now = self.clock.now()
        lost_after = self.worker_lost_after_s()
        idle = running = unhealthy = 0
        for worker in ep.workers:
            if worker.external and now - worker.last_seen > lost_after:
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
                "initializing": 0,
                "ready": idle,
                "running": running,
                "throttled": 0,
                "unhealthy": unhealthy,
            },
        }

    # -- waiting --------------------------------------------------------------------------------

    async def wait_terminal(self, job: JobRecord, timeout_s: float) -> None:
        """Return when the job is terminal or removed, or after `timeout_s` (real seconds)."""
        if job.status.is_terminal or job.id not in job.endpoint.jobs or timeout_s <= 0:
            return
        await self._park(job, "waiters", timeout_s)

    async def wait_stream(self, job: JobRecord, timeout_s: float) -> None:
        """Return when the job has unread chunks, ends, is removed, or after `timeout_s`."""
        if job.chunks or job.status.is_terminal or job.id not in job.endpoint.jobs or timeout_s <= 0:
            return
        await self._park(job, "stream_waiters", timeout_s)

    async def _park(self, job: JobRecord, attr: str, timeout_s: float) -> None:
        assert self.loop is not None
        fut: asyncio.Future[None] = self.loop.create_future()
        waiters = getattr(job, attr)
        if waiters is None:
            waiters = []
            setattr(job, attr, waiters)
        waiters.append(fut)
        handle = self.loop.call_later(timeout_s, _resolve, fut)
        try:
            await fut
        finally:
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
