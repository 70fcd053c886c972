"""The clock: virtual time as a unit (no server), `Emulator.advance` / `now`, the auto rule, and the
`/_emulator/advance` route."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from emulator_support import KEY, Http, eventually, gate, held, started

from runpod_queue import Client, JobStatus, OperationLimit, Policy, RateLimits
from runpod_queue.emulator import Emulator, EndpointSpec, Timings, VirtualClock
from shared_support import echo

# -- VirtualClock on its own ----------------------------------------------------------------------


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_advance_fires_due_timers_in_time_order_each_at_its_due_time() -> None:
    async def main() -> tuple[list[tuple[str, float]], float]:
        clock = VirtualClock()
        clock.bind(asyncio.get_running_loop())
        seen: list[tuple[str, float]] = []

        def record(name: str) -> None:
            seen.append((name, clock.now()))
            if name == "b":  # a timer set by a timer, still inside the window: fires in this advance
                clock.call_later(0.5, record, "b+0.5")

        clock.call_later(3, record, "c")
        clock.call_later(1, record, "a")
        clock.call_later(2, record, "b")
        clock.call_later(2.9, record, "cancelled").cancel()
        clock.call_later(7, record, "later")
        return seen, await clock.advance(5)

    seen, now = _run(main())
    assert seen == [("a", 1.0), ("b", 2.0), ("b+0.5", 2.5), ("c", 3.0)]
    assert now == 5.0


def test_timers_due_at_the_same_instant_fire_in_the_order_they_were_set() -> None:
    async def main() -> list[int]:
        clock = VirtualClock()
        clock.bind(asyncio.get_running_loop())
        order: list[int] = []
        for i in range(5):
            clock.call_later(0.1 + 9.9, order.append, i)  # 10.000000000000002 is the same instant as 10
        clock.call_later(10, order.append, 99)
        await clock.advance(10)
        return order

    assert _run(main()) == [0, 1, 2, 3, 4, 99]


def test_overlapping_advances_run_one_after_the_other() -> None:
    async def main() -> tuple[list[float], list[float]]:
        clock = VirtualClock()
        clock.bind(asyncio.get_running_loop())
        seen: list[float] = []
        for due in (1, 2, 3, 4):
            clock.call_later(due, lambda: seen.append(clock.now()))
        ends = await asyncio.gather(clock.advance(2), clock.advance(2))
        return seen, list(ends)

    assert _run(main()) == ([1.0, 2.0, 3.0, 4.0], [2.0, 4.0])


def test_advance_rejects_negative_and_non_numbers_naming_the_unit() -> None:
    async def main(value: Any) -> float:
        return await VirtualClock().advance(value)

    with pytest.raises(ValueError, match=r"advance.*at least 0 seconds"):
        _run(main(-1))
    with pytest.raises(TypeError, match=r"number of seconds or a datetime\.timedelta"):
        _run(main("10s"))
    assert _run(main(timedelta(minutes=2))) == 120.0


def test_auto_jumps_only_while_a_hold_waits_and_no_work_or_io_is_under_way() -> None:
    async def main() -> list[float]:
        clock = VirtualClock(auto=True)
        clock.bind(asyncio.get_running_loop())
        clock.call_later(5, lambda: None)
        clock.call_later(8, lambda: None)
        nows = []

        async def turns() -> None:
            for _ in range(50):  # far more loop turns than a jump needs
                await asyncio.sleep(0)

        await turns()
        nows.append(clock.now())  # nobody waits: no jump
        clock.work_started()
        clock.hold_started()
        await turns()
        nows.append(clock.now())  # a job in progress: no jump
        clock.io_started()
        clock.work_ended()
        await turns()
        nows.append(clock.now())  # a webhook POST under way: no jump
        clock.io_ended()
        await turns()
        nows.append(clock.now())  # quiet: jumps through every timer while the hold lasts
        clock.hold_ended()
        clock.call_later(1, lambda: None)
        await turns()
        nows.append(clock.now())  # the hold ended: stays
        return nows

    nows = _run(main())
    assert nows[0] == 0.0
    # In progress while a hold waits: time flows at real speed (a hold must end at its length) and
    # never jumps to the 5 s timer.
    assert 0.0 <= nows[1] <= nows[2] < 5
    assert nows[3:] == [8.0, 8.0]


# -- through the emulator -------------------------------------------------------------------------


def test_clock_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="clock must be one of 'real', 'virtual', 'auto'"):
        Emulator({"e": echo}, clock="wall")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"time_scale=0\.5 applies to clock='real' only"):
        Emulator({"e": echo}, clock="virtual", time_scale=0.5)
    with pytest.raises(ValueError, match="time_scale must be a number in"):
        Emulator({"e": echo}, time_scale=0)


def test_advance_on_a_real_clock_says_how_to_get_a_virtual_one() -> None:
    with Emulator({"e": echo}) as emu, pytest.raises(RuntimeError, match="clock='virtual'"):
        emu.advance(1)


def test_now_starts_at_zero_and_moves_only_through_advance() -> None:
    emu = Emulator({"q": EndpointSpec(echo, workers=0)}, clock="virtual")
    assert emu.advance(timedelta(seconds=2)) == 2.0  # not started yet: nothing to fire
    with emu:
        http = Http(emu, key=None)
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        for _ in range(20):  # real time passes; virtual time does not
            assert http.status("q", job_id)["status"] == "IN_QUEUE"
        assert emu.now == 2.0
        assert emu.advance(9.999) == 11.999
        assert http.status("q", job_id)["status"] == "IN_QUEUE"
        assert emu.advance(0.001) == 12.0
        assert http.status("q", job_id)["status"] == "TIMED_OUT"  # seen by the very next request
        http.close()


def test_auto_returns_a_held_status_sync_as_soon_as_only_time_can_end_it() -> None:
    with Emulator({"q": EndpointSpec(echo, workers=0)}, clock="auto") as emu:
        http = Http(emu, key=None)
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        body = http.get("q", f"status-sync/{job_id}", params={"wait": 300_000}).json()
        assert body["status"] == "TIMED_OUT"
        assert emu.now == 10.0  # jumped to the ttl, not to the end of the 300 s hold
        http.close()


def test_auto_lets_client_wait_end_on_a_ttl_in_an_empty_queue() -> None:
    with (
        Emulator({"q": EndpointSpec(echo, workers=0)}, clock="auto") as emu,
        Client(base_url=emu.base_url) as client,
    ):
        ep = client.endpoint("q")
        job = ep.run({}, policy=Policy(ttl=10))
        # The client long-polls status-sync (30 s holds): the first one jumps to the ttl and answers.
        assert ep.wait(job.id).status is JobStatus.TIMED_OUT
        assert emu.now == 10.0


def test_auto_does_not_skip_a_retention_nobody_waits_on() -> None:
    with Emulator({"e": echo, "q": EndpointSpec(echo, workers=0)}, clock="auto") as emu:
        http = Http(emu, key=None)
        done = http.run("e", {})
        assert http.wait("e", done)["status"] == "COMPLETED"
        for _ in range(20):
            assert http.status("e", done)["status"] == "COMPLETED"  # plain polls are not holds
        assert emu.now == 0.0
        # A hold that only time ends jumps to its own end (60 s), not past the 30 min retention.
        queued = http.run("q", {})
        assert http.get("q", f"status-sync/{queued}", params={"wait": 60_000}).json()["status"] == "IN_QUEUE"
        assert emu.now == 60.0
        assert http.status("e", done)["status"] == "COMPLETED"
        http.close()


def test_auto_does_not_jump_while_a_handler_runs() -> None:
    # An in-flight cap of 1 on status-sync makes "our held request is in" observable: a second one is
    # refused with 429 exactly while the first is held.
    limits = RateLimits(limits={"status-sync": OperationLimit(1000, 1)})
    with Emulator({"h": held}, clock="auto", rate_limits=limits) as emu:
        http = Http(emu, key=None)
        job_id = http.run("h", {"gate": "auto-run"}, policy={"executionTimeout": 5_000})
        assert started("auto-run").wait(5)
        answers: list[httpx.Response] = []
        holder = threading.Thread(
            target=lambda: answers.append(http.get("h", f"status-sync/{job_id}", params={"wait": 300_000}))
        )
        holder.start()
        eventually(lambda: http.get("h", f"status-sync/{job_id}", params={"wait": 0}).status_code == 429)
        # Held with a job in progress: time flows at real speed, never jumps (an executionTimeout
        # jump would be TIMED_OUT).
        assert emu.now < 5
        gate("auto-run").set()
        holder.join(10)
        assert answers[0].json()["status"] == "COMPLETED"
        http.close()


def test_advance_works_in_auto_mode_too() -> None:
    with Emulator({"e": echo}, clock="auto", timings=Timings(retention_run=5)) as emu:
        http = Http(emu, key=None)
        job_id = http.run("e", {})
        http.wait("e", job_id)
        assert emu.advance(5) == 5.0
        assert http.get("e", f"status/{job_id}").status_code == 404
        http.close()


# -- POST /_emulator/advance ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def virtual() -> Any:
    with Emulator({"q": EndpointSpec(echo, workers=0)}, api_key=KEY, clock="virtual") as emu:
        yield emu


@pytest.fixture
def vhttp(virtual: Emulator) -> Any:
    client = Http(virtual)
    yield client
    client.close()


def test_advance_route_moves_the_clock_and_answers_now(virtual: Emulator, vhttp: Http) -> None:
    job_id = vhttp.run("q", {}, policy={"ttl": 10_000})
    before = virtual.now
    answer = vhttp.control("advance", json={"seconds": 10})
    assert answer.status_code == 200
    assert answer.json() == {"now": before + 10}
    assert vhttp.status("q", job_id)["status"] == "TIMED_OUT"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"ten", "not valid JSON"),
        (b"[10]", "JSON object"),
        (b"{}", '{"seconds": N}'),
        (b'{"seconds": 1, "ms": 5}', '{"seconds": N}'),
        (b'{"seconds": -1}', "must be a number of seconds >= 0"),
        (b'{"seconds": "10"}', "got string"),
        (b'{"seconds": true}', "got boolean"),
    ],
)
def test_advance_route_refuses_a_bad_body_with_400(
    virtual: Emulator, vhttp: Http, body: bytes, needle: str
) -> None:
    before = virtual.now
    answer = vhttp.control("advance", content=body)
    assert answer.status_code == 400
    assert needle in answer.json()["error"]
    assert virtual.now == before


def test_advance_route_refuses_over_ten_years_and_the_clock_keeps_serving(
    virtual: Emulator, vhttp: Http
) -> None:
    # Two advances of 1e308 once made the clock infinite: every later /run answered 500.
    before = virtual.now
    for _ in range(2):
        answer = vhttp.control("advance", json={"seconds": 1e308})
        assert answer.status_code == 400
        assert "at most 10 years" in answer.json()["error"]
    assert virtual.now == before
    assert vhttp.control("advance", json={"seconds": 315_360_000}).status_code == 200
    assert vhttp.run("q", {}, policy={"ttl": 10_000})


@pytest.mark.parametrize("seconds", [1e308, 315_360_001, timedelta(days=3651)])
def test_advance_refuses_more_than_ten_years_with_a_value_error(seconds: Any) -> None:
    with Emulator({"q": EndpointSpec(echo, workers=0)}, clock="virtual") as emu:
        with pytest.raises(ValueError, match=r"at most 10 years \(315360000 seconds\)"):
            emu.advance(seconds)
        assert emu.now == 0.0
    with pytest.raises(ValueError, match=r"at most 10 years \(315360000 seconds\)"):
        _run(VirtualClock().advance(seconds))


def test_a_clock_that_would_stop_counting_refuses_the_advance() -> None:
    async def main() -> None:
        clock = VirtualClock()
        for _ in range(31):
            await clock.advance(315_360_000)
        with pytest.raises(ValueError, match="past what it can count"):
            await clock.advance(315_360_000)

    _run(main())


def test_advance_route_needs_the_key_and_its_method(virtual: Emulator, vhttp: Http) -> None:
    for key in (None, "wrong"):
        anonymous = Http(virtual, key=key)
        answer = anonymous.control("advance", json={"seconds": 1})
        anonymous.close()
        assert answer.status_code == 401 and KEY not in answer.text
    assert vhttp.control("advance", "GET").status_code == 405
    unknown = vhttp.control("nope")
    assert unknown.status_code == 404 and "POST /_emulator/advance" in unknown.json()["error"]


def test_advance_route_on_a_real_clock_is_a_409_saying_how_to_start_one() -> None:
    with Emulator({"e": echo}) as emu:
        http = Http(emu, key=None)
        answer = http.control("advance", json={"seconds": 1})
        http.close()
    assert answer.status_code == 409
    assert "--clock virtual" in answer.json()["error"]
