"""`FifoTimers`: the real clock's per-job timers, one loop timer per delay (no timing assertions: the
loop's clock is stepped by hand)."""

from __future__ import annotations

import asyncio
from typing import Any

from runpod_queue.emulator._clock import FifoTimers


class _Loop:
    """Just what a lane uses of a loop: time, call_at and call_later, run by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, tuple[Any, ...], list[bool]]] = []
        self.errors: list[dict[str, Any]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> Any:
        cancelled = [False]
        self.timers.append((when, callback, args, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True

        return Handle()

    def call_later(self, delay: float, callback: Any, *args: Any) -> Any:
        return self.call_at(self.now + delay, callback, *args)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def pending(self) -> int:
        return sum(1 for t in self.timers if not t[3][0])

    def advance(self, to: float) -> None:
        self.now = to
        while True:
            due = sorted((t for t in self.timers if t[0] <= to and not t[3][0]), key=lambda t: t[0])
            if not due:
                return
            timer = due[0]
            self.timers.remove(timer)
            timer[1](*timer[2])


def _timers() -> tuple[_Loop, FifoTimers]:
    loop = _Loop()
    return loop, FifoTimers(loop)  # type: ignore[arg-type]


def test_one_loop_timer_per_delay_and_each_callback_at_its_own_due_time() -> None:
    loop, timers = _timers()
    seen: list[tuple[str, float]] = []
    timers.call_later(10, lambda: seen.append(("a", loop.now)))
    loop.now = 1.0
    timers.call_later(10, lambda: seen.append(("b", loop.now)))
    timers.call_later(5, lambda: seen.append(("c", loop.now)))
    assert loop.pending() == 2  # delays 10 and 5
    loop.advance(6.0)
    assert seen == [("c", 6.0)]
    loop.advance(10.0)
    assert seen == [("c", 6.0), ("a", 10.0)]
    loop.advance(10.5)
    assert seen == [("c", 6.0), ("a", 10.0)]  # b is due at 11
    loop.advance(11.0)
    assert seen[-1] == ("b", 11.0)
    assert loop.pending() == 0


def test_a_cancelled_callback_never_runs_and_cancelling_twice_or_after_it_ran_does_nothing() -> None:
    loop, timers = _timers()
    seen: list[str] = []
    a = timers.call_later(1, seen.append, "a")
    b = timers.call_later(1, seen.append, "b")
    a.cancel()
    a.cancel()
    loop.advance(1.0)
    assert seen == ["b"]
    b.cancel()
    assert seen == ["b"]


def test_cancelled_entries_are_dropped_so_a_lane_holds_about_its_live_ones() -> None:
    loop, timers = _timers()
    seen: list[int] = []
    handles = [timers.call_later(90, seen.append, i) for i in range(1000)]
    for handle in handles[:-1]:
        handle.cancel()
    lane = timers._lanes[90]
    assert len(lane.entries) < 200
    loop.advance(90.0)
    assert seen == [999]
    for handle in [timers.call_later(90, seen.append, i) for i in range(200)]:
        handle.cancel()
    assert loop.pending() <= 1  # every entry cancelled: at most a timer with nothing to do
    loop.advance(200.0)
    assert seen == [999]


def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop, timers = _timers()
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.call_later(1, boom)
    timers.call_later(1, seen.append, "after")
    loop.advance(1.0)
    assert seen == ["after"]
    assert isinstance(loop.errors[0]["exception"], RuntimeError)


def test_a_callback_may_cancel_and_schedule_on_its_own_lane() -> None:
    loop, timers = _timers()
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        second.cancel()  # due at the same moment, behind it in the lane
        timers.call_later(1, seen.append, "set by the first")

    timers.call_later(1, first)
    second = timers.call_later(1, seen.append, "second")
    loop.advance(1.0)
    assert seen == ["first"]
    loop.advance(2.0)
    assert seen == ["first", "set by the first"]


def test_runs_on_a_real_loop() -> None:
    async def main() -> list[str]:
        timers = FifoTimers(asyncio.get_running_loop())
        seen: list[str] = []
        done = asyncio.Event()
        timers.call_later(0.01, seen.append, "a")
        timers.call_later(0.01, seen.append, "b").cancel()
        timers.call_later(0.02, done.set)
        await done.wait()
        return seen

    assert asyncio.run(main()) == ["a"]
