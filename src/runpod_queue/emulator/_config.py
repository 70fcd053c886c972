"""Emulator configuration: durations, fault injection, per-endpoint options, and the clock seam."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from runpod_queue import _contract as contract

__all__ = ["Clock", "EndpointSpec", "Faults", "Handler", "Timings"]

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Timings:
    """Every RunPod lifecycle duration the emulator applies, in unscaled milliseconds.

    `Emulator(time_scale=…)` multiplies all of them, so a test of the 30-minute retention can take
    milliseconds; override one field to change a single rule. Rate-limit windows are not here: they are
    never scaled (see `rate_limits`).
    """

    retention_run_ms: float = contract.RETENTION_RUN_MS
    retention_sync_ms: float = contract.RETENTION_SYNC_MS
    webhook_retry_gap_ms: float = contract.WEBHOOK_RETRY_GAP_MS
    default_execution_timeout_ms: float = contract.DEFAULT_EXECUTION_TIMEOUT_MS
    default_ttl_ms: float = contract.DEFAULT_TTL_MS
    runsync_default_wait_ms: float = contract.RUNSYNC_DEFAULT_WAIT_MS
    # [ours] How long an empty /stream or /status-sync poll is held when the caller gives no ?wait=.
    stream_default_wait_ms: float = 10_000
    status_sync_default_wait_ms: float = contract.RUNSYNC_DEFAULT_WAIT_MS
    # Worker protocol (issue 5): how long an empty job-take / job-stop poll is held, and how long a
    # worker may go without a ping before it is considered lost.
    job_take_hold_ms: float = 20_000
    worker_lost_after_ms: float = 30_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Timings.{f.name} must be a number of milliseconds >= 0, got {value!r}")


class Clock:
    """The emulator's only source of time: a monotonic clock plus the factor applied to RunPod durations."""

    __slots__ = ("scale",)

    def __init__(self, scale: float = 1.0) -> None:
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not (0 < scale <= 1000):
            raise ValueError(f"time_scale must be a number in (0, 1000], got {scale!r}")
        self.scale = float(scale)

    @staticmethod
    def now() -> float:
        """Monotonic seconds; used for deadlines and for delayTime / executionTime."""
        return time.monotonic()

    def seconds(self, duration_ms: float) -> float:
        """Real seconds the emulator waits for a RunPod duration of `duration_ms`."""
        return duration_ms * self.scale / 1000.0


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection on the public routes, for testing clients. Off by default.

    Each probability is checked independently per request (in this order: 429, 503, 500, drop). A
    dropped request is *processed* and then its connection closed before a full answer is sent: the
    ambiguous case a client must not blindly retry for /run. `latency_ms` is added before processing
    (uniform in [0, latency_ms]).
    """

    error_429: float = 0.0
    error_503: float = 0.0
    error_500: float = 0.0
    drop: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_429", "error_503", "error_500", "drop"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"Faults.{name} is a probability in [0, 1], got {value!r}")
        if not isinstance(self.latency_ms, int | float) or self.latency_ms < 0 or math.isnan(self.latency_ms):
            raise ValueError(f"Faults.latency_ms must be >= 0, got {self.latency_ms!r}")

    @property
    def active(self) -> bool:
        return bool(self.error_429 or self.error_503 or self.error_500 or self.drop or self.latency_ms)


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
