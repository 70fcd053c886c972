"""The async client's default transport: aiohttp, behind the same seam as httpx (``_transport``).

Why not httpx here: its async pool gets slower with every request in flight (httpcore 1.0.x), and httpx over
httpx_aiohttp's transport measured about twice raw aiohttp's cost per call — httpx's request machinery
costs as much as the exchange itself. This sends through one aiohttp session and hands back a plain
``Answer``; aiohttp's errors are classified here, once, into ``TransportFailure``.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from runpod_queue._transport import KEEPALIVE_EXPIRY_S, Answer, Budget, TransportFailure, failure_reason

__all__ = ["AiohttpTransport", "aiohttp_failure"]


def aiohttp_failure(exc: BaseException) -> TransportFailure:
    """A connector error (refused, DNS, TLS) or a connect/pool timeout happened before anything was sent;
    anything later — a reset, a disconnect, a read timeout — may have reached the server."""
    not_sent = isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return TransportFailure(
        type(exc).__name__, failure_reason(exc), sent=not not_sent, timeout=isinstance(exc, TimeoutError)
    )


class AiohttpTransport:
    """One aiohttp session, opened on first use (it must be made inside the running event loop)."""

    def __init__(self, headers: Mapping[str, str], max_connections: int) -> None:
        self._headers = dict(headers)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # The client's base budget comes back on nearly every call: convert it once.
        self._last: tuple[Budget, aiohttp.ClientTimeout] | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            # As httpx does: a closed client is a bug to fix, and a silently reopened session would leak.
            raise RuntimeError("the client has been closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
        )
        session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        # aiohttp quietly sends a GET a second time when the connection drops. Every re-send is decided in
        # the attempt loop, which also counts each one against the rate limiter: switch aiohttp's off (no
        # public switch exists; an aiohttp without the attribute simply keeps its behaviour).
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        self._session = session
        return session

    async def send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, budget: Budget
    ) -> Answer:
        session = self._session or self._open()
        last = self._last
        if last is not None and last[0] is budget:
            timeout = last[1]
        else:
            # aiohttp's ``connect`` covers waiting for a pooled connection plus making one.
            timeout = aiohttp.ClientTimeout(
                sock_connect=budget.connect, sock_read=budget.read, connect=budget.pool
            )
            self._last = (budget, timeout)
        try:
            async with session.request(
                method, url, data=content, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.read()
                return Answer(response.status, body, response.raw_headers, response.reason or "", method, url)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise aiohttp_failure(exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
