"""Builds one emulator's object graph, in one place, so every dependency is visible here.

```
delivery = WebhookDelivery(clock, retry_gap)       # sends webhooks; no core
runner   = InProcessRunner()                       # runs handlers; reports to the core that starts a run
core     = Core(endpoints, clock, timings, runner, webhooks=delivery)
external = ExternalWorkers(core)                   # the worker protocol; drives the core, not the reverse
limiter  = RateLimiter(rate_limits)
requests = RequestLog()                            # what the app answered, for tests (inspect)
admin    = Admin(core, delivery, external, requests, limiter)  # reset, endpoints at run time
control  = Control(clock, core, requests, admin, faults)  # /_emulator/*
console  = Console(core, delivery)                 # / and /_console/*: reads the core, never writes
watchdog = LoopWatchdog(notices, warn_after)       # a thread warning when the loop stops answering
app      = EmulatorApp(core, limiter, external.routes, control, requests, api_key, faults, startup, shutdown,
                       console)
```

Each part receives what it uses in its constructor, in this order; nothing reaches back to install
hooks. The app's lifespan runs `startup(loop)` (binds what schedules on the loop) and `shutdown()`, both
defined here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from runpod_queue._limits import RateLimits
from runpod_queue.emulator._admin import Admin
from runpod_queue.emulator._app import EmulatorApp
from runpod_queue.emulator._cassette import ReplayHandler
from runpod_queue.emulator._clock import Clock
from runpod_queue.emulator._config import EndpointSpec, Faults, Timings
from runpod_queue.emulator._console import Console
from runpod_queue.emulator._control import Control
from runpod_queue.emulator._core import Core
from runpod_queue.emulator._delivery import WebhookDelivery
from runpod_queue.emulator._external import ExternalWorkers
from runpod_queue.emulator._inspect import RequestLog
from runpod_queue.emulator._management import ManagementRoutes
from runpod_queue.emulator._ratelimit import RateLimiter
from runpod_queue.emulator._readings import Readings
from runpod_queue.emulator._scripted import ScriptedHandler
from runpod_queue.emulator._state import StateFile
from runpod_queue.emulator._watchdog import LoopWatchdog
from runpod_queue.emulator._workers import InProcessRunner

__all__ = ["Emulation", "assemble"]

log = logging.getLogger("runpod_queue.emulator")


@dataclass(slots=True)
class Emulation:
    """The parts of one emulator, wired."""

    clock: Clock
    timings: Timings
    core: Core
    runner: InProcessRunner
    delivery: WebhookDelivery
    external: ExternalWorkers
    limiter: RateLimiter
    requests: RequestLog
    control: Control
    admin: Admin
    console: Console
    app: EmulatorApp
    watchdog: LoopWatchdog | None


def assemble(
    endpoints: Mapping[str, EndpointSpec],
    *,
    clock: Clock,
    timings: Timings,
    rate_limits: RateLimits,
    per_worker_allowance: int,
    default_workers: int,
    api_key: str | None,
    faults: Faults | None,
    strict: bool = False,
    readings: Readings | None = None,
    loop_warn_after: float | None = None,
    state: StateFile | None = None,
) -> Emulation:
    """Build the emulator's parts; `endpoints` and every argument are already validated values."""
    for endpoint_id, spec in endpoints.items():
        if isinstance(spec.handler, ScriptedHandler):
            spec.handler.bind(clock)  # its delays are this emulator's seconds
        elif isinstance(spec.handler, ReplayHandler):
            spec.handler.bind(clock, endpoint_id)  # the recorded waits too; the id picks the recordings
    runner = InProcessRunner()
    delivery = WebhookDelivery(clock, retry_gap=timings.webhook_retry_gap * clock.scale)
    core = Core(
        endpoints,
        default_workers=default_workers,
        clock=clock,
        timings=timings,
        runner=runner,
        webhooks=delivery,
        readings=readings,
    )
    external = ExternalWorkers(core)
    limiter = RateLimiter(rate_limits, per_worker_allowance=per_worker_allowance)
    requests = RequestLog()
    admin = Admin(
        core,
        default_workers=default_workers,
        delivery=delivery,
        external=external,
        requests=requests,
        limiter=limiter,
        state=state,
    )
    if state is not None:
        state.attach(core, delivery)

    # `app` is built below; these run only once it serves.
    def get_faults() -> Faults:
        return app.faults

    def set_faults(value: Faults) -> None:
        app.set_faults(value)

    control = Control(clock, core, requests, admin=admin, faults=(get_faults, set_faults))
    console = Console(core, delivery)
    watchdog = (
        LoopWatchdog(core.notices, loop_warn_after, core.running_jobs)
        if loop_warn_after is not None
        else None
    )

    def startup(loop: asyncio.AbstractEventLoop) -> None:
        if watchdog is not None:
            watchdog.start(loop)
        clock.bind(loop)
        core.bind(loop)
        runner.bind(loop)
        delivery.bind(loop)
        console.bind(loop)
        if state is not None:
            restored = state.restore(core, delivery)
            if restored:
                log.info("state file %s: %d job(s) restored", state.path, restored)

    async def shutdown() -> None:
        if watchdog is not None:
            watchdog.stop()
        await console.aclose()
        core.logs.close()
        await runner.aclose()
        await delivery.aclose()
        await external.aclose()
        if state is not None:
            state.close()

    app = EmulatorApp(
        core,
        limiter=limiter,
        worker_routes=external.routes,
        control=control,
        request_log=requests,
        api_key=api_key,
        faults=faults,
        strict=strict,
        on_startup=startup,
        on_shutdown=shutdown,
        console=console,
    )
    app.management = ManagementRoutes(core, api_key=api_key, lost_after=core.worker_lost_after)
    return Emulation(
        clock,
        timings,
        core,
        runner,
        delivery,
        external,
        limiter,
        requests,
        control,
        admin,
        console,
        app,
        watchdog,
    )
