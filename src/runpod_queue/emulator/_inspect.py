"""What a test asserts on: the requests the emulator received and the jobs it holds, as plain records.

The app appends one tuple per HTTP request to a bounded deque (`RequestLog`) — the only cost on the hot
path; records are built from the tuples only when someone reads them (`Emulator.requests`,
`GET /_emulator/requests`). Jobs are read from the live state on the emulator's loop (`job_views`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from runpod_queue.emulator._jobs import EndpointState, JobRecord

__all__ = ["JobView", "RecordedRequest", "RequestLog", "job_views"]

# Enough for any test; bounded so a long `rpq serve` session does not grow without end.
REQUEST_LOG_SIZE: Final = 10_000

# Operations of the worker protocol (`external.ExternalWorkers.routes`): a worker's polls, not the API.
_WORKER_OPERATIONS: Final = frozenset(
    {"job-take", "job-take-batch", "job-done", "job-stream", "job-stop", "ping"}
)


# Operations whose path ends with a job id.
_JOB_OPERATIONS: Final = frozenset({"status", "status-sync", "stream", "cancel", "retry"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request the emulator answered.

    `status_code` is the status it answered, or None when the connection was closed before the answer
    was complete (the `drop` fault). `at` is seconds on the emulator's clock (`Emulator.now`). For
    `/v2/<endpoint>/<operation>[/<job_id>]`, `endpoint_id`, `operation` and `job_id` are split out."""

    method: str
    path: str
    query: str
    status_code: int | None
    at: float

    @property
    def _parts(self) -> list[str]:
        return self.path.split("/")

    @property
    def endpoint_id(self) -> str | None:
        """The endpoint of a ``/v2/<endpoint>/...`` request; None for other paths."""
        parts = self._parts
        return parts[2] if len(parts) >= 3 and parts[1] == "v2" else None

    @property
    def operation(self) -> str | None:
        """The operation of a ``/v2/...`` request (``run``, ``status``, ...); None otherwise."""
        parts = self._parts
        return parts[3] if len(parts) >= 4 and parts[1] == "v2" else None

    @property
    def job_id(self) -> str | None:
        """The job id a job operation addressed (``/status/<id>``, ...); None otherwise."""
        parts = self._parts
        if len(parts) >= 5 and parts[1] == "v2" and parts[3] in _JOB_OPERATIONS and parts[4]:
            return parts[4]
        return None

    @property
    def is_api(self) -> bool:
        """A request to RunPod's API: not the worker protocol, not `/_emulator/*`."""
        return self.endpoint_id is not None and self.operation not in _WORKER_OPERATIONS

    def to_dict(self) -> dict[str, Any]:
        """The request as ``/_emulator/requests`` lists it."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status_code,
            "at": self.at,
            "endpointId": self.endpoint_id,
            "operation": self.operation,
            "jobId": self.job_id,
        }


class RequestLog:
    """The last `REQUEST_LOG_SIZE` requests, as raw tuples; appended from the server's loop only."""

    __slots__ = ("entries",)

    def __init__(self, size: int = REQUEST_LOG_SIZE) -> None:
        # (at, method, path, query bytes, status or None)
        self.entries: deque[tuple[float, str, str, bytes, int | None]] = deque(maxlen=size)

    def records(self, *, api_only: bool = True) -> list[RecordedRequest]:
        """The requests served, oldest first.

        Args:
            api_only: Only requests to RunPod's API: not the worker protocol, not ``/_emulator/*``.
        """
        out = []
        for at, method, path, query, status in list(self.entries):  # list(): a copy, appends may follow
            record = RecordedRequest(method, path, query.decode("latin-1"), status, at)
            if record.is_api or not api_only:
                out.append(record)
        return out

    def clear(self) -> None:
        """Forget every request recorded so far."""
        self.entries.clear()


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the emulator holds it now (a snapshot).

    `input` is the input as submitted; `output` the decoded output (None when there is none, or the
    progress a running handler reported); `error` RunPod's error string. `attempts` counts the runs the
    job was given: 1, plus one per `/retry` and per platform requeue of a lost worker (a job still in
    the queue counts the run it waits for). `chunks_pending`: stream chunks not yet handed out."""

    id: str
    endpoint_id: str
    status: str
    input: Any
    output: Any
    error: str | None
    attempts: int
    worker_id: str | None
    webhook: str | None
    sync: bool
    chunks_pending: int

    def to_dict(self) -> dict[str, Any]:
        """The job as ``/_emulator/jobs`` lists it (RunPod's field names)."""
        return {
            "id": self.id,
            "endpointId": self.endpoint_id,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "attempts": self.attempts,
            "workerId": self.worker_id,
            "webhook": self.webhook,
            "sync": self.sync,
            "chunksPending": self.chunks_pending,
        }


def _view(job: JobRecord) -> JobView:
    output_json = job.output_json if job.output_json is not None else job.progress_json
    return JobView(
        id=job.id,
        endpoint_id=job.endpoint.id,
        status=job.status.value,
        input=job.original_input() if job.raw_body is not None else job.input,
        output=orjson.loads(output_json) if output_json is not None else None,
        error=job.error,
        attempts=job.attempt + 1,
        worker_id=job.worker.id if job.worker is not None else None,
        webhook=job.webhook,
        sync=job.sync,
        chunks_pending=len(job.chunks),
    )


def job_views(endpoint: EndpointState) -> list[JobView]:
    """Every job the endpoint still answers for, in submission order (call on the server's loop).

    A job past its retention, purged from the queue or removed by a ttl that ran out mid-run is gone,
    as on RunPod: `Emulator.requests` still shows what was asked about it and answered."""
    return [_view(job) for job in list(endpoint.jobs.values())]
