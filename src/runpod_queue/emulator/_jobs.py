"""What the queue holds: jobs, endpoints, workers, their ids, and the JSON the answers are made of.

Plain records: the state machine that moves them is `core.Core`. Times in here are seconds on the
emulator's clock; `delay_ms` / `execution_ms` are the wire's milliseconds, computed once per run.

A run of a job is identified by `(job, attempt)`: retry and requeue bump `attempt`, so a late result
from an abandoned run (a sync handler that could not be interrupted, a lost external worker) is dropped
instead of overwriting the new run.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import string
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._config import EndpointSpec

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import TimerHandle
    from runpod_queue.emulator._fleet import Fleet

__all__ = [
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "TERMINAL",
    "WIRE",
    "EndpointState",
    "JobRecord",
    "RunRef",
    "StateChange",
    "WorkerSlot",
    "decode_json",
    "encode_json",
    "new_job_id",
    "new_worker_id",
]

_JSON_OPTS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

# The states as module constants, for the per-job path: `JobStatus.IN_QUEUE` goes through the enum's
# metaclass (~250 ns here), `.value` through a property (~200 ns), `is_terminal` is a property too; a
# module global, a dict or a frozenset lookup is a tenth of that, and a job meets these ~20 times.
IN_QUEUE: Final = JobStatus.IN_QUEUE
IN_PROGRESS: Final = JobStatus.IN_PROGRESS
COMPLETED: Final = JobStatus.COMPLETED
FAILED: Final = JobStatus.FAILED
TERMINAL: Final = frozenset(s for s in JobStatus if s.is_terminal)
WIRE: Final = {s: s.value for s in JobStatus}
_HISTORY_LIMIT: Final = 64
# Stream chunks of one attempt kept for the console after /stream handed them out.
CHUNK_LOG_LIMIT: Final = 100
_WORKER_ALPHABET: Final = string.ascii_lowercase + string.digits


# A run of 19+ digits may be an integer outside orjson's 64-bit range, which it would turn into a float
# (18446744073709551616 → 1.8446744073709552e19); the official worker's `json` keeps it exact.
_LONG_DIGITS: Final = re.compile(rb"\d{19}")


def encode_json(value: Any) -> bytes:
    """JSON as the official worker's `json.dumps` would accept it (non-str keys become strings); an
    integer past 64 bits, which orjson refuses, is written exactly by the standard library."""
    try:
        return orjson.dumps(value, option=_JSON_OPTS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(data: bytes) -> Any:
    """Parse JSON with every number exact: orjson, unless the text may hold an integer past 64 bits.

    Raises ``ValueError`` (``orjson.JSONDecodeError`` is one) for text that is not JSON, nested too deep
    or holding a number neither parser can take.
    """
    if _LONG_DIGITS.search(data) is None:
        return orjson.loads(data)
    orjson.loads(data)  # the same validation as the fast path (no NaN, no 1e400)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


_ids = random.Random()


def new_job_id(sync: bool) -> str:
    """A UUID4-shaped id with RunPod's `-u1` suffix (`sync-` prefix for runsync).

    From a seeded PRNG, not `uuid.uuid4()`: its os.urandom syscall drops the GIL on every job, which
    measurably slows the server loop when handler threads are waiting for it. Ids need only be unique.
    """
    h = f"{_ids.getrandbits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{'sync-' if sync else ''}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}-u1"


_UUID4_MASK: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS: Final = (0x4000 << 64) | (0x8000 << 48)


def new_worker_id() -> str:
    # RunPod worker ids are 14 lowercase alphanumerics.
    """A fresh worker id, shaped as RunPod's (14 lowercase alphanumerics)."""
    return "".join(secrets.choice(_WORKER_ALPHABET) for _ in range(14))


class StateChange(NamedTuple):
    """One entry of a job's history (the console shows them): the status it entered, when (emulator
    clock seconds) and why or where (``"submitted"``, ``"retry"``, a worker id; may be empty)."""

    status: JobStatus
    at: float
    note: str


class RunRef(NamedTuple):
    """One run of a job (see the module docstring): a queue entry, or a job an external worker holds.
    Stale once ``job.attempt`` has moved past ``attempt``."""

    job: JobRecord
    attempt: int


class WorkerSlot:
    """One worker of an endpoint. In-process workers run handlers; external ones are HTTP processes."""

    __slots__ = ("endpoint", "external", "id", "job", "last_seen", "retired", "unhealthy")

    def __init__(self, endpoint: EndpointState, *, external: bool = False, worker_id: str | None = None):
        self.endpoint: EndpointState = endpoint
        self.id: str = worker_id or new_worker_id()
        self.external: bool = external
        self.job: JobRecord | None = None
        self.retired: bool = False
        self.last_seen: float = 0.0
        # Why the worker reported itself unhealthy (a failed fitness check), until it comes back.
        self.unhealthy: str | None = None


class JobRecord:
    """One job as the queue holds it."""

    __slots__ = (
        "attempt",
        "batch",
        "chunk_log",
        "chunks",
        "created_at",
        "delay_ms",
        "endpoint",
        "error",
        "execution_ms",
        "expires_at",
        "finished_at",
        "history",
        "id",
        "input",
        "low_priority",
        "output_json",
        "policy_execution_timeout",
        "policy_ttl",
        "progress_json",
        "queued_at",
        "raw_body",
        "retention_handle",
        "retention_override",
        "retries",
        "s3_config",
        "started_at",
        "status",
        "stop_run",
        "stream_waiters",
        "sync",
        "timer_handle",
        "ttl_handle",
        "waiters",
        "warning",
        "webhook",
        "worker",
    )

    def __init__(
        self,
        job_id: str,
        endpoint: EndpointState,
        job_input: Any,
        *,
        webhook: str | None,
        execution_timeout: float,
        ttl: float,
        low_priority: bool,
        s3_config: dict[str, str] | None,
        sync: bool,
        now: float,
    ) -> None:
        self.id: str = job_id
        self.endpoint: EndpointState = endpoint
        self.input: Any = job_input
        # The request body as received: the original input is re-read from it for a retry or a
        # webhook, since a handler may have mutated `input` in place.
        self.raw_body: bytes | None = None
        self.webhook: str | None = webhook
        # RunPod seconds (the wire's ms / 1000), before time_scale.
        self.policy_execution_timeout: float = execution_timeout
        self.policy_ttl: float = ttl
        self.low_priority: bool = low_priority
        # The Batch Jobs batch this job is a request of (`_batches.BatchRecord`), else None: such a job
        # waits in the endpoint's batch lane and its worker job carries `batchId`.
        self.batch: Any = None
        self.s3_config: dict[str, str] | None = s3_config
        self.sync: bool = sync
        self.status: JobStatus = JobStatus.IN_QUEUE
        self.attempt: int = 0
        self.queued_at: float = now
        self.created_at: float = now
        # Earlier attempts' state changes (retry, lost-worker requeue), up to and including the latest
        # re-entry into the queue; None for the usual single attempt, which costs nothing here: its
        # changes are `queued_at`, `started_at` and `finished_at` (read by the console).
        self.history: list[StateChange] | None = None
        # Every stream chunk of this attempt, kept (bounded) after /stream handed it out: the console
        # shows them. None until the first chunk.
        self.chunk_log: list[bytes] | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.delay_ms: int | None = None
        self.execution_ms: int | None = None
        self.worker: WorkerSlot | None = None
        self.retries: int = 0
        self.output_json: bytes | None = None
        self.progress_json: bytes | None = None
        self.error: str | None = None
        self.chunks: list[bytes] = []
        self.waiters: list[asyncio.Future[None]] | None = None
        self.stream_waiters: list[asyncio.Future[None]] | None = None
        self.ttl_handle: TimerHandle | None = None
        self.timer_handle: TimerHandle | None = None
        self.retention_handle: TimerHandle | None = None
        self.retention_override: float | None = None
        # Set when the emulator dropped something RunPod drops silently (a result over 20 MB): sent
        # as X-Rpq-Warning with the job's status answers.
        self.warning: str | None = None
        self.expires_at: float | None = None
        # Stops the current run (cancel, executionTimeout, ttl mid-run); set by whoever runs it: the
        # in-process runner cancels the handler, the external workers queue a job-stop.
        self.stop_run: Callable[[], object] | None = None

    def log_chunk(self, chunk_json: bytes) -> None:
        """Keep a streamed chunk for the console, up to a bound per attempt."""
        log = self.chunk_log
        if log is None:
            self.chunk_log = [chunk_json]
        elif len(log) < CHUNK_LOG_LIMIT:
            log.append(chunk_json)

    def archive_attempt(self, now: float, note: str) -> None:
        """Record the attempt that is ending (retry, lost worker) before its fields are reset."""
        history = self.history or [StateChange(JobStatus.IN_QUEUE, self.created_at, "submitted")]
        if self.started_at is not None:
            history.append(
                StateChange(JobStatus.IN_PROGRESS, self.started_at, self.worker.id if self.worker else "")
            )
        if self.finished_at is not None:
            history.append(StateChange(self.status, self.finished_at, ""))
        history.append(StateChange(JobStatus.IN_QUEUE, now, note))
        if len(history) > _HISTORY_LIMIT:  # a job retried forever keeps its start and its latest changes
            del history[1 : len(history) - _HISTORY_LIMIT + 1]
        self.history = history
        self.chunk_log = None

    # -- answers ---------------------------------------------------------------------------------

    def status_dict(self) -> dict[str, Any]:
        """The job as GET /status shows it; `output` is embedded pre-encoded."""
        body: dict[str, Any] = {"id": self.id, "status": WIRE[self.status]}
        if self.delay_ms is not None:
            body["delayTime"] = self.delay_ms
        if self.execution_ms is not None:
            body["executionTime"] = self.execution_ms
        if self.output_json is not None:
            body["output"] = orjson.Fragment(self.output_json)
        elif self.progress_json is not None and self.status is IN_PROGRESS:
            body["output"] = orjson.Fragment(self.progress_json)
        if self.error is not None:
            body["error"] = self.error
        if self.worker is not None:
            body["workerId"] = self.worker.id
        if self.retries:
            body["retries"] = self.retries
        return body

    def original_input(self) -> Any:
        """The input as submitted, decoded again from the request body."""
        assert self.raw_body is not None
        return decode_json(self.raw_body)["input"]

    def original_input_json(self) -> bytes:
        """The input as submitted, as JSON bytes."""
        return encode_json(self.original_input())

    def handler_job(self) -> dict[str, Any]:
        """The `job` dict a handler receives: a fresh copy of the input for every run."""
        if self.attempt == 0 and self.input is not None:
            # First run: hand over the parsed input itself; later runs re-read the original.
            data, self.input = self.input, None
        else:
            data = self.original_input()
        job: dict[str, Any] = {"id": self.id, "input": data}
        if self.webhook is not None:
            job["webhook"] = self.webhook
        if self.s3_config is not None:
            job["s3Config"] = dict(self.s3_config)
        if self.batch is not None:
            job["batchId"] = self.batch.id  # as RunPod's worker receives it (runpod-python rp_scale.py)
        return job


class EndpointState:
    """One endpoint: its queue, its workers, its jobs and its health counters."""

    def __init__(self, endpoint_id: str, spec: EndpointSpec, workers: int) -> None:
        self.id: str = endpoint_id
        self.spec: EndpointSpec = spec
        self.jobs: dict[str, JobRecord] = {}
        self.queue: deque[RunRef] = deque()
        self.low_queue: deque[RunRef] = deque()
        # Batch Jobs requests: taken only when both queues above are empty, so a batch never delays
        # /run traffic (RunPod runs batches on separate, off-peak capacity).
        self.batch_queue: deque[RunRef] = deque()
        self.workers: list[WorkerSlot] = []
        self.idle: deque[WorkerSlot] = deque()
        self.in_process_workers: int = workers if spec.handler is not None else 0
        self.in_queue: int = 0
        self.in_progress: int = 0
        self.completed: int = 0
        self.failed: int = 0
        self.retried: int = 0
        # Set through the management API (PATCH /serverless/{id}): the endpoint's `timeout` (seconds; None:
        # `Timings.default_execution_timeout`) and display name.
        self.execution_timeout: float | None = None
        self.name: str | None = None
        # The scaled workers of a fleet endpoint (`_fleet.Fleet`), else None: fixed ready workers.
        self.fleet: Fleet | None = None
        # External workers' job-take long-polls waiting for a job; woken by `Core.dispatch`.
        self.take_waiters: deque[asyncio.Future[None]] = deque()

    def next_queued(self) -> JobRecord | None:
        """Pop the next runnable job: normal priority, then lowPriority, then Batch Jobs requests; stale
        entries skipped."""
        for q in (self.queue, self.low_queue, self.batch_queue):
            while q:
                job, attempt = q.popleft()
                if job.attempt == attempt and job.status is IN_QUEUE and job.id in self.jobs:
                    return job
        return None
