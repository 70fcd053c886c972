"""Configuration from the environment, and the API key appearing nowhere: logs, reprs, messages."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from client_support import API_KEY, Api

from runpod_queue import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConfigurationError,
    RunpodQueueError,
)
from runpod_queue._settings import client_settings
from runpod_queue.emulator import Emulator, Faults


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", emu.base_url)
    with Client() as client:
        assert client.base_url == emu.base_url
        assert client.endpoint("echo").run_sync({"x": 1}, timeout=5).is_completed
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL")
    with Client() as client:
        assert client.base_url == "https://api.runpod.ai/v2"
    with Client(base_url="http://example.test/v2/") as client:
        assert client.base_url == "http://example.test/v2"
    with pytest.raises(ValueError, match="base_url"):
        Client(base_url="ftp://nope")


def test_no_key_for_a_remote_server_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    for make in (Client, AsyncClient):
        with pytest.raises(
            ConfigurationError, match=r"no API key for https://api\.runpod\.ai/v2.*RUNPOD_API_KEY"
        ):
            make()  # before: every request a 401, after the retries
        with pytest.raises(ConfigurationError):
            make(base_url="https://example.test/v2")
    with Client(base_url="http://127.0.0.1:1/v2"):  # loopback: an emulator without a key takes none
        pass
    with Client(transport=httpx.MockTransport(lambda _request: httpx.Response(200))):  # sends nowhere
        pass


def test_debug_logs_each_request_without_the_key(
    api: Api, emu: Emulator, faults: Callable[[Faults], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and aiohttp included
    ep = api.endpoint("echo")
    job = ep.run({"x": 1})
    ep.wait(job.id, timeout=10)
    ep.status(job.id)
    ep.health()
    faults(Faults(error_503=1.0))
    with pytest.raises(RunpodQueueError) as info:
        ep.status(job.id)
    faults(Faults(drop=1.0))
    with pytest.raises(APIConnectionError) as dropped:
        ep.run({})
    faults(Faults())
    ours = [r for r in caplog.records if r.name == "runpod_queue"]
    assert any("POST /echo/run -> 200 (attempt 1" in r.getMessage() for r in ours)
    assert any("/status/" in r.getMessage() and "attempt 2" in r.getMessage() for r in ours)
    assert all(r.levelno == logging.DEBUG for r in ours)
    texts = [r.getMessage() for r in caplog.records] + [str(info.value), repr(info.value), str(dropped.value)]
    texts += [
        repr(api.client),
        repr(ep.ep),
        repr(job),
        repr(ep.ep.stream(job.id)),
        repr(client_settings(API_KEY, emu.base_url, 30.0, None, True, 100)),  # what a client keeps
    ]
    assert not [t for t in texts if API_KEY in t]


def test_the_key_is_not_in_auth_errors(connect: Callable[..., Api], emu: Emulator) -> None:
    secret = "sk-live-DO-NOT-LEAK-123"
    api = connect(api_key=secret, base_url=emu.base_url)
    with pytest.raises(AuthenticationError) as info:
        api.endpoint("echo").status("j")
    rendered = [
        str(info.value),
        repr(info.value),
        info.value.message,
        str(info.value.request),
        repr(api.client),
    ]
    assert not [t for t in rendered if secret in t]


def test_an_api_error_pickles_and_keeps_no_key_in_any_request() -> None:
    import pickle

    import httpx

    from runpod_queue import APIResponseError, NotFoundError

    # As code that builds its own (or a transport hands over the request it sent) would give them.
    request = httpx.Request("GET", "https://api.runpod.ai/v2/e/status/j", headers={"Authorization": API_KEY})
    response = httpx.Response(404, json={"error": "nope"}, request=request)
    errors: list[RunpodQueueError] = [
        NotFoundError("nope", request=request, response=response, status_code=404),
        APIConnectionError("reset", request=request, sent=True),
        APIResponseError("no id", request=request, response=httpx.Response(200, request=request)),
    ]
    for error in errors:
        data = pickle.dumps(error)
        assert API_KEY.encode() not in data, type(error).__name__
        again = pickle.loads(data)
        assert type(again) is type(error) and str(again) == str(error)
        assert again.request.headers["authorization"] == "[redacted]"  # type: ignore[attr-defined]
    assert request.headers["authorization"] == API_KEY  # the caller's own request is left alone
