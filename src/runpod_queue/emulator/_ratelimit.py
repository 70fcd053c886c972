"""Server-side rate limits: a sliding 10 s window and an in-flight cap per (endpoint, operation).

Windows are real time, never scaled by `time_scale`: a client's limiter is tested against them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping

from runpod_queue._contract import LIMITS, RATE_WINDOW_S, OperationLimit

__all__ = ["OperationGate", "RateLimiter"]


class OperationGate:
    """Admission for one operation of one endpoint. Not thread-safe: used from the server's loop only."""

    __slots__ = ("_stamps", "in_flight", "limit", "window")

    def __init__(self, limit: OperationLimit, window: float) -> None:
        self.limit = limit
        self.window = window
        self._stamps: deque[float] = deque()
        self.in_flight = 0

    def try_acquire(self, extra_allowance: int = 0) -> float | None:
        """Admit one request (returns None) or say how many seconds until one would be admitted."""
        now = time.monotonic()
        stamps = self._stamps
        horizon = now - self.window
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        per_window = max(self.limit.per_window, extra_allowance)
        if len(stamps) >= per_window:
            return max(stamps[len(stamps) - per_window] - horizon, 0.001)
        cap = self.limit.in_flight
        if cap is not None and self.in_flight >= cap:
            return 1.0
        stamps.append(now)
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1


class RateLimiter:
    """The gates of every endpoint; `enabled=False` admits everything (`--no-rate-limits`)."""

    def __init__(
        self,
        limits: Mapping[str, OperationLimit] | None = None,
        *,
        enabled: bool = True,
        window: float = RATE_WINDOW_S,
        per_worker_allowance: int = 50,
    ) -> None:
        self.enabled = enabled
        self.limits = dict(LIMITS if limits is None else limits)
        self.window = window
        self.per_worker_allowance = per_worker_allowance
        self._gates: dict[tuple[str, str], OperationGate] = {}

    def gate(self, endpoint_id: str, operation: str) -> OperationGate | None:
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

    @staticmethod
    def retry_after_header(seconds: float) -> bytes:
        # Retry-After is whole seconds (RFC 9110); never 0, or a client would hammer the window edge.
        return str(max(1, math.ceil(seconds))).encode()
