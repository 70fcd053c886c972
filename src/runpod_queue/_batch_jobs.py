"""RunPod's Batch Jobs (beta) from the client: `endpoint.batches` / `async_endpoint.batches`.

Source: `runpod/docs` `serverless/advanced-workflows/batch-jobs.mdx`. The page's shapes changed twice in
review, so answers are read as `Job` is: unknown fields kept in `raw`, an unknown status kept as its string.
Each operation is a flow (`_actions`) run by the sync or the async driver, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from runpod_queue._actions import Expired, Flow, Notify, Sleep
from runpod_queue._answers import _decode, _malformed
from runpod_queue._attempts import AttemptRules, request
from runpod_queue._calls import Call, _id
from runpod_queue._frozen import FrozenState, frozen_getstate, frozen_setstate
from runpod_queue._models import _empty, _freeze
from runpod_queue._retry import Safety
from runpod_queue._transport import Answer
from runpod_queue._units import Duration, seconds
from runpod_queue.errors import WaitTimeoutError

if TYPE_CHECKING:
    from runpod_queue._aio import AsyncClient
    from runpod_queue._client import Client

__all__ = ["AsyncBatches", "Batch", "BatchRequestResult", "BatchStatus", "Batches"]

#: The page's limit per add call: 10 MiB (2²⁰ bytes) of request body.
ADD_LIMIT: Final = 10 * 2**20
#: Results asked per page (the page's example answers 50; larger pages mean fewer requests).
PAGE_SIZE: Final = 500
# Polls of a batch: it runs for minutes to hours, so a poll every few seconds is plenty.
_PAUSE_MIN: Final = 0.05
_PAUSE_MAX: Final = 5.0
_PAUSE_GROWTH: Final = 1.5
_WRAPPER: Final = len(b'{"requests":[]}')


class BatchStatus(enum.StrEnum):
    """A batch's status. There is no RUNNING or COMPLETED: a FINALIZED batch is done when its counts
    say so (``Batch.is_done``)."""

    DRAFT = "DRAFT"
    FINALIZED = "FINALIZED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


_STATUSES = {s.value: s for s in BatchStatus}


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class Batch:
    """One snapshot of a batch, as ``GET /v2/{id}/batch/{batch_id}`` returned it.

    ``status`` is a ``BatchStatus``, or the plain string for one this version does not know; counts
    missing from an answer read 0; ``created_at`` is a UTC datetime (RunPod sends epoch ms); everything
    RunPod sent stays in ``raw``.
    """

    id: str
    status: BatchStatus | str
    endpoint_id: str | None = None
    total: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    created_at: dt.datetime | None = None
    name: str | None = None
    raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)

    @property
    def is_done(self) -> bool:
        """Whether no request is left to run: completed + failed == total (the page's rule), or the batch
        ended CANCELLED or FAILED (a cancelled batch's cancelled requests are in neither count)."""
        if self.status in (BatchStatus.CANCELLED, BatchStatus.FAILED):
            return True
        return self.status == BatchStatus.FINALIZED and self.completed + self.failed >= self.total

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        """Parse RunPod's field names; ValueError names what is missing."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        batch_id, status = data.get("id"), data.get("status")
        if not isinstance(batch_id, str) or not batch_id:
            raise ValueError(f"'id' should be a non-empty string, got {batch_id!r}")
        if not isinstance(status, str):
            raise ValueError(f"'status' should be a string, got {status!r}")
        created = data.get("createdAt")
        created_at = (
            dt.datetime.fromtimestamp(created / 1000, dt.UTC)
            if isinstance(created, int | float) and not isinstance(created, bool)
            else None
        )
        endpoint, name = data.get("endpointId"), data.get("name")
        return cls(
            id=batch_id,
            status=_STATUSES.get(status, status),
            endpoint_id=endpoint if isinstance(endpoint, str) else None,
            total=_int(data, "requestTotal"),
            in_progress=_int(data, "requestInProgress"),
            completed=_int(data, "requestCompleted"),
            failed=_int(data, "requestFailed"),
            created_at=created_at,
            name=name if isinstance(name, str) else None,
            raw=_freeze(data),
        )


@dataclass(frozen=True, slots=True)
class BatchRequestResult:
    """One request of a batch, as ``GET …/batch/{batch_id}/requests`` lists it.

    The documented fields carry no input and no index, so a result is tied to its input only through
    something the handler puts in its output; ``input`` is set only if RunPod sends it. ``status`` is
    the string RunPod sent (``COMPLETED``, ``FAILED``, ``CANCELLED``, or a name for a waiting request).
    """

    id: str
    status: str
    output: Any = None
    error: Any = None
    started_at: str | None = None
    completed_at: str | None = None
    input: Any = None
    raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchRequestResult:
        """Parse one item of a results page; ValueError names what is missing."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise ValueError(f"a result item should be an object with a string 'id', got {data!r:.80}")
        started, completed = data.get("startedAt"), data.get("completedAt")
        return cls(
            id=data["id"],
            status=str(data.get("status", "")),
            output=data.get("output"),
            error=data.get("error"),
            started_at=started if isinstance(started, str) else None,
            completed_at=completed if isinstance(completed, str) else None,
            input=data.get("input"),
            raw=_freeze(data),
        )


# -- calls and answers --------------------------------------------------------------------------------


def _base(endpoint_id: str) -> str:
    return f"/{_id('endpoint_id', endpoint_id)}/batch"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _call(endpoint_id: str, method: str, path: str, safety: Safety, content: bytes | None = None) -> Call:
    # One rate-limit key for every batch route: RunPod documents no limits for them.
    return Call(endpoint_id, "batch", method, _base(endpoint_id) + path, safety, content=content)


def chunks(inputs: Iterable[Any]) -> Iterator[list[bytes]]:
    """The inputs as `{"input": …}` JSON items, grouped so each add call's body stays within 10 MiB."""
    group: list[bytes] = []
    size = _WRAPPER
    for n, item in enumerate(inputs):
        encoded = _json({"input": item})
        if len(encoded) + _WRAPPER > ADD_LIMIT:
            raise ValueError(
                f"input {n} is {len(encoded):,} bytes as JSON, over the {ADD_LIMIT:,}-byte limit of one "
                "batch add call: put it in object storage and pass a URL"
            )
        extra = len(encoded) + (1 if group else 0)
        if group and size + extra > ADD_LIMIT:
            yield group
            group, size, extra = [], _WRAPPER, len(encoded)
        group.append(encoded)
        size += extra
    if group:
        yield group


def _parse_batch(answer: Answer) -> Batch:
    try:
        return Batch.from_dict(_decode(answer))
    except ValueError as exc:
        raise _malformed(answer, str(exc)) from None


def _parse_page(answer: Answer) -> tuple[list[BatchRequestResult], bool]:
    data = _decode(answer)
    items = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise _malformed(answer, "a results page should be an object with a 'requests' array")
    try:
        results = [BatchRequestResult.from_dict(item) for item in items]
    except ValueError as exc:
        raise _malformed(answer, str(exc)) from None
    return results, bool(data.get("hasMore"))


def _parse_list(answer: Answer) -> list[Batch]:
    data = _decode(answer)
    items = data.get("batches") if isinstance(data, dict) else data  # the wrapper is undocumented
    if not isinstance(items, list):
        raise _malformed(answer, "a batch list should be an array or an object with a 'batches' array")
    try:
        return [Batch.from_dict(item) for item in items]
    except ValueError as exc:
        raise _malformed(answer, str(exc)) from None


def _ignore(answer: Answer) -> None:
    return None


# -- flows --------------------------------------------------------------------------------------------


def get_flow(rules: AttemptRules, endpoint_id: str, batch_id: str) -> Flow[Batch]:
    call = _call(endpoint_id, "GET", f"/{_id('batch_id', batch_id)}", Safety.IDEMPOTENT)
    return (yield from request(call, rules, _parse_batch))


def add_flow(rules: AttemptRules, endpoint_id: str, batch_id: str, inputs: Iterable[Any]) -> Flow[int]:
    """One add call per 10 MiB of inputs; returns how many inputs were added."""
    added = 0
    path = f"/{_id('batch_id', batch_id)}/requests"
    for group in chunks(inputs):
        body = b'{"requests":[' + b",".join(group) + b"]}"
        yield from request(_call(endpoint_id, "POST", path, Safety.CREATES, body), rules, _ignore)
        added += len(group)
    return added


def create_flow(rules: AttemptRules, endpoint_id: str, inputs: Iterable[Any]) -> Flow[Batch]:
    """The DRAFT with the first 10 MiB of inputs in its create body, the rest by add calls."""
    groups = chunks(inputs)
    first = next(groups, [])
    call = _call(endpoint_id, "POST", "", Safety.CREATES, b"[" + b",".join(first) + b"]")
    batch = yield from request(call, rules, _parse_batch)
    path = f"/{_id('batch_id', batch.id)}/requests"
    for group in groups:
        body = b'{"requests":[' + b",".join(group) + b"]}"
        yield from request(_call(endpoint_id, "POST", path, Safety.CREATES, body), rules, _ignore)
    return batch


def action_flow(rules: AttemptRules, endpoint_id: str, batch_id: str, action: str) -> Flow[Batch]:
    """finalize or cancel, then the batch as it is now (their own answers are undocumented)."""
    call = _call(endpoint_id, "POST", f"/{_id('batch_id', batch_id)}/{action}", Safety.IDEMPOTENT)
    yield from request(call, rules, _ignore)
    return (yield from get_flow(rules, endpoint_id, batch_id))


def list_flow(rules: AttemptRules, endpoint_id: str) -> Flow[list[Batch]]:
    return (yield from request(_call(endpoint_id, "GET", "", Safety.IDEMPOTENT), rules, _parse_list))


def page_flow(
    rules: AttemptRules, endpoint_id: str, batch_id: str, offset: int, limit: int
) -> Flow[tuple[list[BatchRequestResult], bool]]:
    path = f"/{_id('batch_id', batch_id)}/requests?offset={offset}&limit={limit}"
    return (yield from request(_call(endpoint_id, "GET", path, Safety.IDEMPOTENT), rules, _parse_page))


def wait_flow(rules: AttemptRules, endpoint_id: str, batch_id: str, timeout: Duration | None) -> Flow[Batch]:
    """Poll until ``Batch.is_done`` (the counts, not the status), telling each change to on_update."""
    shown = 0.0 if timeout is None else seconds(timeout, "timeout")
    deadline = None if timeout is None else rules.clock() + shown
    last: Batch | None = None
    pause = _PAUSE_MIN
    while True:
        try:
            call = _call(endpoint_id, "GET", f"/{_id('batch_id', batch_id)}", Safety.IDEMPOTENT)
            batch = yield from request(call, rules, _parse_batch, deadline)
        except Expired as exc:
            raise WaitTimeoutError(batch_id, None, shown) from exc.__cause__
        if batch != last:
            yield Notify(batch)
            pause = _PAUSE_MIN
        last = batch
        if batch.is_done:
            return batch
        remaining = None if deadline is None else deadline - rules.clock()
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(batch_id, None, shown)
        yield Sleep(pause if remaining is None else min(pause, remaining))
        pause = min(pause * _PAUSE_GROWTH, _PAUSE_MAX)


def _page_size(page_size: int) -> int:
    if not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
    return page_size


# -- the two faces ------------------------------------------------------------------------------------


class Batches:
    """RunPod's Batch Jobs for one endpoint: ``client.endpoint(ID).batches``.

    Up to 5,000 requests per batch and 10 active batches per endpoint (RunPod's limits); requests run
    on separate capacity and never delay ``/run`` jobs. Results carry no input and no index: keep a key
    in each input that your handler echoes.
    """

    def __init__(self, client: Client, endpoint_id: str) -> None:
        self._client = client
        self.endpoint_id: str = endpoint_id

    def __repr__(self) -> str:
        return f"Batches(endpoint_id={self.endpoint_id!r})"

    def create(self, inputs: Iterable[Any] = ()) -> Batch:
        """Create a DRAFT batch holding ``inputs`` (added in calls of at most 10 MiB each).

        Args:
            inputs: Each request's ``input``; empty to add requests later.

        Returns:
            The new batch, DRAFT.

        Raises:
            ValueError: One input alone is over 10 MiB as JSON.
            APIStatusError: RunPod refused (``RateLimitError``: 10 batches are active already;
                ``BadRequestError``: over 5,000 requests).
            APIConnectionError: No answer arrived.
        """
        rules = self._client._rules
        created = self._client._run(create_flow(rules, self.endpoint_id, inputs))
        return self._client._run(get_flow(rules, self.endpoint_id, created.id))

    def add(self, batch_id: str, inputs: Iterable[Any]) -> int:
        """Add requests to a DRAFT batch, split into calls of at most 10 MiB each.

        Args:
            batch_id: The batch's id.
            inputs: Each request's ``input``.

        Returns:
            How many requests were added.

        Raises:
            ValueError: One input alone is over 10 MiB as JSON.
            APIStatusError: RunPod refused (``BadRequestError``: not DRAFT, or past 5,000 requests).
            APIConnectionError: No answer arrived.
        """
        return self._client._run(add_flow(self._client._rules, self.endpoint_id, batch_id, inputs))

    def finalize(self, batch_id: str) -> Batch:
        """Lock a DRAFT batch and let its requests run.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch after finalizing.
        """
        return self._client._run(action_flow(self._client._rules, self.endpoint_id, batch_id, "finalize"))

    def get(self, batch_id: str) -> Batch:
        """The batch's current counts and status.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch as RunPod reports it now.

        Raises:
            NotFoundError: No such batch on this endpoint.
        """
        return self._client._run(get_flow(self._client._rules, self.endpoint_id, batch_id))

    def list(self) -> list[Batch]:
        """The endpoint's batches, newest first.

        Returns:
            Every batch RunPod lists for the endpoint.
        """
        return self._client._run(list_flow(self._client._rules, self.endpoint_id))

    def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch: queued requests end at once, running ones finish, then it is CANCELLED.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch after the cancel (FINALIZED while running requests drain).
        """
        return self._client._run(action_flow(self._client._rules, self.endpoint_id, batch_id, "cancel"))

    def results(self, batch_id: str, *, page_size: int = 500) -> Iterator[BatchRequestResult]:
        """Every request of the batch, page after page, fetched as the iteration reaches it.

        Args:
            batch_id: The batch's id.
            page_size: Requests asked per page.

        Yields:
            Each ``BatchRequestResult``, in RunPod's order (unspecified by RunPod).
        """
        size = _page_size(page_size)
        client, offset = self._client, 0
        while True:
            items, more = client._run(page_flow(client._rules, self.endpoint_id, batch_id, offset, size))
            yield from items
            offset += len(items)
            if not more or not items:
                return

    def wait(
        self,
        batch_id: str,
        *,
        timeout: Duration | None = None,
        on_update: Callable[[Batch], object] | None = None,
    ) -> Batch:
        """Block until no request is left to run (``Batch.is_done``: the counts, not the status).

        Args:
            batch_id: The batch's id.
            timeout: Seconds (wall clock) to wait; ``None`` waits as long as the batch runs.
            on_update: Called with every changed ``Batch`` snapshot while waiting.

        Returns:
            The finished batch.

        Raises:
            WaitTimeoutError: ``timeout`` ran out (its ``job_id`` is the batch's id).
        """
        flow = wait_flow(self._client._rules, self.endpoint_id, batch_id, timeout)
        return self._client._run(flow, cast(Any, on_update))  # Notify carries a Batch here


class AsyncBatches:
    """``Batches`` for asyncio: ``async_client.endpoint(ID).batches``; the same operations, awaited."""

    def __init__(self, client: AsyncClient, endpoint_id: str) -> None:
        self._client = client
        self.endpoint_id: str = endpoint_id

    def __repr__(self) -> str:
        return f"AsyncBatches(endpoint_id={self.endpoint_id!r})"

    async def create(self, inputs: Iterable[Any] = ()) -> Batch:
        """Create a DRAFT batch holding ``inputs``; see ``Batches.create``.

        Args:
            inputs: Each request's ``input``; empty to add requests later.

        Returns:
            The new batch, DRAFT.
        """
        rules = self._client._rules
        created = await self._client._run(create_flow(rules, self.endpoint_id, inputs))
        return await self._client._run(get_flow(rules, self.endpoint_id, created.id))

    async def add(self, batch_id: str, inputs: Iterable[Any]) -> int:
        """Add requests to a DRAFT batch in calls of at most 10 MiB; see ``Batches.add``.

        Args:
            batch_id: The batch's id.
            inputs: Each request's ``input``.

        Returns:
            How many requests were added.
        """
        return await self._client._run(add_flow(self._client._rules, self.endpoint_id, batch_id, inputs))

    async def finalize(self, batch_id: str) -> Batch:
        """Lock a DRAFT batch and let its requests run.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch after finalizing.
        """
        flow = action_flow(self._client._rules, self.endpoint_id, batch_id, "finalize")
        return await self._client._run(flow)

    async def get(self, batch_id: str) -> Batch:
        """The batch's current counts and status.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch as RunPod reports it now.
        """
        return await self._client._run(get_flow(self._client._rules, self.endpoint_id, batch_id))

    async def list(self) -> list[Batch]:
        """The endpoint's batches, newest first.

        Returns:
            Every batch RunPod lists for the endpoint.
        """
        return await self._client._run(list_flow(self._client._rules, self.endpoint_id))

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch; see ``Batches.cancel``.

        Args:
            batch_id: The batch's id.

        Returns:
            The batch after the cancel.
        """
        flow = action_flow(self._client._rules, self.endpoint_id, batch_id, "cancel")
        return await self._client._run(flow)

    async def results(self, batch_id: str, *, page_size: int = 500) -> AsyncIterator[BatchRequestResult]:
        """Every request of the batch, page after page; see ``Batches.results``.

        Args:
            batch_id: The batch's id.
            page_size: Requests asked per page.

        Yields:
            Each ``BatchRequestResult``.
        """
        size = _page_size(page_size)
        client, offset = self._client, 0
        while True:
            flow = page_flow(client._rules, self.endpoint_id, batch_id, offset, size)
            items, more = await client._run(flow)
            for item in items:
                yield item
            offset += len(items)
            if not more or not items:
                return

    async def wait(
        self,
        batch_id: str,
        *,
        timeout: Duration | None = None,  # noqa: ASYNC109 - a wall-clock bound kept across polls
        on_update: Callable[[Batch], Awaitable[object] | object] | None = None,
    ) -> Batch:
        """Wait until no request is left to run; see ``Batches.wait``.

        Args:
            batch_id: The batch's id.
            timeout: Seconds (wall clock) to wait; ``None`` waits as long as the batch runs.
            on_update: Called with every changed ``Batch`` snapshot while waiting.

        Returns:
            The finished batch.
        """
        flow = wait_flow(self._client._rules, self.endpoint_id, batch_id, timeout)
        return await self._client._run(flow, cast(Any, on_update))  # Notify carries a Batch here
