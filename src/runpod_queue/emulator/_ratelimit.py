"""Server-side rate limits: a sliding window and an in-flight cap per (endpoint, operation).

Configured with the client's `RateLimits` type (its `limits`, `window` and `enabled`; the client-side
`margin` does not apply to the server). Windows run on the emulator's clock (the caller passes `now`) but
are never multiplied by `time_scale`: a client's limiter is tested against them. On a virtual clock they
slide only as virtual time moves.
"""

from __future__ import annotations

import math
from collections import deque

from runpod_queue._contract import OperationLimit
from runpod_queue._limits import RateLimits

__all__ = ["OperationGate", "RateLimiter"]

# The shortest wait a refusal names: a window edge exactly `now` must still read as "not yet" to a client.
_MIN_WAIT_S = 0.001
# An in-flight cap frees a slot when some request ends, which no window predicts: ask again in a second.
_IN_FLIGHT_WAIT_S = 1.0


class OperationGate:
    """Admission for one operation of one endpoint. Not thread-safe: used from the server's loop only."""

    __slots__ = ("_stamps", "in_flight", "limit", "window")

    def __init__(self, limit: OperationLimit, window: float) -> None:
        self.limit: OperationLimit = limit
        self.window: float = window
        self._stamps: deque[float] = deque()
        self.in_flight: int = 0

    def try_acquire(self, now: float, extra_allowance: int = 0) -> float | None:
        """Admit one request (returns None) or say how many seconds until one would be admitted."""
        stamps = self._stamps
        horizon = now - self.window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        per_window = max(self.limit.per_window, extra_allowance)
        if len(stamps) >= per_window:
            return max(stamps[len(stamps) - per_window] - horizon, _MIN_WAIT_S)
        cap = self.limit.in_flight
        if cap is not None and self.in_flight >= cap:
            return _IN_FLIGHT_WAIT_S
        stamps.append(now)
        self.in_flight += 1
        return None

    def release(self) -> None:
        """A request admitted by ``try_acquire`` has been answered: one slot in flight frees."""
        self.in_flight -= 1


class RateLimiter:
    """The gates of every endpoint; a disabled `RateLimits` admits everything (`--no-rate-limits`)."""

    def __init__(self, config: RateLimits, *, per_worker_allowance: int = 50) -> None:
        if not isinstance(config, RateLimits):
            raise TypeError(
                f"rate_limits must be a RateLimits or a bool, got {type(config).__name__}; "
                "e.g. RateLimits(limits={**RateLimits.runpod().limits, 'run': OperationLimit(5, None)})"
            )
        if isinstance(per_worker_allowance, bool) or not isinstance(per_worker_allowance, int):
            raise TypeError(f"per_worker_allowance must be an int, got {type(per_worker_allowance).__name__}")
        if per_worker_allowance < 0:
            raise ValueError(
                f"per_worker_allowance must be >= 0 requests per window, got {per_worker_allowance}"
            )
        self.enabled: bool = config.enabled
        self.limits: dict[str, OperationLimit] = dict(config.limits)
        self.window: float = config.window
        self.per_worker_allowance: int = per_worker_allowance
        self._gates: dict[tuple[str, str], OperationGate] = {}

    def gate(self, endpoint_id: str, operation: str) -> OperationGate | None:
        """The gate of one endpoint's operation, or None when it is not limited."""
        if not self.enabled:
            return None
        key = (endpoint_id, operation)
        gate = self._gates.get(key)
        if gate is None:
            limit = self.limits.get(operation)
            if limit is None:
                return None
            gate = self._gates[key] = OperationGate(limit, self.window)
        return gate

    def reset(self) -> None:
        """Forget every window's counts (``POST /_emulator/reset``); requests in flight keep their gate."""
        self._gates.clear()

    @staticmethod
    def retry_after_header(seconds: float) -> bytes:
        # Retry-After is whole seconds (RFC 9110); never 0, or a client would hammer the window edge.
        """A ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(seconds))).encode()
