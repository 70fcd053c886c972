"""Submitting one item: a ``/run`` slot, then ``submitting`` in the journal, then the request, then the
job id in the journal — so an item is ambiguous only while its ``/run`` is really on the wire.

Two limiters see each ``/run``: the runner's own (here) and the client's (inside ``AsyncEndpoint.run``).
The runner's grants first and releases later, with limits never looser than the client's (see
``runner_limits``), so whenever it grants, the client's count is below its limit and the client's
limiter lets the request go at once: nothing waits between the journal write and the send.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from runpod_queue._contract import OperationLimit
from runpod_queue._limits import RateLimits
from runpod_queue._retry import Safety, may_resend
from runpod_queue.batch._schedule import Watched
from runpod_queue.batch._state import RunState
from runpod_queue.batch._types import BatchResult, ItemStatus
from runpod_queue.batch._uploads import BadUpload
from runpod_queue.errors import (
    APIError,
    APIResponseError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    StorageError,
)

__all__ = ["resend_is_safe", "runner_limits", "submit"]


def _min_cap(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def runner_limits(own: RateLimits, client: RateLimits) -> RateLimits:
    """The runner's limiter: its own limits, tightened wherever the client's are stricter.

    The client's limiter sees every request the runner sends. Granting first, releasing later and never
    allowing more than the client would, the runner's limiter keeps the client's from ever making a
    request wait — above all a ``/run`` whose ``submitting`` record is already written.
    """
    if not client.enabled:
        return own
    if not own.enabled:
        return client
    rows = {**client.limits, **own.limits}
    for op, a in own.limits.items():
        b = client.limits.get(op)
        if b is not None:
            rows[op] = OperationLimit(min(a.per_window, b.per_window), _min_cap(a.in_flight, b.in_flight))
    return RateLimits(
        limits=rows, window=max(own.window, client.window), margin=max(own.margin, client.margin)
    )


def resend_is_safe(error: APIError) -> bool:
    """Did the server certainly not act on a /run or /retry that failed with ``error``? (429, 503, a
    connection never made.) Otherwise it may have created or restarted the job."""
    return may_resend(Safety.CREATES, error)


async def submit(run: RunState, key: str, line: int, payload: Any) -> None:
    """Submit one item until it has a job id, a final result, or the batch stops. Never raises: a bug or
    a failing callback stops the batch cleanly and is reported by ``arun``."""
    try:
        await _submit(run, key, line, payload)
    except Exception as exc:
        run.fail_batch(exc)
    finally:
        run.summary.waiting -= 1


async def _submit(run: RunState, key: str, line: int, payload: Any) -> None:
    s = run.summary
    attempt = 0
    try:
        if run.uploads is not None:  # each Upload / {"$upload": path} becomes its URL, journaled
            try:
                payload = await run.uploads.resolve(key, line, payload)
            except BadUpload as exc:
                s.invalid += 1
                run.warn(f"line {line} (key {key}): {exc}")
                run.finish(key, line, BatchResult(json.loads(key), None, ItemStatus.INVALID, error=str(exc)))
                return
            except (ConfigurationError, StorageError) as exc:  # every item would fail: stop, resumable
                run.fail_batch(exc)
                run.released()
                return
        while True:
            await run.paused("run")
            window = await run.limiter.acquire(run.endpoint.id, "run")
            try:
                if run.stopping:
                    run.left_over += 1
                    run.released()
                    return  # stays pending: the next run submits it
                attempt += 1
                run.journal.submitting(key, line)
                s.run_calls += 1
                with run.on_the_wire():
                    webhook = None
                    if run.signer is not None and run.webhook_url is not None:
                        webhook = run.signer.sign(run.webhook_url)
                    job = await run.endpoint.run(payload, policy=run.config.policy, webhook=webhook)
            except (ValueError, TypeError, BadRequestError, PayloadTooLargeError) as exc:
                s.rejected += 1
                run.finish(key, line, BatchResult(json.loads(key), None, ItemStatus.REJECTED, error=str(exc)))
                return
            except (AuthenticationError, PermissionDeniedError, NotFoundError) as exc:
                run.journal.unsent(key)  # refused outright: no job was made
                run.fail_batch(exc)
                run.released()
                return
            except APIResponseError as exc:
                # The server acted, but its answer breaks the contract (no usable job id): sending it
                # again would only start another job. Recorded, and the batch goes on.
                s.failed += 1
                message = f"the /run answer broke the API contract ({exc.reason}); a job may have started"
                run.warn(f"line {line} (key {key}): {message}")
                result = BatchResult(json.loads(key), None, ItemStatus.UNREADABLE, error=message)
                run.finish(key, line, result)
                return
            except APIError as exc:
                delay = _failed(run, exc, key, line, attempt)
                run.limiter.release(window)
                window = None
                await asyncio.sleep(delay)
                continue
            finally:
                if window is not None:
                    run.limiter.release(window)
            run.journal.submitted(key, job.id, time.time())
            s.submitted += 1
            watched = run.by_id[job.id] = Watched(key, line, job.id, 1, time.monotonic())
            run.schedule.submitted(watched, watched.since)
            return
    except asyncio.CancelledError:
        # Cancelled while waiting (a stop): the row stays pending or submitting, resolved on resume.
        run.left_over += 1
        run.released()
        raise


def _failed(run: RunState, exc: APIError, key: str, line: int, attempt: int) -> float:
    """Count a failed /run; returns the pause before sending it again."""
    s = run.summary
    retry_after: float | None = None
    if isinstance(exc, RateLimitError):
        s.rate_limited += 1
        retry_after = exc.retry_after
        run.pause("run", retry_after)
        run.journal.unsent(key)
    elif resend_is_safe(exc):
        s.transient_errors += 1  # refused before it was accepted (503), or never sent
        run.journal.unsent(key)
    else:
        # The server may have created the job, and RunPod has no idempotency key: resubmitting is the
        # only way to get a result, at the risk of running it twice.
        s.transient_errors += 1
        s.ambiguous += 1
        run.warn(f"line {line} (key {key}): no job id came back ({exc}); submitting again (it may run twice)")
    return run.backoff(attempt, retry_after)
