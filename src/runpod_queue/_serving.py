"""uvicorn hardened for servers a stranger can reach: the webhook receivers and the emulator.

uvicorn bounds concurrency (``limit_concurrency``) and idle keep-alive (``timeout_keep_alive``), and its h11
parser bounds header size (``h11_max_incomplete_event_size``), but on httptools (the fast parser we serve
with) nothing bounds a header's size, and nothing times out a client that sends its headers or its body
slowly: thousands of half-sent requests stay open and a 64 MB header is accepted. `GuardedHttpTools` adds
those three limits to uvicorn's own httptools protocol; `guarded_config` gathers every limit in one place.

It also answers in one write where uvicorn makes two (`_JoinedWrites`): a send() on loopback costs about
as much as the rest of a small answer, and the profile of the emulator under wrk showed the head's and the
body's send() as a quarter of its loop's time.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BODY_TIMEOUT", "HEADER_TIMEOUT", "MAX_HEADER_BYTES", "GuardedHttpTools", "guarded_config"]

HEADER_TIMEOUT: Final = 10.0  # seconds from connecting (or the last answer) to a request's complete headers
BODY_TIMEOUT: Final = 60.0  # seconds from a request's headers to its complete body (25 MB at ~3 Mbit/s)
MAX_HEADER_BYTES: Final = 64 * 1024  # request line and headers together (RunPod's own front end: 32-64 KB)


class _HeadersTooLarge(Exception):
    pass


class _JoinedWrites:
    """The transport as one request's response cycle sees it: the cycle's first write (the answer's head)
    is held and sent together with the next one (the body): one send() per answer instead of two.

    A head with no write after it in the same loop turn (a streamed answer whose first chunk is not ready)
    is sent on the next turn, so holding it never delays what the client sees by more than that.
    """

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._started:
            self._started = True
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            # Closed meanwhile (a timeout, a bad pipelined request answered 400): the answer is moot.
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for headers, one for the body, and a header size limit.

    A connection that misses a deadline is closed (as uvicorn closes an idle keep-alive one); headers over
    the limit get 431 and a close. Limits are class attributes so a test or a subclass can shrink them.
    """

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_header_bytes: int = MAX_HEADER_BYTES

    # Loop time by which what the connection awaits (headers, a body) must have arrived; None: nothing.
    _deadline: float | None = None
    # One pending check per connection, left in place when a deadline moves later: arming and disarming
    # happen twice per request, and a timer made and cancelled each time was a measurable share of a
    # keep-alive request's cost. The check re-arms itself when it fires before the deadline.
    _timer: asyncio.TimerHandle | None = None
    _timer_due: float = 0.0
    _header_bytes: int = 0  # bytes received while waiting for headers; -1 once they are complete
    _parsed_bytes: int = 0  # the current request's URL and headers, as parsed

    def _arm(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_due:
            self._schedule(deadline, seconds)

    def _schedule(self, due: float, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._check)
        self._timer_due = due

    def _disarm(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        left = deadline - self.loop.time()
        if left > 0:
            self._schedule(deadline, left)
        else:
            self._expire()

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._header_bytes >= 0
        if waiting:
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk holding complete headers and part of a body is not refused.
        if waiting and self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.send_431_response()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        """Headers that arrive in one chunk with their end are measured as httptools parses them."""
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._header_bytes = self.max_header_bytes + 1
            raise _HeadersTooLarge  # httptools turns it into a parser error: uvicorn's 400 path, made 431

    def send_400_response(self, msg: str) -> None:
        if self._header_bytes > self.max_header_bytes:
            self.send_431_response()
        else:
            super().send_400_response(msg)

    def send_431_response(self) -> None:
        self._header_bytes = -1
        body = b'{"error": "request headers too large"}'
        head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        self.transport.write(head + b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_bytes = 0
        if self._header_bytes < 0:  # a pipelined request: its headers are measured from here
            self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._header_bytes = -1
        self._arm(self.body_timeout)
        super().on_headers_complete()
        cycle = self.cycle
        # The cycle just made for this request (not an upgrade's, not a finished one's): its task has not
        # run yet, so nothing was written through the plain transport.
        if cycle is not None and cycle.transport is self.transport and not cycle.response_started:
            cycle.transport = _JoinedWrites(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.transport.is_closing():
            self._header_bytes = 0  # answered before its body ended: the next request's headers are due
            self._arm(self.header_timeout)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a request already parsed is served next: no headers are due
        super().on_response_complete()
        idle = self._header_bytes < 0 and self._deadline is None and not pipelined
        if idle and not self.transport.is_closing():
            # The next request on this keep-alive connection has the same time for its headers.
            self._header_bytes = 0
            self._arm(self.header_timeout)


def guarded_config(app: Any, *, limit_concurrency: int | None = 1000, **options: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` with `GuardedHttpTools` and bounded concurrency.

    Past ``limit_concurrency`` open connections uvicorn answers 503 at once instead of taking on more work.
    """
    return uvicorn.Config(
        app,
        http=GuardedHttpTools,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=5,
        **options,
    )
