"""In-process workers: run a user's handler the way the official `runpod` worker runs it.

Plain functions run off the server's loop, on their endpoint's lane thread (a slow one gets a thread of
its own, see `_Lane`), so a slow or blocking handler never stalls the HTTP server or another endpoint;
`async def` handlers and async generators run on the server's loop.
Results are normalised exactly as `runpod.serverless` does (a dict's `error` fails the job,
`refresh_worker` replaces the worker, `{}` means no output, an exception becomes RunPod's JSON error
string, a generator's exception the `handler: … traceback: …` string) and then go through the same
`Core.complete` an external worker's job-done does: each run reports to the `RunReports` (the core)
that started it, so the runner needs nothing from the core to be built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from runpod_queue._contract import STREAM_CHUNK_LIMIT
from runpod_queue.emulator._jobs import JobRecord, WorkerSlot, encode_json
from runpod_queue.emulator._worker_logs import WorkerLogs, route_run, unroute_run

__all__ = ["InProcessRunner", "RunOutcome", "RunReports", "exception_error_string", "normalize_result"]

_EMPTY_LIST = b"[]"


class RunReports(Protocol):
    """Where a run's chunks and end go (the core, which satisfies this)."""

    logs: WorkerLogs

    def is_current(self, job: JobRecord, attempt: int) -> bool: ...

    def push_chunk(self, job: JobRecord, attempt: int, chunk_json: bytes) -> None: ...

    def complete(
        self, job: JobRecord, attempt: int, *, output_json: bytes | None, error: str | None
    ) -> bool: ...

    def release_worker(self, worker: WorkerSlot, *, replace: bool = False) -> None: ...


@dataclass(slots=True)
class RunOutcome:
    output_json: bytes | None = None
    error: str | None = None
    stop_pod: bool = False
    cancelled: bool = False


def exception_error_string(err: BaseException, worker_id: str) -> str:
    """RunPod's JSON error string for a handler that raised (as `runpod.serverless` builds it)."""
    try:
        # Not `import runpod`: it reconfigures logging at import time.
        runpod_version = importlib.metadata.version("runpod")
    except importlib.metadata.PackageNotFoundError:
        runpod_version = "emulated"
    return json.dumps(
        {
            "error_type": str(type(err)),
            "error_message": str(err),
            "error_traceback": "".join(traceback.format_exception(err)),
            "hostname": os.environ.get("RUNPOD_POD_HOSTNAME", socket.gethostname()),
            "worker_id": worker_id,
            "runpod_version": runpod_version,
        }
    )


def _error_text(value: Any) -> str:
    return value if isinstance(value, str) else encode_json(value).decode()


def _encode_output(value: Any) -> tuple[bytes | None, str | None]:
    try:
        return encode_json(value), None
    except TypeError as err:
        return None, f"handler output is not JSON-serializable ({err}); return dicts, lists, str, numbers"


def normalize_result(value: Any) -> RunOutcome:
    """A plain handler's return value → the job's outcome, as the official worker's `run_job` does."""
    if isinstance(value, dict):
        if "error" not in value and "refresh_worker" not in value:  # nothing to take out: no copy
            if not value:
                return RunOutcome()
            data, problem = _encode_output(value)
            return RunOutcome(data, problem)
        value = dict(value)
        error = value.pop("error", None)
        refresh = value.pop("refresh_worker", None)
        output_json: bytes | None = None
        if value:
            output_json, encode_error = _encode_output(value)
            if encode_error is not None:
                return RunOutcome(error=encode_error, stop_pod=bool(refresh))
        return RunOutcome(output_json, _error_text(error) if error else None, bool(refresh))
    output_json, encode_error = _encode_output(value)
    return RunOutcome(output_json, encode_error)


class _StreamSink:
    """Collects a generator's chunks: hands each to the queue and keeps them for the aggregate.

    One is made per sync run: its `stop` is the run's `stop_run`, and a lane run's chunks go to the loop
    through `route` (the runner's post, the job, the attempt, the core): no closures made per job for a
    handler that turns out not to be a generator."""

    __slots__ = ("_emit", "aggregate", "chunks", "route", "stopped")

    def __init__(
        self,
        emit: Callable[[bytes], None] | None,
        aggregate: bool,
        route: tuple[Callable[..., None], JobRecord, int, RunReports] | None = None,
    ) -> None:
        self._emit = emit
        self.route = route
        self.aggregate = aggregate
        self.chunks: list[bytes] = []
        # Set from the loop thread when the run is cancelled; a sync generator stops at its next yield.
        # A plain attribute, not a threading.Event: one is made per job and only ever read.
        self.stopped = False

    def stop(self) -> None:
        """Cancel the run: not started yet, it never will be; a generator stops at its next yield; a plain
        function runs on (the lane's patience moves the others away) and its result is discarded."""
        self.stopped = True

    def emit(self, data: bytes) -> None:
        if self._emit is not None:
            self._emit(data)
            return
        assert self.route is not None
        post, job, attempt, core = self.route
        post(("chunk", job, attempt, data, core))

    def add(self, item: Any) -> str | None:
        """Take one yielded item; returns an error message when the item ends the job."""
        if isinstance(item, dict) and item.get("error"):
            return str(item["error"])
        data, error = _encode_output(item)
        if error is not None or data is None:
            return error
        if len(data) > STREAM_CHUNK_LIMIT:
            return f"stream chunk of {len(data)} bytes exceeds RunPod's {STREAM_CHUNK_LIMIT} byte limit"
        self.emit(data)
        if self.aggregate:
            self.chunks.append(data)
        return None

    def outcome(self, error: str | None) -> RunOutcome:
        if error is not None:
            return RunOutcome(error=error)
        if self.aggregate:
            return RunOutcome(b"[" + b",".join(self.chunks) + b"]")
        return RunOutcome(_EMPTY_LIST)


def _generator_error(err: BaseException) -> str:
    # The official worker reports a generator's exception as this plain string, not the JSON one.
    return f"handler: {err} \ntraceback: {''.join(traceback.format_exception(err))}"


def _run_sync(
    handler: Callable[[dict[str, Any]], Any],
    payload: dict[str, Any],
    sink: _StreamSink,
    worker_id: str,
) -> RunOutcome | Any:
    """Runs on a lane thread. Returns an outcome, or an awaitable for the loop to finish."""
    if sink.stopped:  # cancelled (or timed out) while it waited in the lane
        return RunOutcome(cancelled=True)
    try:
        result = handler(payload)
    except Exception as err:
        return RunOutcome(error=exception_error_string(err, worker_id))
    if type(result) is dict:  # the usual answer: none of the checks below (inspect's are slow) apply
        return normalize_result(result)
    if inspect.isawaitable(result) or inspect.isasyncgen(result):
        return result
    if inspect.isgenerator(result) or (isinstance(result, Iterator) and not isinstance(result, dict | list)):
        return _drain_sync(result, sink)
    return normalize_result(result)


def _drain_sync(gen: Iterator[Any], sink: _StreamSink) -> RunOutcome:
    error: str | None = None
    try:
        for item in gen:
            if sink.stopped:
                return RunOutcome(cancelled=True)
            error = sink.add(item)
            if error is not None:
                break
    except Exception as err:
        error = _generator_error(err)
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
    return sink.outcome(error)


async def _drain_async(gen: AsyncIterator[Any], sink: _StreamSink) -> RunOutcome:
    error: str | None = None
    try:
        async for item in gen:
            error = sink.add(item)
            if error is not None:
                break
    except Exception as err:
        error = _generator_error(err)
    finally:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()
    return sink.outcome(error)


# How long a sync handler may hold its endpoint's lane before the jobs behind it move to a fresh thread.
LANE_PATIENCE_S = 0.01


class _Lane:
    """One thread that runs an endpoint's sync handler calls back to back.

    Why not one thread per worker: handing each job to its own sleeping thread costs a thread wake-up
    and a GIL hand-off per job, which measured ~40% of the server's throughput with quick handlers. A
    lane takes whatever is queued in one wake-up. A handler that runs longer than `LANE_PATIENCE_S`
    keeps this thread (it is *detached* and ends after that call) and the jobs queued behind it move to a
    new lane, so N workers still run N slow jobs at once and a slow handler never holds up the others for
    more than about that long. Finished runs go back to the loop in batches (`InProcessRunner.post`).
    """

    def __init__(self, runner: InProcessRunner, name: str) -> None:
        self.runner = runner
        # A SimpleQueue, not a Condition and a deque: its put and get are C code with no Python-level
        # locking, and both threads run them once per job while holding the GIL. None ends the thread.
        self.queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # Set and cleared by this lane's thread, read by the loop's watchdog: plain attribute writes and
        # reads, atomic under the GIL.
        self.busy_since: float | None = None
        self.thread = threading.Thread(target=self._main, name=f"rpq-lane-{name}", daemon=True)
        self.thread.start()

    def submit(self, item: tuple[Any, ...]) -> None:
        self.queue.put(item)

    def _main(self) -> None:
        post = self.runner.post
        get = self.queue.get
        empty = self.queue.empty
        while True:
            item = get()
            if item is None:  # detached or closed
                self.runner.wake()  # results this thread held back for a batch it will not finish
                return
            self.busy_since = time.monotonic()
            job, attempt, worker, handler, payload, sink, reports = item
            # The handler's prints and logging records go to this worker's log (`_worker_logs`).
            token = route_run(reports.logs, job.endpoint.id, worker.id, job.id)
            try:
                outcome = _run_sync(handler, payload, sink, worker.id)
            finally:
                unroute_run(token)
            self.busy_since = None
            # One loop wake-up per batch: woken at the first result, the loop would wait for the GIL
            # this thread holds for the next job (a GIL hand-off per job). Results held back are
            # delivered by the next post, or by the lane watchdog if the next handler is slow.
            post(("done", job, attempt, worker, outcome, reports), wake=empty())

    def stuck(self, now: float) -> bool:
        since = self.busy_since
        return since is not None and now - since >= LANE_PATIENCE_S

    def has_work(self) -> bool:
        return self.busy_since is not None or not self.queue.empty()

    def detach(self) -> list[tuple[Any, ...]]:
        """Leave the running call this thread (it ends after it); hand back the queued ones."""
        moved = self._take_queued()
        self.queue.put(None)
        return moved

    def close(self) -> None:
        """End the thread after its running call; what was queued is dropped."""
        self.detach()

    def _take_queued(self) -> list[tuple[Any, ...]]:
        taken: list[tuple[Any, ...]] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return taken
            if item is not None:
                taken.append(item)


class InProcessRunner:
    """Starts handler runs for the core's in-process workers: async code on the loop, sync code on
    its endpoint's lane (see `_Lane`). The lane patience check is real time on purpose: it is about
    threads, not about RunPod's clock."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict[str, _Lane] = {}
        self._watching: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: list[tuple[Any, ...]] = []
        self._outbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._runs_on_loop: dict[Any, bool] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- thread → loop hand-off -----------------------------------------------------------------

    def post(self, item: tuple[Any, ...], *, wake: bool = True) -> None:
        """Called from worker threads: queue an event for the loop, waking it once per batch (`wake`
        False: not yet, more is coming; `_check_lane` delivers it if nothing more comes soon)."""
        with self._outbox_lock:
            self._outbox.append(item)
            if self._drain_scheduled or not wake:
                return
            self._drain_scheduled = True
        self._schedule_drain()

    def wake(self) -> None:
        """Called from worker threads: make sure the loop drains what was posted without a wake-up."""
        with self._outbox_lock:
            if not self._outbox or self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        loop = self._loop
        assert loop is not None
        # RuntimeError: the loop closed during shutdown, nothing left to report to.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._outbox_lock:
            items, self._outbox = self._outbox, []
            self._drain_scheduled = False
        for item in items:
            if item[0] == "chunk":
                _, job, attempt, data, reports = item
                reports.push_chunk(job, attempt, data)
            else:
                _, job, attempt, worker, result, reports = item
                if isinstance(result, RunOutcome):
                    _finish(reports, job, attempt, worker, result)
                else:
                    self._spawn(self._await_result(reports, job, attempt, worker, result))

    # -- runs -----------------------------------------------------------------------------------

    def start(self, job: JobRecord, worker: WorkerSlot, core: RunReports) -> None:
        """Run the endpoint's handler for `job` on `worker`; its chunks and end go to `core`."""
        handler = job.endpoint.spec.handler
        assert handler is not None
        runs_on_loop = self._runs_on_loop.get(handler)
        if runs_on_loop is None:  # inspect is slow enough to matter per job: decide once per handler
            runs_on_loop = (
                inspect.iscoroutinefunction(handler)
                or inspect.isasyncgenfunction(handler)
                # A callable object that hands back a coroutine or async generator without blocking
                # (a scripted endpoint) says so, and is called on the loop, not on a lane thread.
                or getattr(handler, "runs_on_loop", False) is True
            )
            self._runs_on_loop[handler] = runs_on_loop
        if runs_on_loop:
            task = self._spawn(self._run_async(core, job, worker, job.attempt))
            job.stop_run = task.cancel
            return
        endpoint_id = job.endpoint.id
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            lane = self._lanes[endpoint_id] = _Lane(self, endpoint_id)
        attempt = job.attempt
        sink = _StreamSink(None, job.endpoint.spec.return_aggregate_stream, (self.post, job, attempt, core))
        job.stop_run = sink.stop
        lane.queue.put((job, attempt, worker, handler, job.handler_job(), sink, core))
        if endpoint_id not in self._watching:
            self._watch(endpoint_id)

    def _watch(self, endpoint_id: str) -> None:
        if endpoint_id not in self._watching:
            self._watching.add(endpoint_id)
            loop = self._loop
            assert loop is not None
            loop.call_later(LANE_PATIENCE_S, self._check_lane, endpoint_id)

    def _check_lane(self, endpoint_id: str) -> None:
        self._watching.discard(endpoint_id)
        if self._outbox:  # results a lane held back for a batch whose next handler is still running
            self._drain()
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            return
        if lane.stuck(time.monotonic()):
            moved = lane.detach()
            lane = self._lanes[endpoint_id] = _Lane(self, endpoint_id)
            for item in moved:
                lane.submit(item)
        if lane.has_work():
            self._watch(endpoint_id)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        loop = self._loop
        assert loop is not None
        task: asyncio.Task[None] = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_async(self, core: RunReports, job: JobRecord, worker: WorkerSlot, attempt: int) -> None:
        """An `async def` handler or an async generator, on the loop."""
        handler = job.endpoint.spec.handler
        assert handler is not None
        # This task's output goes to the worker's log (a context variable: the task's own copy).
        token = route_run(core.logs, job.endpoint.id, worker.id, job.id)
        try:
            result = handler(job.handler_job())
        except Exception as err:  # e.g. a signature that does not take the job
            unroute_run(token)
            _finish(core, job, attempt, worker, RunOutcome(error=exception_error_string(err, worker.id)))
            return
        unroute_run(token)
        await self._await_result(core, job, attempt, worker, result)

    async def _await_result(
        self, core: RunReports, job: JobRecord, attempt: int, worker: WorkerSlot, result: Any
    ) -> None:
        """Finish a coroutine or an async generator on the loop: what an async handler returns, or what a
        sync callable handed back from its lane."""
        if not core.is_current(job, attempt):
            _close_unawaited(result)  # the run was stopped while its sync part ran: discard it
            return
        token = route_run(core.logs, job.endpoint.id, worker.id, job.id)
        try:
            await self._finish_result(core, job, attempt, worker, result)
        finally:
            unroute_run(token)

    async def _finish_result(
        self, core: RunReports, job: JobRecord, attempt: int, worker: WorkerSlot, result: Any
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        job.stop_run = task.cancel
        sink = _StreamSink(
            lambda data: core.push_chunk(job, attempt, data), job.endpoint.spec.return_aggregate_stream
        )
        try:
            if inspect.isasyncgen(result):
                outcome = await _drain_async(result, sink)
            else:
                try:
                    outcome = normalize_result(await result)
                except Exception as err:
                    outcome = RunOutcome(error=exception_error_string(err, worker.id))
        except asyncio.CancelledError:
            # Cancelled by the queue (cancel, executionTimeout, ttl): the queue already moved on.
            return
        _finish(core, job, attempt, worker, outcome)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()


def _finish(core: RunReports, job: JobRecord, attempt: int, worker: WorkerSlot, outcome: RunOutcome) -> None:
    if outcome.cancelled:
        return
    core.complete(job, attempt, output_json=outcome.output_json, error=outcome.error)
    core.release_worker(worker, replace=outcome.stop_pod)


def _close_unawaited(result: Any) -> None:
    """Close a coroutine or async generator that will never run, so Python does not warn about it."""
    close = getattr(result, "close", None) if inspect.iscoroutine(result) else None
    if close is not None:
        close()
