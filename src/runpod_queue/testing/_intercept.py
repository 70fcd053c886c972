"""Reroutes this process's requests to `https://api.runpod.ai/...` to a local emulator, per HTTP library.

HTTPS to api.runpod.ai cannot be served by the plain-HTTP emulator through DNS tricks, so each library is
patched at the one layer every request of it passes through, and only that host's URLs are rewritten
(scheme, host and port; the path and query stay):

- httpx (and httpx2, which the `openai` package uses): `HTTPTransport.handle_request` /
  `AsyncHTTPTransport.handle_async_request` (any `Client` or `AsyncClient` with its default transport,
  including ours; a `MockTransport` is left alone);
- requests: `HTTPAdapter.send` (every `Session`, the official SDK's `runpod.Endpoint` included; proxies
  are dropped for a rerouted request, as loopback needs none);
- aiohttp: `ClientSession._build_url`, which every request's URL goes through (the SDK's
  `runpod.AsyncioEndpoint` and our `AsyncClient` included);
- a last guard against a library patched by none of the above: every resolver entry point this process
  is likely to use refuses api.runpod.ai (with or without the trailing dot of a fully qualified name),
  so it fails loudly instead of sending a DNS query or reaching RunPod. Covered: `socket.getaddrinfo`
  (asyncio's default loops and threads resolve through it), uvloop's `Loop.getaddrinfo` and
  `Loop.create_connection` (libuv resolves on its own), aiohttp's `TCPConnector._resolve_host` (any
  resolver, aiodns's included) and aiodns's `DNSResolver` lookups (`query`, `query_dns`,
  `getaddrinfo`, `gethostbyname`). Not covered: C extensions or subprocesses that resolve names
  themselves (pycurl, a `curl` subprocess), and a `pycares.Channel` used directly.

Hosts compare case-insensitively and without a trailing dot: `https://API.runpod.ai./v2/...` is rerouted
too.

Patches are installed when the first mock starts and removed when the last one stops; the innermost
active mock is the target (nesting works; its exit restores the outer one). A library that is not
installed is skipped.
"""

from __future__ import annotations

import functools
import importlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RUNPOD_HOST", "Target", "activate", "deactivate", "is_runpod", "reroute"]

RUNPOD_HOST: Final = "api.runpod.ai"
# RunPod's management API (REST v2): served by the emulator under this path prefix (`_management`).
MANAGEMENT_HOST: Final = "api.runpod.io"
MANAGEMENT_PREFIX: Final = "/_management"
_HOSTS: Final = frozenset({RUNPOD_HOST, MANAGEMENT_HOST})

_lock = threading.Lock()
# Active mocks, innermost last: each a (host, port) of an emulator.
_targets: list[Target] = []
_undo: list[Callable[[], None]] = []


class Target:
    """Where one `mock_runpod` sends RunPod's traffic."""

    __slots__ = ("host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"<Target http://{self.host}:{self.port}>"


def _current() -> Target | None:
    targets = _targets
    return targets[-1] if targets else None


def _host_name(host: object) -> str:
    """`host` (str or bytes) as DNS compares it: lower case, no trailing dot ("" for anything else)."""
    name = host.decode("ascii", "replace") if isinstance(host, bytes | bytearray) else host
    return name.lower().rstrip(".") if isinstance(name, str) else ""


def is_runpod(host: object) -> bool:
    """Whether `host` (str or bytes) names RunPod's queue or management API host, in any case, fully
    qualified or not."""
    return _host_name(host) in _HOSTS


def _is_management(host: object) -> bool:
    return _host_name(host) == MANAGEMENT_HOST


def reroute(url: str) -> str | None:
    """`url` rewritten to the active emulator when it is RunPod's API host, else None."""
    target = _current()
    if target is None:
        return None
    parts = urlsplit(url)
    if not is_runpod(parts.hostname):
        return None
    path = MANAGEMENT_PREFIX + parts.path if _is_management(parts.hostname) else parts.path
    return urlunsplit(("http", f"{target.host}:{target.port}", path, parts.query, parts.fragment))


def activate(target: Target) -> None:
    with _lock:
        if not _targets:
            for install in (
                _patch_httpx,
                _patch_requests,
                _patch_aiohttp,
                _patch_getaddrinfo,
                _patch_uvloop,
                _patch_aiodns,
            ):
                _undo.extend(install())
        _targets.append(target)


def deactivate(target: Target) -> None:
    with _lock:
        # By identity: concurrent async mocks may end in any order.
        for i in range(len(_targets) - 1, -1, -1):
            if _targets[i] is target:
                del _targets[i]
                break
        if not _targets:
            while _undo:
                _undo.pop()()


def _replace(owner: Any, name: str, make: Callable[[Any], Any]) -> Callable[[], None]:
    original = owner.__dict__[name]
    setattr(owner, name, functools.wraps(original)(make(original)))
    return lambda: setattr(owner, name, original)


def _patch_httpx() -> list[Callable[[], None]]:
    """httpx, and httpx2 (its successor, which the `openai` package sends through): same transport API."""
    undo: list[Callable[[], None]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        undo += _patch_httpx_module(module)
    return undo


def _patch_httpx_module(httpx: Any) -> list[Callable[[], None]]:
    def rewrite(request: Any) -> None:
        target = _current()
        if target is not None and is_runpod(request.url.host):
            url = request.url
            if _is_management(url.host):
                url = url.copy_with(raw_path=MANAGEMENT_PREFIX.encode() + url.raw_path)
            request.url = url.copy_with(scheme="http", host=target.host, port=target.port)

    def sync(original: Any) -> Any:
        def handle_request(self: Any, request: Any) -> Any:
            rewrite(request)
            return original(self, request)

        return handle_request

    def asynchronous(original: Any) -> Any:
        async def handle_async_request(self: Any, request: Any) -> Any:
            rewrite(request)
            return await original(self, request)

        return handle_async_request

    return [
        _replace(httpx.HTTPTransport, "handle_request", sync),
        _replace(httpx.AsyncHTTPTransport, "handle_async_request", asynchronous),
    ]


def _patch_requests() -> list[Callable[[], None]]:
    try:
        import requests.adapters
    except ImportError:
        return []

    def make(original: Any) -> Any:
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            url = reroute(request.url)
            if url is not None:
                request = request.copy()
                request.url = url
                if "proxies" in kwargs:
                    kwargs["proxies"] = {}
            return original(self, request, *args, **kwargs)

        return send

    return [_replace(requests.adapters.HTTPAdapter, "send", make)]


def _patch_aiohttp() -> list[Callable[[], None]]:
    try:
        import aiohttp
        from yarl import URL
    except ImportError:  # pragma: no cover - aiohttp is a dependency of the package
        return []
    if "_build_url" not in aiohttp.ClientSession.__dict__:  # pragma: no cover - aiohttp < 3.8
        raise RuntimeError(
            f"mock_runpod cannot intercept aiohttp {aiohttp.__version__}: upgrade it (aiohttp>=3.10)"
        )

    def make(original: Any) -> Any:
        def _build_url(self: aiohttp.ClientSession, str_or_url: Any) -> URL:
            url: URL = original(self, str_or_url)
            target = _current()
            if target is not None and is_runpod(url.host):
                path = MANAGEMENT_PREFIX + url.raw_path if _is_management(url.host) else url.raw_path
                url = URL.build(
                    scheme="http",
                    host=target.host,
                    port=target.port,
                    path=path,
                    query_string=url.raw_query_string,
                    fragment=url.raw_fragment,
                    encoded=True,
                )
            return url

        return _build_url

    return [_replace(aiohttp.ClientSession, "_build_url", make)]


def _blocked(host: object) -> socket.gaierror:
    name = host.decode("ascii", "replace") if isinstance(host, bytes | bytearray) else str(host)
    return socket.gaierror(
        socket.EAI_NONAME,
        f"mock_runpod blocks {name}: this request was sent by an HTTP library it does not reroute "
        "(it reroutes requests, httpx, httpx2, aiohttp and what is built on them); send it through one of "
        "those, or point the library at emu.base_url",
    )


def _refuses(host: object) -> bool:
    return is_runpod(host) and _current() is not None


def _patch_getaddrinfo() -> list[Callable[[], None]]:
    def make(original: Any) -> Any:
        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if _refuses(host):
                raise _blocked(host)
            return original(host, *args, **kwargs)

        return getaddrinfo

    return [_replace(socket, "getaddrinfo", make)]


def _override(owner: Any, name: str, make: Callable[[Any], Any]) -> Callable[[], None]:
    """As `_replace`, for a method `owner` inherits (uvloop's Python `Loop` over its Cython base)."""
    if name in owner.__dict__:
        return _replace(owner, name, make)
    setattr(owner, name, functools.wraps(getattr(owner, name))(make(getattr(owner, name))))
    return lambda: delattr(owner, name)


def _async_guard(host_of: Callable[..., object]) -> Callable[[Any], Any]:
    """A wrapper for an async method whose target host `host_of(*args, **kwargs)` picks out."""

    def make(original: Any) -> Any:
        async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            host = host_of(*args, **kwargs)
            if _refuses(host):
                raise _blocked(host)
            return await original(self, *args, **kwargs)

        return guarded

    return make


def _first(*args: Any, host: object = None, **kwargs: Any) -> object:
    return args[0] if args else host


def _second(*args: Any, host: object = None, **kwargs: Any) -> object:
    return args[1] if len(args) > 1 else host


def _patch_uvloop() -> list[Callable[[], None]]:
    """uvloop resolves through libuv, never `socket.getaddrinfo`."""
    try:
        import uvloop
    except ImportError:
        return []
    return [
        _override(uvloop.Loop, "getaddrinfo", _async_guard(_first)),
        # create_connection(protocol_factory, host, port, ...)
        _override(uvloop.Loop, "create_connection", _async_guard(_second)),
    ]


def _patch_aiodns() -> list[Callable[[], None]]:
    """aiohttp's connector (any resolver, aiodns's `AsyncResolver` included) and aiodns itself."""
    undo: list[Callable[[], None]] = []
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency of the package
        pass
    else:
        if "_resolve_host" in aiohttp.TCPConnector.__dict__:
            undo.append(_replace(aiohttp.TCPConnector, "_resolve_host", _async_guard(_first)))
    try:
        import aiodns
    except ImportError:
        return undo
    for name in ("query", "query_dns", "getaddrinfo", "gethostbyname"):
        if name not in aiodns.DNSResolver.__dict__:
            continue

        def make(original: Any) -> Any:
            # aiodns returns a Future from some methods and is a coroutine in others: keep each's shape.
            def guarded(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
                if _refuses(host):
                    raise _blocked(host)
                return original(self, host, *args, **kwargs)

            return guarded

        undo.append(_replace(aiodns.DNSResolver, name, make))
    return undo
