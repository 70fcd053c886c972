"""`simulate`: traffic against fleet configurations on the emulator's core, in virtual time.

Cases computable by hand (a trace with fixed gaps, fixed durations), one queueing-theory check (M/M/c
against Erlang C) and the scaler / idle / timeout rules as the report shows them. Every simulated span is
small: the whole file runs in a few CPU seconds.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from runpod_queue.emulator import (
    Arrival,
    DurationModel,
    SimConfig,
    SimulationReport,
    Traffic,
    simulate,
)
from runpod_queue.emulator._sim_models import parse_rate


def _every(gap: float, count: int, duration: float | None = None) -> Traffic:
    return Traffic.trace([Arrival(i * gap, None, duration) for i in range(count)])


def test_a_constant_rate_below_one_worker_waits_only_for_the_first_cold_start() -> None:
    # A job every 5 s, each 1 s long, one worker that starts cold (3 s) and stays (idle 60 s): the
    # first job waits exactly the cold start, every later one finds the worker idle.
    report = simulate(_every(5, 120), ["min=0,max=1,idle=60s"], duration="1s", cold_start=3, price=0.001)
    c = report.configs[0]
    assert (c.jobs, c.completed, c.jobs_waited) == (120, 120, 1)
    assert c.queue_delay.max == 3.0
    assert c.queue_delay.p99 == 0.0
    assert c.end_to_end.max == 4.0 and c.end_to_end.p50 == 1.0
    assert (c.cold_starts, c.jobs_waited_on_cold_start, c.workers_peak) == (1, 1, 1)
    # Billed from the start of the cold start (0) to the end of the span: the last job ends at 596 s.
    assert c.span == 596.0
    assert c.worker_seconds == 596
    assert c.worker_seconds_busy == 120.0 and c.worker_seconds_starting == 3.0
    assert c.worker_seconds_idle == 596 - 120 - 3
    assert c.cost == pytest.approx(0.596)
    assert c.workers_mean == pytest.approx(1.0)


def test_the_idle_timeout_decides_whether_the_next_job_starts_cold() -> None:
    traffic = _every(20, 2)
    report = simulate(
        traffic, ["min=0,max=1,idle=5s", "min=0,max=1,idle=60s", "min=1,max=1"], duration="1s", cold_start=3
    )
    short, long, active = report.configs
    assert (short.cold_starts, short.jobs_waited, short.queue_delay.max) == (2, 2, 3.0)
    assert (long.cold_starts, long.jobs_waited, long.queue_delay.max) == (1, 1, 3.0)
    # An active worker boots when the endpoint starts: the job at 0 waits for it, the one at 20 does not.
    assert (active.cold_starts, active.jobs_waited_on_cold_start) == (1, 1)
    # Idle 5 s: billed 0..9 (cold 3, job 1, idle 5), then 20..24 (cold 3, job 1: the span ends with the
    # last job); idle 60 s: one worker from 0 to the end of the span (the second job runs 20..21).
    assert short.worker_seconds == 9 + 4
    assert long.worker_seconds == 21
    assert [c.label for c in report.configs] == [
        "min=0,max=1,idle=5s",
        "min=0,max=1,idle=60s",
        "min=1,max=1,idle=5s",
    ]


def test_the_scaler_kind_shows_in_queue_delay() -> None:
    # 10 jobs of 30 s at once, at most 5 workers with a 1 s cold start. The job that finds no worker
    # starts one at once; queue_delay adds the others when jobs have waited 4 s (ready at 5 s),
    # request_count starts all 5 at once (ready at 1 s).
    burst = Traffic.trace([0.0] * 10)
    report = simulate(
        burst,
        ["max=5,scaler=queue_delay:4", "max=5,scaler=request_count:1"],
        duration="30s",
        cold_start=1,
    )
    delay, count = report.configs
    assert delay.workers_peak == count.workers_peak == 5
    assert delay.queue_delay.p50 == 5.0 and count.queue_delay.p50 == 1.0
    assert delay.cold_starts == count.cold_starts == 5
    assert count.jobs_waited_on_cold_start == 5


def test_execution_timeout_and_ttl_end_jobs_by_the_emulator_rules() -> None:
    report = simulate(_every(10, 6), ["max=1,timeout=2s", "min=0,max=0"], duration="5s", cold_start=0, ttl=30)
    stopped, none = report.configs
    assert (stopped.completed, stopped.timed_out, stopped.expired) == (0, 6, 0)
    assert stopped.worker_seconds_busy == 6 * 2.0
    assert stopped.cold_starts == 6  # a worker whose job timed out is replaced, cold
    assert (none.completed, none.expired, none.worker_seconds) == (0, 6, 0)


def test_flashboot_shortens_starts_after_a_stop() -> None:
    report = simulate(
        _every(30, 4), ["max=1,idle=5s", "max=1,idle=5s,flashboot=on"], duration="1s", cold_start=10
    )
    plain, flash = report.configs
    assert (plain.cold_starts, plain.flashboot_starts, plain.queue_delay.max) == (4, 0, 10.0)
    assert (flash.cold_starts, flash.flashboot_starts) == (4, 3)
    assert flash.queue_delay.p50 == pytest.approx(1.0)  # a tenth of the cold start


def _erlang_c(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_mm2_matches_erlang_c_within_ten_percent() -> None:
    # M/M/2 at 50% load: arrivals 1/s, service exponential with mean 1 s, 2 workers always up.
    # Erlang C: P(wait) = 1/3, mean wait = P(wait) / (c*mu - lambda) = 1/3 s. Two simulated hours
    # (~7,200 jobs) put both within 10% (seed 7; seeds 0-9 all land within 10% too).
    lam, mu, c = 1.0, 1.0, 2
    report = simulate(
        Traffic.poisson(lam, hours=2), [f"min={c},max={c}"], duration=f"exponential:mean={1 / mu}s", seed=7
    )
    r = report.configs[0]
    p_wait = _erlang_c(c, lam / mu)
    wq = p_wait / (c * mu - lam)
    assert r.jobs == pytest.approx(lam * 7200, rel=0.05)
    assert r.jobs_waited / r.jobs == pytest.approx(p_wait, rel=0.10)
    assert r.queue_delay.mean == pytest.approx(wq, rel=0.10)
    assert r.end_to_end.mean == pytest.approx(wq + 1 / mu, rel=0.10)


def test_the_same_seed_gives_the_same_report_and_configs_share_the_traffic() -> None:
    def run(seed: int) -> SimulationReport:
        return simulate(
            Traffic.poisson("60/min", hours=0.2),
            ["max=2", "max=4"],
            duration="lognormal:median=1s,p95=3s",
            seed=seed,
        )

    a, b, other = run(1), run(1), run(2)
    assert a.configs == b.configs
    assert a.configs[0].jobs == a.configs[1].jobs
    assert a.configs[0].worker_seconds_busy == pytest.approx(a.configs[1].worker_seconds_busy)
    assert (
        other.configs[0].jobs != a.configs[0].jobs or other.configs[0].queue_delay != a.configs[0].queue_delay
    )
    assert "timeline" not in a.to_dict()["configs"][0]
    timeline = a.configs[0].timeline
    assert len(timeline.at) == len(timeline.workers) == len(timeline.queued) > 100


def test_traffic_files(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"at": 0, "input": {"n": 1}, "duration": "2s"}\n\n{"at": 10}\n')
    t = Traffic.from_file(trace)
    assert [(a.at, a.duration) for a in t.arrivals] == [(0.0, 2.0), (10.0, None)]
    report = simulate(t, ["min=1,max=1"], duration="5s")
    assert report.configs[0].worker_seconds_busy == 7.0  # the trace's 2 s, then the model's 5 s

    profile = tmp_path / "hourly.csv"
    profile.write_text("hour,rate\n0,0\n1,60/min\n")
    p = Traffic.from_file(profile, hours=2)
    assert p.rates == (0.0, 1.0)
    jobs = simulate(p, ["max=3"], duration="1s").configs[0].jobs
    assert 3300 < jobs < 3900  # only in the second hour

    from runpod_queue.batch._journal import _SCHEMA

    journal = tmp_path / "batch.journal"
    con = sqlite3.connect(journal)
    con.executescript(_SCHEMA)
    con.executemany(
        "INSERT INTO items (key, line, state, submitted_at, result) VALUES (?, ?, 'terminal', ?, ?)",
        [('"a"', 1, 1000.0, '{"executionTime": 1500}'), ('"b"', 2, 1004.0, None)],
    )
    con.commit()
    con.close()
    j = Traffic.from_file(journal)
    assert [(a.at, a.duration) for a in j.arrivals] == [(0.0, 1.5), (4.0, None)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min=0,max", "'max' is not key=value"),
        ("min=0,foo=1", "unknown key 'foo'"),
        ("min=3,max=1", "min (3) is above max (1)"),
        ("min=-1", "min must be a whole number"),
        ("scaler=fastest", "scaler is queue_delay:SECONDS or request_count:N"),
        ("scaler=queue_delay:0.1", "at least 0.5"),
        ("idle=soon", "is not a duration"),
        ("flashboot=maybe", "flashboot is on or off"),
    ],
)
def test_bad_configs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="config") as err:
        SimConfig.parse(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_rate("-2/s"), "at least 0"),
        (lambda: parse_rate("fast"), "is not a rate"),
        (lambda: DurationModel.parse("lognormal:median=4s"), "takes median, p95"),
        (lambda: DurationModel.parse("lognormal:median=4s,p95=2s"), "0 < median < p95"),
        (lambda: DurationModel.parse("gamma:k=2"), "unknown kind"),
        (lambda: Traffic.poisson("2/s", hours=0), "hours must be"),
        (lambda: simulate(Traffic.poisson(1), []), "at least one configuration"),
        (lambda: simulate(Traffic.poisson(1), ["max=1"], price=-1), "price must be"),
    ],
)
def test_bad_input_says_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()  # type: ignore[operator]
    assert message in str(err.value)


def test_rates() -> None:
    assert parse_rate("2/s") == 2.0
    assert parse_rate("120/min") == 2.0
    assert parse_rate("7200/h") == 2.0
    assert parse_rate(0.5) == 0.5


def test_a_long_timeline_is_drawn_in_windows_mean_workers_and_the_queues_worst_moment() -> None:
    from runpod_queue.emulator._sim_plot import coarse

    short = coarse((0.0, 1.0), (1, 2), (0, 1), (3, 0))
    assert short == (1, [0.0, 1.0], [1.0, 2.0], [0.0, 1.0], [3, 0])  # few samples: drawn as sampled
    n = 1000  # above the 400 points drawn: windows of 3 samples
    at = tuple(float(i) for i in range(n))
    workers = tuple(i % 3 for i in range(n))  # 0, 1, 2 in every window: mean 1
    queued = tuple(7 if i == 4 else 0 for i in range(n))  # one spike, in the second window
    width, starts, mean_workers, mean_running, max_queued = coarse(at, workers, workers, queued)
    assert width == 3 and starts[:3] == [0.0, 3.0, 6.0] and len(starts) == 334
    assert mean_workers[:333] == [1.0] * 333 and mean_running == mean_workers
    assert max_queued[1] == 7 and sum(max_queued) == 7  # the spike survives the window, once
