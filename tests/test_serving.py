"""`_serving.GuardedHttpTools` driven directly, on a transport that records each write: how an answer is
written (the wire effects of its limits are tested over real sockets in tests/emulator and tests/webhooks)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.server import ServerState

from runpod_queue._serving import GuardedHttpTools, guarded_config

REQUEST = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def serve(app: Any) -> tuple[GuardedHttpTools, RecordingTransport]:
    """A connection to `app` that received one request; its task starts on the next loop turn."""
    config = guarded_config(app, lifespan="off", proxy_headers=False)
    config.load()
    protocol = GuardedHttpTools(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    return protocol, transport


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def plain(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def test_an_answer_goes_out_in_one_write() -> None:
    async def main() -> list[bytes]:
        protocol, transport = serve(plain)
        await turns(5)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(main())
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n{}")


def _answered(request: bytes, headers: list[tuple[bytes, bytes]] | None) -> tuple[list[bytes], list[bytes]]:
    """What the emulator's `answer` writes for one request: through `rpq_answer` and through plain ASGI
    `send` (a wrapper hides `rpq_answer`), with the date header blanked."""
    from runpod_queue.emulator._http import answer

    async def one(fast: bool) -> list[bytes]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await answer(send if fast else (lambda message: send(message)), 201, {"a": 1}, headers)

        config = guarded_config(app, lifespan="off", proxy_headers=False)
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", b"D"), *config.encoded_headers]
        protocol = GuardedHttpTools(config, state, {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        await turns(5)
        protocol.connection_lost(None)
        return transport.writes

    async def main() -> tuple[list[bytes], list[bytes]]:
        return await one(True), await one(False)

    return asyncio.run(main())


@pytest.mark.parametrize(
    "request_bytes",
    [
        REQUEST,
        b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n",
        b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
)
@pytest.mark.parametrize("headers", [None, [(b"retry-after", b"1")], [(b"X-Warn", b"bad\nvalue")]])
def test_the_whole_answer_path_writes_what_asgi_send_writes(
    request_bytes: bytes, headers: list[tuple[bytes, bytes]] | None
) -> None:
    fast, plain_writes = _answered(request_bytes, headers)
    assert fast == plain_writes
    if headers and b"\n" in headers[0][1]:
        assert b" 201 " not in b"".join(fast)  # uvicorn refuses the header on both paths
    else:
        assert len(fast) == 1 and fast[0].startswith(b"HTTP/1.1 201 Created\r\n")


@pytest.mark.parametrize("chunks", [1, 3])
def test_a_streamed_head_is_sent_before_its_body_is_ready(chunks: int) -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        body_ready = asyncio.Event()

        async def streamed(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await body_ready.wait()
            for n in range(chunks):
                await send({"type": "http.response.body", "body": b"x", "more_body": n < chunks - 1})

        protocol, transport = serve(streamed)
        await turns(5)
        before_body = list(transport.writes)
        body_ready.set()
        await turns(5)
        protocol.connection_lost(None)
        return before_body, transport.writes

    before_body, writes = asyncio.run(main())
    assert len(before_body) == 1 and before_body[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[1:] and b"".join(writes[1:]).count(b"x") == chunks


@pytest.mark.parametrize(("header_timeout", "body_timeout"), [(30.0, 0.05), (0.05, 30.0)])
def test_the_nearer_deadline_closes_the_connection_whichever_was_armed_first(
    monkeypatch: pytest.MonkeyPatch, header_timeout: float, body_timeout: float
) -> None:
    monkeypatch.setattr(GuardedHttpTools, "header_timeout", header_timeout)
    monkeypatch.setattr(GuardedHttpTools, "body_timeout", body_timeout)

    async def main() -> bool:
        protocol, transport = serve(plain)
        if body_timeout < header_timeout:  # the body never comes: the body deadline is the nearer one
            protocol.data_received(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        else:  # answered, then the next request's headers never come
            await turns(5)
        await asyncio.sleep(0.3)
        closed = transport.closed
        protocol.connection_lost(None)
        return closed

    assert asyncio.run(main())
