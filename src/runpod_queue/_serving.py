"""uvicorn hardened for servers a stranger can reach: the webhook receivers and the emulator.

uvicorn bounds concurrency (``limit_concurrency``) and idle keep-alive (``timeout_keep_alive``), and its h11
parser bounds header size (``h11_max_incomplete_event_size``), but on httptools (the fast parser we serve
with) nothing bounds a header's size, and nothing times out a client that sends its headers or its body
slowly: thousands of half-sent requests stay open and a 64 MB header is accepted. `GuardedHttpTools` adds
those three limits to uvicorn's own httptools protocol; `guarded_config` gathers every limit in one place.

A connection counts toward ``limit_concurrency`` only once its first request's headers are complete:
half-open connections (a slowloris reconnecting as fast as it is cut off) would otherwise hold every slot,
and a signed delivery arriving meanwhile got 503. Until then a connection is "waiting": it has
``FIRST_BYTE_TIMEOUT`` to send anything and ``HEADER_TIMEOUT`` for all its headers, and one client address
keeps at most ``MAX_WAITING_PER_CLIENT`` waiting connections (``MAX_WAITING`` in all): past that its
oldest waiting one is closed if it has waited ``EVICTABLE_AFTER`` or more, so a fresh request, which
completes its headers at once, is never the one dropped.

It also answers in one write where uvicorn makes two (`_JoinedWrites`): a send() on loopback costs about
as much as the rest of a small answer, and the profile of the emulator under wrk showed the head's and the
body's send() as a quarter of its loop's time.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

__all__ = [
    "BODY_TIMEOUT",
    "EVICTABLE_AFTER",
    "FIRST_BYTE_TIMEOUT",
    "HEADER_TIMEOUT",
    "MAX_HEADER_BYTES",
    "MAX_WAITING",
    "MAX_WAITING_PER_CLIENT",
    "GuardedHttpTools",
    "guarded_config",
]

HEADER_TIMEOUT: Final = 10.0  # seconds from connecting (or the last answer) to a request's complete headers
BODY_TIMEOUT: Final = 60.0  # seconds from a request's headers to its complete body (25 MB at ~3 Mbit/s)
MAX_HEADER_BYTES: Final = 64 * 1024  # request line and headers together (RunPod's own front end: 32-64 KB)
FIRST_BYTE_TIMEOUT: Final = 3.0  # seconds from connecting to the first byte (an HTTP client sends at once)
MAX_WAITING_PER_CLIENT: Final = 64  # connections of one address whose first headers are not complete
MAX_WAITING: Final = 4096  # such connections in all (file descriptors are finite)
# Only a connection waiting at least this long is closed to make room: a burst of fresh connections (a
# client opening a pool at once) is accepted in one loop turn before any of them is read, and none of
# those may be dropped; a slowloris's connections are seconds old.
EVICTABLE_AFTER: Final = 1.0


class _Waiting:
    """One server's connections whose first request's headers are not complete, by client address, oldest
    first (dicts keep insertion order): they are not in uvicorn's ``connections``, so not counted toward
    ``limit_concurrency``."""

    __slots__ = ("by_client", "count")

    def __init__(self) -> None:
        self.by_client: dict[str, dict[GuardedHttpTools, None]] = {}
        self.count = 0

    def add(self, connection: GuardedHttpTools, client: str) -> None:
        self.by_client.setdefault(client, {})[connection] = None
        self.count += 1

    def remove(self, connection: GuardedHttpTools, client: str) -> None:
        mine = self.by_client.get(client)
        if mine is not None and mine.pop(connection, False) is None:
            self.count -= 1
            if not mine:
                del self.by_client[client]

    def oldest(self, client: str | None) -> GuardedHttpTools | None:
        """The oldest waiting connection of ``client`` (of the busiest client when None)."""
        if client is None:
            if not self.by_client:
                return None
            client = max(self.by_client, key=lambda key: len(self.by_client[key]))
        mine = self.by_client.get(client)
        return next(iter(mine)) if mine else None


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

    def write_whole(self, data: bytes) -> None:
        """A whole answer in one piece (`_AnsweringCycle`): nothing to hold, sent now."""
        self._started = True
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


class _AnsweringCycle(RequestResponseCycle):
    """uvicorn's response cycle with `rpq_answer`: a whole JSON answer written at once, skipping the two
    ASGI `send` calls (two coroutines, two message dicts, a regex pass over headers already checked).

    The emulator's `_http.answer` looks for it on `send`'s owner; whatever it declines (a paused or
    closed transport, an answer already started, access logging, a connection to close, HEAD, an extra
    header uvicorn would refuse) goes through `send` as before."""

    # The server's default headers (server, date) as last checked and joined: uvicorn replaces the list
    # when the date changes, so identity says whether the joined bytes are still them.
    _defaults_seen: Any = None
    _defaults_joined: bytes = b""

    def rpq_answer(self, status: int, body: bytes, headers: Any) -> bool:
        if (
            self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or not self.keep_alive
            or self.scope["method"] == "HEAD"
        ):
            return False
        defaults = self.default_headers
        cls = _AnsweringCycle
        if defaults is not cls._defaults_seen:
            joined = _joined_headers(defaults)
            if joined is None:
                return False
            cls._defaults_seen, cls._defaults_joined = defaults, joined
        extra = b""
        if headers:
            joined = _joined_headers(headers)
            if joined is None:
                return False
            extra = joined
        line = STATUS_LINE.get(status)
        if line is None:
            return False
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        self.expected_content_length = 0
        answer = b"%s%scontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
            line,
            cls._defaults_joined,
            len(body),
            extra,
            body,
        )
        transport: Any = self.transport
        if type(transport) is _JoinedWrites:
            transport.write_whole(answer)
        else:
            transport.write(answer)
        self.response_complete = True
        self.message_event.set()
        self.on_response()
        return True


def _joined_headers(headers: Any) -> bytes | None:
    """Header lines as uvicorn writes them, or None for one it would refuse or treat specially."""
    parts: list[bytes] = []
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return None
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding", b"connection", b"content-type"):
            return None
        parts.append(b"%s: %s\r\n" % (name, value))
    return b"".join(parts)


_uvicorn_on_header = HttpToolsProtocol.on_header


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for headers, one for the body, and a header size limit.

    A connection that misses a deadline is closed (as uvicorn closes an idle keep-alive one); headers over
    the limit get 431 and a close. Limits are class attributes so a test or a subclass can shrink them.
    """

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_header_bytes: int = MAX_HEADER_BYTES
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    max_waiting_per_client: int = MAX_WAITING_PER_CLIENT
    max_waiting: int = MAX_WAITING
    evictable_after: float = EVICTABLE_AFTER

    _waiting_in: _Waiting | None = None  # the registry this connection is waiting in, until its headers
    _waiting_key: str = ""
    _headers_due: float = 0.0  # loop time by which the first request's headers must be complete
    _connected_at: float = 0.0

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
        self._connected_at = self.loop.time()
        self._headers_due = self._connected_at + self.header_timeout
        self._arm(min(self.first_byte_timeout, self.header_timeout))
        # Not counted toward limit_concurrency until its headers are complete (on_headers_complete).
        self.connections.discard(self)
        registry: _Waiting | None = getattr(self.server_state, "_rpq_waiting", None)
        if registry is None:
            registry = _Waiting()
            self.server_state._rpq_waiting = registry  # type: ignore[attr-defined]
        self._waiting_in = registry
        self._waiting_key = self.client[0] if self.client else ""
        registry.add(self, self._waiting_key)
        if len(registry.by_client[self._waiting_key]) > self.max_waiting_per_client:
            self._evict(registry.oldest(self._waiting_key))
        if registry.count > self.max_waiting:
            self._evict(registry.oldest(None))

    def _evict(self, connection: GuardedHttpTools | None) -> None:
        if connection is not None and self._connected_at - connection._connected_at >= self.evictable_after:
            connection._stop_waiting()
            connection._expire()

    def _stop_waiting(self) -> None:
        if self._waiting_in is not None:
            self._waiting_in.remove(self, self._waiting_key)
            self._waiting_in = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._header_bytes >= 0
        if waiting:
            if self._header_bytes == 0 and self._waiting_in is not None:  # the first byte: headers next
                self._arm(max(0.0, self._headers_due - self.loop.time()))
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk holding complete headers and part of a body is not refused.
        if waiting and self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.send_431_response()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # `_count` inlined and uvicorn's method called directly (no super object): this runs per header.
        parsed = self._parsed_bytes + len(name) + len(value)
        self._parsed_bytes = parsed
        if parsed > self.max_header_bytes:
            self._header_bytes = self.max_header_bytes + 1
            raise _HeadersTooLarge
        _uvicorn_on_header(self, name, value)

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
        if self._waiting_in is not None:  # now it counts toward limit_concurrency, checked just below
            self._stop_waiting()
            self.connections.add(self)
        super().on_headers_complete()
        cycle = self.cycle
        # The cycle just made for this request (not an upgrade's, not a finished one's): its task has not
        # run yet, so nothing was written through the plain transport.
        if cycle is not None and cycle.transport is self.transport and not cycle.response_started:
            cycle.transport = _JoinedWrites(self.transport, self.loop)  # type: ignore[assignment]
            if type(cycle) is RequestResponseCycle:
                cycle.__class__ = _AnsweringCycle

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
