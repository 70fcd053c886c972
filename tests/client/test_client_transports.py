"""The transport seam: every transport — httpx (sync), aiohttp (the async default) and an httpx async
transport given as ``transport=`` — reports answers and failures the same way, over real loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from client_support import API_KEY, Api, AsyncApi, LoopbackServer, Portal, SyncApi, closed_port_url

from runpod_queue import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    RateLimitError,
    Retries,
    ServerError,
)
from runpod_queue._transport import failure_reason

_KEY = ConnectionKey("example.invalid", 443, True, True, None, None, None)


@pytest.fixture(params=["httpx-sync", "aiohttp", "httpx-async"])
def make(request: pytest.FixtureRequest, portal: Portal) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make_api(**kwargs: Any) -> Api:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("retries", Retries(wait=False))
        api: Api
        if request.param == "httpx-sync":
            api = SyncApi(**kwargs)
        elif request.param == "aiohttp":
            api = AsyncApi(portal, **kwargs)
        else:
            api = AsyncApi(portal, transport=httpx.AsyncHTTPTransport(), **kwargs)
        made.append(api)
        return api

    yield make_api
    for api in made:
        api.close()


@pytest.fixture
def serve() -> Iterator[Callable[[tuple[int, Any] | str], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(reply: tuple[int, Any] | str) -> LoopbackServer:
        servers.append(LoopbackServer(lambda method, path: reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_refused_connection_was_not_sent(make: Callable[..., Api]) -> None:
    url = closed_port_url()
    api = make(base_url=url, retries=Retries.off())
    with pytest.raises(APIConnectionError) as info:
        api.endpoint("ep").run({})
    assert type(info.value) is APIConnectionError and info.value.sent is False
    assert info.value.__cause__ is not None  # the library's own exception, for a traceback
    # The same words whichever library sent it, and none of its internals (aiohttp: "Cannot connect to
    # host 127.0.0.1:9 ssl:default [Connect call failed ...]", httpx: "[Errno 111] ...").
    said = str(info.value)
    assert said.startswith(
        f"POST /v2/ep/run: cannot connect to 127.0.0.1:{httpx.URL(url).port}: connection refused"
    )
    assert "ssl:default" not in said and "Errno" not in said and "Error" not in said


def test_a_hang_up_after_sending_may_have_been_acted_on(
    make: Callable[..., Api], serve: Callable[[tuple[int, Any] | str], LoopbackServer]
) -> None:
    server = serve("drop")
    api = make(base_url=server.base_url)
    with pytest.raises(APIConnectionError) as info:
        api.endpoint("ep").run({})
    assert type(info.value) is APIConnectionError and info.value.sent is True
    assert "not re-sent" in str(info.value) and len(server.requests) == 1  # a job may exist: sent once
    port = httpx.URL(server.base_url).port
    assert f"connection to 127.0.0.1:{port} lost (the server closed the connection without answering)" in str(
        info.value
    )
    with pytest.raises(APIConnectionError):
        api.endpoint("ep").status("j1")
    assert len(server.requests) == 1 + Retries().attempts  # status is safe to send again


def test_no_answer_in_time_is_a_timeout(
    make: Callable[..., Api], serve: Callable[[tuple[int, Any] | str], LoopbackServer]
) -> None:
    server = serve("hang")
    api = make(base_url=server.base_url, timeout=0.05, retries=Retries.off())
    with pytest.raises(APITimeoutError) as info:
        api.endpoint("ep").status("j1")
    assert info.value.sent is True
    assert str(info.value).endswith(f"no answer from 127.0.0.1:{httpx.URL(server.base_url).port} (timed out)")


def test_error_answers_read_the_same(
    make: Callable[..., Api], serve: Callable[[tuple[int, Any] | str], LoopbackServer]
) -> None:
    busy = make(base_url=serve((503, b"")).base_url, retries=Retries.off())
    with pytest.raises(ServerError) as info:
        busy.endpoint("ep").health()
    assert info.value.status_code == 503 and info.value.response is not None
    assert info.value.response.content == b"" and info.value.message == "Service Unavailable"
    limited = make(base_url=serve((429, {"error": "slow down"})).base_url, retries=Retries.off())
    with pytest.raises(RateLimitError) as rate:
        limited.endpoint("ep").status("j1")
    assert rate.value.message == "slow down" and rate.value.response is not None
    assert rate.value.response.headers["content-type"] == "application/json"
    assert str(rate.value.request.url).endswith("/v2/ep/status/j1")


def test_a_closed_client_refuses_to_send(
    make: Callable[..., Api], serve: Callable[[tuple[int, Any] | str], LoopbackServer]
) -> None:
    server = serve((200, {"id": "j1", "status": "COMPLETED"}))
    api = make(base_url=server.base_url)
    assert api.endpoint("ep").status("j1").is_completed
    api.close()
    with pytest.raises(RuntimeError, match="closed"):  # misuse, not an API error: nothing is reopened
        api.endpoint("ep").status("j1")
    assert len(server.requests) == 1


def test_the_default_async_client_does_not_ride_on_httpx(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[tuple[int, Any] | str], LoopbackServer]
) -> None:
    """httpx's async pool slows down with every request in flight (httpcore 1.0.x): the default must not
    touch it."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx's async machinery was used")

    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", refuse)
    server = serve((200, {"id": "j1", "status": "COMPLETED"}))

    async def main() -> bool:
        async with AsyncClient(API_KEY, base_url=server.base_url) as client:
            return (await client.endpoint("ep").status("j1")).is_completed

    assert asyncio.run(main())


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            _raised_from(
                httpx.ConnectError("[Errno -2] Name or service not known"), socket.gaierror(-2, "x")
            ),
            "host name not found",
        ),
        (
            aiohttp.ClientConnectorDNSError(_KEY, OSError(None, "Domain name not found")),
            "host name not found",
        ),
        (
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connect call failed")),
            "connection refused",
        ),
        (aiohttp.ServerDisconnectedError(), "the server closed the connection without answering"),
        (_raised_from(httpx.ConnectError("[SSL] ..."), ssl.SSLError(1, "[SSL] x")), "TLS handshake failed"),
        (aiohttp.ConnectionTimeoutError(), "timed out connecting"),
        (httpx.PoolTimeout("timed out"), "timed out waiting for a free connection"),
    ],
)
def test_transport_failures_read_in_plain_words(failure: BaseException, reason: str) -> None:
    assert failure_reason(failure).startswith(reason)
