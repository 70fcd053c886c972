"""The emulator's only source of time and timers: the real clock, or a virtual one that moves when told.

Every lifecycle rule (ttl, executionTimeout, retention, webhook retry gaps, long-poll holds, rate-limit
windows, lost-worker detection) reads `Clock.now()` and schedules with `Clock.call_later()`, so a virtual
clock moves all of them together. Three kinds:

- **real** (`RealClock`): monotonic time; `scale` (the emulator's `time_scale`) shortens RunPod's
  durations, never the clock itself.
- **virtual** (`VirtualClock()`): starts at 0 and moves only through `advance(seconds)`, which fires the
  timers that fall due in time order, each seeing `now()` equal to its due time. Real time passing does
  not move it: a job queued with a 10 s ttl stays queued for as long as nobody advances.
- **auto** (`VirtualClock(auto=True)`): virtual, plus time skipping as in Temporal's test server. Whenever
  a client request is held waiting on the clock (a runsync, status-sync or stream long-poll — never a
  worker's job-take or job-stop poll), no job is in progress and no webhook POST is under way, time
  jumps to the earliest pending timer (the hold's own end is one). A wait that nothing but time can end
  returns at once; a finished job's retention is not skipped just because nobody asks (no hold, no jump).
  While a handler runs and a request holds on the clock, time does not skip but flows at real speed:
  a handler's real seconds are the emulator's then, so a hold (a 10 s /stream, a runsync's wait) ends
  at its RunPod length even when the job takes longer. With no hold, time stands still as before.
  `advance()` works too.

The emulator reports what the auto rule needs through `hold_started/ended` (client long-polls),
`work_started/ended` (jobs in progress), `io_started/ended` (its own I/O, e.g. webhook POSTs) and
`activity()` (something may start work soon). `Clock.reports` is False on a real clock, which needs none:
the hot path skips them there.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

from runpod_queue._units import Duration
from runpod_queue._units import seconds as _seconds

__all__ = [
    "MAX_ADVANCE_S",
    "Clock",
    "ClockKind",
    "FifoTimers",
    "RealClock",
    "TimerHandle",
    "VirtualClock",
    "advance_amount",
    "make_clock",
]

log = logging.getLogger("runpod_queue.emulator")

ClockKind = Literal["real", "virtual", "auto"]
_KINDS: Final = ("real", "virtual", "auto")
# Loop turns a virtual clock lets pass before it trusts that woken code has run: a future resolved by
# a timer wakes its task on the next turn, and asyncio.wait() adds a hop or two.
_SETTLE_TURNS: Final = 4
# Virtual due times are kept on a nanosecond grid, so 0.1 + 9.9 and 10.0 are the same instant.
_GRID: Final = 9
# The most one advance may move a virtual clock: 10 years (365-day years), far past any RunPod duration
# (retention 30 min, ttl 7 days at most), yet small enough that now stays finite and exact to the grid.
MAX_ADVANCE_S: Final = 10 * 365 * 86_400.0
# The latest time a virtual clock may show (~317 years): a float still counts microseconds there.
_MAX_NOW_S: Final = 1e10


class TimerHandle(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` or a virtual timer)."""

    def cancel(self) -> None:
        """Call it off; cancelling twice, or after it ran, does nothing."""


class Clock:
    """What the emulator asks of time. Subclasses: `RealClock`, `VirtualClock`."""

    kind: ClockKind
    #: Clock seconds per RunPod second: `time_scale` on a real clock, 1 on a virtual one.
    scale: float = 1.0
    #: Whether the activity reports below matter (virtual clocks); callers may skip them when False.
    reports: bool = True

    def now(self) -> float:
        """Seconds since the clock started."""
        raise NotImplementedError

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Call `callback(*args)` on the emulator's loop `delay` clock seconds from now."""
        raise NotImplementedError

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the loop the emulator serves on."""
        raise NotImplementedError

    async def advance(self, seconds: Duration) -> float:
        """Move a virtual clock forward (run on the emulator's loop); returns the new `now()`."""
        raise RuntimeError(
            "this emulator runs on the real clock, which cannot be advanced: create it with "
            "Emulator(..., clock='virtual') (or 'auto'; `rpq serve --clock virtual`)"
        )

    # What the auto rule watches; nothing to do on other clocks.
    async def restart(self) -> None:
        """Set ``now`` back to 0 (``POST /_emulator/reset``); pending timers keep their remaining delay."""
        raise NotImplementedError

    def resume(self, now: float) -> None:
        """Read ``now`` from here on (a state file's clock, on start, before any timer is set)."""
        raise NotImplementedError

    def hold_started(self) -> None:
        """A request began holding for time to pass (a long-poll): the auto clock may skip ahead."""
        pass

    def hold_ended(self) -> None:
        """A hold ended."""
        pass

    def work_started(self) -> None:
        """A handler began running: time must not jump under it."""
        pass

    def work_ended(self) -> None:
        """A handler stopped running."""
        pass

    def io_started(self) -> None:
        """Network work began (a webhook delivery, an external worker's request)."""
        pass

    def io_ended(self) -> None:
        """That network work ended."""
        pass

    def activity(self) -> None:
        """Something changed (a request arrived): the auto clock restarts its count of quiet turns."""
        pass


class RealClock(Clock):
    """Monotonic wall-clock time; RunPod durations are multiplied by `scale` before they are scheduled."""

    kind: ClockKind = "real"
    reports = False

    def __init__(self, scale: float = 1.0) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (0 < scale <= 1000):
            raise ValueError(f"time_scale must be a number in (0, 1000], got {scale!r}")
        self.scale: float = float(scale)
        self._origin = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<RealClock scale={self.scale:g} now={self.now():.3f}>"

    def now(self) -> float:
        """Seconds since the clock started, from the monotonic clock."""
        return time.monotonic() - self._origin

    def resume(self, now: float) -> None:
        """Go on from ``now``: the time the emulator was down does not count."""
        self._origin = time.monotonic() - now

    async def restart(self) -> None:
        """Count from 0 again; the loop's timers are relative, so they are untouched."""
        self._origin = time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Refused until the emulator starts: ``bind`` replaces it with the loop's own ``call_later``."""
        raise RuntimeError("the clock is not bound to a loop yet: start the emulator first")

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the serving loop; from then on ``call_later`` is the loop's own."""
        self._loop = loop
        # The hot path schedules three timers per job: no wrapper frame in front of the loop's own.
        self.call_later = loop.call_later  # type: ignore[method-assign]


class _Timer:
    """A pending virtual timer; cancelled ones stay in the heap until they come up (or a compaction)."""

    __slots__ = ("args", "callback", "cancelled", "clock", "queued")

    def __init__(self, clock: VirtualClock, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.clock = clock
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.queued = False  # in the clock's heap (not handed to the loop as already due)

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self.queued:
                self.clock._cancelled += 1


class VirtualClock(Clock):
    """Virtual time: moves only through `advance()` (and, with `auto=True`, by the skipping rule above).

    Runs on the emulator's loop: `call_later` and the activity reports come from code on it, `advance`
    is a coroutine for it (`Emulator.advance` is the thread-safe way in from a test).
    """

    def __init__(self, *, auto: bool = False) -> None:
        self.kind: ClockKind = "auto" if auto else "virtual"
        self.auto: bool = auto
        self._now = 0.0
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holds = 0
        self._work = 0
        self._io = 0
        self._io_idle: asyncio.Future[None] | None = None
        self._advancing = 0
        # Two advances at once (a test thread and an HTTP caller) must not interleave: time would go back.
        self._advance_lock = asyncio.Lock()
        # Auto: a check is pending; `_epoch` changes on every report, so a check that sees it move
        # starts counting its quiet turns again.
        self._checking = False
        self._epoch = 0
        # Auto, while a handler runs and a request holds: time flows at real speed from (loop time,
        # virtual time) at the start, each due timer fired when its real moment comes.
        self._flow_from: tuple[float, float] | None = None
        self._flow_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<VirtualClock {self.kind} now={self._now:g} timers={self.pending()}>"

    def now(self) -> float:
        """Virtual seconds since the clock started; moves only when advanced."""
        return self._now

    def pending(self) -> int:
        """Timers not yet fired or cancelled."""
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Call ``callback(*args)`` when virtual time reaches ``now() + delay``."""
        timer = _Timer(self, callback, args)
        if delay <= 0 and self._loop is not None and not self._advancing:
            # Already due: runs on the next loop turn, as asyncio would run it.
            self._loop.call_soon(self._fire_one, timer)
            return timer
        due = round(self._now + max(delay, 0.0), _GRID)
        timer.queued = True
        heapq.heappush(self._heap, (due, next(self._seq), timer))
        if self._flow_from is not None and self._heap[0][2] is timer:
            self._arm_flow()  # the new earliest timer: its real moment comes first
        return timer

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the loop that due timers run on."""
        self._loop = loop

    # -- moving time ----------------------------------------------------------------------------

    async def advance(self, seconds: Duration) -> float:
        """Fire every timer due within `seconds`, in time order, letting each one's effects settle."""
        amount = advance_amount(seconds)
        async with self._advance_lock:
            target = _finite_target(self._now, amount)
            self._advancing += 1
            try:
                await self._settle()
                while True:
                    due = self._next_due()
                    if due is None or due > target:
                        break
                    self._fire_due(due)
                    await self._settle()
                self._now = max(self._now, target)
            finally:
                self._advancing -= 1
                self._poke()
            return self._now

    def resume(self, now: float) -> None:
        """Stand at ``now``, where the clock stood when its state was saved."""
        self._now = round(now, _GRID)

    async def restart(self) -> None:
        """Set ``now`` back to 0, moving every pending timer by the same amount (none fires)."""
        async with self._advance_lock:
            shift = self._now
            self._heap = [(round(due - shift, _GRID), seq, timer) for due, seq, timer in self._heap]
            heapq.heapify(self._heap)
            self._now = 0.0

    def advance_idle(self, seconds: Duration) -> float:
        """Move a clock that has no timers and no loop (an emulator not started yet)."""
        amount = advance_amount(seconds)
        if self.pending():
            raise RuntimeError("the emulator is not running: start it before advancing its clock")
        self._now = _finite_target(self._now, amount)
        return self._now

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)[2].queued = False
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def _fire_due(self, due: float) -> None:
        """Set now to `due` and run every timer due then (timers they add for `due` included)."""
        self._now = due
        heap = self._heap
        while heap and heap[0][0] <= due:
            _, _, timer = heapq.heappop(heap)
            timer.queued = False
            if timer.cancelled:
                self._cancelled -= 1
                continue
            self._run(timer)
        self._compact()

    def _fire_one(self, timer: _Timer) -> None:
        if not timer.cancelled:
            self._run(timer)

    def _run(self, timer: _Timer) -> None:
        timer.cancelled = True  # fired: a late cancel() must not count it as a cancelled entry
        try:
            timer.callback(*timer.args)
        except Exception:  # as asyncio does: one failing callback must not stop the clock
            log.exception("emulator timer callback %r failed", timer.callback)

    def _compact(self) -> None:
        # Cancelled entries (a finished job's ttl, say) would pile up while virtual time stands still.
        if self._cancelled > 256 and self._cancelled * 2 > len(self._heap):
            for entry in self._heap:
                if entry[2].cancelled:
                    entry[2].queued = False
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    async def _settle(self) -> None:
        """Let code woken by the timers just fired run, and the emulator's own I/O finish."""
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)
        while self._io:
            loop = asyncio.get_running_loop()
            self._io_idle = idle = loop.create_future()
            await idle
            for _ in range(_SETTLE_TURNS):
                await asyncio.sleep(0)

    # -- activity reports and the auto rule -----------------------------------------------------

    def hold_started(self) -> None:
        """Count a hold (a long-poll waiting on time); the auto rule may advance."""
        self._holds += 1
        self._update_flow()
        self._poke()

    def hold_ended(self) -> None:
        """Count a hold off."""
        self._holds -= 1
        self._update_flow()
        self._poke()

    def work_started(self) -> None:
        """Count a running handler: no automatic advance while one runs."""
        self._work += 1
        self._update_flow()
        self._poke()

    def work_ended(self) -> None:
        """Count a running handler off."""
        self._work -= 1
        self._update_flow()
        self._poke()

    def _update_flow(self) -> None:
        """Auto: time flows at real speed exactly while a request holds on the clock and a handler
        runs (skipping is off, yet someone waits on time); otherwise it stands still, so runs without
        a waiter stay exactly reproducible."""
        flowing = self.auto and bool(self._holds) and bool(self._work) and self._loop is not None
        if flowing and self._flow_from is None:
            assert self._loop is not None
            self._flow_from = (self._loop.time(), self._now)
            self._arm_flow()
        elif not flowing and self._flow_from is not None:
            if not self._advancing:
                self._catch_up()
            self._flow_from = None
            if self._flow_timer is not None:
                self._flow_timer.cancel()
                self._flow_timer = None

    def _flow_now(self) -> float:
        assert self._flow_from is not None and self._loop is not None
        real, virtual = self._flow_from
        return round(virtual + (self._loop.time() - real), _GRID)

    def _arm_flow(self) -> None:
        """Wake at the real moment the earliest timer falls due."""
        if self._flow_timer is not None:
            self._flow_timer.cancel()
            self._flow_timer = None
        due = self._next_due()
        if due is None or self._loop is None or self._flow_from is None:
            return
        self._flow_timer = self._loop.call_later(max(0.0, due - self._flow_now()), self._flow)

    def _flow(self) -> None:
        self._flow_timer = None
        if self._flow_from is None:
            return
        if not self._advancing:
            self._catch_up()
        self._arm_flow()

    def _catch_up(self) -> None:
        """Move to the flowing time, firing the timers due by then in order."""
        target = self._flow_now()
        while True:
            due = self._next_due()
            if due is None or due > target:
                break
            self._fire_due(due)
        self._now = max(self._now, target)

    def io_started(self) -> None:
        """Count network work in progress: no automatic advance meanwhile."""
        self._io += 1
        self._poke()

    def io_ended(self) -> None:
        """Count network work off; wakes ``advance`` calls waiting for it to settle."""
        self._io -= 1
        if not self._io and self._io_idle is not None:
            idle, self._io_idle = self._io_idle, None
            if not idle.done():
                idle.set_result(None)
        self._poke()

    def activity(self) -> None:
        """Note a change, so the auto rule starts counting quiet turns again."""
        self._poke()

    def _quiet(self) -> bool:
        """The auto rule: someone waits on the clock and nothing else can change anything."""
        return bool(self._holds) and not self._work and not self._io and not self._advancing

    def _poke(self) -> None:
        if not self.auto:
            return
        self._epoch += 1
        if not self._checking and self._quiet() and self._loop is not None:
            self._checking = True
            self._loop.call_soon(self._check, self._epoch, 0)

    def _check(self, epoch: int, turns: int) -> None:
        """Jump once the auto rule has held for `_SETTLE_TURNS` loop turns with nothing reported."""
        assert self._loop is not None
        if not self._quiet():
            self._checking = False
            return
        if epoch != self._epoch:
            self._loop.call_soon(self._check, self._epoch, 0)
            return
        if turns < _SETTLE_TURNS:
            self._loop.call_soon(self._check, epoch, turns + 1)
            return
        self._checking = False
        due = self._next_due()
        if due is None:
            return
        self._fire_due(due)
        self._poke()


class _FifoEntry:
    """One callback of a `FifoTimers` lane; ``cancel`` only marks it (the lane skips it when it comes up)."""

    __slots__ = ("args", "callback", "due", "lane")

    def __init__(self, lane: _FifoLane, due: float, callback: Callable[..., object] | None, args: Any):
        self.lane = lane
        self.due = due
        self.callback = callback
        self.args = args

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self.args = ()
            self.lane.cancelled()


class _FifoLane:
    """Callbacks all scheduled with one delay: they come due in the order they were added, so one loop
    timer (for the oldest) serves them all."""

    __slots__ = ("dead", "delay", "entries", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.entries: collections.deque[_FifoEntry] = collections.deque()
        self.dead = 0  # cancelled entries still in `entries`
        self.timer: asyncio.TimerHandle | None = None

    def add(self, callback: Callable[..., object], args: Any) -> _FifoEntry:
        entry = _FifoEntry(self, self.loop.time() + self.delay, callback, args)
        self.entries.append(entry)
        if self.timer is None:
            self.timer = self.loop.call_at(entry.due, self._fire)
        return entry

    def cancelled(self) -> None:
        self.dead += 1
        # Most entries are cancelled long before they come due (a job's hold or executionTimeout ends
        # with the job): drop them once they are half the lane, so memory stays bounded by the live ones.
        entries = self.entries
        if self.dead > 64 and self.dead * 2 > len(entries):
            self.entries = collections.deque(e for e in entries if e.callback is not None)
            self.dead = 0
            if not self.entries and self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def _fire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries:
            entry = entries[0]
            callback = entry.callback
            if callback is None:
                entries.popleft()
                self.dead -= 1
                continue
            if entry.due > now:
                break
            entries.popleft()
            entry.callback = None  # ran: a later cancel does nothing
            try:
                callback(*entry.args)
            except Exception as exc:  # as the loop treats a failing callback: reported, the rest run
                self.loop.call_exception_handler(
                    {"message": f"exception in timer callback {callback!r}", "exception": exc}
                )
            entries = self.entries  # a callback's cancel may have compacted the lane
        if entries and self.timer is None:
            self.timer = self.loop.call_at(entries[0].due, self._fire)


class FifoTimers:
    """`call_later` for a real clock's per-job timers, grouped by delay: each job's executionTimeout, hold
    and retention timer is made with one of a few delays and nearly all are cancelled, so a deque entry per
    timer and one loop timer per delay replace a loop timer made (and cancelled) per job. Each callback
    still runs on the first loop turn at or after its own due time. Virtual clocks keep their own timers."""

    __slots__ = ("_lanes", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lanes: dict[float, _FifoLane] = {}

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        lane = self._lanes.get(delay)
        if lane is None:
            if len(self._lanes) >= _MAX_FIFO_LANES or delay <= 0:  # many distinct delays: plain timers
                return self._loop.call_later(delay, callback, *args)
            lane = self._lanes[delay] = _FifoLane(self._loop, delay)
        return lane.add(callback, args)


# Distinct delays (`?wait=`, per-request executionTimeout) each get a lane up to this many.
_MAX_FIFO_LANES: Final = 64


def make_clock(kind: str, time_scale: float = 1.0) -> Clock:
    """The clock for `Emulator(clock=kind, time_scale=...)`; `time_scale` is for real clocks only."""
    if kind not in _KINDS:
        raise ValueError(f"clock must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")
    if kind == "real":
        return RealClock(time_scale)
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) or time_scale != 1:
        raise ValueError(
            f"time_scale={time_scale!r} applies to clock='real' only: a {kind} clock moves only when "
            "advanced (or, with 'auto', when a held request waits on nothing but time); drop time_scale"
        )
    return VirtualClock(auto=kind == "auto")


def _finite_target(now: float, amount: float) -> float:
    """Where an advance lands; refused when it would no longer be a finite, exact time (an infinite
    clock makes every later timer and deadline meaningless)."""
    target = round(now + amount, _GRID)
    if not math.isfinite(target) or target > _MAX_NOW_S:
        raise ValueError(
            f"advance(seconds) would move the clock to {target!r} seconds, past what it can count: "
            "restart the emulator to start from 0"
        )
    return target


def advance_amount(seconds: Duration) -> float:
    """`seconds` for one advance, checked: a finite number from 0 to `MAX_ADVANCE_S`."""
    amount = _seconds(seconds, "advance(seconds)")
    if amount > MAX_ADVANCE_S:
        raise ValueError(
            f"advance(seconds) moves a clock at most 10 years (315360000 seconds) at once, got {amount:g}: "
            "advance in steps"
        )
    return amount
