"""`Emulator`: the app on a real uvicorn server (uvloop + httptools), in a background thread or in front."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any

import uvicorn

from runpod_queue._contract import OperationLimit
from runpod_queue._net import listen_socket
from runpod_queue.emulator._config import Clock, EndpointSpec, Faults, Handler, Timings
from runpod_queue.emulator._ratelimit import RateLimiter
from runpod_queue.emulator.app import EmulatorApp
from runpod_queue.emulator.delivery import WebhookAttempt
from runpod_queue.emulator.queue import Core

__all__ = ["Emulator"]

log = logging.getLogger("runpod_queue.emulator")


class _QuietDrops(logging.Filter):
    """uvicorn logs an error when a response is left unfinished: that is our injected 'drop' fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop


class Emulator:
    """A local RunPod queue endpoint server.

    ```python
    with Emulator({"echo": echo}, api_key="k", workers=2, time_scale=0.01) as emu:
        emu.base_url   # "http://127.0.0.1:<free port>/v2"
    ```

    `endpoints` maps an endpoint id to a handler or an `EndpointSpec`. `time_scale` multiplies every
    RunPod lifecycle duration (`timings`); rate-limit windows are never scaled — pass
    `rate_limits=False` to switch limits off or a mapping of operation → `OperationLimit` to change them.
    Binds 127.0.0.1 by default. An endpoint given `None` (or `EndpointSpec(handler=None)`) is fed only
    by external workers over HTTP: unmodified official workers, see `rpq worker-env`.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Handler | EndpointSpec | None] | None = None,
        *,
        api_key: str | None = None,
        workers: int = 1,
        time_scale: float = 1.0,
        rate_limits: bool | Mapping[str, OperationLimit] = True,
        per_worker_allowance: int = 50,
        faults: Faults | None = None,
        timings: Timings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
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
        self.clock = Clock(time_scale)
        self.timings = timings or Timings()
        self.core = Core(specs, default_workers=workers, clock=self.clock, timings=self.timings)
        if isinstance(rate_limits, bool):
            limiter = RateLimiter(enabled=rate_limits, per_worker_allowance=per_worker_allowance)
        else:
            limiter = RateLimiter(rate_limits, per_worker_allowance=per_worker_allowance)
        self.app = EmulatorApp(self.core, api_key=api_key, limiter=limiter, faults=faults)
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = self.base_url if self._server is not None else "stopped"
        return f"<Emulator endpoints={sorted(self.core.endpoints)} {state}>"

    # -- addresses ------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's base URL should be: `http://127.0.0.1:<port>/v2`."""
        return f"{self.root_url}/v2"

    @property
    def endpoint_ids(self) -> list[str]:
        return sorted(self.core.endpoints)

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        """Every webhook POST made so far, in order (a snapshot)."""
        return list(self.app.delivery.attempts)

    def set_faults(self, faults: Faults) -> None:
        """Change fault injection while running (thread-safe)."""
        loop = self.core.loop
        if loop is None or not loop.is_running():
            self.app.set_faults(faults)
        else:
            loop.call_soon_threadsafe(self.app.set_faults, faults)

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and return its result (for tests and tools)."""
        loop = self.core.loop
        if loop is None:
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(timeout)

    # -- running --------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        return sock

    def _make_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            http="httptools",
            ws="none",
            lifespan="on",
            log_level=self.log_level,
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        return uvicorn.Server(config)

    def start(self) -> Emulator:
        """Start serving in a background thread; returns when the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this emulator is already running")
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
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator failed to start: {self._error!r}")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop the server and its workers. Idempotent."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
            server.force_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def serve_forever(self, on_ready: Callable[[Emulator], None] | None = None) -> None:
        """Serve in the calling thread until Ctrl-C / SIGTERM (used by `rpq serve`).

        `on_ready` is called once the port is bound (so `base_url` is final), before serving."""
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

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
