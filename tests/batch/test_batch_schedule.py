"""The poll schedule on its own: time is an argument, so every rule is checked exactly, without a server."""

from __future__ import annotations

import pytest

from runpod_queue import JobStatus
from runpod_queue.batch._schedule import Schedule, Watched


def job(name: str, since: float) -> Watched:
    return Watched(key=f'"{name}"', line=1, job_id=name, attempts=1, since=since)


def schedule(**kwargs: float) -> Schedule:
    kwargs.setdefault("min_interval", 0.5)
    kwargs.setdefault("max_interval", 10.0)
    return Schedule(**kwargs)  # type: ignore[arg-type]


def drain(s: Schedule, now: float) -> list[str]:
    popped = []
    while (j := s.pop_due(now)) is not None:
        popped.append(j.job_id)
    return popped


def test_jobs_come_out_when_due_and_the_most_overdue_first() -> None:
    s = schedule()
    a, b, c = job("a", 0.0), job("b", 0.0), job("c", 0.0)
    s.at(b, 2.0)
    s.at(a, 1.0)
    s.at(c, 5.0)
    assert s.pop_due(0.9) is None
    assert s.wait(0.9) == pytest.approx(0.1)
    assert drain(s, 3.0) == ["a", "b"]  # a was due first: it has waited longest
    assert s.wait(3.0) == pytest.approx(2.0)
    assert drain(s, 5.0) == ["c"]
    assert s.wait(5.0) is None


def test_a_rescheduled_job_comes_out_once_and_a_finished_one_never() -> None:
    s = schedule()
    a, b = job("a", 0.0), job("b", 0.0)
    s.at(a, 1.0)
    s.at(a, 3.0)  # rescheduled later: the earlier entry no longer counts
    s.at(b, 1.0)
    s.finished(b)  # a webhook delivered its result before its check
    assert drain(s, 2.0) == []
    assert drain(s, 3.0) == ["a"]
    assert drain(s, 100.0) == []


def test_the_first_check_comes_a_little_before_jobs_have_been_taking() -> None:
    s = schedule()
    a = job("a", 0.0)
    s.submitted(a, 0.0)
    assert s.first_interval() == 0.5  # nothing learnt yet: the minimum
    assert drain(s, 0.5) == ["a"]
    # RunPod says the job queued 2 s and ran 3 s; observed 9 s (our polling inflated it) does not count.
    s.ended(a, delay_time=2.0, execution_time=3.0, now=9.0)
    assert s.latency == pytest.approx(5.0)
    assert s.first_interval() == pytest.approx(4.0)
    b = job("b", 10.0)
    s.submitted(b, 10.0)
    assert s.pop_due(13.9) is None and drain(s, 14.0) == ["b"]
    # Without RunPod's times the observed duration is the sample, averaged into the estimate.
    s.ended(b, delay_time=None, execution_time=None, now=25.0)
    assert s.latency == pytest.approx(0.9 * 5.0 + 0.1 * 15.0)
    s.ended(job("c", 0.0), delay_time=400.0, execution_time=600.0, now=1000.0)
    assert s.first_interval() == 10.0  # never beyond the maximum


def test_the_interval_grows_with_the_job_age_between_the_bounds() -> None:
    s = schedule()
    a = job("a", 100.0)
    assert s.interval(a, 100.2) == 0.5  # young: the minimum
    assert s.interval(a, 104.0) == pytest.approx(2.0)  # half its age
    assert s.interval(a, 200.0) == 10.0  # old: the maximum
    s.observed(a, JobStatus.IN_PROGRESS, 104.0)
    assert s.pop_due(105.9) is None and drain(s, 106.0) == ["a"]
    assert (s.in_queue, s.in_progress) == (0, 1)


def test_a_job_that_entered_after_one_seen_queued_is_rescheduled_without_a_call() -> None:
    s = schedule()
    first, later, earlier = job("first", 10.0), job("later", 11.0), job("earlier", 9.0)
    s.observed(first, JobStatus.IN_QUEUE, 12.0)  # the queue's front is still queued at 12.0
    s.at(later, 12.2)
    s.at(earlier, 12.2)
    # "later" entered after "first": still queued too, so no call is made for it; "earlier" may have started.
    assert drain(s, 12.2) == ["earlier"]
    assert later.status is JobStatus.IN_QUEUE and later.checked == 12.0
    assert s.in_queue == 2  # first (checked) and later (inferred)
    # Due one interval after the evidence, as if it had been checked then.
    assert s.pop_due(12.49) is None and drain(s, 12.5) == ["later"]


def test_fifo_inference_never_overrides_fresher_or_contrary_knowledge() -> None:
    s = schedule()
    front, running, fresh = job("front", 0.0), job("running", 1.0), job("fresh", 2.0)
    s.observed(running, JobStatus.IN_PROGRESS, 4.0)
    s.observed(fresh, JobStatus.IN_QUEUE, 6.0)
    s.observed(front, JobStatus.IN_QUEUE, 5.0)  # the evidence: front queued at 5.0
    s.finished(front)  # (only its sighting matters here)
    s.at(running, 5.5)
    s.at(fresh, 5.5)
    # running was seen running: never inferred back into the queue; fresh's own check (6.0) is newer.
    assert sorted(drain(s, 5.5)) == ["fresh", "running"]
    # An old sighting does not hold a job back: inference reschedules only to a time after now.
    stale = job("stale", 3.0)
    s.at(stale, 100.0)
    assert drain(s, 100.0) == ["stale"]


def test_with_webhooks_a_job_is_checked_only_once_its_delivery_is_late() -> None:
    s = schedule(late_after=30.0)
    a = job("a", 0.0)
    s.submitted(a, 0.0)
    assert s.pop_due(29.9) is None and drain(s, 30.0) == ["a"]
    assert s.interval(a, 31.0) == 30.0  # later checks wait as long too
    s.ended(a, delay_time=20.0, execution_time=20.0, now=40.0)
    assert s.late() == pytest.approx(80.0)  # twice the jobs' usual run time, when longer than the grace


def test_a_failed_check_is_retried_after_its_backoff_never_sooner_than_the_minimum() -> None:
    calls: list[int] = []
    s = Schedule(min_interval=0.5, max_interval=10.0, on_due=lambda: calls.append(1))
    a = job("a", 0.0)
    s.check_failed(a, 0.0, now=1.0)
    assert s.pop_due(1.4) is None and drain(s, 1.5) == ["a"]
    s.check_failed(a, 3.0, now=2.0)
    assert s.pop_due(4.9) is None and drain(s, 5.0) == ["a"]
    assert len(calls) == 2  # every (re)scheduling wakes the dispatcher


def test_a_retried_job_starts_a_new_attempt() -> None:
    s = schedule()
    a = job("a", 0.0)
    s.retried(a, 50.0)
    assert a.since == 50.0 and s.interval(a, 50.1) == 0.5
    assert drain(s, 50.5) == ["a"]


def test_bad_intervals() -> None:
    with pytest.raises(ValueError):
        Schedule(min_interval=0, max_interval=1)
    with pytest.raises(ValueError):
        Schedule(min_interval=2, max_interval=1)
