"""Emulator configuration: RunPod's durations (`Timings`), fault injection and per-endpoint options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from runpod_queue._units import Duration, seconds

__all__ = ["EndpointSpec", "Faults", "Handler", "Timings"]

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True, init=False)
class Timings:
    """Every RunPod lifecycle duration the emulator applies, in seconds (a number or a `timedelta`).

    On a real clock `Emulator(time_scale=…)` multiplies all of them, so a 30-minute retention can pass
    in milliseconds; on a virtual clock they are virtual seconds. Override one field to change a single
    rule. Rate-limit windows are not here (see `RateLimits`): they are never scaled.
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
    ) -> None:
        given = locals()
        for f in fields(self):
            object.__setattr__(self, f.name, seconds(given[f.name], f"Timings.{f.name}"))


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
    """

    handler: Handler | None = None
    workers: int | None = None
    return_aggregate_stream: bool = False

    def __post_init__(self) -> None:
        if self.handler is not None and not callable(self.handler):
            raise TypeError(f"EndpointSpec.handler must be callable, got {type(self.handler).__name__}")
        if self.workers is not None and (
            not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0
        ):
            raise ValueError(f"EndpointSpec.workers must be an int >= 0, got {self.workers!r}")
