"""The transport seam: the one interface between the client's logic and the HTTP library under it.

A transport sends one request and returns an ``Answer`` (status, body, headers), or raises
``TransportFailure`` saying whether the request may have reached the server and whether it timed out.
Everything above the seam — limits, retries, parsing, error mapping — is the same whichever library runs:
``HttpxTransport`` for the sync client, ``_aiohttp.AiohttpTransport`` (the async default, see why in
``_aiohttp``) or ``HttpxAsyncTransport`` over any ``httpx.AsyncBaseTransport`` (a mock in tests).

httpx objects are built only for errors (``Answer.as_httpx``): the public exceptions carry them, while the
hot path of a successful call never pays for them.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import ssl
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import httpx

__all__ = [
    "KEEPALIVE_EXPIRY_S",
    "Answer",
    "AsyncTransport",
    "Budget",
    "HttpxAsyncTransport",
    "HttpxTransport",
    "SyncTransport",
    "TransportFailure",
    "failure_reason",
    "httpx_failure",
    "was_not_sent",
]

Headers = Sequence[tuple[bytes, bytes]] | httpx.Headers

# How long an idle pooled connection is kept, both HTTP stacks: under the common 5 s server idle timeout,
# so a reused socket is still open at the other end.
KEEPALIVE_EXPIRY_S = 4.0


class Budget(NamedTuple):
    """Seconds one attempt may spend: connecting, waiting for each read, writing, waiting for the pool."""

    connect: float
    read: float
    write: float
    pool: float


@dataclass(slots=True)
class Answer:
    """An HTTP answer of any status, as the transport read it."""

    status: int
    content: bytes
    headers: Headers
    reason: str
    method: str
    url: str

    def request(self) -> httpx.Request:
        # Method and URL only: the headers (and the API key in them) stay out of every error.
        return httpx.Request(self.method, self.url)

    def as_httpx(self) -> httpx.Response:
        return httpx.Response(
            self.status,
            headers=self.headers,
            content=self.content,
            request=self.request(),
            extensions={"reason_phrase": self.reason.encode()},
        )


class TransportFailure(Exception):
    """No answer arrived. ``sent``: the request may have reached the server; ``timeout``: time ran out.

    Internal: the attempt loop turns it into APIConnectionError / APITimeoutError, keeping the library's
    own exception as the cause.
    """

    def __init__(self, name: str, detail: str, *, sent: bool, timeout: bool) -> None:
        super().__init__(detail)
        self.name = name  # the library's exception type, for logs
        self.detail = detail
        self.sent = sent
        self.timeout = timeout


class SyncTransport(Protocol):
    def send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, budget: Budget
    ) -> Answer: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, budget: Budget
    ) -> Answer: ...

    async def aclose(self) -> None: ...


def _aiohttp_not_sent(exc: BaseException) -> bool | None:
    """Classify by the aiohttp exception behind an httpx error (httpx-aiohttp's transport maps some of them
    loosely: a server disconnect after sending becomes ConnectTimeout). None: no aiohttp cause.

    Without aiohttp loaded no cause can be one of its errors: the sync client's failures (every `rpq`
    command's) are classified without importing it (~0.3 s CPU)."""
    if "aiohttp" not in sys.modules:
        return None
    import aiohttp

    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return True
        if isinstance(cause, aiohttp.ClientError):
            return False
        cause = cause.__cause__
    return None


def was_not_sent(exc: httpx.TransportError) -> bool:
    """True only when the request certainly never reached the server (safe to re-send anything)."""
    verdict = _aiohttp_not_sent(exc)
    if verdict is not None:
        return verdict
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _is_timeout(exc: httpx.RequestError) -> bool:
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp"):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from, outermost first (a library error wraps the OS's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_TIMEOUT_PHASES = (("pool", "waiting for a free connection"), ("connect", "connecting"), ("write", "sending"))


def _timeout_reason(exc: BaseException) -> str:
    names = " ".join(type(e).__name__.lower() for e in _causes(exc))
    for word, phase in _TIMEOUT_PHASES:
        if word in names:
            return f"timed out {phase}"
    return "timed out"


def _os_reason(error: OSError) -> str | None:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({error.verify_message or 'no detail'})"
    if isinstance(error, ssl.SSLError):
        detail = getattr(error, "reason", None) or error.strerror or "no detail"
        return f"TLS handshake failed ({detail})"
    if isinstance(error, socket.gaierror) or type(error).__name__ == "ClientConnectorDNSError":
        return "host name not found (check the URL's host, or your DNS)"
    code = error.errno
    if isinstance(error, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(error, ConnectionResetError) or code == errno.ECONNRESET:
        return "connection reset"
    if isinstance(code, int) and code > 0:
        return os.strerror(code).lower()
    return None


def failure_reason(exc: BaseException) -> str:
    """What went wrong on the wire, in a few plain words, whichever library raised it.

    httpx and aiohttp word the same failure differently and wrap the OS's own error in their internals
    (``Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed ...]``); messages say
    ``connection refused`` instead. The library's exception stays the error's ``__cause__`` for tracebacks.
    """
    if any(isinstance(e, TimeoutError | httpx.TimeoutException) for e in _causes(exc)):
        return _timeout_reason(exc)
    for error in _causes(exc):
        if isinstance(error, OSError):
            reason = _os_reason(error)
            if reason is not None:
                return reason
    names = " ".join(type(e).__name__ for e in _causes(exc))
    if "ServerDisconnected" in names or "RemoteProtocolError" in names:
        return "the server closed the connection without answering"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def httpx_failure(exc: httpx.RequestError) -> TransportFailure:
    """An httpx error as the seam reports it. Anything but a transport error (an undecodable body, say)
    happened after the server answered: sent."""
    sent = not was_not_sent(exc) if isinstance(exc, httpx.TransportError) else True
    return TransportFailure(type(exc).__name__, failure_reason(exc), sent=sent, timeout=_is_timeout(exc))


def _httpx_timeout(budget: Budget) -> httpx.Timeout:
    return httpx.Timeout(connect=budget.connect, read=budget.read, write=budget.write, pool=budget.pool)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx builds a new TLS context per client — loading every CA certificate, about 0.1 s — although
    one per process serves them all (aiohttp shares one too). Built as httpx builds it, so
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` still apply, as read when the first client is made."""
    return httpx.create_ssl_context()


class HttpxTransport:
    """The sync transport: one ``httpx.Client`` (its pool, proxies from the environment, TLS settings),
    optionally over a given ``httpx.BaseTransport``."""

    def __init__(
        self, headers: Mapping[str, str], transport: httpx.BaseTransport | None, max_connections: int
    ) -> None:
        self._client = httpx.Client(
            headers=headers,
            transport=transport,
            verify=_tls_context(),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
        )
        # The client's base budget comes back on nearly every call: convert it once.
        self._last: tuple[Budget, httpx.Timeout] | None = None

    def send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, budget: Budget
    ) -> Answer:
        last = self._last
        if last is not None and last[0] is budget:
            timeout = last[1]
        else:
            timeout = _httpx_timeout(budget)
            self._last = (budget, timeout)
        try:
            response = self._client.request(method, url, content=content, headers=headers, timeout=timeout)
        except httpx.RequestError as exc:
            raise httpx_failure(exc) from exc
        return Answer(
            response.status_code, response.content, response.headers, response.reason_phrase, method, url
        )

    def close(self) -> None:
        self._client.close()


class HttpxAsyncTransport:
    """The async seam over any ``httpx.AsyncBaseTransport`` (``httpx.MockTransport`` in tests), called
    directly: no httpx.AsyncClient, so nothing but the transport sits between the seam and the wire."""

    def __init__(self, transport: httpx.AsyncBaseTransport, headers: Mapping[str, str]) -> None:
        self._transport = transport
        self._headers = dict(headers)
        self._closed = False

    async def send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, budget: Budget
    ) -> Answer:
        if self._closed:  # as the sync client and aiohttp's: a closed transport does not quietly reopen
            raise RuntimeError("the client has been closed")
        request = httpx.Request(
            method,
            url,
            content=content,
            headers={**self._headers, **headers} if headers else self._headers,
            extensions={"timeout": budget._asdict()},
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except httpx.RequestError as exc:
            raise httpx_failure(exc) from exc
        return Answer(response.status_code, body, response.headers, response.reason_phrase, method, url)

    async def aclose(self) -> None:
        self._closed = True
        await self._transport.aclose()
