"""Typed, immutable views of what RunPod sends and accepts.

Snapshots are frozen so a Job handed to a callback or stored in a list can never change under the caller;
``raw`` keeps the server's answer verbatim so nothing RunPod adds later is lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Self

from runpod_queue._contract import (
    MAX_DURATION_MS,
    MIN_EXECUTION_TIMEOUT_MS,
    MIN_TTL_MS,
    TERMINAL_STATUSES,
    JobStatus,
)
from runpod_queue._frozen import FrozenState, frozen_getstate, frozen_setstate
from runpod_queue._units import Duration, seconds, to_ms
from runpod_queue.errors import ConfigurationError, JobFailedError

__all__ = ["Health", "Job", "JobCounts", "JobStatus", "Policy", "S3Config", "StreamChunk", "WorkerCounts"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


class MalformedError(ValueError):
    """An answer that breaks the contract; the wire layer turns it into APIResponseError."""


# A dict lookup instead of JobStatus(value): parsing a status is on every call's path.
_STATUSES: dict[str, JobStatus] = {status.value: status for status in JobStatus}

log = logging.getLogger("runpod_queue")
_UNKNOWN_LOGGED: set[str] = set()
_UNKNOWN_LOG_CAP = 100  # a server inventing statuses must not grow this without bound


def _status(value: Any) -> JobStatus | str:
    """A known status as its ``JobStatus``; any other non-empty string kept as is.

    RunPod's docs already name a status its API does not send (``RUNNING``), and a new one could appear
    any day: a status the client does not know must not break a caller. It counts as not terminal, so
    waits keep polling; it is logged once per spelling."""
    known = _STATUSES.get(value) if isinstance(value, str) else None
    if known is not None:
        return known
    if not isinstance(value, str) or not value:
        raise MalformedError(f"'status' should be a non-empty string, got {value!r}")
    if value not in _UNKNOWN_LOGGED and len(_UNKNOWN_LOGGED) < _UNKNOWN_LOG_CAP:
        _UNKNOWN_LOGGED.add(value)
        log.warning(
            "RunPod sent job status %r, which this version of runpod-queue does not know: treating it as "
            "not terminal (waits keep polling)",
            value,
        )
    return value


def _freeze(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return data if isinstance(data, MappingProxyType) else MappingProxyType(dict(data))


# A tuple, not ``int | float``: that expression builds a new union object on every call (3 per parsed Job).
_NUMBER = (int, float)


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, _NUMBER) or not math.isfinite(value):
        raise MalformedError(f"{key!r} should be a number, got {value!r}")
    return int(value)


def _opt_seconds(data: Mapping[str, Any], key: str) -> float | None:
    """RunPod's milliseconds as seconds (the unit of every duration on the Python side)."""
    value = _opt_int(data, key)
    return None if value is None else value / 1000.0


# The official worker reports a generator handler's exception as "handler: <str(exc)> \ntraceback: <tb>",
# not as the JSON string a plain handler's gets; the type is only in the traceback's last line.
_GENERATOR_HEAD = "handler: "
_GENERATOR_TRACE = "\ntraceback: "
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def _class_name(kind: str) -> str:
    """``ValueError`` for the worker's ``<class 'ValueError'>`` (str() of the class); others as sent."""
    if kind.startswith("<class '") and kind.endswith("'>"):
        return kind[8:-2]
    return kind


def _generator_error(text: str) -> tuple[str | None, str | None, str | None]:
    message, _, trace = text[len(_GENERATOR_HEAD) :].partition(_GENERATOR_TRACE)
    lines = [line for line in trace.splitlines() if line.strip() and not line.startswith(" ")]
    found = _EXCEPTION_LINE.match(lines[-1]) if lines else None
    return (found.group(1) if found else None), message.rstrip(), trace or None


def _parse_error(error: Any) -> tuple[str | None, str | None, str | None]:
    """(type, message, traceback) of a job error.

    A raising handler produces a JSON string with error_type / error_message / error_traceback; a handler
    returning {"error": ...} produces plain text. Both keep their full text: a FAILED job's error is never
    reduced to None.
    """
    if error is None:
        return None, None, None
    parsed: Any = error
    if isinstance(error, str):
        text = error.strip()
        if text.startswith(_GENERATOR_HEAD) and _GENERATOR_TRACE in text:
            return _generator_error(text)
        if not text.startswith("{"):
            return None, error, None
        try:
            parsed = json.loads(text)
        except ValueError:
            return None, error, None
    if isinstance(parsed, Mapping) and ("error_message" in parsed or "error_type" in parsed):
        message = parsed.get("error_message")
        kind = parsed.get("error_type")
        trace = parsed.get("error_traceback")
        return (
            None if kind is None else _class_name(str(kind)),
            str(message) if message is not None else (error if isinstance(error, str) else str(parsed)),
            None if trace is None else str(trace),
        )
    return None, error if isinstance(error, str) else json.dumps(error, default=str), None


@dataclass(frozen=True, slots=True)
class Job:
    """One snapshot of a job, as ``/run``, ``/status`` or ``/runsync`` returned it.

    ``delay_time`` (queue time) and ``execution_time`` are seconds; RunPod's milliseconds stay in ``raw``
    and in ``to_dict()``. ``status`` is a ``JobStatus`` for every status RunPod documents; one this
    version does not know stays the plain string RunPod sent (``status_text`` is always the string) and
    counts as pending.
    """

    id: str
    status: JobStatus | str
    output: Any = None
    error: Any = None
    delay_time: float | None = None
    execution_time: float | None = None
    worker_id: str | None = None
    retries: int | None = None
    raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)
    error_type: str | None = field(default=None, init=False, repr=False, compare=False)
    error_message: str | None = field(default=None, init=False, repr=False, compare=False)
    error_traceback: str | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict (a mappingproxy does not pickle)."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Job.id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.status, JobStatus):
            try:
                object.__setattr__(self, "status", _status(self.status))
            except MalformedError as exc:
                raise ValueError(f"Job.{exc}") from None
        object.__setattr__(self, "raw", _freeze(self.raw))
        kind, message, trace = _parse_error(self.error)
        object.__setattr__(self, "error_type", kind)
        object.__setattr__(self, "error_message", message)
        object.__setattr__(self, "error_traceback", trace)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Parse RunPod's own field names (the inverse of ``to_dict``); ValueError names what is wrong."""
        # The exact-type test first: isinstance against the Mapping ABC is slow, and JSON gives a dict.
        if type(data) is not dict and not isinstance(data, Mapping):
            raise MalformedError(f"expected a JSON object, got {type(data).__name__}")
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise MalformedError(
                "missing 'id'" if job_id is None else f"'id' should be a string, got {job_id!r}"
            )
        status = data.get("status")
        if status is None:
            raise MalformedError("missing 'status'")
        known = _status(status)
        worker = data.get("workerId")
        if cls is not Job:  # a subclass may have its own __init__ / __post_init__
            return cls(
                id=job_id,
                status=known,
                output=data.get("output"),
                error=data.get("error"),
                delay_time=_opt_seconds(data, "delayTime"),
                execution_time=_opt_seconds(data, "executionTime"),
                worker_id=None if worker is None else str(worker),
                retries=_opt_int(data, "retries"),
                raw=data,
            )
        return _new_job(job_id, known, data, _freeze(data))  # type: ignore[return-value]  # cls is Job

    def to_dict(self) -> dict[str, Any]:
        """RunPod's field names and units (ms), every key of the original answer kept."""
        out = dict(self.raw)
        out["id"] = self.id
        out["status"] = self.status_text
        for key, value in (
            ("output", self.output),
            ("error", self.error),
            ("workerId", self.worker_id),
            ("retries", self.retries),
        ):
            if value is not None:
                out[key] = value
        for key, secs in (("delayTime", self.delay_time), ("executionTime", self.execution_time)):
            if secs is not None and key not in self.raw:
                out[key] = to_ms(secs)
        return out

    def to_json(self) -> str:
        """The job as compact JSON, in RunPod's field names and units (``to_dict()`` encoded).

        Returns:
            A JSON object text; ``Job.from_json`` reads it back.
        """
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse a job from JSON in RunPod's field names (the inverse of ``to_json``).

        Args:
            text: A JSON object, as RunPod's ``/status`` answers or ``to_json`` writes.

        Returns:
            The job.

        Raises:
            ValueError: Not JSON, or not a job (no ``id`` or ``status``).
        """
        return cls.from_dict(json.loads(text))

    @property
    def status_text(self) -> str:
        """The status as RunPod spelt it, known or not."""
        status = self.status
        return status.value if isinstance(status, JobStatus) else status

    @property
    def is_known_status(self) -> bool:
        """False for a status this version of runpod-queue does not know (it counts as pending)."""
        return isinstance(self.status, JobStatus)

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED, CANCELLED or TIMED_OUT: the job will not change any more."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_pending(self) -> bool:
        """IN_QUEUE, IN_PROGRESS, or a status this version does not know."""
        return self.status not in TERMINAL_STATUSES

    @property
    def is_in_queue(self) -> bool:
        """Waiting for a worker (IN_QUEUE)."""
        return self.status is JobStatus.IN_QUEUE

    @property
    def is_in_progress(self) -> bool:
        """Running on a worker (IN_PROGRESS)."""
        return self.status is JobStatus.IN_PROGRESS

    @property
    def is_completed(self) -> bool:
        """Finished with an output (COMPLETED)."""
        return self.status is JobStatus.COMPLETED

    @property
    def is_failed(self) -> bool:
        """Finished with an error (FAILED); ``error_message`` says what."""
        return self.status is JobStatus.FAILED

    @property
    def is_cancelled(self) -> bool:
        """Cancelled before it finished (CANCELLED)."""
        return self.status is JobStatus.CANCELLED

    @property
    def is_timed_out(self) -> bool:
        """Stopped by its execution timeout or ttl (TIMED_OUT)."""
        return self.status is JobStatus.TIMED_OUT

    def output_urls(self) -> list[str]:
        """The http(s) URLs anywhere in the output, in order, each once: where a worker put results too big
        for a response (``rp_upload`` returns such URLs); fetch them with ``S3Store.download``.

        Returns:
            The URLs; empty when the output holds none (or there is no output).
        """
        found: dict[str, None] = {}

        def walk(value: Any) -> None:
            if isinstance(value, str):
                if value.startswith(("http://", "https://")) and " " not in value:
                    found.setdefault(value, None)
            elif isinstance(value, Mapping):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)

        walk(self.output)
        return list(found)

    def raise_for_status(self) -> Self:
        """Raise JobFailedError for FAILED, TIMED_OUT or CANCELLED; return self otherwise (chainable)."""
        if self.status in TERMINAL_STATUSES and self.status is not JobStatus.COMPLETED:
            raise JobFailedError(self)
        return self


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One streamed output; ``raw`` keeps extra keys RunPod may attach (e.g. ``metrics``)."""

    output: Any
    raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict (a mappingproxy does not pickle)."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedError(f"health count {key!r} should be an integer, got {value!r}")
    return value


# Each slot's own setter. A frozen dataclass refuses ``job.x = v``, and ``object.__setattr__(job, "x", v)``
# looks the name up on every call; the slot descriptors' ``__set__`` go straight to the slot. Every answer
# is parsed into a Job, and setting its 12 fields was half of ``from_dict``.
(
    _set_id,
    _set_status,
    _set_output,
    _set_error,
    _set_delay_time,
    _set_execution_time,
    _set_worker_id,
    _set_retries,
    _set_raw,
    _set_error_type,
    _set_error_message,
    _set_error_traceback,
) = (
    Job.__dict__[name].__set__
    for name in (
        "id",
        "status",
        "output",
        "error",
        "delay_time",
        "execution_time",
        "worker_id",
        "retries",
        "raw",
        "error_type",
        "error_message",
        "error_traceback",
    )
)


def _new_job(job_id: str, status: JobStatus | str, data: Mapping[str, Any], raw: Mapping[str, Any]) -> Job:
    """What ``Job.__init__`` + ``__post_init__`` would store, set directly (their checks are done: the id
    and status by the caller, the numbers here). An ``int`` — what RunPod sends — skips ``_opt_int``'s
    checks: it is neither a bool nor infinite; anything else goes through them."""
    delay = data.get("delayTime")
    if delay is not None:
        delay = delay / 1000.0 if type(delay) is int else _opt_seconds(data, "delayTime")
    execution = data.get("executionTime")
    if execution is not None:
        execution = execution / 1000.0 if type(execution) is int else _opt_seconds(data, "executionTime")
    retries = data.get("retries")
    if retries is not None and type(retries) is not int:
        retries = _opt_int(data, "retries")
    worker = data.get("workerId")
    if worker is not None and type(worker) is not str:
        worker = str(worker)
    error = data.get("error")
    job = object.__new__(Job)
    _set_id(job, job_id)
    _set_status(job, status)
    _set_output(job, data.get("output"))
    _set_error(job, error)
    _set_delay_time(job, delay)
    _set_execution_time(job, execution)
    _set_worker_id(job, worker)
    _set_retries(job, retries)
    _set_raw(job, raw)
    if error is None:
        _set_error_type(job, None)
        _set_error_message(job, None)
        _set_error_traceback(job, None)
    else:
        kind, message, trace = _parse_error(error)
        _set_error_type(job, kind)
        _set_error_message(job, message)
        _set_error_traceback(job, trace)
    return job


def job_from_answer(data: Any) -> Job:
    """``Job.from_dict`` for a dict freshly decoded from an answer, which nothing else holds: ``raw`` wraps
    it as it is instead of copying it first. Anything but a plain dict (an error to report) goes through
    ``from_dict``."""
    if type(data) is not dict:
        return Job.from_dict(data)
    job_id = data.get("id")
    status = data.get("status")
    known = _STATUSES.get(status) if type(status) is str else None
    if type(job_id) is not str or not job_id or known is None:
        return Job.from_dict(data)  # says what is wrong, or keeps a status this version does not know
    return _new_job(job_id, known, data, MappingProxyType(data))


@dataclass(frozen=True, slots=True)
class JobCounts:
    """``/health``'s job counts, by state. ``retried`` counts jobs RunPod retried."""

    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    in_queue: int = 0
    retried: int = 0


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """``/health``'s worker counts, by state (``throttled``: waiting for a GPU to free up)."""

    idle: int = 0
    initializing: int = 0
    ready: int = 0
    running: int = 0
    throttled: int = 0
    unhealthy: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    """``/health``: job and worker counts. Missing counts read as 0 so a sparse answer still parses."""

    jobs: JobCounts
    workers: WorkerCounts
    raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)

    def __getstate__(self) -> FrozenState:
        """Pickle support: a read-only mapping goes as a dict (a mappingproxy does not pickle)."""
        return frozen_getstate(self)

    def __setstate__(self, state: FrozenState) -> None:
        """Unpickle: the fields back, the mapping read-only again."""
        frozen_setstate(self, state)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Parse RunPod's ``/health`` answer; missing counts read as 0.

        Args:
            data: The answer's JSON object (``{"jobs": {...}, "workers": {...}}``).

        Returns:
            The counts, with ``raw`` keeping the answer as it was.

        Raises:
            ValueError: ``jobs`` or ``workers`` is missing, or a count is not an integer.
        """
        if not isinstance(data, Mapping):
            raise MalformedError(f"expected a JSON object, got {type(data).__name__}")
        jobs = data.get("jobs")
        workers = data.get("workers")
        if not isinstance(jobs, Mapping):
            raise MalformedError("missing 'jobs' object")
        if not isinstance(workers, Mapping):
            raise MalformedError("missing 'workers' object")
        return cls(
            jobs=JobCounts(
                completed=_count(jobs, "completed"),
                failed=_count(jobs, "failed"),
                in_progress=_count(jobs, "inProgress"),
                in_queue=_count(jobs, "inQueue"),
                retried=_count(jobs, "retried"),
            ),
            workers=WorkerCounts(
                idle=_count(workers, "idle"),
                initializing=_count(workers, "initializing"),
                ready=_count(workers, "ready"),
                running=_count(workers, "running"),
                throttled=_count(workers, "throttled"),
                unhealthy=_count(workers, "unhealthy"),
            ),
            raw=_freeze(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts in RunPod's field names (``inProgress``, ``inQueue``, ...), as ``/health`` has them."""
        j, w = self.jobs, self.workers
        return {
            "jobs": {
                "completed": j.completed,
                "failed": j.failed,
                "inProgress": j.in_progress,
                "inQueue": j.in_queue,
                "retried": j.retried,
            },
            "workers": {
                "idle": w.idle,
                "initializing": w.initializing,
                "ready": w.ready,
                "running": w.running,
                "throttled": w.throttled,
                "unhealthy": w.unhealthy,
            },
        }


_MAX_DURATION_S = MAX_DURATION_MS / 1000


def _policy_seconds(name: str, value: Duration | None, low_ms: int) -> float | None:
    if value is None:
        return None
    return seconds(value, f"Policy.{name}", low=low_ms / 1000, high=_MAX_DURATION_S)


@dataclass(frozen=True, slots=True)
class Policy:
    """A job's execution policy; checked here so a bad value fails at once, not as a 400 later.

    Durations are seconds (a number or a ``timedelta``), sent as RunPod's milliseconds:
    ``Policy(execution_timeout=120, ttl=600)`` → ``{"executionTimeout": 120000, "ttl": 600000}``.
    ``None`` leaves RunPod's default.

    Args:
        execution_timeout: How long the job may run, counted from when a worker starts it (5 s to 7 days).
        ttl: How long the job may live, counted from submission, queue time included (10 s to 7 days).
        low_priority: Queue behind normal jobs, without making the endpoint scale up for it.

    Raises:
        ValueError: A duration out of range.
        TypeError: ``low_priority`` is not a bool.
    """

    execution_timeout: float | None = None
    ttl: float | None = None
    low_priority: bool | None = None

    def __init__(
        self,
        execution_timeout: Duration | None = None,
        ttl: Duration | None = None,
        low_priority: bool | None = None,
    ) -> None:
        object.__setattr__(
            self,
            "execution_timeout",
            _policy_seconds("execution_timeout", execution_timeout, MIN_EXECUTION_TIMEOUT_MS),
        )
        object.__setattr__(self, "ttl", _policy_seconds("ttl", ttl, MIN_TTL_MS))
        if low_priority is not None and not isinstance(low_priority, bool):
            raise TypeError(f"Policy.low_priority must be a bool or None, got {low_priority!r}")
        object.__setattr__(self, "low_priority", low_priority)

    def to_wire(self) -> dict[str, Any]:
        """The policy as RunPod's ``policy`` object: milliseconds, only the fields that are set."""
        out: dict[str, Any] = {}
        if self.execution_timeout is not None:
            out["executionTimeout"] = to_ms(self.execution_timeout)
        if self.ttl is not None:
            out["ttl"] = to_ms(self.ttl)
        if self.low_priority is not None:
            out["lowPriority"] = self.low_priority
        return out


@dataclass(frozen=True, slots=True)
class S3Config:
    """Object storage handed to the worker with the job (never echoed back); the secret stays out of repr.

    Args:
        access_id: The storage access key id; kept out of repr like the secret (it names an account).
        access_secret: The secret key; never shown in a repr.
        bucket_name: The bucket the worker reads and writes.
        endpoint_url: The storage service's URL (``https://s3.amazonaws.com``, a MinIO address...).

    Raises:
        ValueError: A field is empty or not a string.
    """

    access_id: str = field(repr=False)
    access_secret: str = field(repr=False)
    bucket_name: str
    endpoint_url: str

    def __post_init__(self) -> None:
        for name in ("access_id", "access_secret", "bucket_name", "endpoint_url"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                shown = "<hidden>" if name == "access_secret" else repr(value)
                raise ValueError(f"S3Config.{name} must be a non-empty string, got {shown}")

    @classmethod
    def from_env(
        cls, bucket_name: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> S3Config:
        """The storage a RunPod worker sees: ``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID`` and
        ``BUCKET_SECRET_ACCESS_KEY``, the variables ``runpod.serverless.utils.rp_upload`` reads, plus the
        bucket (``bucket_name``, else ``BUCKET_NAME``: ``rp_upload`` takes it per call, so the variables
        alone do not name one).

        Args:
            bucket_name: The bucket; default the ``BUCKET_NAME`` variable.
            environ: Where to read the variables; default ``os.environ``.

        Returns:
            The config.

        Raises:
            ConfigurationError: A variable is missing; the message names which.
        """
        env = os.environ if environ is None else environ
        names = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")
        missing = [name for name in names if not env.get(name, "").strip()]
        bucket = bucket_name or env.get("BUCKET_NAME", "").strip()
        if not bucket:
            missing.append("BUCKET_NAME (or pass bucket_name=)")
        if missing:
            raise ConfigurationError(f"object storage is not configured: set {', '.join(missing)}")
        return cls(
            access_id=env["BUCKET_ACCESS_KEY_ID"].strip(),
            access_secret=env["BUCKET_SECRET_ACCESS_KEY"].strip(),
            bucket_name=bucket,
            endpoint_url=env["BUCKET_ENDPOINT_URL"].strip(),
        )

    def to_wire(self) -> dict[str, str]:
        """The config as RunPod's ``s3Config`` object (camelCase keys), secret included."""
        return {
            "accessId": self.access_id,
            "accessSecret": self.access_secret,
            "bucketName": self.bucket_name,
            "endpointUrl": self.endpoint_url,
        }
