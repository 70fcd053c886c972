"""The flows both clients run (wait, run_sync, stream, the attempt loop), driven here without a server and
on a fake clock: deadlines, pauses and retries are checked exactly, and no test waits for real time."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from runpod_queue import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Job,
    JobStatus,
    Retries,
    ServerError,
    WaitTimeoutError,
)
from runpod_queue._actions import Emit, Exchange, Expired, Flow, Notify, Sleep
from runpod_queue._answers import parse_job
from runpod_queue._attempts import DEADLINE_GRACE, AttemptRules, request
from runpod_queue._calls import run_call
from runpod_queue._flows import PAUSE_MAX_LONG_POLL, run_sync_flow, stream_flow, wait_flow
from runpod_queue._settings import base_budget
from runpod_queue._transport import Answer, TransportFailure

T = TypeVar("T")
Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]] | BaseException


class Driver:
    """Runs a flow as Client/AsyncClient do, against ``server(exchange) -> reply``; a Sleep (or a server's
    ``hold``) moves the fake clock instead of waiting."""

    def __init__(self, server: Callable[[Exchange, Driver], Reply], retries: Retries | None = None) -> None:
        self.server = server
        self.now = 1000.0
        self.actions: list[Exchange | Sleep | Notify | Emit] = []
        self.rules = AttemptRules(
            "http://rp.test/v2", base_budget(30.0), retries or Retries(), random.Random(7), lambda: self.now
        )

    def run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = error = None
            self.actions.append(action)
            if isinstance(action, Exchange):
                reply = self.server(action, self)
                if isinstance(reply, BaseException):
                    error = reply
                else:
                    status, body, *headers = reply
                    content = body if isinstance(body, bytes) else json.dumps(body).encode()
                    raw = [(k.encode(), v.encode()) for k, v in (headers[0] if headers else {}).items()]
                    value = Answer(status, content, raw, "", action.call.method, action.url)
            elif isinstance(action, Sleep):
                self.now += action.seconds

    def hold(self, exchange: Exchange) -> None:
        """A long-poll held for its whole ``?wait=``."""
        self.now += int(parse_qs(urlsplit(exchange.url).query)["wait"][0]) / 1000

    def paths(self) -> list[str]:
        return [urlsplit(a.url).path for a in self.actions if isinstance(a, Exchange)]

    def slept(self) -> list[float]:
        return [a.seconds for a in self.actions if isinstance(a, Sleep)]


def job(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, **extra}


def test_wait_gives_up_at_its_deadline_with_the_last_snapshot() -> None:
    def server(x: Exchange, d: Driver) -> Reply:
        d.hold(x)
        return 200, job("IN_PROGRESS")

    d = Driver(server)
    with pytest.raises(WaitTimeoutError) as info:
        d.run(wait_flow(d.rules, "ep", "j1", 10, {}))
    assert info.value.timeout == 10 and info.value.job is not None and info.value.job.is_in_progress
    assert d.now == 1010.0  # one long-poll asked to hold exactly the time left
    assert d.paths() == ["/v2/ep/status-sync/j1"]
    first = next(a for a in d.actions if isinstance(a, Exchange))
    assert first.budget.read == 10 + DEADLINE_GRACE  # the read is cut at the deadline, not 30 s + hold


def test_wait_pauses_grow_while_the_server_answers_at_once() -> None:
    answers = iter([job("IN_QUEUE")] * 8 + [job("IN_PROGRESS")] * 4 + [job("COMPLETED", output=1)])
    d = Driver(lambda x, d: (200, next(answers)))
    done = d.run(wait_flow(d.rules, "ep", "j1", None, {}))
    assert done.output == 1
    assert [a.job.status for a in d.actions if isinstance(a, Notify)] == [
        JobStatus.IN_QUEUE,
        JobStatus.IN_PROGRESS,
        JobStatus.COMPLETED,
    ]
    pauses = d.slept()
    assert len(pauses) == 12 and all(0 < p <= PAUSE_MAX_LONG_POLL for p in pauses)
    assert pauses[:7] == sorted(pauses[:7]) and pauses[6] > pauses[0]  # backs off while nothing changes
    assert pauses[8] == pauses[0]  # and starts again short after a change


def test_a_deadline_between_retries_keeps_the_last_failure_as_cause() -> None:
    d = Driver(lambda x, d: (503, b""), Retries(attempts=1000, backoff=1.0, max_backoff=1.0))
    with pytest.raises(WaitTimeoutError) as info:
        d.run(wait_flow(d.rules, "ep", "j1", 5, {}))
    assert isinstance(info.value.__cause__, ServerError)
    assert sum(d.slept()) < 5 and len(d.paths()) > 1


def _slot_never_frees(x: Exchange, d: Driver) -> Reply:
    if "runsync" in x.url:
        return 200, job("IN_PROGRESS")
    assert x.deadline is not None  # a driver throws Expired only for a request that has a deadline
    d.now = x.deadline
    return Expired()


def _cut_at_the_deadline(x: Exchange, d: Driver) -> Reply:
    if "runsync" in x.url:
        return 200, job("IN_PROGRESS")
    assert x.deadline is not None
    d.now = x.deadline
    failure = TransportFailure("ReadTimeout", "ReadTimeout", sent=True, timeout=True)
    failure.__cause__ = TimeoutError()
    return failure


@pytest.mark.parametrize("server", [_slot_never_frees, _cut_at_the_deadline])
@pytest.mark.parametrize("op", ["wait", "stream", "run_sync"])
def test_expired_never_escapes(op: str, server: Callable[[Exchange, Driver], Reply]) -> None:
    d = Driver(server)
    flows: dict[str, Callable[[], Flow[Any]]] = {
        "wait": lambda: wait_flow(d.rules, "ep", "j1", 5, {}),
        "stream": lambda: stream_flow(d.rules, "ep", "j1", 5),
        "run_sync": lambda: run_sync_flow(
            d.rules, "ep", {}, timeout=5, webhook=None, policy=None, s3_config=None, long_poll={}
        ),
    }
    with pytest.raises(WaitTimeoutError) as info:
        d.run(flows[op]())
    assert info.value.timeout == 5
    if server is _cut_at_the_deadline:
        assert isinstance(info.value.__cause__, APITimeoutError)


def test_run_sync_waits_on_after_the_server_window_and_reports_the_whole_timeout() -> None:
    def server(x: Exchange, d: Driver) -> Reply:
        if "runsync" in x.url:
            d.now += 3  # the server's window closed before the 8 s asked for
        else:
            d.hold(x)
        return 200, job("IN_PROGRESS")

    d = Driver(server)
    flow = run_sync_flow(
        d.rules, "ep", {}, timeout=8, webhook=None, policy=None, s3_config=None, long_poll={}
    )
    with pytest.raises(WaitTimeoutError) as info:
        d.run(flow)
    assert info.value.timeout == 8 and d.now == 1008.0
    assert info.value.job_id == "j1" and info.value.job is not None and info.value.job.is_in_progress
    assert d.paths() == ["/v2/ep/runsync", "/v2/ep/status-sync/j1"]
    runsync = next(a for a in d.actions if isinstance(a, Exchange))
    assert runsync.deadline is None  # cutting runsync short would lose the id of a job that exists


def _stream_ending(final: dict[str, Any], status_reply: Reply | None = None) -> tuple[Job, Driver]:
    answers = iter(
        [{"status": "IN_PROGRESS", "stream": [{"output": 1}]}, {**final, "stream": [{"output": 2}]}]
    )

    def server(x: Exchange, d: Driver) -> Reply:
        if "/status/" in x.url:
            assert status_reply is not None, "no /status call expected"
            return status_reply
        return 200, next(answers)

    d = Driver(server)
    ended = d.run(stream_flow(d.rules, "ep", "j1", None))
    assert [a.chunk.output for a in d.actions if isinstance(a, Emit)] == [1, 2]
    return ended, d


def test_stream_returns_the_terminal_job_from_the_last_answer() -> None:
    ended, d = _stream_ending({"status": "COMPLETED", "output": [1, 2]})
    assert ended == Job("j1", JobStatus.COMPLETED, output=[1, 2]) and "stream" not in ended.raw
    assert d.paths() == ["/v2/ep/stream/j1"] * 2
    ended, d = _stream_ending({"status": "FAILED", "error": "bad"})
    assert ended.is_failed and ended.error == "bad" and len(d.paths()) == 2  # no /status call needed


def test_a_failed_stream_without_its_error_fetches_it_once() -> None:
    ended, d = _stream_ending({"status": "FAILED"}, (200, job("FAILED", error="worker died")))
    assert ended.is_failed and ended.error_message == "worker died"
    assert d.paths()[-1] == "/v2/ep/status/j1" and len(d.paths()) == 3
    ended, _ = _stream_ending({"status": "FAILED"}, (404, {"error": "gone"}))
    assert ended == Job("j1", JobStatus.FAILED)  # already gone: the stream's own view
    with pytest.raises(AuthenticationError):  # any other failure is raised, as for the stream's own calls
        _stream_ending({"status": "FAILED"}, (401, {"error": "no"}))


def test_retry_after_sets_the_pause_and_a_created_job_is_never_sent_twice() -> None:
    replies = iter([(429, {"error": "slow down"}, {"Retry-After": "7"}), (200, job("IN_QUEUE"))])
    d = Driver(lambda x, d: next(replies))
    call = run_call("ep", {}, webhook=None, policy=None, s3_config=None)
    assert d.run(request(call, d.rules, parse_job)).is_in_queue
    assert len(d.slept()) == 1 and d.slept()[0] >= 7.0

    lost = TransportFailure("ReadError", "ReadError", sent=True, timeout=False)
    d = Driver(lambda x, d: lost)
    with pytest.raises(APIConnectionError) as info:
        d.run(request(call, d.rules, parse_job))
    assert info.value.sent is True and len(d.paths()) == 1 and "not re-sent" in str(info.value)
