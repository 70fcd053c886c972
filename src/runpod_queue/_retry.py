"""What may be retried, and how long to wait before the next attempt.

Two kinds of operation. Reads and idempotent writes (status, status-sync, stream, health, cancel, purge)
are retried on 429, 5xx, connection errors and timeouts. Calls that create or restart a job (run, runsync,
retry) are retried only when the server certainly did not act on them — the connection was never made,
429, or 503 — because re-sending after an ambiguous failure could create the job twice.
"""

from __future__ import annotations

import email.utils
import enum
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from runpod_queue._units import Duration, seconds
from runpod_queue.errors import APIConnectionError, APIError, APIStatusError

__all__ = [
    "OnRetry",
    "Retries",
    "RetryNotice",
    "Safety",
    "backoff_delay",
    "check_on_retry",
    "may_resend",
    "parse_retry_after",
    "retry_on_status",
]


class Safety(enum.Enum):
    IDEMPOTENT = "idempotent"
    CREATES = "creates"


# 503: the platform refused before accepting. 429: rejected by the rate limiter before processing.
_CREATES_RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Retries:
    """How often and how patiently to retry (see the module docstring for *what* is retried).

    ``attempts`` counts the first try (1 turns retries off). Delays use exponential backoff with full
    jitter: a random wait in [0, min(max_backoff, backoff * 2**n)], never less than the server's
    ``Retry-After`` (capped at ``max_retry_after``); the three are seconds, a number or a ``timedelta``.
    ``wait=False`` keeps the retries but removes every pause — for tests.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    wait: bool = True

    def __init__(
        self,
        attempts: int = 5,
        backoff: Duration = 0.5,
        max_backoff: Duration = 10.0,
        max_retry_after: Duration = 60.0,
        wait: bool = True,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"Retries.attempts must be an integer >= 1, got {attempts!r}")
        object.__setattr__(self, "attempts", attempts)
        # Stored as float seconds whatever the spelling, so equal settings compare equal.
        object.__setattr__(self, "backoff", seconds(backoff, "Retries.backoff"))
        object.__setattr__(self, "max_backoff", seconds(max_backoff, "Retries.max_backoff"))
        object.__setattr__(self, "max_retry_after", seconds(max_retry_after, "Retries.max_retry_after"))
        object.__setattr__(self, "wait", bool(wait))

    @classmethod
    def off(cls) -> Retries:
        """A single attempt: every failure surfaces at once."""
        return cls(attempts=1)


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """A failed attempt that is about to be retried, as ``Client(on_retry=...)`` receives it: told before
    the pause, so a display can say why it is waiting ("retrying: attempt 2 of 5, next in 1.2 s") and a
    metric can count retries by cause. Information only: the loop goes on as is.

    ``url`` is the request's (no key: that travels in a header); ``attempt`` the one about to be made (2
    or more), of at most ``attempts``; ``delay`` the seconds until it; ``error`` why the last one failed.
    """

    url: str
    attempt: int
    attempts: int
    delay: float
    error: APIConnectionError | APIStatusError


OnRetry = Callable[[RetryNotice], object]


def check_on_retry(on_retry: OnRetry | None) -> OnRetry | None:
    """The hook runs inside the attempt loop, synchronously, for the sync and the async client alike: a
    coroutine function would only make coroutines nobody awaits, so it is refused up front."""
    if on_retry is None:
        return None
    if not callable(on_retry):
        raise TypeError(f"on_retry must be a function taking a RetryNotice, got {type(on_retry).__name__}")
    if inspect.iscoroutinefunction(on_retry):
        raise TypeError(
            "on_retry is called synchronously, before each retry's pause: pass a plain function "
            "(an async one would never be awaited)"
        )
    return on_retry


def retry_on_status(safety: Safety, status_code: int) -> bool:
    if safety is Safety.CREATES:
        return status_code in _CREATES_RETRY_STATUSES
    return status_code == 429 or status_code >= 500


def may_resend(safety: Safety, error: APIError) -> bool:
    """The one rule for "may this request be sent again after that failure": the client's attempt loop
    and the batch runner both ask it. For a CREATES call, False means the server may have acted on it;
    an answer that breaks the contract (``APIResponseError``) was an answer, so the server did act."""
    if isinstance(error, APIConnectionError):
        return safety is Safety.IDEMPOTENT or not error.sent
    if isinstance(error, APIStatusError):
        return retry_on_status(safety, error.status_code)
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(retries: Retries, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if not retries.wait:
        return 0.0
    cap = min(retries.max_backoff, retries.backoff * (2 ** (attempt - 1)))
    delay = rng.uniform(0.0, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retries.max_retry_after))
    return delay
