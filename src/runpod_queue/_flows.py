"""The operations that take more than one request — wait, run_sync, stream, cancel — as flows.

Each is a generator of actions (``_actions``) built on ``_attempts.request``; the drivers in ``_client.py``
and ``_aio.py`` run them. Deadlines are monotonic wall-clock time read from ``rules.clock``, so a timeout is
kept whatever the server does, and the flows can be tested by driving them with a fake clock.
"""

from __future__ import annotations

from typing import Any

from runpod_queue._actions import Emit, Expired, Flow, Notify, Sleep
from runpod_queue._answers import parse_job, parse_stream
from runpod_queue._attempts import AttemptRules, attempts, request
from runpod_queue._calls import cancel_call, runsync_call, status_call, status_sync_call, stream_call
from runpod_queue._contract import MIN_HOLD_MS, RUNSYNC_MAX_WAIT_MS, RUNSYNC_MIN_WAIT_MS
from runpod_queue._models import Job, Policy, S3Config
from runpod_queue._units import Duration, seconds, to_ms
from runpod_queue.errors import APIStatusError, BadRequestError, NotFoundError, WaitTimeoutError

__all__ = ["cancel_flow", "run_sync_flow", "stream_flow", "wait_flow"]

# Long-poll holds asked of the server, and the adaptive pause used when it does not hold. A hold is never
# asked for below MIN_HOLD_MS (RunPod refuses /stream?wait= under 1000): closer to a deadline than that,
# the flows poll /status without a hold.
STATUS_SYNC_HOLD_MS = 30_000
STREAM_HOLD_MS = 10_000
MIN_HOLD_S = MIN_HOLD_MS / 1000
PAUSE_MIN = 0.05
PAUSE_MAX_LONG_POLL = 1.0
PAUSE_MAX_POLL = 3.0
HELD = 0.05  # an answer slower than this means the server really held the request
# Each pause without news is this much longer than the last, up to its cap: a job that ends at once is
# seen at once, one that runs for minutes costs a handful of polls, not one per PAUSE_MIN.
PAUSE_GROWTH = 1.5


def _deadline(rules: AttemptRules, timeout: Duration | None) -> tuple[float | None, float]:
    """(monotonic deadline or None, the timeout in seconds as reported in WaitTimeoutError)."""
    if timeout is None:
        return None, 0.0
    timeout_s = seconds(timeout, "timeout")
    return rules.clock() + timeout_s, timeout_s


def wait_flow(
    rules: AttemptRules,
    endpoint_id: str,
    job_id: str,
    timeout: Duration | None,
    long_poll: dict[str, bool],
    *,
    last: Job | None = None,
    reported_timeout: float | None = None,
) -> Flow[Job]:
    """Until the job is terminal: status-sync long-polls when the server offers them (``long_poll``
    remembers per endpoint when it does not), else status with adaptive pauses."""
    deadline, shown = _deadline(rules, timeout)
    if reported_timeout is not None:
        shown = reported_timeout
    clock = rules.clock
    pause = PAUSE_MIN
    while True:
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(job_id, last, shown)
        use_long_poll = long_poll.get(endpoint_id, True) and (remaining is None or remaining >= MIN_HOLD_S)
        started = clock()
        try:
            if use_long_poll:
                hold = STATUS_SYNC_HOLD_MS
                if remaining is not None:
                    hold = max(MIN_HOLD_MS, min(hold, to_ms(remaining)))
                try:
                    call = status_sync_call(endpoint_id, job_id, wait_ms=hold)
                    job = yield from request(call, rules, parse_job, deadline)
                except APIStatusError as exc:
                    if exc.status_code not in (404, 405):
                        raise
                    # The job or the route? A plain status answers (or raises NotFoundError for the job).
                    job = yield from request(status_call(endpoint_id, job_id), rules, parse_job, deadline)
                    long_poll[endpoint_id] = False
                    use_long_poll = False
            else:
                job = yield from request(status_call(endpoint_id, job_id), rules, parse_job, deadline)
        except Expired as exc:
            raise WaitTimeoutError(job_id, last, shown) from exc.__cause__
        if last is None or job != last:
            if last is not None and job.status is not last.status:
                pause = PAUSE_MIN
            yield Notify(job)
        last = job
        if job.is_terminal:
            return job
        if use_long_poll and clock() - started >= HELD:
            pause = PAUSE_MIN
            continue
        remaining = None if deadline is None else deadline - clock()
        yield Sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
        pause = min(pause * PAUSE_GROWTH, PAUSE_MAX_LONG_POLL if use_long_poll else PAUSE_MAX_POLL)


def run_sync_flow(
    rules: AttemptRules,
    endpoint_id: str,
    input: Any,
    *,
    timeout: Duration,
    webhook: str | None,
    policy: Policy | None,
    s3_config: S3Config | None,
    long_poll: dict[str, bool],
) -> Flow[Job]:
    """runsync, then — if the server's window closed first — wait for the rest of ``timeout`` (s)."""
    timeout_s = seconds(timeout, "timeout", low=RUNSYNC_MIN_WAIT_MS / 1000)
    deadline = rules.clock() + timeout_s
    call = runsync_call(
        endpoint_id,
        input,
        wait_ms=min(to_ms(timeout_s), RUNSYNC_MAX_WAIT_MS),
        webhook=webhook,
        policy=policy,
        s3_config=s3_config,
    )
    # No deadline on the runsync request itself: cutting it short would lose the id of a job that exists.
    job = yield from request(call, rules, parse_job)
    yield Notify(job)
    if job.is_terminal:
        return job
    remaining = max(0.0, deadline - rules.clock())
    return (
        yield from wait_flow(
            rules, endpoint_id, job.id, remaining, long_poll, last=job, reported_timeout=timeout_s
        )
    )


def stream_flow(rules: AttemptRules, endpoint_id: str, job_id: str, timeout: Duration | None) -> Flow[Job]:
    """Emit each chunk once, in order; return the terminal Job (any terminal state), pausing between polls
    when the server does not hold them."""
    deadline, shown = _deadline(rules, timeout)
    clock = rules.clock
    last: Job | None = None
    pause = PAUSE_MIN
    while True:
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(job_id, last, shown)
        hold = (
            STREAM_HOLD_MS if remaining is None else max(MIN_HOLD_MS, min(STREAM_HOLD_MS, to_ms(remaining)))
        )
        started = clock()
        call_deadline = deadline
        try:
            if remaining is not None and remaining < MIN_HOLD_S:
                # Too close to the deadline for a hold RunPod accepts: a plain status says whether the
                # job ended; only then is /stream asked (it answers at once for an ended job).
                now = yield from request(status_call(endpoint_id, job_id), rules, parse_job, deadline)
                if not now.is_terminal:
                    last = now
                    remaining = deadline - clock() if deadline is not None else None
                    yield Sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
                    pause = min(pause * PAUSE_GROWTH, PAUSE_MAX_LONG_POLL)
                    continue
                call_deadline = None  # the job ended: its remaining chunks must not be cut off
            answer = yield from attempts(stream_call(endpoint_id, job_id, wait_ms=hold), rules, call_deadline)
        except Expired as exc:
            raise WaitTimeoutError(job_id, last, shown) from exc.__cause__
        job, chunks = parse_stream(answer, job_id)
        last = job
        for chunk in chunks:
            yield Emit(chunk)
        if job.is_terminal:
            return (yield from _stream_end(rules, endpoint_id, job))
        if chunks or clock() - started >= HELD:
            pause = PAUSE_MIN
            continue
        remaining = None if deadline is None else deadline - clock()
        yield Sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
        pause = min(pause * PAUSE_GROWTH, PAUSE_MAX_LONG_POLL)


def _stream_end(rules: AttemptRules, endpoint_id: str, job: Job) -> Flow[Job]:
    """The terminal Job a stream reports. ``/stream`` answers carry the status but rarely the error: for a
    FAILED job without one, one ``/status`` call fetches it (a job already gone keeps the stream's view).
    No deadline: the stream itself has ended, this is one ordinary request."""
    if not job.is_failed or job.error is not None:
        return job
    try:
        return (yield from request(status_call(endpoint_id, job.id), rules, parse_job))
    except NotFoundError:
        return job


def cancel_flow(rules: AttemptRules, endpoint_id: str, job_id: str) -> Flow[Job]:
    """Cancel is idempotent: a job that is already CANCELLED (e.g. our own first attempt went through
    before its answer was lost) is returned instead of the server's 400."""
    try:
        return (yield from request(cancel_call(endpoint_id, job_id), rules, parse_job))
    except BadRequestError:
        current = yield from request(status_call(endpoint_id, job_id), rules, parse_job)
        if current.is_cancelled:
            return current
        raise
