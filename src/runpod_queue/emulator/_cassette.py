"""Cassettes: what a real endpoint did, recorded by `rpq record`, replayed by `EndpointSpec(replay=…)`.

A cassette is JSON Lines. The first line is the header, every other line one job:

```text
{"format": "rpq-cassette", "version": 1, "recorded_at": "2026-12-07T23:50:00Z", "source": "api.runpod.ai",
 "on_miss": "error"}
{"endpoint": "echo", "id": "9f1c…", "input": {"prompt": "hi"}, "status": "COMPLETED",
 "delayTime": 1200, "executionTime": 3400, "output": {"text": "hello"},
 "statuses": [[0.0, "IN_QUEUE"], [1.21, "IN_PROGRESS"], [4.6, "COMPLETED"]],
 "stream": [[2.0, {"token": "he"}], [2.5, {"token": "llo"}]]}
```

`delayTime`/`executionTime` are RunPod's milliseconds, as its `/status` reported them; `statuses` and the
`stream` chunks carry the seconds since the job was submitted at which the recorder saw them. A FAILED job
has `error` instead of `output`. The header never holds a key or a URL's user/password: `source` is the
host only.

Replay (`ReplayHandler`): a job's input is matched against the endpoint's recordings in canonical JSON
(keys sorted, no spaces), so `{"a": 1, "b": 2}` and `{"b": 2, "a": 1}` are the same input. An input
recorded several times replays its recordings in the recorded order, then from the first again (cycle).
The job then waits `delayTime` in the queue and runs `executionTime` on the emulator's clock, sending
its chunks at their recorded offsets, and ends with the recorded output or error.

An input with no recording answers as `on_miss` says: ``"error"`` (the job FAILS, its error naming the
cassette and the miss), ``"nearest"`` (the recording whose input has the most top-level keys with equal
values; ties go to the earliest recorded; a non-object input counts as one key), or ``"handler"`` (the
handler given with the spec runs it, as a normal endpoint would).

Recordings that did not end COMPLETED or FAILED (CANCELLED by the client, TIMED_OUT, or never seen to
end) stay in the file but are not replayed: they say nothing of what the endpoint answers.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from runpod_queue._units import Duration, seconds
from runpod_queue.errors import ConfigurationError

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import Clock
    from runpod_queue.emulator._jobs import JobRecord

__all__ = [
    "CASSETTE_FORMAT",
    "CASSETTE_VERSION",
    "Cassette",
    "OnMiss",
    "Recording",
    "ReplayHandler",
    "canonical",
]

CASSETTE_FORMAT: Final = "rpq-cassette"
#: The format version written; a cassette of a newer one is refused.
CASSETTE_VERSION: Final = 1

OnMiss = Literal["error", "nearest", "handler"]
_ON_MISS: Final = ("error", "nearest", "handler")
_TERMINAL: Final = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
_STATUSES: Final = ("IN_QUEUE", "IN_PROGRESS", *_TERMINAL)
_HEADER_FIELDS: Final = ("format", "version", "recorded_at", "source", "on_miss")
_JOB_FIELDS: Final = (
    "endpoint", "id", "input", "status", "delayTime", "executionTime", "output", "error", "statuses",
    "stream",
)  # fmt: skip


def canonical(value: Any) -> bytes:
    """`value` as canonical JSON: keys sorted, no spaces; equal inputs give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True, init=False)
class Recording:
    """One job as a cassette recorded it.

    Args:
        endpoint: The endpoint id the job was submitted to.
        input: The job's input.
        status: The last status seen: ``COMPLETED`` or ``FAILED`` replay; the others are kept only.
        output: The job's output (``None`` for a FAILED job).
        error: The job's error (a FAILED job), else ``None``.
        delay: How long the job waited in the queue (RunPod's ``delayTime``): seconds or ``"1.5s"``.
        execution: How long the job ran (RunPod's ``executionTime``): seconds or ``"3s"``.
        stream: The stream's chunks, each with the seconds after the run started at which it came.
        statuses: Each status seen, with the seconds since submission at which it was first seen.
        job_id: The job's id on the recorded endpoint (``None`` if not recorded).
    """

    endpoint: str
    input: Any
    status: str
    output: Any
    error: str | None
    delay: float
    execution: float
    stream: tuple[tuple[float, Any], ...]
    statuses: tuple[tuple[float, str], ...]
    job_id: str | None

    def __init__(
        self,
        endpoint: str,
        input: Any,
        *,
        status: str = "COMPLETED",
        output: Any = None,
        error: str | None = None,
        delay: Duration = 0.0,
        execution: Duration = 0.0,
        stream: Sequence[tuple[float, Any]] = (),
        statuses: Sequence[tuple[float, str]] = (),
        job_id: str | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "endpoint", endpoint)
        set_(self, "input", input)
        set_(self, "status", status)
        set_(self, "output", output)
        set_(self, "error", error)
        set_(self, "delay", seconds(delay, "Recording.delay"))
        set_(self, "execution", seconds(execution, "Recording.execution"))
        set_(self, "stream", tuple(stream))
        set_(self, "statuses", tuple(statuses))
        set_(self, "job_id", job_id)

    @property
    def replays(self) -> bool:
        """Whether replay answers with this recording (it ended COMPLETED or FAILED)."""
        return self.status in ("COMPLETED", "FAILED")

    def to_json(self) -> dict[str, Any]:
        """The recording as its cassette line (a JSON object)."""
        line: dict[str, Any] = {"endpoint": self.endpoint}
        if self.job_id is not None:
            line["id"] = self.job_id
        line["input"] = self.input
        line["status"] = self.status
        line["delayTime"] = round(self.delay * 1000)
        line["executionTime"] = round(self.execution * 1000)
        if self.error is not None:
            line["error"] = self.error
        else:
            line["output"] = self.output
        line["statuses"] = [[round(t, 3), s] for t, s in self.statuses]
        if self.stream:
            line["stream"] = [[round(t, 3), c] for t, c in self.stream]
        return line


class CassetteError(ConfigurationError):
    """A cassette that cannot be used; one line naming the file, the line and the field."""


class Cassette:
    """Recorded jobs, to replay with ``EndpointSpec(replay=…)`` (docs/local-runpod.md).

    ```python
    cassette = Cassette.load("cassette.jsonl")            # written by `rpq record`
    spec = EndpointSpec(replay=cassette)                  # or EndpointSpec(replay="cassette.jsonl")
    ```

    Args:
        recordings: The recorded jobs, in the order they were submitted.
        on_miss: What an input with no recording gets: ``"error"`` (the job FAILS naming the miss),
            ``"nearest"`` (the recording with the most equal top-level input keys) or ``"handler"``
            (the handler given with the spec runs it).
        source: The host the jobs were recorded from (no credentials), for messages.
        recorded_at: When the recording started (ISO 8601, UTC).
        path: The file the cassette was read from, for messages.

    Raises:
        ValueError: ``on_miss`` is not one of the three rules.
    """

    recordings: tuple[Recording, ...]
    on_miss: OnMiss
    source: str | None
    recorded_at: str | None
    path: Path | None

    def __init__(
        self,
        recordings: Sequence[Recording],
        *,
        on_miss: OnMiss = "error",
        source: str | None = None,
        recorded_at: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if on_miss not in _ON_MISS:
            raise ValueError(f"on_miss must be one of {', '.join(_ON_MISS)}, got {on_miss!r}")
        self.recordings = tuple(recordings)
        self.on_miss = on_miss
        self.source = source
        self.recorded_at = recorded_at
        self.path = Path(path) if path is not None else None

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path is not None else ""
        return f"<Cassette {len(self.recordings)} recording(s){where} on_miss={self.on_miss}>"

    @property
    def name(self) -> str:
        """The file's name, or ``"cassette"`` for one built in memory (used in messages)."""
        return str(self.path) if self.path is not None else "cassette"

    @property
    def endpoints(self) -> list[str]:
        """The endpoint ids the recordings belong to, sorted."""
        return sorted({r.endpoint for r in self.recordings})

    def for_endpoint(self, endpoint_id: str) -> tuple[Recording, ...]:
        """The recordings an endpoint named `endpoint_id` replays: those recorded for that id, or all of
        them when the cassette holds one endpoint only (so it can be served under another id).

        Raises:
            ConfigurationError: The cassette holds several endpoints and none is `endpoint_id`.
        """
        own = tuple(r for r in self.recordings if r.endpoint == endpoint_id)
        if own:
            return own
        endpoints = self.endpoints
        if len(endpoints) <= 1:
            return self.recordings
        raise ConfigurationError(
            f"{self.name}: no recording of endpoint {endpoint_id!r}; it holds {', '.join(endpoints)}: "
            "serve one of those ids"
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, on_miss: OnMiss | None = None) -> Cassette:
        """Read a cassette file.

        Args:
            path: The ``.jsonl`` file `rpq record` wrote.
            on_miss: Overrides the rule in the file's header (``None`` keeps it).

        Returns:
            The cassette.

        Raises:
            ConfigurationError: Unreadable, or a line or field wrong (one line: file, line, field).
        """
        file = Path(path)
        try:
            lines = file.read_bytes().splitlines()
        except OSError as exc:
            raise CassetteError(f"{file}: cannot read the cassette: {exc.strerror or exc}") from None
        if not lines or not lines[0].strip():
            raise CassetteError(f"{file}:1: empty: a cassette starts with its header line (rpq record)")
        header = _object(file, 1, lines[0])
        _check_header(file, header)
        rule = on_miss if on_miss is not None else header.get("on_miss", "error")
        recordings = [
            _recording(file, n, _object(file, n, line))
            for n, line in enumerate(lines[1:], start=2)
            if line.strip()
        ]
        return cls(
            recordings,
            on_miss=rule,
            source=header.get("source"),
            recorded_at=header.get("recorded_at"),
            path=file,
        )


def _object(file: Path, line: int, raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CassetteError(f"{file}:{line}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CassetteError(f"{file}:{line}: each line is a JSON object, got {type(value).__name__}")
    return value


def _check_header(file: Path, header: dict[str, Any]) -> None:
    if header.get("format") != CASSETTE_FORMAT:
        raise CassetteError(
            f'{file}:1: format: the header must say "format": "{CASSETTE_FORMAT}" (got '
            f"{header.get('format')!r}); is this a cassette written by rpq record?"
        )
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CassetteError(f"{file}:1: version: must be an integer >= 1, got {version!r}")
    if version > CASSETTE_VERSION:
        raise CassetteError(
            f"{file}:1: version: written by a newer runpod-queue (cassette version {version}; this version "
            f"reads {CASSETTE_VERSION}): upgrade runpod-queue"
        )
    unknown = sorted(header.keys() - set(_HEADER_FIELDS))
    if unknown:
        raise CassetteError(
            f"{file}:1: {unknown[0]}: unknown header field; it takes {', '.join(_HEADER_FIELDS)}"
        )
    rule = header.get("on_miss", "error")
    if rule not in _ON_MISS:
        raise CassetteError(f"{file}:1: on_miss: must be one of {', '.join(_ON_MISS)}, got {rule!r}")
    for name in ("recorded_at", "source"):
        if header.get(name) is not None and not isinstance(header[name], str):
            raise CassetteError(f"{file}:1: {name}: must be a string, got {header[name]!r}")


def _seconds(file: Path, line: int, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= 0
        or value == float("inf")
    ):
        raise CassetteError(f"{file}:{line}: {name}: must be a number >= 0, got {value!r}")
    return float(value)


def _recording(file: Path, line: int, data: dict[str, Any]) -> Recording:
    def fail(name: str, message: str) -> CassetteError:
        return CassetteError(f"{file}:{line}: {name}: {message}")

    unknown = sorted(data.keys() - set(_JOB_FIELDS))
    if unknown:
        raise fail(unknown[0], f"unknown field; a job line takes {', '.join(_JOB_FIELDS)}")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise fail("endpoint", f"must be the endpoint id (a non-empty string), got {endpoint!r}")
    if "input" not in data:
        raise fail("input", "missing: every job line holds the job's input")
    status = data.get("status", "COMPLETED")
    if status not in _STATUSES:
        raise fail("status", f"must be one of {', '.join(_STATUSES)}, got {status!r}")
    error = data.get("error")
    if error is not None and (not isinstance(error, str) or not error):
        raise fail("error", f"must be a non-empty string, got {error!r}")
    if status == "FAILED" and error is None:
        raise fail("error", "missing: a FAILED job line holds its error")
    job_id = data.get("id")
    if job_id is not None and not isinstance(job_id, str):
        raise fail("id", f"must be a string, got {job_id!r}")
    delay = _seconds(file, line, "delayTime", data.get("delayTime", 0)) / 1000
    execution = _seconds(file, line, "executionTime", data.get("executionTime", 0)) / 1000
    statuses: list[tuple[float, str]] = []
    for i, item in enumerate(data.get("statuses") or []):
        if not isinstance(item, list) or len(item) != 2 or item[1] not in _STATUSES:
            raise fail(f"statuses[{i}]", f'must be [seconds, "STATUS"], got {item!r}')
        statuses.append((_seconds(file, line, f"statuses[{i}]", item[0]), item[1]))
    stream: list[tuple[float, Any]] = []
    raw_stream = data.get("stream") or []
    if not isinstance(raw_stream, list):
        raise fail("stream", f"must be a list of [seconds, chunk], got {type(raw_stream).__name__}")
    for i, item in enumerate(raw_stream):
        if not isinstance(item, list) or len(item) != 2:
            raise fail(f"stream[{i}]", f"must be [seconds, chunk], got {item!r}")
        stream.append((_seconds(file, line, f"stream[{i}]", item[0]), item[1]))
    return Recording(
        endpoint=endpoint,
        input=data["input"],
        status=status,
        output=data.get("output"),
        error=error,
        delay=delay,
        execution=execution,
        stream=tuple(stream),
        statuses=tuple(statuses),
        job_id=job_id,
    )


# -- replay ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pick:
    recording: Recording | None
    problem: str | None = None  # on a miss with on_miss="error"
    fallback: bool = False  # on a miss with on_miss="handler"


@dataclass(slots=True)
class _Track:
    """One endpoint's recordings, indexed for matching, and the cycle position of each input."""

    recordings: tuple[Recording, ...]
    unfinished: dict[bytes, str] = field(default_factory=dict)  # inputs recorded only without an end
    by_input: dict[bytes, list[Recording]] = field(default_factory=dict)
    next: dict[bytes, int] = field(default_factory=dict)


class ReplayHandler:
    """The handler of an endpoint that replays a cassette (`EndpointSpec(replay=…)` makes one).

    The core asks `admit(job)` as a job is submitted: the recording is chosen then (in order of
    arrival), and the seconds returned hold the job IN_QUEUE, as the recorded `delayTime` says. The
    run (`__call__`) then takes the recorded `executionTime`, on the emulator's clock.
    """

    runs_on_loop = True

    def __init__(self, cassette: Cassette, fallback: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.cassette = cassette
        self.fallback = fallback
        self.on_miss: OnMiss = "handler" if fallback is not None else cassette.on_miss
        if self.on_miss == "handler" and fallback is None:
            raise ConfigurationError(
                f"{cassette.name}: on_miss is 'handler' but no handler was given: "
                "EndpointSpec(replay=..., handler=fn), or choose on_miss='error' or 'nearest'"
            )
        self._tracks: dict[str, _Track] = {}
        self._picks: dict[str, _Pick] = {}
        self._lock = threading.Lock()
        self._clock: Clock | None = None
        self._endpoint_id = ""

    def bind(self, clock: Clock, endpoint_id: str) -> None:
        """Serve as `endpoint_id` on `clock` (the emulator does this; raises ConfigurationError when
        the cassette has nothing for that id)."""
        self._clock = clock
        self._endpoint_id = endpoint_id
        self._track(endpoint_id)

    def bind_check(self, endpoint_id: str) -> None:
        """Raise ConfigurationError now if the cassette has nothing to replay as `endpoint_id`."""
        self._track(endpoint_id)

    def describe(self) -> str:
        """What `GET /_emulator/endpoints` shows for the handler."""
        count = len(self.cassette.recordings)
        return f"replay: {self.cassette.name}, {count} recording(s), on_miss={self.on_miss}"

    def reset(self) -> None:
        """Every input back to its first recording (``POST /_emulator/reset``)."""
        with self._lock:
            for track in self._tracks.values():
                track.next.clear()
            self._picks.clear()

    def _track(self, endpoint_id: str) -> _Track:
        track = self._tracks.get(endpoint_id)
        if track is None:
            every = self.cassette.for_endpoint(endpoint_id)
            recordings = tuple(r for r in every if r.replays)
            track = _Track(recordings)
            for r in every:
                if not r.replays:
                    track.unfinished[canonical(r.input)] = r.status
            for r in recordings:
                track.by_input.setdefault(canonical(r.input), []).append(r)
            self._tracks[endpoint_id] = track
        return track

    def _choose(self, endpoint_id: str, job_input: Any) -> _Pick:
        with self._lock:
            track = self._track(endpoint_id)
            key = canonical(job_input)
            same = track.by_input.get(key)
            if same:
                index = track.next.get(key, 0)
                track.next[key] = index + 1
                return _Pick(same[index % len(same)])
            if self.on_miss == "handler":
                return _Pick(None, fallback=True)
            if self.on_miss == "nearest" and track.recordings:
                return _Pick(_nearest(track.recordings, job_input))
            shown = key.decode()
            shown = shown if len(shown) <= 200 else shown[:200] + "…"
            last = track.unfinished.get(key)
            if last is not None:
                return _Pick(
                    None,
                    problem=f"replay: {self.cassette.name} recorded the input {shown} on endpoint "
                    f"{endpoint_id!r} only as {last}, not ending COMPLETED or FAILED: nothing to replay "
                    "(record it again, following the job to its end)",
                )
            return _Pick(
                None,
                problem=f"replay: no recording in {self.cassette.name} for endpoint {endpoint_id!r} has "
                f"the input {shown} (on_miss=error; record it, or use on_miss='nearest' or a handler)",
            )

    def admit(self, job: JobRecord) -> float:
        """Choose the job's recording as it arrives; returns the seconds it waits in the queue."""
        self._endpoint_id = job.endpoint.id
        pick = self._choose(job.endpoint.id, job.input if job.input is not None else job.original_input())
        with self._lock:
            self._picks[job.id] = pick
        return pick.recording.delay if pick.recording is not None else 0.0

    def forget(self, job_id: str) -> None:
        """The job is gone (the core calls this): drop its choice if it never ran."""
        if self._picks:
            with self._lock:
                self._picks.pop(job_id, None)

    def __call__(self, job: dict[str, Any]) -> Awaitable[Any] | AsyncIterator[Any]:
        with self._lock:
            pick = self._picks.pop(job["id"], None)
        if pick is None:  # a retried job, or one requeued after a restart: chosen again, no queue wait
            pick = self._choose(self._endpoint_id, job.get("input"))
        if pick.fallback:
            return self._fallback(job)
        recording = pick.recording
        if recording is not None and recording.stream and recording.error is None:
            return self._stream(recording)
        return self._answer(recording, pick.problem)

    async def _sleep(self, seconds: float) -> None:
        clock = self._clock
        if seconds <= 0 or clock is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = clock.call_later(seconds * clock.scale, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()

    async def _answer(self, recording: Recording | None, problem: str | None) -> Any:
        if recording is None:
            return {"error": problem}
        await self._sleep(recording.execution)
        if recording.error is not None:
            return {"error": recording.error}
        return recording.output

    async def _stream(self, recording: Recording) -> AsyncIterator[Any]:
        # Chunk times are seconds since submission; the run started after the recorded queue wait.
        elapsed = 0.0
        for at, chunk in recording.stream:
            due = min(max(at - recording.delay, elapsed), recording.execution)
            await self._sleep(due - elapsed)
            elapsed = due
            yield chunk
        await self._sleep(recording.execution - elapsed)

    def _fallback(self, job: dict[str, Any]) -> Awaitable[Any] | AsyncIterator[Any]:
        handler = self.fallback
        assert handler is not None
        if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
            result: Any = handler(job)
            return result  # type: ignore[no-any-return]
        if getattr(handler, "runs_on_loop", False) is True:
            return handler(job)  # type: ignore[no-any-return]
        return _in_thread(handler, job)


async def _in_thread(handler: Callable[[dict[str, Any]], Any], job: dict[str, Any]) -> Any:
    """A plain (blocking) fallback handler, off the loop."""
    result = await asyncio.to_thread(handler, job)
    if inspect.isgenerator(result):
        return await asyncio.to_thread(list, result)
    return result


def _nearest(recordings: tuple[Recording, ...], job_input: Any) -> Recording:
    """The recording whose input shares the most top-level keys with equal values (the earliest on a
    tie); inputs that are not objects count as one key, equal or not."""

    def score(recorded: Any) -> int:
        if isinstance(job_input, dict) and isinstance(recorded, dict):
            return sum(
                1 for k, v in job_input.items() if k in recorded and canonical(recorded[k]) == canonical(v)
            )
        return int(canonical(recorded) == canonical(job_input))

    best, best_score = recordings[0], -1
    for r in recordings:
        s = score(r.input)
        if s > best_score:
            best, best_score = r, s
    return best


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
