"""The worker side of the queue: unmodified `runpod.serverless.start` workers talk to the emulator over HTTP.

An official worker polls `job-take` (or `job-take-batch` when its concurrency is above one), posts
chunks to `job-stream` and results, progress and errors to `job-done`, long-polls `job-stop` for
cancellations and pings every `RUNPOD_PING_INTERVAL`. Each route here turns those calls into the same
`Core` transitions an in-process handler run goes through, so queue order, cancel, executionTimeout,
ttl, retention and webhooks apply unchanged.

A worker is known by the id in its URLs (`RUNPOD_POD_ID`) and exists from its first request. It is
lost when it has been silent (no request of any kind, no poll held open) for `Core.worker_lost_after()`
(`Timings.worker_lost_after` on the emulator's clock; on a real clock scaled, never under 2.5 s: the
official worker cannot ping more often than once a second). Its jobs are then requeued once, and failed
the second time (`Core.requeue_lost`). Sweeps are clock timers set for the moment the next worker could
fall silent, so a virtual clock finds a lost worker exactly when `advance()` passes that moment.

Holds run on the emulator's clock too, with a real-time cap of 60 s on top: the official worker gives up
on a poll after 90 s, whatever the clock says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from runpod_queue._contract import STREAM_CHUNK_LIMIT, JobStatus
from runpod_queue.emulator._http import EndpointRequest, HTTPError, Route
from runpod_queue.emulator._jobs import (
    EndpointState,
    JobRecord,
    RunRef,
    WorkerSlot,
    decode_json,
    encode_json,
)
from runpod_queue.emulator._oversize import RESULT_LIMIT, is_progress, progress_warning, refusal

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import Clock, TimerHandle
    from runpod_queue.emulator._core import Core

__all__ = ["ExternalWorkers", "FitnessFailure", "worker_environment"]

log = logging.getLogger("runpod_queue.emulator")

_MAX_BATCH: Final = 64
# Fitness failures remembered (a crash loop reports one per restart: enough to see it, bounded).
_FITNESS_FAILURES_KEPT: Final = 1000
# Real seconds: the official worker abandons a job-take or job-stop poll after 90 s.
_MAX_HOLD_S: Final = 60.0
_FIRST: Final = asyncio.FIRST_COMPLETED
# Read past RunPod's 20 MB result limit (RESULT_LIMIT) so an oversized result is identified and its job
# ended as RunPod ends it; beyond this the body is refused unread.
_DONE_LIMIT: Final = 100_000_000
_STREAM_READ_LIMIT: Final = 25_000_000  # a chunk over 1 MB fails the job; past this it is refused unread


def worker_environment(
    root_url: str,
    endpoint_id: str,
    *,
    worker_id: str,
    api_key: str | None = None,
    ping_interval: float = 1.0,
) -> dict[str, str]:
    """The environment an unmodified official worker needs to serve `endpoint_id` on this emulator.

    `root_url` is the server's address without `/v2`. The URL templates keep RunPod's `$ID` and
    `$RUNPOD_POD_ID` placeholders (the worker fills them in) and already carry a `?` query, since the
    worker appends `&job_in_progress=…` / `&isStream=…`. The start-up fitness checks are switched off:
    one of them dials 8.8.8.8 and kills the worker when offline. `ping_interval` is seconds (the variable
    the worker reads is ms); it sleeps whole seconds, so anything under 1 s would make it ping in a busy
    loop and is raised to 1 s.
    """
    base = f"{root_url.rstrip('/')}/v2/{endpoint_id}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=emulator",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=emulator",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=emulator",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID",
        "RUNPOD_PING_INTERVAL": str(max(1000, round(ping_interval * 1000))),
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        # Pings start only when a key is set; the emulator ignores its value when it accepts any key.
        "RUNPOD_AI_API_KEY": api_key or "emulator",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
    }


@dataclass(frozen=True, slots=True)
class FitnessFailure:
    """A worker's report that a start-up fitness check failed (it exits right after).

    Args:
        endpoint_id: The endpoint the worker serves.
        worker_id: The worker's id (a restarted worker keeps its id, so a crash loop repeats it).
        at: Clock seconds when the report arrived.
        check: The failing check's name, as the worker sent it.
        reason: The worker's reason (``"ErrorType: message"``, at most 256 characters).
    """

    endpoint_id: str
    worker_id: str
    at: float
    check: str
    reason: str


class _Worker:
    """What the emulator knows of one external worker beyond its `WorkerSlot`."""

    __slots__ = ("held", "lost", "pending_stop", "polls", "slot", "stop_waiters", "stops")

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        # job id → (job, attempt) for every job this worker took and has not finished.
        self.held: dict[str, RunRef] = {}
        # Job ids the worker must stop (cancelled, timed out, expired), handed out by job-stop.
        self.stops: list[str] = []
        self.stop_waiters: list[asyncio.Future[None]] = []
        # Stops sent whose job the worker may still be running: re-sent while its pings list the job.
        self.pending_stop: set[str] = set()
        # Long-polls held open right now: a worker waiting on us is not silent.
        self.polls = 0
        self.lost = False

    def sync_slot(self) -> None:
        """Keep `slot.job` (what health and the rate limiter read) pointing at a job still held."""
        slot = self.slot
        slot.job = next(iter(self.held.values())).job if self.held else None

    def signal_stop(self, job_id: str) -> None:
        self.pending_stop.add(job_id)
        if job_id not in self.stops:
            self.stops.append(job_id)
        waiters, self.stop_waiters = self.stop_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class ExternalWorkers:
    """Serves the worker protocol (`routes`) over a `Core` and watches its external workers' liveness."""

    def __init__(self, core: Core) -> None:
        self.core: Core = core
        self.clock: Clock = core.clock
        self.workers: dict[tuple[str, str], _Worker] = {}
        self._sweeper: TimerHandle | None = None
        self._sweep_at: float | None = None
        # Resolved when the server begins a graceful stop: held polls answer at once (no job) instead
        # of outliving the shutdown grace and being cancelled with a 500.
        self._closing: asyncio.Future[None] | None = None
        # Every failed fitness check a worker reported (`ping?status=unhealthy`), oldest first.
        self.fitness_failures: list[FitnessFailure] = []
        # Called (on the server loop) with (endpoint id, worker id) when a worker asks for stopPod: a
        # process manager (`rpq serve --runpod-worker`) listens to replace the process.
        self.on_stop_pod: list[Callable[[str, str], None]] = []
        #: operation → route, served under /v2/<endpoint>/<operation>/… (never rate-limited or faulted).
        self.routes: dict[str, Route] = {
            "job-take": self.job_take,
            "job-take-batch": self.job_take_batch,
            "job-done": self.job_done,
            "job-stream": self.job_stream,
            "job-stop": self.job_stop,
            "ping": self.ping,
        }

    # -- bookkeeping ----------------------------------------------------------------------------

    def _hold(self) -> float:
        """Clock seconds an empty job-take / job-stop poll is held (the real 60 s cap applies on top)."""
        return self.core.span(self.core.timings.job_take_hold)

    def _touch(self, request: EndpointRequest, *, index: int = 0) -> _Worker:
        """The worker named in the path (registered on first sight), marked as alive now."""
        if len(request.rest) <= index or not request.rest[index]:
            raise HTTPError(404, "worker routes need the worker id in the path: …/<operation>/<worker_id>")
        ep = request.endpoint
        worker_id = request.rest[index]
        key = (ep.id, worker_id)
        worker = self.workers.get(key)
        if worker is None:
            worker = self.workers[key] = _Worker(self._new_slot(ep, worker_id))
        elif worker.slot.retired and not self.on_stop_pod:
            # It asked for stopPod and nobody manages its process: the platform would start a fresh
            # worker; here the same process carries on, so it comes back as a new worker under its old
            # id. (When a process manager listens, it replaces the process; until then no jobs.)
            worker.slot = self._new_slot(ep, worker_id)
            worker.sync_slot()
        self._seen(worker)
        if worker.lost:
            worker.lost = False
            worker.slot.unhealthy = None  # restarted (its process manager, or the platform, did)
            if worker.slot not in ep.workers and not worker.slot.retired:
                ep.workers.append(worker.slot)
        return worker

    def _seen(self, worker: _Worker) -> None:
        now = self.clock.now()
        worker.slot.last_seen = now
        self._sweep_by(now + self.core.worker_lost_after())

    def _new_slot(self, ep: EndpointState, worker_id: str) -> WorkerSlot:
        slot = WorkerSlot(ep, external=True, worker_id=worker_id)
        slot.last_seen = self.clock.now()
        ep.workers.append(slot)
        self.core.logs.system(ep.id, worker_id, "worker connected (external)")
        return slot

    def _stopper(self, worker: _Worker, job: JobRecord) -> Callable[[], None]:
        """`JobRecord.stop_run` for a job this worker took: the queue ended it (cancel, timeout, ttl)."""

        def stop() -> None:
            if worker.held.pop(job.id, None) is not None:
                worker.sync_slot()
                worker.signal_stop(job.id)

        return stop

    # -- liveness -------------------------------------------------------------------------------

    def _sweep_by(self, due: float) -> None:
        """Make sure a sweep runs no later than `due` (clock seconds)."""
        if self._sweep_at is not None and self._sweep_at <= due:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = due
        self._sweeper = self.clock.call_later(max(0.0, due - self.clock.now()), self._sweep)

    def _sweep(self) -> None:
        """Requeue the jobs of workers gone silent; forget workers lost long ago; plan the next sweep."""
        self._sweeper = self._sweep_at = None
        now = self.clock.now()
        lost_after = self.core.worker_lost_after()
        next_due: float | None = None
        for worker in list(self.workers.values()):
            for job_id, (job, attempt) in list(worker.held.items()):
                if not self.core.is_current(job, attempt):
                    # The run was superseded without its stop reaching us: tell the worker anyway.
                    del worker.held[job_id]
                    worker.signal_stop(job_id)
            if worker.polls:
                worker.slot.last_seen = now  # waiting on us is a sign of life; its end is another
                continue
            silent = now - worker.slot.last_seen
            if not worker.lost:
                if silent >= lost_after:
                    self._lose(worker)
                    due = worker.slot.last_seen + 2 * lost_after
                else:
                    worker.sync_slot()
                    due = worker.slot.last_seen + lost_after
            elif silent >= 2 * lost_after:
                # Shown as unhealthy for a while, then forgotten, as the platform drops dead workers.
                ep = worker.slot.endpoint
                if worker.slot in ep.workers:
                    ep.workers.remove(worker.slot)
                del self.workers[(ep.id, worker.slot.id)]
                continue
            else:
                due = worker.slot.last_seen + 2 * lost_after
            next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._sweep_by(next_due)

    def _lose(self, worker: _Worker) -> None:
        worker.lost = True
        held, worker.held = worker.held, {}
        worker.sync_slot()
        for job_id, (job, attempt) in held.items():
            # Should the worker come back, it must not keep running a job that moved on.
            worker.stops.append(job_id)
            worker.pending_stop.add(job_id)
            if self.core.is_current(job, attempt):
                log.warning("worker %s is lost; requeueing job %s", worker.slot.id, job_id)
                self.core.requeue_lost(job)

    def _unhealthy(self, worker: _Worker, check: str, reason: str) -> None:
        """A fitness check failed: the official worker reports it and exits (runpod-python
        `rp_fitness.py`). Its jobs move on at once, and it shows UNHEALTHY with the reason until it
        comes back (restarted) or is forgotten."""
        slot = worker.slot
        record = FitnessFailure(slot.endpoint.id, slot.id, self.clock.now(), check, reason)
        self.fitness_failures.append(record)
        del self.fitness_failures[:-_FITNESS_FAILURES_KEPT]
        log.warning("worker %s failed its fitness check %r: %s", slot.id, check, reason)
        self._lose(worker)
        slot.unhealthy = f"fitness check {check or '?'} failed: {reason or 'no reason given'}"

    def _poll_ended(self, worker: _Worker) -> None:
        worker.polls -= 1
        self._seen(worker)

    def _closing_future(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        return self._closing

    def release_polls(self) -> None:
        """The server is stopping: answer every held poll now (job-take: no job; job-stop: no stops),
        and later ones at once, so a graceful stop finds no request still running (on the loop)."""
        closing = self._closing_future()
        if not closing.done():
            closing.set_result(None)

    async def aclose(self) -> None:
        """Stop the liveness sweep and release every held worker request."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = self._sweep_at = None
        for worker in self.workers.values():
            for fut in worker.stop_waiters:
                if not fut.done():
                    fut.cancel()

    # -- job-take -------------------------------------------------------------------------------

    async def job_take(self, request: EndpointRequest) -> tuple[int, Any]:
        """``job-take``: hand the worker one job, holding the request while none is queued."""
        jobs = await self._take(request, 1)
        if not jobs:
            return 204, None
        return 200, jobs[0]

    async def job_take_batch(self, request: EndpointRequest) -> tuple[int, Any]:
        """``job-take-batch?batch_size=``: up to that many jobs, as ``job_take``."""
        raw = request.query.get("batch_size", "1")
        try:
            size = int(raw)
        except ValueError:
            raise HTTPError(400, f"batch_size={raw!r} must be an integer >= 1") from None
        if size < 1:
            raise HTTPError(400, f"batch_size={size} must be >= 1")
        jobs = await self._take(request, min(size, _MAX_BATCH))
        if not jobs:
            return 204, None
        return 200, jobs

    async def _take(self, request: EndpointRequest, size: int) -> list[Any]:
        """Up to `size` jobs for this worker, at once if any are queued, else after a long-poll."""
        worker = self._touch(request)
        core = self.core
        await request.body(1_000, "job-take")
        if request.query.get("job_in_progress") == "0" and worker.held:
            # The worker says it runs nothing, yet holds jobs: it restarted under the same id, or
            # its job-done never arrived. Either way those runs are gone: treat them as lost.
            held, worker.held = worker.held, {}
            worker.sync_slot()
            for job, attempt in held.values():
                if core.is_current(job, attempt):
                    core.requeue_lost(job)
        worker.polls += 1
        try:
            return await self._take_held(request, worker, size)
        finally:
            self._poll_ended(worker)

    async def _take_held(self, request: EndpointRequest, worker: _Worker, size: int) -> list[Any]:
        ep = request.endpoint
        core = self.core
        loop = asyncio.get_running_loop()
        real_deadline = loop.time() + _MAX_HOLD_S
        expired: asyncio.Future[None] = loop.create_future()
        timer = self.clock.call_later(self._hold(), _resolve, expired)
        disconnect: asyncio.Future[Any] | None = None
        closing = self._closing_future()
        try:
            if worker.slot.retired:
                # Replaced, waiting for its process to be stopped: hold the poll (no busy loop), no job.
                disconnect = asyncio.ensure_future(request.receive())
                await asyncio.wait({disconnect, expired, closing}, timeout=_MAX_HOLD_S, return_when=_FIRST)
                return []
            while True:
                if closing.done():  # stopping: no job can be reported back any more
                    return []
                jobs = self._claim(worker, size)
                if jobs:
                    if ep.in_queue and ep.take_waiters:
                        core.dispatch(ep)  # more work left: pass the wake-up on
                    return jobs
                remaining = real_deadline - loop.time()
                if expired.done() or remaining <= 0:
                    return []
                if disconnect is None:
                    # A worker killed while its poll is held must not be handed a job.
                    disconnect = asyncio.ensure_future(request.receive())
                fut: asyncio.Future[None] = loop.create_future()
                ep.take_waiters.append(fut)
                try:
                    await asyncio.wait(
                        {fut, disconnect, expired, closing}, timeout=remaining, return_when=_FIRST
                    )
                finally:
                    if not fut.done():
                        fut.cancel()
                    with contextlib.suppress(ValueError):
                        ep.take_waiters.remove(fut)
                if disconnect.done():
                    if fut.done() and not fut.cancelled() and ep.in_queue:
                        core.dispatch(ep)  # we were woken for a job we cannot take
                    return []
        finally:
            timer.cancel()
            if not expired.done():
                expired.cancel()
            if disconnect is not None and not disconnect.done():
                disconnect.cancel()

    def _claim(self, worker: _Worker, size: int) -> list[Any]:
        ep = worker.slot.endpoint
        jobs: list[Any] = []
        while len(jobs) < size:
            job = ep.next_queued()
            if job is None:
                break
            self.core.start(job, worker.slot)
            job.stop_run = self._stopper(worker, job)
            worker.held[job.id] = RunRef(job, job.attempt)
            jobs.append(job.handler_job())
        if jobs:
            worker.sync_slot()
        return jobs

    # -- results --------------------------------------------------------------------------------

    def _held_job(self, request: EndpointRequest, worker: _Worker) -> RunRef | None:
        if len(request.rest) < 2:
            raise HTTPError(404, "use …/<operation>/<worker_id>/<job_id>")
        return worker.held.get(request.rest[1])

    async def _payload(self, request: EndpointRequest, limit: int, what: str) -> dict[str, Any]:
        return self._parse(await request.body(limit, what), what)

    @staticmethod
    def _parse(body: bytes, what: str) -> dict[str, Any]:
        """The body the worker sent: JSON, though labelled application/x-www-form-urlencoded."""
        try:
            data = decode_json(body) if body else {}
        except ValueError as exc:
            raise HTTPError(400, f"{what} body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, f"{what} body must be a JSON object")
        return data

    async def job_done(self, request: EndpointRequest) -> tuple[int, Any]:
        """``job-done``: a worker's result (or error) for a job it took."""
        worker = self._touch(request)
        body = await request.body(_DONE_LIMIT, "job-done")
        if len(body) > RESULT_LIMIT:
            return self._oversized(request, worker, body)
        data = self._parse(body, "job-done")
        entry = self._held_job(request, worker)
        if entry is None:
            # Not (or no longer) this worker's run: cancelled, timed out, requeued after a loss, or a
            # progress update arriving after the result. Acknowledge so the worker does not retry.
            return 200, {}
        job, attempt = entry
        core = self.core
        if data.get("status") == JobStatus.IN_PROGRESS.value:
            if "output" in data:
                core.set_progress(job, attempt, encode_json(data["output"]))
            return 200, {}
        del worker.held[job.id]
        worker.sync_slot()
        error = data.get("error")
        output = data.get("output")
        core.complete(
            job,
            attempt,
            output_json=None if output is None else encode_json(output),
            error=None if not error else error if isinstance(error, str) else encode_json(error).decode(),
        )
        if data.get("stopPod"):
            slot = worker.slot
            core.release_worker(slot, replace=True)
            for listener in self.on_stop_pod:
                listener(slot.endpoint.id, slot.id)
        else:
            core.dispatch(job.endpoint)
        return 200, {}

    def _oversized(self, request: EndpointRequest, worker: _Worker, body: bytes) -> tuple[int, Any]:
        """A job-done body over 20 MB: a 400, and the job ends COMPLETED without output (see
        `oversize`); an oversized progress update gets the 400 and ends nothing."""
        entry = self._held_job(request, worker)
        if entry is not None and is_progress(body):
            self.core.notices.warn(progress_warning(entry[0], len(body)), "progress_dropped")
        elif entry is not None:
            job, attempt = entry
            del worker.held[job.id]
            worker.sync_slot()
            self.core.drop_result(job, len(body))
            self.core.complete(job, attempt, output_json=None, error=None)
            self.core.dispatch(job.endpoint)
        raise refusal(len(body))

    async def job_stream(self, request: EndpointRequest) -> tuple[int, Any]:
        """``job-stream``: streamed chunks of a generator handler's job."""
        worker = self._touch(request)
        data = await self._payload(request, _STREAM_READ_LIMIT, "job-stream")
        entry = self._held_job(request, worker)
        if entry is None or "output" not in data:
            return 200, {}
        job, attempt = entry
        chunk = encode_json(data["output"])
        if len(chunk) > STREAM_CHUNK_LIMIT:
            # As for in-process handlers: an oversized chunk fails the job.
            del worker.held[job.id]
            worker.sync_slot()
            self.core.complete(
                job,
                attempt,
                output_json=None,
                error=f"stream chunk of {len(chunk)} bytes exceeds RunPod's {STREAM_CHUNK_LIMIT} byte limit",
            )
            worker.signal_stop(job.id)
            return 200, {}
        self.core.push_chunk(job, attempt, chunk)
        return 200, {}

    # -- job-stop and ping ----------------------------------------------------------------------

    async def job_stop(self, request: EndpointRequest) -> tuple[int, Any]:
        """``job-stop``: held until one of the worker's jobs must stop (cancel, timeout)."""
        worker = self._touch(request)
        await request.body(1_000, "job-stop")
        closing = self._closing_future()
        if not worker.stops and not closing.done():
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            expired: asyncio.Future[None] = loop.create_future()
            timer = self.clock.call_later(self._hold(), _resolve, expired)
            worker.stop_waiters.append(fut)
            disconnect: asyncio.Future[Any] = asyncio.ensure_future(request.receive())
            worker.polls += 1
            try:
                await asyncio.wait(
                    {fut, disconnect, expired, closing}, timeout=_MAX_HOLD_S, return_when=_FIRST
                )
            finally:
                self._poll_ended(worker)
                timer.cancel()
                disconnect.cancel()
                for pending in (fut, expired):
                    if not pending.done():
                        pending.cancel()
                with contextlib.suppress(ValueError):
                    worker.stop_waiters.remove(fut)
            if disconnect.done() and not disconnect.cancelled():
                return 204, None  # nobody is listening: keep the stops for the next poll
        if not worker.stops:
            return 204, None
        stops, worker.stops = worker.stops, []
        return 200, {"jobsToStop": stops}

    async def ping(self, request: EndpointRequest) -> tuple[int, Any]:
        """A sign of life; its `job_id` list also re-sends stops that did not take.

        The official worker drops a stop that arrives before the job's task exists (taken, not yet
        started), so a stopped job it still reports running is signalled again."""
        worker = self._touch(request)
        if request.query.get("status") == "unhealthy":
            self._unhealthy(worker, request.query.get("check", ""), request.query.get("reason", ""))
            return 200, {}
        if worker.pending_stop:
            running = set(filter(None, request.query.get("job_id", "").split(",")))
            worker.pending_stop &= running
            for job_id in worker.pending_stop:
                if job_id not in worker.held:
                    worker.signal_stop(job_id)
        return 200, {}


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
