"""Test support for the client tests (imported by conftest and the tests; not a conftest, to stay unique).

The async variant of `api` runs on a private event loop in a thread and is driven through a thin
blocking facade; `stream` is collected into a `Streamed` (the chunks and the stream's `.job`) in both.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from runpod_queue import AsyncClient, Client, Job, StreamChunk
from runpod_queue.emulator import Emulator, EndpointSpec, Faults
from shared_support import EmuSetup, echo, fail

API_KEY = "rpq-test-key-0c4f9e2d7b1a"


async def slow(job: dict[str, Any]) -> Any:
    await asyncio.sleep(job["input"].get("s", 0.2))
    return "slept"


def gen(job: dict[str, Any]) -> Any:
    for i in range(job["input"]["n"]):
        time.sleep(job["input"].get("gap", 0.002))
        yield {"i": i}


async def gen_then_fail(job: dict[str, Any]) -> Any:
    yield "first"
    yield "second"
    raise RuntimeError("stream broke")


async def gen_forever(job: dict[str, Any]) -> Any:
    yield "started"
    await asyncio.sleep(30)
    yield "never"


def boom(job: dict[str, Any]) -> Any:
    raise ValueError("boom")


ENDPOINTS: dict[str, Any] = {
    "echo": echo,
    "slow": slow,
    "gen": gen,
    "gen_fail": gen_then_fail,
    "gen_forever": gen_forever,
    "fail": fail,
    "boom": boom,
    # No workers: jobs stay IN_QUEUE, so tests can count exactly what was created. One per test that
    # needs it (purge-queue allows 2 calls per 10 s, too few to empty a shared one between tests).
    **{f"idle{i}": EndpointSpec(handler=echo, workers=0) for i in range(40)},
}

#: One emulator for every client test module.
EMU = EmuSetup(lambda: ENDPOINTS, {"api_key": API_KEY, "workers": 2, "time_scale": 0.01}, shared=True)


def set_faults(emu: Emulator, faults: Faults) -> None:
    """Change faults and wait until the server loop applied them, so the next request sees them."""
    emu.set_faults(faults)
    emu.call(lambda: asyncio.sleep(0))


@dataclass
class Streamed:
    """What iterating a stream gave: its chunks, and its `.job` once iteration ended."""

    chunks: list[StreamChunk]
    job: Job | None

    @property
    def outputs(self) -> list[Any]:
        return [chunk.output for chunk in self.chunks]


class Portal:
    """An event loop in a thread: the async client runs here, tests call it synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 55) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class SyncApi:
    kind = "sync"

    def __init__(self, client: Client | None = None, **kwargs: Any) -> None:
        self.client = client if client is not None else Client(**kwargs)

    def endpoint(self, endpoint_id: str) -> SyncEp:
        return SyncEp(self.client.endpoint(endpoint_id))

    def with_options(self, **kwargs: Any) -> SyncApi:
        return SyncApi(self.client.with_options(**kwargs))

    def close(self) -> None:
        self.client.close()


class SyncEp:
    def __init__(self, ep: Any) -> None:
        self.ep = ep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ep, name)

    def stream(self, job_id: str, **kwargs: Any) -> Streamed:
        stream = self.ep.stream(job_id, **kwargs)
        chunks = []
        for chunk in stream:
            assert stream.job is None  # the terminal Job is known only once iteration has ended
            chunks.append(chunk)
        return Streamed(chunks, stream.job)


class AsyncApi:
    kind = "async"

    def __init__(self, portal: Portal, client: AsyncClient | None = None, **kwargs: Any) -> None:
        self.portal = portal
        self.client = client if client is not None else AsyncClient(**kwargs)

    def endpoint(self, endpoint_id: str) -> AsyncEp:
        return AsyncEp(self.portal, self.client.endpoint(endpoint_id))

    def with_options(self, **kwargs: Any) -> AsyncApi:
        return AsyncApi(self.portal, self.client.with_options(**kwargs))

    def close(self) -> None:
        self.portal.call(self.client.aclose())


class AsyncEp:
    def __init__(self, portal: Portal, ep: Any) -> None:
        self.portal = portal
        self.ep = ep

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.ep, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.portal.call(method(*args, **kwargs))

        return call

    def stream(self, job_id: str, **kwargs: Any) -> Streamed:
        async def collect() -> Streamed:
            stream = self.ep.stream(job_id, **kwargs)
            chunks = []
            async for chunk in stream:
                assert stream.job is None  # the terminal Job is known only once iteration has ended
                chunks.append(chunk)
            return Streamed(chunks, stream.job)

        return self.portal.call(collect())


Api = SyncApi | AsyncApi


class LoopbackServer:
    """A real HTTP/1.1 keep-alive server on 127.0.0.1 and a free port, in a thread, for what the emulator
    cannot show: which connection each request came over, a server that never answers or hangs up.

    ``answer(method, path)`` returns ``(status, body)`` (bytes as they are, anything else as JSON),
    ``"hang"`` (read the request, never answer until the server closes) or ``"drop"`` (read the request,
    close the connection). Every request is recorded as ``(method, path, client_port)``.
    """

    def __init__(self, answer: Callable[[str, str], tuple[int, Any] | str]) -> None:
        self.requests: list[tuple[str, str, int]] = []
        self.closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append((self.command, self.path, self.client_address[1]))
                reply = answer(self.command, self.path)
                if reply == "hang":
                    server.closing.wait()
                    self.close_connection = True
                    return
                if reply == "drop":
                    self.close_connection = True
                    return
                assert isinstance(reply, tuple)
                status, body = reply
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def closed_port_url() -> str:
    """A loopback base URL nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v2"
