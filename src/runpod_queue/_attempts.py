"""The attempt loop, written once: send, classify, back off, send again — within the caller's deadline.

``attempts(call, rules, deadline)`` is a flow (see ``_actions``): it yields an ``Exchange`` per attempt
and a ``Sleep`` per pause, and returns the first 2xx ``Answer`` or raises the public error. Whether a
failed request may be sent again is ``_retry.may_resend``'s decision, how long to wait
``_retry.backoff_delay``'s.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from runpod_queue._actions import Exchange, Expired, Flow, Sleep
from runpod_queue._answers import connection_error, error_for_status
from runpod_queue._calls import Call, payload_error
from runpod_queue._retry import OnRetry, Retries, RetryNotice, backoff_delay, may_resend
from runpod_queue._settings import ClientSettings, base_budget, is_loopback
from runpod_queue._transport import Answer, Budget, TransportFailure
from runpod_queue.errors import APIConnectionError, APIStatusError, RateLimitError

__all__ = ["DEADLINE_GRACE", "AttemptRules", "attempt_budget", "attempts", "logger", "request"]

T = TypeVar("T")

logger = logging.getLogger("runpod_queue")

# A read cut at the caller's deadline still gets this long for the answer already on its way.
DEADLINE_GRACE = 0.25


@dataclass(frozen=True, slots=True)
class AttemptRules:
    """How a client makes attempts: where to, with what budget, how often; ``clock`` is monotonic time
    (a parameter so the flows can be driven in tests without waiting); ``on_retry`` is told of each retry
    before its pause (the CLI's "retrying" line), and costs nothing when no retry happens."""

    base_url: str
    timeout: Budget
    retries: Retries
    rng: random.Random = field(default_factory=random.Random, compare=False)
    clock: Callable[[], float] = time.monotonic
    on_retry: OnRetry | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls, settings: ClientSettings, rng: random.Random | None = None, on_retry: OnRetry | None = None
    ) -> AttemptRules:
        return cls(
            settings.base_url,
            base_budget(settings.timeout),
            settings.retries,
            rng or random.Random(),
            on_retry=on_retry,
        )


def attempt_budget(base: Budget, hold: float, deadline: float | None, now: float) -> Budget:
    """The base budget, stretched by a long-poll's hold and cut at the caller's deadline."""
    if hold == 0.0 and deadline is None:
        return base
    read = base.read + hold
    connect = base.connect
    if deadline is not None:
        remaining = deadline - now
        if remaining <= 0:
            raise Expired
        read = min(read, remaining + DEADLINE_GRACE)
        connect = min(connect, read)
    return Budget(connect=connect, read=read, write=base.write, pool=read)


def _retry_delay(
    call: Call,
    rules: AttemptRules,
    attempt: int,
    error: APIConnectionError | APIStatusError,
    deadline: float | None,
) -> float:
    """Seconds to wait before the next attempt, or raise the error (Expired past the deadline)."""
    now = rules.clock() if deadline is not None else 0.0
    if attempt >= rules.retries.attempts or not may_resend(call.safety, error):
        # A request cut short by the deadline is the deadline's doing, not a connection problem.
        if deadline is not None and now >= deadline and isinstance(error, APIConnectionError):
            raise Expired from error
        raise error
    retry_after = error.retry_after if isinstance(error, RateLimitError) else None
    delay = backoff_delay(rules.retries, attempt, retry_after, rules.rng)
    if deadline is not None and now + delay >= deadline:
        raise Expired from error
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("retrying %s %s in %.3f s after %s", call.method, call.path, delay, type(error).__name__)
    return delay


def _nothing_listens(error: APIConnectionError | APIStatusError, url: str) -> bool:
    """A loopback connection that was never made: nothing listens on that port, and retrying for
    seconds (the backoff is sized for RunPod's network) only leaves a blank screen. Reported at once,
    with where to look; a remote server keeps its retries."""
    if type(error) is not APIConnectionError or error.sent or not is_loopback(url):
        return False
    error.args = (f"{error.args[0]}: nothing is listening there (is the emulator running? `rpq serve`)",)
    return True


def _log(call: Call, outcome: int | str, attempt: int, elapsed: float) -> None:
    logger.debug(
        "%s %s -> %s (attempt %d, %.1f ms)", call.method, call.path, outcome, attempt, elapsed * 1000.0
    )


def attempts(call: Call, rules: AttemptRules, deadline: float | None = None) -> Flow[Answer]:
    """Send ``call`` until it succeeds, the error may not be retried, attempts run out or the deadline
    passes (``Expired``, whose cause is the last failure, so the caller learns why time ran out)."""
    url = rules.base_url + call.path
    if call.limit is not None:
        too_large = payload_error(call, url)
        if too_large is not None:
            raise too_large
    clock = rules.clock
    debug = logger.isEnabledFor(logging.DEBUG)
    attempt = 0
    last_error: APIConnectionError | APIStatusError | None = None
    while True:
        attempt += 1
        if call.hold == 0.0 and deadline is None:
            budget = rules.timeout  # the common case, without a call
        else:
            try:
                budget = attempt_budget(rules.timeout, call.hold, deadline, clock())
            except Expired:
                raise Expired from last_error
        started = clock() if debug else 0.0
        error: APIConnectionError | APIStatusError
        try:
            answer: Answer = yield Exchange(call, url, budget, deadline)
        except Expired:
            raise Expired from last_error  # no rate-limit slot before the deadline: nothing was sent
        except TransportFailure as failure:
            error = connection_error(failure, call, url)
            if debug:
                _log(call, failure.name, attempt, clock() - started)
            if _nothing_listens(error, url):
                raise error from error.__cause__  # the transport's own exception, as connection_error set it
        except BaseException:
            if debug:
                _log(call, "interrupted", attempt, clock() - started)
            raise
        else:
            if debug:
                _log(call, answer.status, attempt, clock() - started)
            if 200 <= answer.status < 300:
                return answer
            error = error_for_status(answer)
        last_error = error
        delay = _retry_delay(call, rules, attempt, error, deadline)
        if rules.on_retry is not None:
            rules.on_retry(RetryNotice(url, attempt + 1, rules.retries.attempts, delay, error))
        if delay > 0:
            yield Sleep(delay)


def request(
    call: Call, rules: AttemptRules, parse: Callable[[Answer], T], deadline: float | None = None
) -> Flow[T]:
    """One operation, one request: its attempts, then its answer read by ``parse``."""
    answer = yield from attempts(call, rules, deadline)
    return parse(answer)
