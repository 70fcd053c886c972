"""Emulator configuration: RunPod's durations (`Timings`), fault injection and per-endpoint options."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from runpod_queue._units import Duration, seconds
from runpod_queue.emulator._cassette import Cassette

__all__ = ["EndpointSpec", "Faults", "Handler", "ScalerKind", "Timings"]

ScalerKind = Literal["queue_delay", "request_count"]
_SCALERS: tuple[str, ...] = ("queue_delay", "request_count")

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True, init=False)
class Timings:
    """Every RunPod lifecycle duration the emulator applies, in seconds (a number or a `timedelta`), and
    the cap on finished jobs kept.

    On a real clock `Emulator(time_scale=…)` multiplies all of them, so a 30-minute retention can pass
    in milliseconds; on a virtual clock they are virtual seconds. Override one field to change a single
    rule. Rate-limit windows are not here (see `RateLimits`): they are never scaled.

    `max_retained_jobs` is the one count here, as it bounds retention too: at most that many finished
    jobs are kept for their retention (all endpoints together; about 5.5 KB each, see docs/emulator.md).
    Past it the oldest finished job is forgotten first and answers 404 as after its retention, and the
    emulator warns once. ``None`` keeps every finished job for its whole retention, as RunPod does.
    """

    retention_run: float
    retention_sync: float
    webhook_retry_gap: float
    default_execution_timeout: float
    default_ttl: float
    runsync_default_wait: float
    # [ours] How long an empty /stream or /status-sync poll is held when the caller gives no ?wait=.
    stream_default_wait: float
    status_sync_default_wait: float
    # Worker protocol: how long an empty job-take / job-stop poll is held (never over 60 real seconds:
    # the official worker gives up at 90), and how long a silent external worker counts as alive.
    job_take_hold: float
    worker_lost_after: float
    max_retained_jobs: int | None

    # RunPod's durations (``_contract``), written out so the signature shows them; a test keeps them equal.
    def __init__(
        self,
        *,
        retention_run: Duration = 1800.0,
        retention_sync: Duration = 60.0,
        webhook_retry_gap: Duration = 10.0,
        default_execution_timeout: Duration = 600.0,
        default_ttl: Duration = 86_400.0,
        runsync_default_wait: Duration = 90.0,
        stream_default_wait: Duration = 10.0,
        status_sync_default_wait: Duration = 90.0,
        job_take_hold: Duration = 20.0,
        worker_lost_after: Duration = 30.0,
        max_retained_jobs: int | None = 100_000,
    ) -> None:
        given = locals()
        for f in fields(self):
            if f.name != "max_retained_jobs":
                object.__setattr__(self, f.name, seconds(given[f.name], f"Timings.{f.name}"))
        if max_retained_jobs is not None and (
            isinstance(max_retained_jobs, bool)
            or not isinstance(max_retained_jobs, int)
            or max_retained_jobs < 1
        ):
            raise ValueError(
                f"Timings.max_retained_jobs must be an int >= 1 or None (no cap), got {max_retained_jobs!r}"
            )
        object.__setattr__(self, "max_retained_jobs", max_retained_jobs)


@dataclass(frozen=True, slots=True, init=False)
class Faults:
    """Fault injection on the public routes, for testing clients. Off by default.

    Each probability is checked independently per request (in this order: 429, 503, 500, 500 after,
    drop). ``error_500`` answers before the request is processed (no job is created), as RunPod's front end
    failing would; ``error_500_processed`` processes it first and then answers 500 (a /run's job exists and
    runs, but its id never reaches the client), as a failure on the way back would. A client cannot tell
    the two apart, so both count as "may have run". A dropped request is *processed* and then its
    connection closed before a full answer is sent: the ambiguous case a client must not blindly retry
    for /run. `latency` (seconds, real time: it stands for
    the network) is added before processing, uniform in [0, latency].
    """

    error_429: float
    error_503: float
    error_500: float
    error_500_processed: float
    drop: float
    latency: float
    seed: int | None

    def __init__(
        self,
        *,
        error_429: float = 0.0,
        error_503: float = 0.0,
        error_500: float = 0.0,
        error_500_processed: float = 0.0,
        drop: float = 0.0,
        latency: Duration = 0.0,
        seed: int | None = None,
    ) -> None:
        for name, value in (
            ("error_429", error_429),
            ("error_503", error_503),
            ("error_500", error_500),
            ("error_500_processed", error_500_processed),
            ("drop", drop),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"Faults.{name} is a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "latency", seconds(latency, "Faults.latency"))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"Faults.seed must be an int or None, got {type(seed).__name__}")
        object.__setattr__(self, "seed", seed)

    @property
    def active(self) -> bool:
        """Whether any fault is switched on."""
        return bool(
            self.error_429
            or self.error_503
            or self.error_500
            or self.error_500_processed
            or self.drop
            or self.latency
        )


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One emulated endpoint: its in-process handler (or none, for external workers only) and options.

    `workers=None` takes the emulator-wide default. `return_aggregate_stream` makes a generator
    handler's chunks also its final output, as the official worker's option of that name does.

    Setting `workers_min` or `workers_max` switches the endpoint to a *fleet* (docs/fleet.md): workers
    start on demand after `cold_start`, a scaler adds them under load up to `workers_max`, and idle ones
    stop after `idle_timeout`, as RunPod's do. Without them (the default) the endpoint has `workers`
    ready workers and no cold start.

    Args:
        handler: The in-process handler; ``None`` for an endpoint fed only by external workers.
        workers: Ready workers (no fleet); ``None`` takes the emulator-wide default.
        return_aggregate_stream: A generator handler's chunks are also its final output.
        workers_min: Fleet: workers kept running at all times (RunPod's "active workers"; default 0).
        workers_max: Fleet: the most workers the scaler may run (RunPod's default is 3).
        idle_timeout: Fleet: seconds an idle worker above `workers_min` lives (RunPod's default 5).
        cold_start: Fleet: seconds a new worker spends INITIALIZING before it takes jobs.
        scaler: Fleet: ``"queue_delay"`` adds a worker for a job that waited `scaler_value` seconds;
            ``"request_count"`` runs ceil((queued + in progress) / `scaler_value`) workers.
        scaler_value: Fleet: the scaler's threshold (RunPod's default 4 for both).
        flashboot: Fleet: a worker started while a stopped one's resources are kept boots in a tenth
            of `cold_start` (ours: RunPod gives no figure).
        replay: A cassette (its path, or a loaded `Cassette`) recorded by ``rpq record``: the endpoint
            answers each input as recorded, after the recorded queue wait and run time on the
            emulator's clock (docs/local-runpod.md). A `handler` given with it runs the inputs the
            cassette has no recording of; once built, `handler` holds the replaying handler and
            `replay` the loaded `Cassette`.

    Raises:
        ConfigurationError: `replay` names a file that is not a valid cassette (the message names the
            file, line and field).
    """

    handler: Handler | None = None
    workers: int | None = None
    return_aggregate_stream: bool = False
    workers_min: int | None = None
    workers_max: int | None = None
    idle_timeout: Duration = 5.0
    cold_start: Duration = 0.0
    scaler: ScalerKind = "queue_delay"
    scaler_value: float = 4.0
    flashboot: bool = False
    replay: str | os.PathLike[str] | Cassette | None = None

    def __post_init__(self) -> None:
        if self.replay is not None:
            self._replay()
        if self.handler is not None and not callable(self.handler):
            raise TypeError(f"EndpointSpec.handler must be callable, got {type(self.handler).__name__}")
        for name in ("workers", "workers_min", "workers_max"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"EndpointSpec.{name} must be an int >= 0, got {value!r}")
        object.__setattr__(self, "idle_timeout", seconds(self.idle_timeout, "EndpointSpec.idle_timeout"))
        object.__setattr__(self, "cold_start", seconds(self.cold_start, "EndpointSpec.cold_start"))
        if self.scaler not in _SCALERS:
            raise ValueError(
                f"EndpointSpec.scaler must be 'queue_delay' or 'request_count', got {self.scaler!r}"
            )
        value = self.scaler_value
        low = 0.5 if self.scaler == "queue_delay" else 1.0  # REST v2: queueDelay >= 0.5, requestCount >= 1
        if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"EndpointSpec.scaler_value must be a number >= {low:g} for scaler={self.scaler!r}, "
                f"got {value!r}"
            )
        object.__setattr__(self, "scaler_value", float(value))
        if not self.fleet:
            return
        if self.workers is not None:
            raise ValueError(
                "EndpointSpec.workers sets ready workers without a fleet; with workers_min/workers_max "
                "leave it out (the fleet starts its workers itself)"
            )
        if self.handler is None:
            raise ValueError("a fleet (workers_min/workers_max) runs in-process workers: give a handler")
        if (
            self.workers_min is not None
            and self.workers_max is not None
            and self.workers_min > self.workers_max
        ):
            raise ValueError(
                f"EndpointSpec.workers_min ({self.workers_min}) is above workers_max ({self.workers_max})"
            )

    def _replay(self) -> None:
        from runpod_queue.emulator._cassette import ReplayHandler

        given = self.replay
        cassette = given if isinstance(given, Cassette) else Cassette.load(given)  # type: ignore[arg-type]
        handler = self.handler
        if not (isinstance(handler, ReplayHandler) and handler.cassette is cassette):
            if handler is not None and not callable(handler):
                raise TypeError(f"EndpointSpec.handler must be callable, got {type(handler).__name__}")
            handler = ReplayHandler(cassette, fallback=handler)
        object.__setattr__(self, "replay", cassette)
        object.__setattr__(self, "handler", handler)
        # A recorded stream whose output is its chunks came from an endpoint with aggregate streams on.
        if any(r.stream and r.output == [c for _, c in r.stream] for r in cassette.recordings):
            object.__setattr__(self, "return_aggregate_stream", True)

    @property
    def fleet(self) -> bool:
        """Whether the endpoint's workers are a scaled fleet (`workers_min` or `workers_max` given)."""
        return self.workers_min is not None or self.workers_max is not None
