"""Client-side rate limiting: stay under RunPod's per-operation windows and in-flight caps, so a burst
through one client waits a little instead of collecting 429s.

How a slot is counted. The server counts a request when it receives it — somewhere between our send and
our receipt of the answer. So a request occupies a slot of its window from the moment it is allowed to go
until ``window`` seconds after its answer arrived: whatever the network delay, the server's count over any
window is never above ours. ``window`` is RunPod's 10 s plus a small safety ``margin`` (default 0.25 s) for
clock drift between the two ends, so jitter never turns into a 429. In-flight caps count from the moment a
request is allowed to go until its answer (or failure) arrives, which also covers the server's view.

One limiter belongs to one client and is shared by every Endpoint, thread (sync) or task (async) using it;
state is kept per (endpoint, operation). Operations absent from the table (health, retry) are not limited.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from runpod_queue._contract import LIMITS, RATE_WINDOW_S, OperationLimit
from runpod_queue._frozen import FrozenState, frozen_getstate, frozen_setstate
from runpod_queue._units import Duration, seconds

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncLimiter", "RateLimits", "SyncLimiter", "Window"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-operation limits the client keeps to; ``RateLimits.off()`` (or ``rate_limits=False``) disables.

    ``limits`` defaults to RunPod's documented table; override single rows with
    ``RateLimits(limits={**LIMITS, "run": OperationLimit(500, 100)})`` — e.g. for an endpoint whose
    workers raise its allowance, or to leave room for other clients sharing the key. ``window`` and
    ``margin`` are seconds, a number or a ``timedelta``.
    """

    limits: Mapping[str, OperationLimit] = field(default_factory=lambda: MappingProxyType(dict(LIMITS)))
    window: float = RATE_WINDOW_S
    margin: float = 0.25
    enabled: bool = True

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict (a mappingproxy does not pickle)."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)

    def __init__(
        self,
        limits: Mapping[str, OperationLimit] | None = None,
        window: Duration = 10.0,
        margin: Duration = 0.25,
        enabled: bool = True,
    ) -> None:
        window_s = seconds(window, "RateLimits.window")
        if window_s <= 0:
            raise ValueError(f"RateLimits.window must be more than 0 seconds, got {window_s:g}")
        object.__setattr__(self, "limits", MappingProxyType(dict(LIMITS if limits is None else limits)))
        object.__setattr__(self, "window", window_s)
        object.__setattr__(self, "margin", seconds(margin, "RateLimits.margin"))
        object.__setattr__(self, "enabled", bool(enabled))
        for op, lim in self.limits.items():
            if lim.per_window < 1 or (lim.in_flight is not None and lim.in_flight < 1):
                raise ValueError(f"RateLimits.limits[{op!r}] must allow at least 1 request, got {lim}")

    @classmethod
    def runpod(cls) -> RateLimits:
        """RunPod's published per-endpoint limits (the default)."""
        return cls()

    @classmethod
    def off(cls) -> RateLimits:
        """No limiting at all: every request is sent at once (``rate_limits=False`` means the same)."""
        return cls(enabled=False)


class Window:
    """Bookkeeping for one (endpoint, operation); pure, the caller supplies time and the locking."""

    __slots__ = ("cap", "expiries", "in_flight", "per_window", "span")

    def __init__(self, limit: OperationLimit, span: float) -> None:
        self.per_window = limit.per_window
        self.cap = limit.in_flight
        self.span = span
        self.in_flight = 0
        # Times at which finished requests stop counting; appended in completion order, so sorted.
        self.expiries: collections.deque[float] = collections.deque()

    def try_acquire(self, now: float) -> float:
        """Take a slot and return 0.0, or return how long to wait (inf: until a request in flight ends)."""
        expiries = self.expiries
        while expiries and expiries[0] <= now:
            expiries.popleft()
        if self.cap is not None and self.in_flight >= self.cap:
            return math.inf
        if self.in_flight + len(expiries) >= self.per_window:
            return expiries[0] - now if expiries else math.inf
        self.in_flight += 1
        return 0.0

    def release(self, now: float) -> None:
        """The answer (or a failure) arrived: the request stops being in flight, keeps counting a window."""
        self.in_flight -= 1
        self.expiries.append(now + self.span)

    def give_back(self) -> None:
        """A slot was granted but nothing was sent (cancelled while waiting): it never counted."""
        self.in_flight -= 1


class _Base:
    def __init__(self, config: RateLimits) -> None:
        self._config = config
        # False for ``rate_limits=False``: the drivers then skip acquire/release (a coroutine per request).
        self.enabled = config.enabled
        self._span = config.window + config.margin
        self._windows: dict[tuple[str, str], Window] = {}

    def _window(self, endpoint_id: str, op: str) -> Window | None:
        key = (endpoint_id, op)
        window = self._windows.get(key)
        if window is None:
            if not self._config.enabled:
                return None
            limit = self._config.limits.get(op)
            if limit is None:
                return None
            window = self._windows[key] = Window(limit, self._span)
        return window


class SyncLimiter(_Base):
    """Thread-safe; blocks the calling thread until its request may go."""

    def __init__(self, config: RateLimits) -> None:
        super().__init__(config)
        self._cond = threading.Condition(threading.Lock())

    def acquire(self, endpoint_id: str, op: str, deadline: float | None = None) -> Window | None:
        """Wait for a slot; None means this operation is not limited. Raises TimeoutError past ``deadline``
        (a ``time.monotonic()`` instant)."""
        with self._cond:
            window = self._window(endpoint_id, op)
            if window is None:
                return None
            while True:
                now = time.monotonic()
                delay = window.try_acquire(now)
                if delay == 0.0:
                    return window
                if deadline is not None:
                    if now >= deadline:
                        raise TimeoutError("no rate-limit slot before the deadline")
                    delay = min(delay, deadline - now)
                self._cond.wait(None if delay == math.inf else delay)

    def release(self, window: Window | None) -> None:
        if window is None:
            return
        with self._cond:
            window.release(time.monotonic())
            self._cond.notify_all()


class AsyncLimiter(_Base):
    """For one event loop; waiters are served first come, first served, without waking them all."""

    def __init__(self, config: RateLimits) -> None:
        super().__init__(config)
        self._waiters: dict[int, collections.deque[asyncio.Future[None]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    async def acquire(self, endpoint_id: str, op: str, deadline: float | None = None) -> Window | None:
        window = self._window(endpoint_id, op)
        if window is None:
            return None
        key = id(window)
        waiters = self._waiters.get(key)  # not setdefault: that builds a deque on every call
        if not waiters and window.try_acquire(time.monotonic()) == 0.0:
            return window
        if waiters is None:
            waiters = self._waiters[key] = collections.deque()
        # asyncio is imported where it is used, not at the top: `import runpod_queue` loads this module and
        # a sync-only process (every `rpq run`) would pay ~70 ms CPU for it; a running loop has loaded it.
        import asyncio

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters.append(fut)
        self._pump(window)
        try:
            if deadline is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except BaseException:
            if fut.done() and not fut.cancelled():
                window.give_back()
                self._pump(window)
            else:
                fut.cancel()
            raise
        return window

    def release(self, window: Window | None) -> None:
        if window is None:
            return
        window.release(time.monotonic())
        self._pump(window)

    def _pump(self, window: Window) -> None:
        key = id(window)
        waiters = self._waiters.get(key)
        while waiters:
            fut = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            delay = window.try_acquire(time.monotonic())
            if delay == 0.0:
                waiters.popleft()
                fut.set_result(None)
                continue
            if delay != math.inf and key not in self._timers:
                import asyncio  # see acquire

                loop = asyncio.get_running_loop()
                self._timers[key] = loop.call_later(delay, self._on_timer, window)
            return

    def _on_timer(self, window: Window) -> None:
        self._timers.pop(id(window), None)
        self._pump(window)
