"""What a client is built with: API key, base URL, per-request timeout, retries, rate limits.

Resolved once, in one place, so ``Client``, ``AsyncClient``, ``with_options`` and the batch runner (which
builds an ``AsyncClient`` from a user's ``Client`` via ``ClientSettings``) all read the environment and
validate the same way.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from runpod_queue._contract import DEFAULT_BASE_URL
from runpod_queue._limits import RateLimits
from runpod_queue._retry import Retries
from runpod_queue._transport import Budget
from runpod_queue._units import Duration, seconds
from runpod_queue._version import __version__
from runpod_queue.errors import ConfigurationError

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ClientSettings",
    "base_budget",
    "client_settings",
    "default_headers",
    "is_loopback",
    "key_missing",
    "limits_config",
    "request_timeout",
    "require_key",
    "resolve_api_key",
    "resolve_base_url",
    "resolve_settings",
]

ENV_API_KEY = "RUNPOD_API_KEY"
ENV_BASE_URL = "RUNPOD_ENDPOINT_BASE_URL"


def resolve_api_key(api_key: str | None) -> str | None:
    """The key given, else ``$RUNPOD_API_KEY``, else None; one given empty is refused (ValueError)."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ValueError("api_key must be a non-empty string")
    return key


def resolve_base_url(base_url: str | None, *, name: str = "base_url") -> str:
    """The URL given, else ``$RUNPOD_ENDPOINT_BASE_URL``, else RunPod's; ``name`` is what the ValueError
    calls it (``--base-url`` in the CLI)."""
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def resolve_settings(api_key: str | None, base_url: str | None) -> tuple[str | None, str]:
    """Keyword arguments win over the environment; the base URL defaults to RunPod's. The one place the
    key and URL are resolved: the clients and ``rpq`` (``cli/_session.resolve``) all come through here."""
    url = resolve_base_url(base_url)
    return resolve_api_key(api_key), url


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def key_missing(key: str | None, url: str) -> bool:
    """No key for a remote server: every request would be a 401. Loopback stays allowed (an emulator
    started without ``api_key`` accepts any key or none)."""
    return key is None and not is_loopback(url)


def require_key(key: str | None, url: str) -> None:
    """No key for a remote server is refused before anything is sent (see ``key_missing``); a client given
    its own ``transport=`` is not asked (a test's ``httpx.MockTransport`` sends nothing anywhere)."""
    if key_missing(key, url):
        raise ConfigurationError(
            f"no API key for {url}: create one in the RunPod console (Settings > API Keys), then "
            f"`export {ENV_API_KEY}=...` or pass api_key=; for a local emulator, use its base_url "
            "(http://127.0.0.1:PORT/v2)"
        )


def request_timeout(value: Duration) -> float:
    """The per-request timeout in seconds; zero would fail every request, so it must be more."""
    result = seconds(value, "timeout")
    if result <= 0:
        raise ValueError(f"timeout must be more than 0 seconds, got {result:g}")
    return result


def _retries(value: Retries) -> Retries:
    if not isinstance(value, Retries):
        raise TypeError(f"retries must be a Retries, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What a client was built with, so another client (sync ↔ async, or ``with_options``) can be made
    with the same connection settings. The key stays out of the repr."""

    api_key: str | None = field(repr=False)
    base_url: str
    timeout: float
    retries: Retries
    rate_limits: RateLimits
    max_connections: int

    def with_options(self, *, timeout: Duration | None, retries: Retries | None) -> ClientSettings:
        """These settings with another per-request timeout and/or retries (None keeps the current)."""
        return dataclasses.replace(
            self,
            timeout=self.timeout if timeout is None else request_timeout(timeout),
            retries=self.retries if retries is None else _retries(retries),
        )


def client_settings(
    api_key: str | None,
    base_url: str | None,
    timeout: Duration,
    retries: Retries | None,
    rate_limits: RateLimits | bool,
    max_connections: int,
    *,
    own_transport: bool = False,
) -> ClientSettings:
    """A constructor's arguments, checked and completed from the environment."""
    key, url = resolve_settings(api_key, base_url)
    if not own_transport:
        require_key(key, url)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
    return ClientSettings(
        key,
        url,
        request_timeout(timeout),
        Retries() if retries is None else _retries(retries),
        limits_config(rate_limits),
        max_connections,
    )


def limits_config(rate_limits: RateLimits | bool) -> RateLimits:
    if isinstance(rate_limits, RateLimits):
        return rate_limits
    return RateLimits() if rate_limits else RateLimits.off()


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"runpod-queue/{__version__}", "Accept": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def base_budget(timeout: float) -> Budget:
    """A request's budget before any long-poll hold or deadline: connecting gets at most 10 s, so a dead
    host is noticed long before a generous read timeout runs out."""
    return Budget(connect=min(timeout, 10.0), read=timeout, write=timeout, pool=timeout)
