"""RunPod's Batch Jobs (beta): the nine routes under `/v2/<endpoint>/batch`, their states and limits.

Source: `runpod/docs` `serverless/advanced-workflows/batch-jobs.mdx` (beta since 2026-08-19). A batch is
created DRAFT (with or without requests), grows by `…/requests` calls of at most 10 MiB, and is locked by
`…/finalize`; its requests then run on the endpoint's workers in a lane below `/run` and `lowPriority`
jobs (`EndpointState.batch_queue`), each worker job carrying `batchId`. A finalized batch stays FINALIZED
while and after its requests run (done when completed + failed == total); cancel ends queued requests at
once and turns CANCELLED when the running ones have drained. Whatever the page leaves open follows
`Readings` (the `batch_*` fields); docs/batch-jobs.md lists each rule with its source or "ours".
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import TYPE_CHECKING, Any, Final

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._http import EndpointRequest, HTTPError, json_object, type_name
from runpod_queue.emulator._jobs import decode_json, encode_json

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import TimerHandle
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._jobs import EndpointState, JobRecord

__all__ = [
    "ACTIVE_BATCHES_LIMIT",
    "ADD_BODY_LIMIT",
    "QUEUED_REQUESTS_LIMIT",
    "REQUESTS_PER_BATCH_LIMIT",
    "BatchRecord",
    "BatchRoutes",
]

# The page's "Limits" table and its 10 MiB per add call.
ACTIVE_BATCHES_LIMIT: Final = 10
REQUESTS_PER_BATCH_LIMIT: Final = 5_000
QUEUED_REQUESTS_LIMIT: Final = 50_000
ADD_BODY_LIMIT: Final = 10 * 2**20
# Results page size when `limit` is not given (the page's example answer shows 50) and the largest (ours).
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 1_000

DRAFT: Final = "DRAFT"
FINALIZED: Final = "FINALIZED"
FAILED: Final = "FAILED"
CANCELLED: Final = "CANCELLED"

_ids = random.Random()


def _new_id(prefix: str) -> str:
    # Shaped like the page's examples (`batch_01j9abc123`, `req_abc001`): a prefix and lowercase base-32.
    return f"{prefix}_{_ids.getrandbits(100):020x}"


class BatchRequest:
    """One request of a batch: its body until the batch is finalized, then its job."""

    __slots__ = ("body", "id", "job")

    def __init__(self, request_id: str, body: bytes) -> None:
        self.id: str = request_id
        self.body: bytes = body  # `{"input": …}` as JSON, the shape a /run body has
        self.job: JobRecord | None = None


class BatchRecord:
    """One batch of one endpoint."""

    def __init__(self, batch_id: str, endpoint: EndpointState, created_ms: int, routes: BatchRoutes) -> None:
        self.id: str = batch_id
        self.endpoint: EndpointState = endpoint
        self.status: str = DRAFT
        self.name: str | None = None
        self.created_ms: int = created_ms
        self.requests: dict[str, BatchRequest] = {}
        # Kept by the core (`Core.start` / `Core._leave_progress`): requests running now.
        self.in_progress: int = 0
        self.completed: int = 0
        self.failed: int = 0
        self.ended: int = 0  # requests finished in any way (cancelled ones included)
        # Request id → its place in the order requests ended (`Readings.batch_result_order`): a virtual
        # clock gives many the same finish time.
        self.end_order: dict[str, int] = {}
        self.cancelling: bool = False
        self.removal: TimerHandle | None = None
        self._routes = routes

    @property
    def unfinished(self) -> int:
        """Requests not yet ended (queued, running, or waiting in a DRAFT)."""
        return len(self.requests) - self.ended

    @property
    def active(self) -> bool:
        """Whether the batch counts against the 10 active batches: DRAFT, or FINALIZED with work left."""
        return self.status == DRAFT or (self.status == FINALIZED and self.unfinished > 0)

    def request_ended(self, job: JobRecord) -> None:
        """The core reports a request's job ended (any terminal status)."""
        self._routes.request_ended(self, job)

    def summary(self) -> dict[str, Any]:
        """`GET …/batch/{id}`: the page's documented fields (and `name` once set: ours)."""
        answer: dict[str, Any] = {
            "id": self.id,
            "endpointId": self.endpoint.id,
            "status": self.status,
            "requestTotal": len(self.requests),
            "requestInProgress": self.in_progress,
            "requestCompleted": self.completed,
            "requestFailed": self.failed,
            "createdAt": self.created_ms,
        }
        if self.name is not None:
            answer["name"] = self.name
        return answer


class BatchRoutes:
    """The Batch Jobs routes of every endpoint of one emulator (`/v2/<endpoint>/batch[/…]`)."""

    def __init__(self, core: Core) -> None:
        self.core: Core = core
        self.batches: dict[str, dict[str, BatchRecord]] = {}
        # Clock seconds → epoch: `createdAt` is epoch ms and result times are ISO 8601 (the page's shapes).
        self._epoch0 = time.time() - core.clock.now()

    def _wall(self, clock_s: float) -> float:
        return self._epoch0 + clock_s

    def _iso(self, clock_s: float | None) -> str | None:
        if clock_s is None:
            return None
        stamp = dt.datetime.fromtimestamp(self._wall(clock_s), dt.UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # -- routing --------------------------------------------------------------------------------

    async def __call__(self, request: EndpointRequest) -> tuple[int, Any]:
        """Route one request under `/v2/<endpoint>/batch` by method and the path after `batch`."""
        rest, method = request.rest, request.method
        if not rest:
            if method == "POST":
                return await self.create(request)
            if method == "GET":
                return self.list(request)
            raise _method(method, "/batch", "GET or POST")
        batch = self._batch(request, rest[0])
        if len(rest) == 1:
            if method == "GET":
                return 200, batch.summary()
            if method == "PUT":
                return await self.update(request, batch)
            raise _method(method, "/batch/<id>", "GET or PUT")
        action = rest[1]
        if len(rest) == 2 and action == "requests":
            if method == "POST":
                return await self.add(request, batch)
            if method == "GET":
                return self.results(request, batch)
            raise _method(method, "/batch/<id>/requests", "GET or POST")
        if len(rest) == 3 and action == "requests":
            if method == "DELETE":
                return self.remove(batch, rest[2])
            raise _method(method, "/batch/<id>/requests/<request_id>", "DELETE")
        if len(rest) == 2 and action in ("finalize", "cancel"):
            if method != "POST":
                raise _method(method, f"/batch/<id>/{action}", "POST")
            return self.finalize(batch) if action == "finalize" else self.cancel(batch)
        raise HTTPError(
            404,
            f"no route {request.scope['path']}; Batch Jobs routes are /batch, /batch/<id>, "
            "/batch/<id>/requests[/<request_id>], /batch/<id>/finalize and /batch/<id>/cancel",
        )

    def _batch(self, request: EndpointRequest, batch_id: str) -> BatchRecord:
        batch = self.batches.get(request.endpoint.id, {}).get(batch_id)
        if batch is None:
            raise HTTPError(404, f"batch {batch_id} not found on endpoint {request.endpoint.id}")
        return batch

    def _answer(self, batch: BatchRecord) -> dict[str, Any]:
        """What add, finalize, cancel, update and remove answer (undocumented: `Readings.batch_answers`)."""
        if self.core.readings.batch_answers == "summary":
            return batch.summary()
        return {"id": batch.id, "status": batch.status}

    # -- the routes -----------------------------------------------------------------------------

    async def create(self, request: EndpointRequest) -> tuple[int, Any]:
        """`POST /batch`: a top-level array of `{"input": …}` (or `[]`) → a DRAFT batch."""
        body = await request.body(ADD_BODY_LIMIT, "/batch")
        items = _parse_array(body)
        ep = request.endpoint
        mine = self.batches.setdefault(ep.id, {})
        active = sum(1 for b in mine.values() if b.active)
        if active >= ACTIVE_BATCHES_LIMIT:
            raise HTTPError(
                429,
                f"endpoint {ep.id} already has {active} active batches (the limit is "
                f"{ACTIVE_BATCHES_LIMIT}); finalize and let one finish, or cancel one, then create again",
            )
        self._check_room(ep, None, len(items))
        batch = BatchRecord(_new_id("batch"), ep, int(self._wall(self.core.clock.now()) * 1000), self)
        self._append(batch, items)
        mine[batch.id] = batch
        return 200, {"id": batch.id, "status": batch.status}

    async def add(self, request: EndpointRequest, batch: BatchRecord) -> tuple[int, Any]:
        """`POST /batch/<id>/requests`: `{"requests": [{"input": …}, …]}`, DRAFT only, ≤ 10 MiB."""
        body = await request.body(ADD_BODY_LIMIT, "/batch/<id>/requests")
        data = json_object(body, '{"requests": [{"input": {...}}]}')
        items = data.get("requests")
        if not isinstance(items, list):
            raise HTTPError(
                400, f'"requests" must be an array of {{"input": ...}} objects, got {type_name(items)}'
            )
        _check_items(items)
        _need_draft(batch, "add requests to")
        self._check_room(request.endpoint, batch, len(items))
        self._append(batch, items)
        return 200, self._answer(batch)

    def _check_room(self, ep: EndpointState, batch: BatchRecord | None, adding: int) -> None:
        total = (len(batch.requests) if batch is not None else 0) + adding
        if total > REQUESTS_PER_BATCH_LIMIT:
            raise HTTPError(
                400,
                f"a batch holds at most {REQUESTS_PER_BATCH_LIMIT} requests; this would make {total}. "
                "Split the work into several batches",
            )
        queued = sum(b.unfinished for b in self.batches.get(ep.id, {}).values()) + adding
        if queued > QUEUED_REQUESTS_LIMIT:
            raise HTTPError(
                429,
                f"endpoint {ep.id} would have {queued} queued batch requests (the limit is "
                f"{QUEUED_REQUESTS_LIMIT}); wait for batches to finish, then add",
            )

    def _append(self, batch: BatchRecord, items: list[Any]) -> None:
        for item in items:
            rid = _new_id("req")
            batch.requests[rid] = BatchRequest(rid, encode_json({"input": item["input"]}))

    async def update(self, request: EndpointRequest, batch: BatchRecord) -> tuple[int, Any]:
        """`PUT /batch/<id>`: `{"name": "…"}` (the page's "display name"; the field name is ours)."""
        data = json_object(await request.body(ADD_BODY_LIMIT, "/batch/<id>"), '{"name": "nightly"}')
        if "name" in data:
            name = data["name"]
            if name is not None and not isinstance(name, str):
                raise HTTPError(400, f'"name" must be a string or null, got {type_name(name)}')
            batch.name = name
        return 200, self._answer(batch)

    def remove(self, batch: BatchRecord, request_id: str) -> tuple[int, Any]:
        """`DELETE /batch/<id>/requests/<request_id>`: DRAFT only."""
        if request_id not in batch.requests:
            raise HTTPError(404, f"request {request_id} not found in batch {batch.id}")
        _need_draft(batch, "remove requests from")
        del batch.requests[request_id]
        return 200, self._answer(batch)

    def finalize(self, batch: BatchRecord) -> tuple[int, Any]:
        """`POST /batch/<id>/finalize`: DRAFT → FINALIZED; its requests join the batch lane."""
        _need_draft(batch, "finalize")
        batch.status = FINALIZED
        core, ep = self.core, batch.endpoint
        for req in batch.requests.values():
            req.job = core.submit_batch_request(ep, req.id, req.body, batch)
        if not batch.requests:
            self._settled(batch)
        return 200, self._answer(batch)

    def cancel(self, batch: BatchRecord) -> tuple[int, Any]:
        """`POST /batch/<id>/cancel`: queued requests end at once, running ones drain, then CANCELLED."""
        if batch.status in (CANCELLED, FAILED):
            raise HTTPError(400, f"batch {batch.id} is already {batch.status}; only DRAFT or FINALIZED ones")
        if batch.status == DRAFT:
            batch.status = CANCELLED
            batch.ended = len(batch.requests)
            self._settled(batch)
            return 200, self._answer(batch)
        batch.cancelling = True
        for req in batch.requests.values():
            if req.job is not None and req.job.status is JobStatus.IN_QUEUE:
                self.core.cancel(req.job)
        if batch.in_progress == 0:
            batch.status = CANCELLED
            self._settled(batch)
        return 200, self._answer(batch)

    def request_ended(self, batch: BatchRecord, job: JobRecord) -> None:
        """Count a request's end (`Core._finish` calls it through `BatchRecord.request_ended`)."""
        if job.status is JobStatus.COMPLETED:
            batch.completed += 1
        elif job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            batch.failed += 1
        batch.ended += 1
        batch.end_order[job.id] = batch.ended
        if batch.cancelling and batch.in_progress == 0 and batch.status == FINALIZED:
            batch.status = CANCELLED
        if batch.unfinished == 0 or batch.status == CANCELLED:
            self._settled(batch)

    def _settled(self, batch: BatchRecord) -> None:
        """The batch has no work left: under `Readings.batch_retention == "retention"` it goes away a
        /run result's retention later; by default ("kept", ours) it stays while the emulator runs."""
        if self.core.readings.batch_retention != "retention" or batch.removal is not None:
            return
        batch.removal = self.core.clock.call_later(
            self.core.span(self.core.timings.retention_run), self._forget, batch
        )

    def _forget(self, batch: BatchRecord) -> None:
        self.batches.get(batch.endpoint.id, {}).pop(batch.id, None)

    def list(self, request: EndpointRequest) -> tuple[int, Any]:
        """`GET /batch`: the endpoint's batches, newest first (the wrapper object is ours)."""
        mine = list(self.batches.get(request.endpoint.id, {}).values())
        mine.reverse()  # dicts keep creation order: newest first is the reverse
        summaries = [b.summary() for b in mine]
        if self.core.readings.batch_list == "array":
            return 200, summaries
        return 200, {"batches": summaries}

    def results(self, request: EndpointRequest, batch: BatchRecord) -> tuple[int, Any]:
        """`GET /batch/<id>/requests?offset=&limit=`: one page of the batch's requests."""
        offset = _count_query(request, "offset", 0, 0, 2**31)
        limit = _count_query(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        reqs = list(batch.requests.values())
        if self.core.readings.batch_result_order == "finished":
            ended, never = batch.end_order, len(reqs) + 1
            reqs.sort(key=lambda req: ended.get(req.id, never))
        page = reqs[offset : offset + limit]
        echo = self.core.readings.batch_result_input == "echoed"
        return 200, {
            "requests": [self._result(batch, req, echo) for req in page],
            "total": len(reqs),
            "offset": offset,
            "limit": limit,
            "hasMore": offset + len(page) < len(reqs),
        }

    def _result(self, batch: BatchRecord, req: BatchRequest, echo: bool) -> dict[str, Any]:
        job = req.job
        item: dict[str, Any] = {"id": req.id, "status": self._request_status(batch, job)}
        if echo:
            item["input"] = orjson.Fragment(encode_json(decode_json(req.body)["input"]))
        if job is not None:
            if job.output_json is not None:
                item["output"] = orjson.Fragment(job.output_json)
            if job.error is not None:
                item["error"] = job.error
            elif job.status is JobStatus.TIMED_OUT:
                item["error"] = "request exceeded its executionTimeout"
            item["startedAt"] = self._iso(job.started_at)
            item["completedAt"] = self._iso(job.finished_at if job.status.is_terminal else None)
        return item

    def _request_status(self, batch: BatchRecord, job: JobRecord | None) -> str:
        """A request's status: COMPLETED/FAILED/CANCELLED as the page shows; the waiting and running
        names are undocumented (`Readings.batch_request_status`)."""
        plain = self.core.readings.batch_request_status == "job"
        if job is None:
            return CANCELLED if batch.status == CANCELLED else ("IN_QUEUE" if plain else "QUEUED")
        status = job.status
        if status is JobStatus.IN_QUEUE:
            return "IN_QUEUE" if plain else "QUEUED"
        if status is JobStatus.IN_PROGRESS:
            return "IN_PROGRESS" if plain else "RUNNING"
        if status is JobStatus.TIMED_OUT:
            return "FAILED"  # counted in requestFailed: the page knows no TIMED_OUT request
        return status.value


def _need_draft(batch: BatchRecord, what: str) -> None:
    if batch.status != DRAFT:
        raise HTTPError(
            400, f"batch {batch.id} is {batch.status}; only a DRAFT batch can {what} (the page's rule)"
        )


def _method(method: str, path: str, allowed: str) -> HTTPError:
    return HTTPError(405, f"{path} takes {allowed}, not {method}")


def _count_query(request: EndpointRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"query parameter {name}={raw!r} must be an integer") from None
    if not low <= value <= high:
        raise HTTPError(400, f"query parameter {name}={value} is out of range: use {low}..{high}")
    return value


def _parse_array(body: bytes) -> list[Any]:
    example = '[{"input": {...}}, ...] (or [] to add requests later)'
    if not body:
        raise HTTPError(400, f"request body is empty: send a JSON array such as {example}")
    try:
        data = decode_json(body)
    except ValueError as exc:
        raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise HTTPError(
            400, f"request body must be a top-level JSON array such as {example}, got {type_name(data)}"
        )
    _check_items(data)
    return data


def _check_items(items: list[Any]) -> None:
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "input" not in item:
            raise HTTPError(
                400,
                f'request {n} must be an object with an "input" field, like a /run body; '
                f"got {type_name(item)}",
            )
