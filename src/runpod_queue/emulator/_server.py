"""`Emulator`: the app on a real uvicorn server (uvloop + httptools), in a background thread or in front."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Mapping
from types import FrameType, TracebackType
from typing import Any, TypeVar

import uvicorn

from runpod_queue._limits import RateLimits
from runpod_queue._models import S3Config
from runpod_queue._net import listen_socket
from runpod_queue._serving import guarded_config
from runpod_queue._units import Duration
from runpod_queue._units import seconds as _seconds
from runpod_queue.emulator._app import EmulatorApp
from runpod_queue.emulator._assembly import assemble
from runpod_queue.emulator._clock import Clock, ClockKind, VirtualClock, advance_amount, make_clock
from runpod_queue.emulator._config import EndpointSpec, Faults, Handler, Timings
from runpod_queue.emulator._core import Core
from runpod_queue.emulator._delivery import WebhookAttempt
from runpod_queue.emulator._external import ExternalWorkers, FitnessFailure
from runpod_queue.emulator._fleet import Fleet, WorkerView, fixed_worker_views
from runpod_queue.emulator._inspect import JobView, RecordedRequest, job_views
from runpod_queue.emulator._jobs import EndpointState
from runpod_queue.emulator._notices import EmulatorWarning
from runpod_queue.emulator._readings import Readings
from runpod_queue.emulator._s3 import LocalS3
from runpod_queue.emulator._state import StateFile, restore_snapshot

__all__ = ["Emulator"]

_T = TypeVar("_T")

log = logging.getLogger("runpod_queue.emulator")

# start(): how long the server thread may take to bind and serve (an import-heavy handler file on a busy
# CI machine takes seconds), and how often it is looked at meanwhile (a start takes a few ms: look often).
_START_TIMEOUT_S = 15.0
_START_POLL_S = 0.002
# stop(): how long to wait for the server thread; it ends within a tick unless a handler blocks the loop.
_STOP_TIMEOUT_S = 10.0


class _QuietDrops(logging.Filter):
    """uvicorn logs an error when a response is left unfinished: that is our injected 'drop' fault. It
    also logs a traceback for every long-poll still held when the emulator stops (the request task is
    cancelled with the loop): nothing went wrong there either, and the traceback alarmed users."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return "without completing response" not in record.getMessage()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop


class _Server(uvicorn.Server):
    """uvicorn's server, told to stop through an event instead of noticing within its 0.1 s tick."""

    def __init__(self, config: uvicorn.Config, on_exit_signal: Callable[[int], None] | None = None) -> None:
        super().__init__(config)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Called on the loop as a graceful stop begins (the emulator answers its held polls there).
        self.on_stopping: list[Callable[[], None]] = []
        #: Called on the loop as any stop begins, forced too (worker log streams end there).
        self.on_ending: list[Callable[[], None]] = []
        self._on_exit_signal = on_exit_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn only sets a flag the loop reads; the watchdog ends the process if the loop is held.
        super().handle_exit(sig, frame)
        if self._on_exit_signal is not None:
            self._on_exit_signal(sig)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for callback in self.on_ending:
            callback()
        if self.on_ending:
            for _ in range(5):  # the ended streams send their last chunk before connections close
                await asyncio.sleep(0)
        if not self.force_exit:
            # Held worker polls would outlast uvicorn's grace and be cancelled (an ERROR line, a 500
            # to the worker): answer them first.
            for callback in self.on_stopping:
                callback()
            return await super().shutdown(sockets)
        # Forced (Emulator.stop): uvicorn would still sleep 0.1 s for connections to finish answering,
        # which a forced stop does not wait for anyway; every test that starts an emulator paid it.
        for server in getattr(self, "servers", ()):
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await asyncio.sleep(0)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's SIGINT/SIGTERM capture, plus SIGHUP (a closed terminal, `systemctl reload`): each
        stops serving gracefully and is raised again once the server is down, so the caller's own
        handler (``rpq serve`` stops its worker processes there) always runs."""
        with super().capture_signals():
            hangup = getattr(signal, "SIGHUP", None)
            if hangup is None or threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(hangup, self.handle_exit)
            try:
                yield
            finally:
                signal.signal(hangup, previous)

    def request_stop(self) -> None:
        """Thread-safe: stop serving now (running requests are cut; workers' polls need no goodbye)."""
        self.should_exit = True
        self.force_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(wake.set)


class Emulator:
    """A local RunPod queue endpoint server.

    ```python
    with Emulator({"echo": echo}, api_key="k", workers=2, clock="virtual") as emu:
        emu.base_url       # "http://127.0.0.1:<free port>/v2"
        emu.advance(600)   # ten virtual minutes pass: ttl, timeouts, retention, webhook retries, ...
    ```

    Args:
        endpoints: Maps an endpoint id to a handler (``def handler(job): ...``, sync, async or a
            generator) or an ``EndpointSpec``; ``None`` (or ``EndpointSpec(handler=None)``) makes an
            endpoint fed only by external workers over HTTP (see ``rpq worker-env``).
        api_key: The key requests must carry; ``None`` accepts any key or none.
        workers: In-process workers per endpoint (an ``EndpointSpec`` may set its own).
        clock: ``"real"``; ``"virtual"``, where time moves only through ``advance``; or ``"auto"``,
            virtual, and a held client long-poll that only time can end skips ahead.
        time_scale: Multiplies every RunPod duration on a real clock (``0.001``: a 30-minute retention
            passes in 1.8 s); ignored on a virtual clock.
        rate_limits: RunPod's limits to enforce, as the client's ``RateLimits``: ``True`` for RunPod's
            table, ``False`` for none.
        per_worker_allowance: Requests per rate window per running worker: an endpoint's limit is
            max(RunPod's table, running workers * this), as RunPod scales limits with workers.
        faults: Errors, dropped connections and latency to inject on the public routes.
        timings: RunPod's lifecycle durations (retention, ttl, timeouts...), to override one.
        host: The address to bind; 127.0.0.1 keeps the emulator off the network.
        port: The port to bind; 0 takes a free one (``base_url`` says which).
        log_level: uvicorn's log level.
        strict: Refuse unknown keys in request bodies with a 400; by default they are ignored with a
            warning (``warnings``, the log, an ``X-Rpq-Warning`` header), as RunPod ignores them.
        readings: Which reading to follow where RunPod's documents contradict each other (ttl,
            executionTimeout, ``/status?ttl=``).
        loop_warn_after: Seconds the event loop may go without answering before the emulator warns
            (``warnings`` with kind ``"loop_blocked"``, and the log): an async handler that computes
            without awaiting holds every route meanwhile. ``None`` switches the watch off.
        state: A file (SQLite) that keeps jobs, counters, owed webhooks and the clock across restarts;
            created when missing. See docs/local-runpod.md.
        restore: A snapshot (``POST /_emulator/snapshot``, ``snapshot``) to start from: `state`
            becomes a copy of it (its previous content replaced; the snapshot is only read). Without
            `state`, the copy is a temporary file removed when the emulator is collected.
        s3: Also serve an S3 on loopback (moto's server, the ``s3`` extra) with the buckets workers
            write to; ``s3_config`` names it, and while the emulator runs the ``BUCKET_*`` variables
            ``rp_upload`` reads are set in this process (see ``s3_environment``).

    Raises:
        ValueError: An endpoint id that is empty or has a ``/``, or ``workers`` below 0.
        ConfigurationError: ``state`` or ``restore`` is not a state file, is one written by a newer
            version, or (``restore``) has a broken row (the message names the file, row and field).
    """

    def __init__(
        self,
        endpoints: Mapping[str, Handler | EndpointSpec | None] | None = None,
        *,
        api_key: str | None = None,
        workers: int = 1,
        clock: ClockKind = "real",
        time_scale: float = 1.0,
        rate_limits: RateLimits | bool = True,
        per_worker_allowance: int = 50,
        faults: Faults | None = None,
        timings: Timings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        strict: bool = False,
        readings: Readings | None = None,
        loop_warn_after: Duration | None = 0.5,
        state: str | os.PathLike[str] | None = None,
        s3: bool = False,
        restore: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        specs: dict[str, EndpointSpec] = {}
        for endpoint_id, value in (endpoints or {}).items():
            if not isinstance(endpoint_id, str) or not endpoint_id or "/" in endpoint_id:
                raise ValueError(f"endpoint id must be a non-empty string without '/', got {endpoint_id!r}")
            specs[endpoint_id] = value if isinstance(value, EndpointSpec) else EndpointSpec(handler=value)
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be a non-empty string or None (None accepts any key)")
        if timings is not None and not isinstance(timings, Timings):
            raise TypeError(f"timings must be a Timings, got {type(timings).__name__}")
        if readings is not None and not isinstance(readings, Readings):
            raise TypeError(f"readings must be a Readings, got {type(readings).__name__}")
        if faults is not None and not isinstance(faults, Faults):
            raise TypeError(f"faults must be a Faults, got {type(faults).__name__}")
        if isinstance(rate_limits, bool):
            limits = RateLimits.runpod() if rate_limits else RateLimits.off()
        elif isinstance(rate_limits, RateLimits):
            limits = rate_limits
        else:
            raise TypeError(
                f"rate_limits must be a RateLimits or a bool, got {type(rate_limits).__name__}: wrap a "
                "table as RateLimits(limits={...}) (runpod_queue._limits.RateLimits)"
            )
        self.clock: Clock = make_clock(clock, time_scale)
        self.timings: Timings = timings or Timings()
        self._parts = assemble(
            specs,
            clock=self.clock,
            timings=self.timings,
            rate_limits=limits,
            per_worker_allowance=per_worker_allowance,
            default_workers=workers,
            api_key=api_key,
            faults=faults,
            strict=bool(strict),
            readings=readings,
            loop_warn_after=None
            if loop_warn_after is None
            else _seconds(loop_warn_after, "loop_warn_after", low=0.05),
            state=self._state_file(state, restore),
        )
        self.app: EmulatorApp = self._parts.app
        self.host: str = host
        self.port: int = port
        self.log_level: str = log_level
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None
        self._s3: LocalS3 | None = LocalS3(host) if s3 else None
        self._parts.control.serve_s3(lambda: None if self._s3 is None else self._s3.config)

    @staticmethod
    def _state_file(
        state: str | os.PathLike[str] | None, restore: str | os.PathLike[str] | None
    ) -> StateFile | None:
        if restore is not None:
            if state is None:
                folder = tempfile.mkdtemp(prefix="rpq-restored-")
                state = os.path.join(folder, "state.db")
                restore_snapshot(restore, state)
                opened = StateFile(state)
                weakref.finalize(opened, shutil.rmtree, folder, True)
                return opened
            restore_snapshot(restore, state)
        return StateFile(state) if state is not None else None

    def snapshot(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Write a consistent copy of the emulator's state to `path`, to start another emulator from
        (``restore=``, ``rpq serve --restore``); the same as ``POST /_emulator/snapshot``.

        With ``state=`` it is SQLite's backup of the state file (webhooks still owed included);
        without, the jobs, counters and clock as they are in memory.

        Args:
            path: The file to write (one self-contained SQLite file).
            overwrite: Replace `path` if it exists (by default an existing file is refused).

        Returns:
            How many jobs the snapshot holds.

        Raises:
            FileExistsError: `path` exists and `overwrite` is false.
            OSError: `path` cannot be written.
        """
        answer = self._on_loop(lambda: self._parts.admin.snapshot(str(path), overwrite=overwrite))
        return int(answer["jobs"])

    def __repr__(self) -> str:
        state = self.base_url if self._server is not None else "stopped"
        return f"<Emulator endpoints={sorted(self.core.endpoints)} clock={self.clock.kind} {state}>"

    @property
    def core(self) -> Core:
        """The state machine (for tools that need more than HTTP; not a stable API)."""
        return self._parts.core

    @property
    def warnings(self) -> list[EmulatorWarning]:
        """What the emulator accepted or dropped where RunPod does so silently (unknown request keys,
        results over 20 MB; also sent as `X-Rpq-Warning`), and what went wrong in the emulator itself (a
        handler holding its event loop, finished jobs forgotten past ``Timings.max_retained_jobs``),
        oldest first, the last 1000. Each is logged too; each entry is a ``str`` with a ``kind``."""
        return self.core.notices.snapshot()

    @property
    def forgotten_jobs(self) -> int:
        """Finished jobs forgotten before their retention ended because more than
        ``Timings.max_retained_jobs`` were kept (oldest first; each answers 404 as after retention)."""
        return self.core.forgotten

    @property
    def external(self) -> ExternalWorkers:
        """The worker protocol; `external.on_stop_pod` lists callbacks for workers asking for stopPod."""
        return self._parts.external

    # -- time -----------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds since start on the emulator's clock (virtual seconds on a virtual clock)."""
        return self.clock.now()

    def advance(self, seconds: Duration) -> float:
        """Move a virtual clock forward, firing the timers that fall due in time order.

        Thread-safe; returns once their effects have settled, so a test can assert right after. From
        code running on the emulator's own loop, use ``await emu.clock.advance(seconds)`` instead (this
        method would wait on itself).

        Args:
            seconds: How far to move, in seconds or as a ``timedelta``.

        Returns:
            The new ``now``.

        Raises:
            RuntimeError: The emulator runs on the real clock, or this was called on its own loop.
            ValueError: ``seconds`` is negative, not finite, over 10 years (one advance), or would move
                the clock past what it can count.
        """
        amount = advance_amount(seconds)
        clock = self.clock
        if not isinstance(clock, VirtualClock):
            raise RuntimeError(
                "advance() needs a virtual clock: this emulator runs on the real clock; create it with "
                "Emulator(..., clock='virtual') (or 'auto')"
            )
        loop = self.app.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return clock.advance_idle(amount)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("advance() called on the emulator's loop: use `await emu.clock.advance(...)`")
        return asyncio.run_coroutine_threadsafe(clock.advance(amount), loop).result()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        """``http://host:port``, without ``/v2`` (the console and ``/_emulator/*`` live there)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's base URL should be: `http://127.0.0.1:<port>/v2`."""
        return f"{self.root_url}/v2"

    @property
    def management_url(self) -> str:
        """Where RunPod's REST v2 management routes are emulated (``GET``/``PATCH /serverless/{id}``,
        ``GET /serverless/{id}/workers``): what ``https://api.runpod.io/v2`` is on RunPod."""
        return f"{self.root_url}/_management/v2"

    @property
    def endpoint_ids(self) -> list[str]:
        """The ids of the endpoints this emulator serves, sorted."""
        return sorted(self.core.endpoints)

    @property
    def endpoint_specs(self) -> dict[str, EndpointSpec]:
        """Endpoint id → its spec (`handler` None: fed by external workers only)."""
        return {eid: ep.spec for eid, ep in sorted(self.core.endpoints.items())}

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        """Every webhook POST made so far, in order (a snapshot)."""
        return list(self._parts.delivery.attempts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every API request received so far (the last 10 000), oldest first: `method`, `path`,
        `status_code` (None: the connection was dropped before the answer), `endpoint_id`, `operation`,
        `job_id`, `at`. Worker-protocol and `/_emulator/*` requests are left out. A snapshot."""
        return self._parts.requests.records()

    @property
    def s3_config(self) -> S3Config:
        """The embedded S3 (``Emulator(s3=True)``) as an ``S3Config``: its loopback URL, a key pair it
        accepts and the ``runpod-queue`` bucket; ``S3Store(emu.s3_config)`` uploads inputs to it.

        Raises:
            RuntimeError: The emulator was made without ``s3=True`` or is not running.
        """
        if self._s3 is None or self._s3.config is None:
            raise RuntimeError("no embedded S3: make the emulator with Emulator(..., s3=True) and start it")
        return self._s3.config

    def s3_environment(self) -> dict[str, str]:
        """The variables a worker reads for storage: ``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID``,
        ``BUCKET_SECRET_ACCESS_KEY``, ``BUCKET_NAME`` and ``RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=1``. While
        the emulator runs they are also set in this process, for in-process handlers and the worker
        processes it starts.

        Returns:
            The variables.

        Raises:
            RuntimeError: The emulator was made without ``s3=True`` or is not running.
        """
        if self._s3 is None or self._s3.config is None:
            raise RuntimeError("no embedded S3: make the emulator with Emulator(..., s3=True) and start it")
        return self._s3.environment()

    def clear_requests(self) -> None:
        """Forget the requests recorded so far (e.g. after a test's setup)."""
        self._parts.requests.clear()

    def jobs(self, endpoint_id: str) -> list[JobView]:
        """The jobs `endpoint_id` still answers for, in submission order: `id`, `status`, `input`,
        `output`, `error`, `attempts`, ... (see `JobView`). A job past its retention, purged or removed
        by its ttl is gone, as on RunPod. A snapshot, taken on the server's loop while it runs."""
        endpoint = self.core.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ValueError(
                f"endpoint {endpoint_id!r} is not served by this emulator (it serves: "
                f"{', '.join(self.endpoint_ids) or 'none'}); pass it in Emulator({{...}})"
            )
        loop = self.app.loop
        if loop is None or not loop.is_running():
            return job_views(endpoint)

        async def snapshot() -> list[JobView]:
            return job_views(endpoint)

        views: list[JobView] = self.call(snapshot)
        return views

    def workers(self, endpoint_id: str) -> list[WorkerView]:
        """The workers of `endpoint_id` now: `id`, `status` (INITIALIZING, IDLE, RUNNING, THROTTLED,
        UNHEALTHY), `created_at`, `ready_at`, `job_id`, `reason`. An endpoint without a fleet shows its
        ready workers. A snapshot, taken on the server's loop while it runs.

        Args:
            endpoint_id: An endpoint this emulator serves.

        Raises:
            ValueError: The emulator does not serve `endpoint_id`.
        """
        endpoint = self._endpoint(endpoint_id)

        def views() -> list[WorkerView]:
            if endpoint.fleet is not None:
                return endpoint.fleet.views()
            return fixed_worker_views(
                endpoint, now=self.clock.now(), lost_after=self.core.worker_lost_after()
            )

        return self._on_loop(views)

    @property
    def fitness_failures(self) -> list[FitnessFailure]:
        """Every failed fitness check a worker reported (``ping?status=unhealthy&check=…&reason=…``, as
        runpod-python's ``rp_fitness.py`` sends before it exits), oldest first (the last 1000). Under
        ``rpq serve --runpod-worker`` the exited worker is restarted under a new id, with a growing
        pause after each quick exit: a crash loop shows as one failure per restart."""
        return list(self.external.fitness_failures)

    def update_endpoint(
        self,
        endpoint_id: str,
        *,
        workers_min: int | None = None,
        workers_max: int | None = None,
        idle_timeout: Duration | None = None,
    ) -> None:
        """Change a fleet's scaling settings while it runs, as RunPod's PATCH /serverless/{id} does.

        A raised `workers_min` starts workers (cold); a lowered `workers_max` stops idle ones. Any update
        lifts the idle-endpoint cap (3 days without requests: 2 workers at most, 7 days: none).

        Args:
            endpoint_id: A fleet endpoint (``EndpointSpec(workers_min=…, workers_max=…)``).
            workers_min: Workers kept running at all times; ``None`` keeps the current value.
            workers_max: The most workers the scaler may run; ``None`` keeps the current value.
            idle_timeout: Seconds an idle worker above the minimum lives; ``None`` keeps it.

        Raises:
            ValueError: Not a fleet endpoint, a negative count, or `workers_min` above `workers_max`.
        """
        fleet = self._fleet(endpoint_id)
        for name, value in (("workers_min", workers_min), ("workers_max", workers_max)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        idle = None if idle_timeout is None else _seconds(idle_timeout, "idle_timeout")
        if (workers_min if workers_min is not None else fleet.workers_min) > (
            workers_max if workers_max is not None else fleet.workers_max
        ):
            raise ValueError(
                f"workers_min ({workers_min if workers_min is not None else fleet.workers_min}) is above "
                f"workers_max ({workers_max if workers_max is not None else fleet.workers_max})"
            )
        self._on_loop(
            lambda: fleet.update(workers_min=workers_min, workers_max=workers_max, idle_timeout=idle)
        )

    def set_capacity(self, endpoint_id: str, *, gpus: int | None) -> None:
        """Limit the GPUs a fleet can get, as when RunPod has none free: workers beyond it wait THROTTLED.

        Workers already holding a GPU keep it; when one stops (or the limit rises), a throttled worker
        starts its cold start.

        Args:
            endpoint_id: A fleet endpoint.
            gpus: How many workers may hold a GPU at once; ``None`` lifts the limit.

        Raises:
            ValueError: Not a fleet endpoint, or `gpus` below 0.
        """
        fleet = self._fleet(endpoint_id)
        if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0):
            raise ValueError(f"gpus must be an int >= 0 or None (no limit), got {gpus!r}")
        self._on_loop(lambda: fleet.set_capacity(gpus))

    def _endpoint(self, endpoint_id: str) -> EndpointState:
        endpoint = self.core.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ValueError(
                f"endpoint {endpoint_id!r} is not served by this emulator (it serves: "
                f"{', '.join(self.endpoint_ids) or 'none'}); pass it in Emulator({{...}})"
            )
        return endpoint

    def _fleet(self, endpoint_id: str) -> Fleet:
        fleet = self._endpoint(endpoint_id).fleet
        if fleet is None:
            raise ValueError(
                f"endpoint {endpoint_id!r} has fixed ready workers, not a fleet: create it with "
                "EndpointSpec(handler, workers_min=…, workers_max=…) (docs/fleet.md)"
            )
        return fleet

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the server's loop while it runs (the fleet's state is the loop's), else here."""
        loop = self.app.loop
        if loop is None or not loop.is_running():
            return fn()

        async def run() -> _T:
            return fn()

        result: _T = self.call(run)
        return result

    def reset(self) -> None:
        """Start over without restarting: every job, recorded request, webhook attempt, warning and
        counter gone, the clock back at 0; endpoints, handlers, faults and rate limits stay.

        The same as ``POST /_emulator/reset``. Requests held on a job (runsync, stream) answer
        CANCELLED; no webhook is sent for the jobs dropped.

        Raises:
            RuntimeError: The emulator is not running.
        """
        loop = self.app.loop
        if loop is None or not loop.is_running():
            raise RuntimeError("the emulator is not running: start it before resetting it")
        self.call(self._parts.admin.reset)

    def set_faults(self, faults: Faults) -> None:
        """Change fault injection while running (thread-safe).

        Args:
            faults: The new settings, replacing the current ones.
        """
        loop = self.app.loop
        if loop is None or not loop.is_running():
            self.app.set_faults(faults)
        else:
            loop.call_soon_threadsafe(self.app.set_faults, faults)

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: Duration = 10.0) -> Any:
        """Run a coroutine on the server's loop and return its result (for tests and tools).

        Args:
            fn: A coroutine function taking no arguments.
            timeout: Seconds (or a ``timedelta``) to wait for the result.

        Raises:
            RuntimeError: The emulator is not running.
        """
        wait = _seconds(timeout, "call(timeout)")
        loop = self.app.loop
        if loop is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(wait)

    # -- running --------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        return sock

    def _make_server(self) -> _Server:
        # httptools with a header size limit and header/body deadlines (see _serving); no connection
        # limit: a test may hold thousands of long polls open on purpose.
        config = guarded_config(
            self.app,
            limit_concurrency=None,
            ws="none",
            lifespan="on",
            log_level=self.log_level,
            access_log=False,
            # Loopback by default and nothing reads the client's address: uvicorn's proxy-header
            # middleware would only add a layer to every request.
            proxy_headers=False,
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        watchdog = self._parts.watchdog
        server = _Server(config, watchdog.exit_requested if watchdog is not None else None)
        server.on_stopping.append(self.external.release_polls)
        server.on_ending.append(self.core.logs.close)
        return server

    def start(self) -> Emulator:
        """Start serving in a background thread; returns when the port accepts connections.

        Returns:
            The emulator itself, so ``emu = Emulator(...).start()`` reads naturally.

        Raises:
            RuntimeError: Already running, or the server failed to start (the cause is in the message).
        """
        if self._thread is not None:
            raise RuntimeError("this emulator is already running")
        if self._s3 is not None:
            self._s3.start()
            self._s3.export()
        self._socket = self._bind()
        self._server = server = self._make_server()
        sock = self._socket

        def main() -> None:
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported by start()
                self._error = exc

        self._thread = threading.Thread(target=main, name=f"rpq-emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator failed to start: {self._error!r}")
            time.sleep(_START_POLL_S)
        return self

    def stop(self) -> None:
        """Stop the server and its workers. Idempotent."""
        server, thread = self._server, self._thread
        if server is not None:
            server.request_stop()
        if thread is not None:
            thread.join(timeout=_STOP_TIMEOUT_S)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        if self._s3 is not None:
            self._s3.stop()

    def serve_forever(self, on_ready: Callable[[Emulator], None] | None = None) -> None:
        """Serve in the calling thread until Ctrl-C / SIGTERM (used by ``rpq serve``).

        Args:
            on_ready: Called once the port is bound (so ``base_url`` is final), before serving.
        """
        if self._s3 is not None:
            self._s3.start()
            self._s3.export()  # before on_ready: the worker processes it starts inherit the variables
        try:
            sock = self._bind()
            if on_ready is not None:
                on_ready(self)
            server = self._make_server()
            self._server = server
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(server.serve(sockets=[sock]))
            finally:
                sock.close()
                self._server = None
        finally:
            if self._s3 is not None:
                self._s3.stop()

    def __enter__(self) -> Emulator:
        """Start serving (``start``); the ``with`` block's end stops it."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
