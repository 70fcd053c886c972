"""Failure paths, sync and async through one body: the emulator's faults over real HTTP, and a mock
transport for answers the emulator cannot produce (garbage, exact request counts)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from client_support import API_KEY, Api

from runpod_queue import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    Retries,
    RetryNotice,
    ServerError,
    WaitTimeoutError,
)
from runpod_queue.emulator import Emulator, Faults, Timings
from shared_support import echo

# ---------------------------------------------------------------------------------------------- emulator


@pytest.fixture(scope="module")
def short_retention() -> Iterator[Emulator]:
    timings = Timings(retention_run=1, retention_sync=1)  # 10 ms at this time scale
    with Emulator({"echo": echo}, api_key=API_KEY, time_scale=0.01, timings=timings) as emulator:
        yield emulator


def test_not_found_after_the_retention_window(connect: Callable[..., Api], short_retention: Emulator) -> None:
    ep = connect(api_key=API_KEY, base_url=short_retention.base_url).endpoint("echo")
    job = ep.run_sync({"x": 1}, timeout=5)
    assert job.is_completed
    deadline = time.monotonic() + 5
    while True:
        try:
            ep.status(job.id)
        except NotFoundError as exc:
            assert exc.status_code == 404 and "retention" in str(exc)
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(NotFoundError):
        ep.wait(job.id, timeout=5)  # the job is gone: raise, do not poll until the timeout


def test_wait_on_unknown_job_raises_not_found(api: Api) -> None:
    with pytest.raises(NotFoundError):
        api.endpoint("echo").wait("no-such-job", timeout=5)


def test_bad_key_is_an_authentication_error(connect: Callable[..., Api], emu: Emulator) -> None:
    ep = connect(api_key="wrong-key-77", base_url=emu.base_url).endpoint("echo")
    with pytest.raises(AuthenticationError) as info:
        ep.run({})
    assert info.value.status_code == 401 and info.value.response is not None
    assert "wrong-key-77" not in str(info.value) and "wrong-key-77" not in repr(info.value)


@pytest.mark.parametrize("fault", ["error_429", "error_503"])
def test_run_retried_on_429_and_503_creates_each_job_once(
    connect: Callable[..., Api], emu: Emulator, faults: Callable[[Faults], None], idle: str, fault: str
) -> None:
    api = connect(api_key=API_KEY, base_url=emu.base_url, retries=Retries(attempts=40, wait=False))
    ep = api.endpoint(idle)
    faults(Faults(**{fault: 0.5}, seed=7))
    ids = {ep.run({"i": i}).id for i in range(10)}
    assert len(ids) == 10
    assert ep.status(next(iter(ids))).is_in_queue  # status is retried through the same faults
    faults(Faults())
    assert ep.health().jobs.in_queue == 10


def test_run_is_not_resent_after_an_ambiguous_failure(
    api: Api, faults: Callable[[Faults], None], idle: str
) -> None:
    ep = api.endpoint(idle)
    faults(Faults(drop=1.0))
    with pytest.raises(APIConnectionError) as info:
        ep.run({"once": True})
    assert info.value.sent is True and "not re-sent" in str(info.value)
    faults(Faults())
    assert ep.health().jobs.in_queue == 1  # the server did take it, exactly once


def test_idempotent_calls_are_retried_after_drops(api: Api, faults: Callable[[Faults], None]) -> None:
    ep = api.endpoint("echo")
    job = ep.run_sync({"x": 1}, timeout=10)
    faults(Faults(drop=0.5, seed=3))
    for _ in range(5):
        assert ep.status(job.id).is_completed
    assert ep.wait(job.id, timeout=10).is_completed


def test_connection_refused_is_retried_then_raised(connect: Callable[..., Api]) -> None:
    ep = connect(api_key=API_KEY, base_url="http://127.0.0.1:9/v2", retries=Retries(attempts=3, wait=False))
    with pytest.raises(APIConnectionError) as info:
        ep.endpoint("echo").run({})
    assert info.value.sent is False


# -------------------------------------------------------------------------------------- mock transport


class Script:
    """A mock server answering from a list of (status, body, headers) or exceptions, counting requests."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer if len(answer) == 3 else (*answer, {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)


@pytest.fixture
def mock(connect: Callable[..., Api]) -> Callable[..., tuple[Api, Script]]:
    def make(*answers: Any, **kwargs: Any) -> tuple[Api, Script]:
        script = Script(*answers)
        api = connect(
            api_key=API_KEY, base_url="http://rp.test/v2", transport=httpx.MockTransport(script), **kwargs
        )
        return api, script

    return make


JOB = {"id": "j1", "status": "IN_QUEUE"}


@pytest.mark.parametrize(
    ("op", "body", "reason"),
    [
        ("status", b"<html>oops</html>", "not JSON"),
        ("status", b"", "empty body"),
        ("status", {"status": "COMPLETED"}, "missing 'id'"),
        ("status", {"id": "j1"}, "missing 'status'"),
        ("status", {"id": "j1", "status": 7}, "'status' should be a non-empty string"),
        ("status", [1, 2], "expected a JSON object"),
        ("status", {"id": "j1", "status": "COMPLETED", "delayTime": "soon"}, "'delayTime'"),
        ("status", b'{"id": "j1", "status": "COMPLETED", "delayTime": Infinity}', "'delayTime'"),
        ("status", b'{"id": "j1", "status": "COMPLETED", "executionTime": NaN}', "'executionTime'"),
        ("status", b'{"id": "j1", "status": "COMPLETED", "retries": 1e999}', "'retries'"),
        ("status", b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        ("run", {"error": None}, "missing 'id'"),
        ("health", {"jobs": {}}, "missing 'workers'"),
        ("health", {"jobs": {"inQueue": "3"}, "workers": {}}, "'inQueue'"),
        ("purge_queue", {"status": "completed"}, "'removed'"),
        ("stream", {"status": "IN_PROGRESS", "stream": [{"nope": 1}]}, "without 'output'"),
        ("stream", {"stream": []}, "missing 'status'"),
        ("stream", {"status": "", "stream": []}, "'status' should be a non-empty string"),
    ],
)
def test_garbage_answers_are_api_response_errors(
    mock: Callable[..., tuple[Api, Script]], op: str, body: Any, reason: str
) -> None:
    api, _ = mock((200, body))
    ep = api.endpoint("ep")
    call: dict[str, Callable[[], Any]] = {
        "status": lambda: ep.status("j1"),
        "run": lambda: ep.run({}),
        "health": ep.health,
        "purge_queue": ep.purge_queue,
        "stream": lambda: ep.stream("j1"),
    }
    with pytest.raises(APIResponseError) as info:
        call[op]()
    assert reason in str(info.value)
    assert info.value.response.status_code == 200


def test_payload_too_large_is_raised_before_sending(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((200, {"id": "j1", "status": "COMPLETED"}))
    ep = api.endpoint("ep")
    big = "x" * 10_000_001
    with pytest.raises(PayloadTooLargeError) as info:
        ep.run({"blob": big})
    assert info.value.response is None and info.value.limit == 10_000_000
    assert info.value.size is not None and info.value.size > 10_000_000
    assert "s3_config" in str(info.value)
    assert script.requests == []
    assert ep.run_sync({"blob": big}, timeout=5).is_completed  # runsync allows 20 MB
    with pytest.raises(PayloadTooLargeError):
        ep.run_sync({"blob": "x" * 20_000_001}, timeout=5)
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, PayloadTooLargeError),
        (418, APIStatusError),  # no subclass of its own: the base class itself
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
    ],
)
def test_status_codes_map_to_the_error_tree(
    mock: Callable[..., tuple[Api, Script]], code: int, cls: type[APIStatusError]
) -> None:
    api, script = mock((code, {"error": f"server says {code}"}))
    with pytest.raises(APIStatusError) as info:
        api.endpoint("ep").retry("j1")
    assert type(info.value) is cls
    assert info.value.status_code == code and info.value.response is not None
    assert info.value.response.status_code == code
    assert f"server says {code}" in info.value.message and f"server says {code}" in str(info.value)
    # retry creates a job again: of these, only a 429 is re-sent (every attempt, here)
    assert len(script.requests) == (Retries().attempts if code == 429 else 1)


def test_server_error_with_empty_body(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((502, b""), retries=Retries(attempts=3, wait=False))
    with pytest.raises(ServerError) as info:
        api.endpoint("ep").health()
    assert info.value.status_code == 502 and len(script.requests) == 3


def test_429_then_success_honours_the_no_wait_switch(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((429, {"error": "slow down"}, {"Retry-After": "30"}), (200, JOB))
    assert api.endpoint("ep").run({}).id == "j1"  # Retry-After 30 s, yet no waiting in tests
    assert len(script.requests) == 2


def test_429_exhausted_carries_retry_after(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock(
        (429, {"error": "slow down"}, {"Retry-After": "3"}), retries=Retries(attempts=2, wait=False)
    )
    with pytest.raises(RateLimitError) as info:
        api.endpoint("ep").status("j1")
    assert info.value.retry_after == 3.0 and len(script.requests) == 2


def test_503_then_success_on_run(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((503, b""), (200, JOB))
    assert api.endpoint("ep").run({}).id == "j1"
    assert len(script.requests) == 2


def test_run_is_not_retried_on_500(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((500, {"error": "worker crashed"}), (200, JOB))
    with pytest.raises(ServerError):
        api.endpoint("ep").run({})
    assert len(script.requests) == 1


def test_run_is_not_resent_after_a_read_error(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock(httpx.ReadError("connection reset"), (200, JOB))
    with pytest.raises(APIConnectionError) as info:
        api.endpoint("ep").run({})
    assert type(info.value) is APIConnectionError
    assert info.value.sent is True and len(script.requests) == 1
    assert isinstance(info.value.__cause__, httpx.ReadError)  # the transport's own error, for the traceback


def test_run_is_resent_when_the_connection_was_never_made(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock(httpx.ConnectError("refused"), (200, JOB))
    assert api.endpoint("ep").run({}).id == "j1"
    assert len(script.requests) == 2


def test_status_is_retried_after_a_timeout(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock(httpx.ReadTimeout("slow"), (200, {"id": "j1", "status": "COMPLETED"}))
    assert api.endpoint("ep").status("j1").is_completed
    assert len(script.requests) == 2


def test_a_timeout_is_an_api_timeout_error(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, _ = mock(httpx.ReadTimeout("slow"), retries=Retries.off())
    with pytest.raises(APITimeoutError) as info:
        api.endpoint("ep").status("j1")
    assert info.value.sent is True


def test_cancel_retried_after_it_went_through_returns_the_cancelled_job(
    mock: Callable[..., tuple[Api, Script]],
) -> None:
    api, script = mock(
        httpx.ReadError("lost answer"),
        (400, {"error": "job j1 is already CANCELLED"}),
        (200, {"id": "j1", "status": "CANCELLED"}),
    )
    assert api.endpoint("ep").cancel("j1").is_cancelled
    assert [r.url.path for r in script.requests] == ["/v2/ep/cancel/j1"] * 2 + ["/v2/ep/status/j1"]


def test_wait_falls_back_to_polling_when_status_sync_is_missing(
    mock: Callable[..., tuple[Api, Script]],
) -> None:
    api, script = mock(
        (404, {"error": "no route"}),
        (200, {"id": "j1", "status": "IN_PROGRESS"}),
        (200, {"id": "j1", "status": "COMPLETED", "output": 1}),
    )
    assert api.endpoint("ep").wait("j1", timeout=10).output == 1
    assert [r.url.path for r in script.requests] == [
        "/v2/ep/status-sync/j1",
        "/v2/ep/status/j1",
        "/v2/ep/status/j1",
    ]
    assert ep_wait_paths(api, script) == ["/v2/ep/status/j1"]  # remembered: no status-sync tried again


def test_a_missing_job_is_not_a_missing_route(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((404, {"error": "no such job"}))
    with pytest.raises(NotFoundError):
        api.endpoint("ep").wait("j1", timeout=10)
    assert [r.url.path for r in script.requests] == ["/v2/ep/status-sync/j1", "/v2/ep/status/j1"]
    script.answers = [(200, {"id": "j1", "status": "COMPLETED"})]
    assert ep_wait_paths(api, script) == ["/v2/ep/status-sync/j1"]  # long-polls are still used


def ep_wait_paths(api: Api, script: Script) -> list[str]:
    """The paths one more wait on job j1 (answered COMPLETED) sends."""
    script.answers = [(200, {"id": "j1", "status": "COMPLETED"})]
    before = len(script.requests)
    assert api.endpoint("ep").wait("j1", timeout=10).is_completed
    return [r.url.path for r in script.requests[before:]]


def test_wait_timeout_is_kept_while_the_server_keeps_failing(mock: Callable[..., tuple[Api, Script]]) -> None:
    api, script = mock((503, b""), retries=Retries(attempts=1_000_000, backoff=0.02, max_backoff=0.02))
    with pytest.raises(WaitTimeoutError) as info:
        api.endpoint("ep").wait("j1", timeout=0.2)
    assert isinstance(info.value.__cause__, ServerError)  # why time ran out, not just that it did
    assert len(script.requests) > 1


def _not_found(path: str, base_url: str = "http://127.0.0.1:1/v2") -> str:
    """The message of a 404 from a RunPod-like server whose body says only "not found"."""
    transport = httpx.MockTransport(lambda _request: httpx.Response(404, json={"error": "not found"}))
    with Client(api_key=API_KEY, base_url=base_url, transport=transport, retries=Retries.off()) as client:
        ep = client.endpoint("abc")
        with pytest.raises(NotFoundError) as info:
            ep.status("j1") if path == "job" else ep.health()
    return str(info.value)


def test_a_404_says_which_thing_is_missing() -> None:
    endpoint = _not_found("endpoint")
    assert "no endpoint 'abc'" in endpoint and "retention" not in endpoint  # before: the job's reasons
    job = _not_found("job")
    assert "unknown job id" in job and "retention" in job
    no_v2 = _not_found("endpoint", base_url="http://127.0.0.1:1")
    assert "has no /v2" in no_v2 and "retention" not in no_v2


def test_the_emulators_404s_are_explained_once() -> None:
    with Emulator({"echo": echo}, rate_limits=False) as emu, Client(base_url=emu.base_url) as client:
        with pytest.raises(NotFoundError) as job:
            client.endpoint("echo").status("no-such-job")
        assert str(job.value).count("retention") == 1  # the server's reason, no hint repeating it
        with pytest.raises(NotFoundError) as endpoint:
            client.endpoint("nope").health()
        assert "'nope' not found" in str(endpoint.value) and "retention" not in str(endpoint.value)


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening, closed: a connection there is refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_loopback_connection_is_reported_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runpod_queue")
    url = f"http://127.0.0.1:{_closed_port()}/v2"
    with (
        Client(base_url=url, retries=Retries(attempts=5, wait=False)) as client,
        pytest.raises(APIConnectionError, match="nothing is listening there") as info,
    ):
        client.endpoint("echo").health()
    assert not info.value.sent
    assert sum("/health -> " in r.message for r in caplog.records) == 1  # before: 5 attempts, 5-7 s


# ------------------------------------------------------------------------------------------ on_retry


def test_on_retry_is_told_of_every_retry_the_emulator_forces(
    connect: Callable[..., Api], emu: Emulator, faults: Callable[[Faults], None]
) -> None:
    """The public hook (retry metrics): one notice per retry, with the attempt about to be made, the
    most there may be, and the failure that caused it; a first-try answer tells nothing."""
    notices: list[RetryNotice] = []
    api = connect(
        api_key=API_KEY,
        base_url=emu.base_url,
        retries=Retries(attempts=3, wait=False),
        on_retry=notices.append,
    )
    ep = api.endpoint("echo")
    ep.health()
    assert notices == []
    faults(Faults(error_503=1.0))
    with pytest.raises(ServerError):
        ep.health()
    assert [(n.attempt, n.attempts, n.delay) for n in notices] == [(2, 3, 0.0), (3, 3, 0.0)]
    assert all(isinstance(n.error, ServerError) and n.error.status_code == 503 for n in notices)
    assert notices[0].url == f"{emu.base_url}/echo/health"
    assert API_KEY not in repr(notices)
    notices.clear()
    faults(Faults(drop=1.0))
    with pytest.raises(APIConnectionError):
        api.with_options(retries=Retries(attempts=2, wait=False)).endpoint("echo").health()
    assert [(n.attempt, n.attempts) for n in notices] == [(2, 2)]  # a derived client keeps the hook
    assert isinstance(notices[0].error, APIConnectionError) and notices[0].error.sent


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_on_retry_must_be_a_plain_function(client_class: type[Client] | type[AsyncClient]) -> None:
    async def later(notice: RetryNotice) -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        client_class(API_KEY, base_url="http://127.0.0.1:9/v2", on_retry=later)
    with pytest.raises(TypeError, match="a function taking a RetryNotice"):
        client_class(API_KEY, base_url="http://127.0.0.1:9/v2", on_retry=3)  # type: ignore[arg-type]
