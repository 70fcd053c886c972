"""Each worker's log lines, for REST v2's `GET /serverless/{id}/workers/{workerId}/logs`.

What a worker's log holds (RunPod's `source` values, `LogSource` in `api-reference-v2/openapi.json`):

- ``container``: what the worker's code writes. For an in-process handler, its ``print``/``sys.stdout``/
  ``sys.stderr`` writes and its ``logging`` records, captured *while that worker runs a job*: a context
  variable names the worker on the lane thread (sync handlers) or in the task (async ones), so two
  workers running at once keep their lines apart and nothing written outside a run is taken. For an
  external worker we start (``rpq serve … --runpod-worker``), its process's stdout and stderr.
- ``system``: the emulator's lifecycle lines for the worker (started, ready, job started/ended,
  stopped) — ours, standing in for RunPod's host lines; they carry the job id, which is how
  ``rpq logs ENDPOINT JOB`` finds a job's lines.

The user's own output is untouched: ``sys.stdout``/``sys.stderr`` are wrapped by a pass-through that
writes everything where it went before and only *copies* a run's text; a ``logging`` record is taken
once — through the stream when one of the user's handlers (or Python's last resort) writes it to a
wrapped stream, else directly, formatted by the user's first handler. Records are seen through a log
record factory, not a handler: the root logger's handlers stay the user's (``basicConfig`` still works).

Bounds (ours): the last `LINES_PER_WORKER` lines per worker, lines cut at `LINE_CHARS`, and the logs of
at most `WORKERS_KEPT` workers per emulator (a stopped worker's log goes first).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import IO, TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import Clock

__all__ = [
    "LINES_PER_WORKER",
    "LINE_CHARS",
    "WORKERS_KEPT",
    "LogEntry",
    "WorkerLogs",
    "route_run",
    "unroute_run",
]

LINES_PER_WORKER: Final = 1000
LINE_CHARS: Final = 16_384
WORKERS_KEPT: Final = 256
_PARTIAL_CHARS: Final = 65_536  # text without a newline kept at most, per worker and stream


class LogEntry(NamedTuple):
    """One line: its sequence number in the emulator, clock seconds, source, text and the job it ran."""

    seq: int
    at: float
    source: str
    line: str
    job_id: str | None


class _Buffer:
    __slots__ = ("ended", "endpoint_id", "lines", "partial", "waiters")

    def __init__(self, endpoint_id: str) -> None:
        self.endpoint_id = endpoint_id
        self.lines: deque[LogEntry] = deque(maxlen=LINES_PER_WORKER)
        self.ended = False
        self.partial: dict[str, str] = {}
        self.waiters: set[asyncio.Event] = set()


class _Route(NamedTuple):
    """Where a run's output goes: the emulator's logs, the endpoint, the worker and the job it runs."""

    logs: WorkerLogs
    endpoint_id: str
    worker_id: str
    job_id: str | None


_CURRENT: ContextVar[_Route | None] = ContextVar("rpq_worker_log_route", default=None)
_new: Final = tuple.__new__


class WorkerLogs:
    """The log lines of one emulator's workers. Thread-safe: lane threads and pipe readers add lines;
    followers wait on the loop."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buffers: OrderedDict[str, _Buffer] = OrderedDict()
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._captured = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The emulator serves on `loop`: followers wait there; in-process capture starts."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        if not self._captured:
            self._captured = True
            _capture.acquire()

    def close(self) -> None:
        """The emulator stops: every follower's stream ends; capture stops with the last emulator."""
        with self._lock:
            buffers = list(self._buffers.values())
            for buffer in buffers:
                buffer.ended = True
        for buffer in buffers:
            self._wake(buffer)
        if self._captured:
            self._captured = False
            _capture.release()

    # -- writing --------------------------------------------------------------------------------

    def _buffer(self, endpoint_id: str, worker_id: str) -> _Buffer:
        buffer = self._buffers.get(worker_id)
        if buffer is not None:
            return buffer
        with self._lock:  # only a new worker's first line takes the lock
            buffer = self._buffers.get(worker_id)
            if buffer is None:
                if len(self._buffers) >= WORKERS_KEPT:
                    gone = next((k for k, b in self._buffers.items() if b.ended), None)
                    self._buffers.pop(gone if gone is not None else next(iter(self._buffers)))
                buffer = self._buffers[worker_id] = _Buffer(endpoint_id)
        return buffer

    def _append(self, buffer: _Buffer, source: str, line: str, job_id: str | None, at: float) -> None:
        # No lock: `next` on a count and `deque.append` are each one atomic step under the GIL, and the
        # deque's maxlen drops the oldest line. One line per job start and end is on the API's hot path.
        if len(line) > LINE_CHARS:
            line = line[:LINE_CHARS] + " …[cut]"
        # tuple.__new__: a named tuple without its Python-level __new__ (a third of this call's cost).
        buffer.lines.append(_new(LogEntry, (next(self._seq), at, source, line, job_id)))

    def add(
        self, endpoint_id: str, worker_id: str, source: str, text: str, job_id: str | None = None
    ) -> None:
        """Add whole lines (`text` split at newlines; a trailing newline adds no empty line)."""
        at = self._clock.now()
        buffer = self._buffer(endpoint_id, worker_id)
        if "\n" in text:
            for line in text.rstrip("\n").split("\n"):
                self._append(buffer, source, line.rstrip("\r"), job_id, at)
        elif text:
            self._append(buffer, source, text, job_id, at)
        if buffer.waiters:
            self._wake(buffer)

    def system(self, endpoint_id: str, worker_id: str, text: str, job_id: str | None = None) -> None:
        """A lifecycle line of ours (source ``system``, one line)."""
        buffer = self._buffer(endpoint_id, worker_id)
        self._append(buffer, "system", text, job_id, self._clock.now())
        if buffer.waiters:
            self._wake(buffer)

    def write(self, route: _Route, stream: str, text: str) -> None:
        """Stream text from a run: whole lines are added, the rest waits for its newline."""
        at = self._clock.now()
        buffer = self._buffer(route.endpoint_id, route.worker_id)
        with self._lock:
            pending = buffer.partial.get(stream, "") + text
            *lines, rest = pending.split("\n")
            for line in lines:
                self._append(buffer, "container", line.rstrip("\r"), route.job_id, at)
            if len(rest) > _PARTIAL_CHARS:
                self._append(buffer, "container", rest, route.job_id, at)
                rest = ""
            if rest:
                buffer.partial[stream] = rest
            else:
                buffer.partial.pop(stream, None)
        if lines:
            self._wake(buffer)

    def flush(self, route: _Route) -> None:
        """A run ended: text it left without a newline becomes a line."""
        buffer = self._buffers.get(route.worker_id)
        if buffer is None or not buffer.partial:
            return
        at = self._clock.now()
        with self._lock:
            partial, buffer.partial = buffer.partial, {}
            for rest in partial.values():
                self._append(buffer, "container", rest, route.job_id, at)
        self._wake(buffer)

    def end(self, endpoint_id: str, worker_id: str, why: str) -> None:
        """The worker stopped: a last system line; a follower's stream ends after it."""
        at = self._clock.now()
        buffer = self._buffer(endpoint_id, worker_id)
        self._append(buffer, "system", f"worker stopped: {why}", None, at)
        buffer.ended = True
        self._wake(buffer)

    def sink(self, endpoint_id: str, worker_id: str) -> Callable[[str], None]:
        """A callable adding one line of an external worker's output (from any thread)."""

        def add(line: str) -> None:
            self.add(endpoint_id, worker_id, "container", line)

        return add

    # -- reading --------------------------------------------------------------------------------

    def owner(self, worker_id: str) -> str | None:
        """The endpoint a worker's log belongs to, or None when no log is kept for it."""
        buffer = self._buffers.get(worker_id)
        return buffer.endpoint_id if buffer is not None else None

    def read(self, worker_id: str, after: int) -> tuple[list[LogEntry], bool]:
        """Lines after sequence number `after`, and whether the worker has stopped."""
        buffer = self._buffers.get(worker_id)
        if buffer is None:
            return [], True
        ended = buffer.ended  # read first: a line added after it is sent on the next wake
        lines = list(buffer.lines)  # one step under the GIL: no append interleaves
        return [e for e in lines if e.seq > after], ended

    def watch(self, worker_id: str) -> asyncio.Event | None:
        """An event set when the worker gets a line or stops (call on the loop); None if unknown."""
        buffer = self._buffers.get(worker_id)
        if buffer is None:
            return None
        event = asyncio.Event()
        buffer.waiters.add(event)
        return event

    def unwatch(self, worker_id: str, event: asyncio.Event) -> None:
        """Stop waking `event` (the follower left)."""
        buffer = self._buffers.get(worker_id)
        if buffer is not None:
            buffer.waiters.discard(event)

    def _wake(self, buffer: _Buffer) -> None:
        if not buffer.waiters:
            return
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            _set_all(buffer)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(_set_all, buffer)


def _set_all(buffer: _Buffer) -> None:
    for event in list(buffer.waiters):
        event.set()


# -- routing a run's output to its worker -----------------------------------------------------------


def route_run(logs: WorkerLogs, endpoint_id: str, worker_id: str, job_id: str | None) -> Token[_Route | None]:
    """From here on, in this thread or task, output belongs to `worker_id` (undo with `unroute_run`)."""
    _capture.ensure_streams()
    return _CURRENT.set(_new(_Route, (logs, endpoint_id, worker_id, job_id)))


def unroute_run(token: Token[_Route | None]) -> None:
    """The run ended: flush its unfinished line and stop routing."""
    route = _CURRENT.get()
    if route is not None:
        route.logs.flush(route)
    _CURRENT.reset(token)


class _RoutedStream:
    """``sys.stdout``/``sys.stderr`` as before, with a run's text also copied to its worker's log."""

    def __init__(self, target: IO[str], name: str) -> None:
        self._rpq_target = target
        self._rpq_name = name

    def write(self, text: str) -> int:
        written = self._rpq_target.write(text)
        route = _CURRENT.get()
        if route is not None and isinstance(text, str):
            route.logs.write(route, self._rpq_name, text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rpq_target, name)


def _take_record(record: logging.LogRecord, route: _Route) -> None:
    """A run's log record, once: left to the stream copy when a handler prints it to a wrapped stream
    (or Python's last resort does: no handler at all), else formatted as the first handler would."""
    handlers = _chain_handlers(record.name)
    if not handlers:
        return  # the last resort (WARNING and up) writes it to sys.stderr, which the run's copy takes
    for handler in handlers:
        if isinstance(getattr(handler, "stream", None), _RoutedStream) and record.levelno >= handler.level:
            return  # that handler's write is copied by the stream
    try:
        line = (handlers[0].formatter or _FORMATTER).format(record)
    except Exception:  # a broken formatter is the user's handler's problem, not the log's
        line = str(record.msg)
    route.logs.add(route.endpoint_id, route.worker_id, "container", line, route.job_id)


_FORMATTER: Final = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def _chain_handlers(name: str) -> list[logging.Handler]:
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(name) if name != "root" else logging.getLogger()
    while logger is not None:
        found.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    return found


class _Capture:
    """The process-wide part, while any emulator runs: the stream wrappers, and a log record factory.

    Records are seen through ``logging.setLogRecordFactory`` rather than a handler on the root logger:
    a root handler would make ``logging.basicConfig()`` a no-op and silence Python's last resort for the
    whole process. The factory wraps whatever factory was set, is installed once and stays (removing it
    could break a factory set on top of it later); with no emulator running it only passes through.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._previous: Callable[..., logging.LogRecord] | None = None

    def _factory(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        previous = self._previous
        assert previous is not None
        record = previous(*args, **kwargs)
        route = _CURRENT.get()
        if route is not None and self._users > 0:
            _take_record(record, route)
        return record

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._previous is None:
                self._previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(self._factory)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                if isinstance(current, _RoutedStream):
                    setattr(sys, name, current._rpq_target)

    def ensure_streams(self) -> None:
        """Wrap ``sys.stdout``/``sys.stderr`` if something (a test runner's capture) replaced them."""
        if self._users <= 0:
            return
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if current is not None and not isinstance(current, _RoutedStream):
                setattr(sys, name, _RoutedStream(current, name))


_capture = _Capture()
