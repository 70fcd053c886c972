"""In-process workers: run a user's handler the way the official `runpod` worker runs it.

Plain functions run on the worker's own thread, so a slow or blocking handler never stalls the HTTP
server or another endpoint; `async def` handlers and async generators run on the server's loop.
Results are normalised exactly as `runpod.serverless` does (a dict's `error` fails the job,
`refresh_worker` replaces the worker, `{}` means no output, an exception becomes RunPod's JSON error
string, a generator's exception the `handler: … traceback: …` string) and then go through the same
`Core.complete` an external worker's job-done does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import os
import socket
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from runpod_queue._contract import STREAM_CHUNK_LIMIT
from runpod_queue.emulator.queue import Core, JobRecord, WorkerSlot, encode_json

__all__ = ["InProcessRunner", "RunOutcome", "exception_error_string", "normalize_result"]

_EMPTY_LIST = b"[]"


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
    """Collects a generator's chunks: hands each to the queue and keeps them for the aggregate."""

    __slots__ = ("aggregate", "chunks", "emit")

    def __init__(self, emit: Callable[[bytes], None], aggregate: bool) -> None:
        self.emit = emit
        self.aggregate = aggregate
        self.chunks: list[bytes] = []

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
    stop: threading.Event,
    worker_id: str,
) -> RunOutcome | Any:
    """Runs on the worker thread. Returns an outcome, or an awaitable for the loop to finish."""
    try:
        result = handler(payload)
    except Exception as err:
        return RunOutcome(error=exception_error_string(err, worker_id))
    if inspect.isawaitable(result) or inspect.isasyncgen(result):
        return result
    if inspect.isgenerator(result) or (isinstance(result, Iterator) and not isinstance(result, dict | list)):
        return _drain_sync(result, sink, stop)
    return normalize_result(result)


def _drain_sync(gen: Iterator[Any], sink: _StreamSink, stop: threading.Event) -> RunOutcome:
    error: str | None = None
    try:
        for item in gen:
            if stop.is_set():
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


class InProcessRunner:
    """Starts handler runs for the core's in-process workers; one thread per worker for sync code."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        core.start_in_process = self.start

    def start(self, job: JobRecord, worker: WorkerSlot) -> None:
        loop = self.core.loop
        assert loop is not None
        task = loop.create_task(self._run(job, worker, job.attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _executor(self, worker: WorkerSlot) -> ThreadPoolExecutor:
        executor = self._executors.get(worker.id)
        if executor is None:
            executor = self._executors[worker.id] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"rpq-worker-{worker.id}"
            )
        return executor

    def _drop_executor(self, worker: WorkerSlot) -> None:
        executor = self._executors.pop(worker.id, None)
        if executor is not None:
            # Never wait: an abandoned handler thread finishes on its own and its result is discarded.
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, job: JobRecord, worker: WorkerSlot, attempt: int) -> None:
        core = self.core
        spec = job.endpoint.spec
        handler = spec.handler
        assert handler is not None and core.loop is not None
        loop = core.loop
        payload = job.handler_job()
        stop = threading.Event()
        task = asyncio.current_task()

        def cancel_run() -> None:
            stop.set()
            if task is not None:
                task.cancel()
            self._drop_executor(worker)

        worker.run_cancel = cancel_run

        def emit_from_loop(data: bytes) -> None:
            core.push_chunk(job, attempt, data)

        def emit_from_thread(data: bytes) -> None:
            loop.call_soon_threadsafe(core.push_chunk, job, attempt, data)

        try:
            outcome: RunOutcome
            if inspect.iscoroutinefunction(handler):
                try:
                    outcome = normalize_result(await handler(payload))
                except Exception as err:
                    outcome = RunOutcome(error=exception_error_string(err, worker.id))
            elif inspect.isasyncgenfunction(handler):
                sink = _StreamSink(emit_from_loop, spec.return_aggregate_stream)
                outcome = await _drain_async(handler(payload), sink)
            else:
                sink = _StreamSink(emit_from_thread, spec.return_aggregate_stream)
                result = await loop.run_in_executor(
                    self._executor(worker), _run_sync, handler, payload, sink, stop, worker.id
                )
                if isinstance(result, RunOutcome):
                    outcome = result
                elif inspect.isasyncgen(result):
                    sink.emit = emit_from_loop
                    outcome = await _drain_async(result, sink)
                else:
                    try:
                        outcome = normalize_result(await result)
                    except Exception as err:
                        outcome = RunOutcome(error=exception_error_string(err, worker.id))
        except asyncio.CancelledError:
            # Cancelled by the queue (cancel, executionTimeout, ttl): the queue already moved on.
            return
        if outcome.cancelled:
            return
        core.complete(job, attempt, output_json=outcome.output_json, error=outcome.error)
        if worker.job is job or not worker.retired:
            if outcome.stop_pod:
                self._drop_executor(worker)
            core.release_worker(worker, replace=outcome.stop_pod)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
