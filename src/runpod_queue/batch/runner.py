"""The durable batch runner: every input through one endpoint, every result back, nothing paid twice.

Shape (one event loop):

* a **feeder** streams the inputs (never loads them), checks each key against the journal and starts a
  submit task while fewer than ``max_in_flight`` items are between submission and result;
* each **submit task** takes a ``/run`` slot from the runner's own limiter, *then* journals
  ``submitting``, sends, and journals the job id — so an item is ambiguous only while its ``/run`` is
  really on the wire (the client's limiter is switched off for ``run`` for that reason; it still paces
  every other operation);
* one **dispatcher** shares the status budget: submitted jobs sit in a heap ordered by when they are next
  due, and the most overdue one goes to the next free check slot (``poll_concurrency``); each job's
  interval grows with its age, and the client's limiter holds all checks together under ``/status``'s
  limit however many jobs are in flight;
* results go to the journal first, then to the output (see ``_Output``);
* with ``webhook_url`` + ``listen``, every job is submitted with a signed webhook URL and a receiver on
  the same loop takes deliveries as results: a COMPLETED delivery finishes its job at once, any other
  terminal delivery makes the job due for a status check (which decides on /retry, as polling does, and
  cannot be fooled by a late delivery of an earlier attempt). A job is polled only once its delivery is
  late (``webhook_grace``, or twice the jobs' usual latency if longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runpod_queue._contract import LIMITS, JobStatus
from runpod_queue._limits import AsyncLimiter, RateLimits
from runpod_queue._models import Job, Policy
from runpod_queue._net import listen_socket
from runpod_queue._retry import Retries, backoff_delay
from runpod_queue.aio import AsyncClient
from runpod_queue.batch import journal as jn
from runpod_queue.batch._types import BatchResult, BatchSummary, key_text
from runpod_queue.errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RunpodQueueError,
    ServerError,
)

__all__ = ["BatchRunner"]

log = logging.getLogger("runpod_queue.batch")

_SKIP = object()  # a blank input line


class _Invalid:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _valid_key(key: Any) -> bool:
    return isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def parse_item(raw: Any, line: int) -> tuple[Any, Any] | _Invalid | object:
    """(key, input) for one input item, ``_Invalid`` with the reason, or ``_SKIP`` for a blank line.

    An item is a JSON line (str/bytes), an already parsed dict, or a ``(key, input)`` tuple. A dict whose
    keys are exactly ``key`` and ``input`` is a keyed item; any other dict is the handler input itself,
    keyed by its line number.
    """
    if isinstance(raw, tuple):
        if len(raw) != 2 or not _valid_key(raw[0]):
            return _Invalid("a tuple item must be (key, input) with a str or int key")
        return raw[0], raw[1]
    if isinstance(raw, str | bytes | bytearray):
        if not raw.strip():
            return _SKIP
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            return _Invalid(f"invalid JSON: {exc}")
    if not isinstance(raw, dict):
        return _Invalid(f"expected a JSON object, got {_json_type(raw)}")
    if raw.keys() == {"key", "input"}:
        if not _valid_key(raw["key"]):
            return _Invalid(f"'key' must be a string or an integer, got {raw['key']!r:.60}")
        return raw["key"], raw["input"]
    return line, raw


@dataclass(slots=True)
class _Job:
    """A submitted job the poller is watching."""

    key: str  # key text
    line: int
    job_id: str
    attempts: int
    since: float  # monotonic start of the current attempt (submission or /retry)
    failures: int = 0  # consecutive failed status calls
    status: JobStatus | None = None
    checked: float = 0.0  # monotonic time of the last status known (0: never)
    done: bool = False  # its result is recorded (a webhook may beat a status check to it)
    checking: bool = False  # a status check is under way
    due_seq: int = 0  # the heap entry that counts; older entries of this job are skipped


class _Receiver:
    """The webhook receiver served by uvicorn on the runner's loop (signals stay the caller's)."""

    def __init__(self, receiver: Any, host: str, port: int) -> None:
        import uvicorn

        from runpod_queue.webhooks import asgi_app

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # Ctrl-C belongs to the batch (it stops submitting), not to the receiver

        config = uvicorn.Config(
            asgi_app(receiver), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = _Server(config)
        self.host, self.port = host, port
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = listen_socket(self.host, self.port)  # an OSError naming the address, not uvicorn's sys.exit
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                raise OSError(f"webhook receiver on {self.host}:{self.port} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class _Fatal(Exception):
    """An error no retry will fix (bad key, unknown endpoint): the batch stops, the journal stays valid."""


class _Output:
    """The results file: one line per key, append-only, valid JSONL after any kill.

    On open it is reconciled with the journal: a partial last line (a kill mid-write) is cut off, the keys
    present are marked written (the file is the authority), and terminal results the file lacks are
    appended. During the run a line is appended only after its result is in the journal, and ``written``
    marks are batched — a mark lost to a kill is restored by the next reconciliation.
    """

    def __init__(
        self,
        path: Path | None,
        journal: jn.Journal,
        on_result: Callable[[BatchResult], object] | None,
    ) -> None:
        self.path = path
        self._journal = journal
        self._on_result = on_result
        self._unmarked: list[str] = []
        self._fh: IO[bytes] | None = None

    def open(self) -> int:
        """Reconcile and open for appending; returns how many results were (re)delivered."""
        if self.path is not None:
            self._journal.reset_written(self._scan(self.path))
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held for the whole run
        delivered = 0
        for key, line in self._journal.unwritten_results():
            self._deliver(key, line)
            delivered += 1
        self.flush_marks()
        return delivered

    @staticmethod
    def _scan(path: Path) -> Iterator[str]:
        """Key texts of the complete lines in ``path``; truncates a torn or unreadable tail."""
        if not path.exists():
            return
        good = 0
        with open(path, "rb+") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                try:
                    key = json.loads(raw)["key"]
                except (ValueError, KeyError, TypeError):
                    break
                good += len(raw)
                yield key_text(key)
            fh.truncate(good)

    def _deliver(self, key: str, line: str) -> None:
        if self._fh is not None:
            self._fh.write(line.encode() + b"\n")
            self._fh.flush()
        if self._on_result is not None:
            self._on_result(BatchResult.from_dict(json.loads(line)))
        self._unmarked.append(key)
        if len(self._unmarked) >= 512:
            self.flush_marks()

    def deliver(self, key: str, line: str) -> None:
        self._deliver(key, line)

    def flush_marks(self) -> None:
        if self._unmarked:
            self._journal.mark_written(self._unmarked)
            self._unmarked = []

    def close(self) -> None:
        self.flush_marks()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class BatchRunner:
    """Push every input through one endpoint and collect every result, durably.

    ```python
    runner = BatchRunner("my-endpoint", journal="prompts.journal", output="results.jsonl")
    summary = runner.run(open("prompts.jsonl"))        # or: await runner.arun(items)
    ```

    ``inputs`` is any iterable of JSON lines, dicts or ``(key, input)`` tuples (see ``parse_item``); it is
    read lazily. Running again with the same journal and inputs resumes: journaled jobs are collected, not
    resubmitted; journaled results are not fetched again. ``retries`` is how many times a FAILED or
    TIMED_OUT job is sent to ``/retry``. ``rate_limits`` are the endpoint's limits the runner keeps to
    (``False``: none). ``on_result`` sees each result once, as it is written; ``on_progress`` gets a copy
    of the summary every ``progress_interval`` seconds; ``on_warning`` gets one line per malformed,
    duplicate, ambiguous or lost item (default: the ``runpod_queue.batch`` logger).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        journal: str | os.PathLike[str],
        output: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_in_flight: int = 1000,
        retries: int = 2,
        policy: Policy | None = None,
        rate_limits: RateLimits | bool = True,
        timeout: float = 30.0,
        poll_concurrency: int = 64,
        min_poll_interval: float = 0.05,
        max_poll_interval: float = 10.0,
        backoff: Retries | None = None,
        total: int | None = None,
        on_result: Callable[[BatchResult], object] | None = None,
        on_progress: Callable[[BatchSummary], object] | None = None,
        on_warning: Callable[[str], object] | None = None,
        progress_interval: float = 0.25,
        webhook_url: str | None = None,
        listen: tuple[str, int] | None = None,
        webhook_secret: str | None = None,
        webhook_grace: float = 30.0,
    ) -> None:
        if not isinstance(endpoint, str) or not endpoint:
            raise ValueError(f"endpoint must be a non-empty endpoint id, got {endpoint!r}")
        for name, value in (("max_in_flight", max_in_flight), ("poll_concurrency", poll_concurrency)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not 0 < min_poll_interval <= max_poll_interval:
            raise ValueError("poll intervals must satisfy 0 < min_poll_interval <= max_poll_interval")
        if (webhook_url is None) != (listen is None):
            raise ValueError(
                "webhook_url (the public URL RunPod posts to) and listen ((host, port) the receiver binds) "
                "go together"
            )
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL, got {webhook_url!r}")
        if not isinstance(webhook_grace, int | float) or webhook_grace <= 0:
            raise ValueError(f"webhook_grace must be a positive number of seconds, got {webhook_grace!r}")
        self.webhook_url = webhook_url
        self.listen = listen
        self._webhook_secret = webhook_secret
        self._webhook_grace = float(webhook_grace)
        self.endpoint_id = endpoint
        self.journal_path = Path(journal)
        self.output_path = None if output is None else Path(output)
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.policy = policy
        self.total = total
        self._api_key = api_key
        self._base_url = base_url
        self._timeout = timeout
        self._poll_concurrency = poll_concurrency
        self._min_gap = min_poll_interval
        self._max_gap = max_poll_interval
        self._backoff = backoff if backoff is not None else Retries()
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_warning = on_warning
        self._progress_interval = progress_interval
        config = rate_limits if isinstance(rate_limits, RateLimits) else RateLimits(enabled=bool(rate_limits))
        # ``run`` is limited here, around the journal write; every other operation by the client.
        self._client_limits = RateLimits(
            limits={op: lim for op, lim in config.limits.items() if op != "run"},
            window=config.window,
            margin=config.margin,
            enabled=config.enabled,
        )
        run_limit = config.limits.get("run", LIMITS["run"])
        self._run_limits = RateLimits(
            limits={"run": run_limit}, window=config.window, margin=config.margin, enabled=config.enabled
        )
        self.summary = BatchSummary(total=total)
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._reset()

    def _reset(self) -> None:
        self._stopping = False
        self._fatal: BaseException | None = None
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = 0
        self._latency: float | None = None  # running estimate of submission-to-terminal time
        self._submits: set[asyncio.Task[None]] = set()
        self._checks: set[asyncio.Task[None]] = set()
        self._wire: set[asyncio.Task[Any]] = set()
        self._pause_until: dict[str, float] = {}
        self._queued_evidence: tuple[float, float] | None = None  # (entered, seen) of a job IN_QUEUE
        self._fed_all = False
        self._left_over = 0  # items read but not submitted because of a stop: the next run sends them

        self._by_id: dict[str, _Job] = {}
        self._signer: Any = None

    def __repr__(self) -> str:
        return f"BatchRunner({self.endpoint_id!r}, journal={str(self.journal_path)!r})"

    # -- public entry points -----------------------------------------------------------------------------

    def run(self, inputs: Iterable[Any]) -> BatchSummary:
        """Run the batch to the end (or until ``stop()``); see ``arun``. Ctrl-C stops it like ``stop()``
        (requests on the wire finish and are journaled), then raises KeyboardInterrupt."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(inputs))
        raise RuntimeError(
            "BatchRunner.run() cannot run inside an event loop (a notebook, an async app): "
            "use `await runner.arun(inputs)`"
        )

    def stop(self) -> None:
        """Stop submitting, let requests on the wire finish, leave the journal ready to resume.

        Safe from any thread and from a signal handler; ``run``/``arun`` then return with
        ``summary.interrupted`` set. Jobs already submitted keep running on the endpoint.
        """
        self._stop_requested = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_stop)

    def results(self) -> Iterator[BatchResult]:
        """Every journaled result, in input order (reads the journal; usable after a run)."""
        journal = jn.Journal(self.journal_path, endpoint_id=self.endpoint_id)
        try:
            for line in journal.results():
                yield BatchResult.from_dict(json.loads(line))
        finally:
            journal.close()

    async def arun(self, inputs: Iterable[Any]) -> BatchSummary:
        """Run the batch in the current event loop and return its summary.

        Raises ``JournalError`` for a journal of another endpoint, and the API error (``AuthenticationError``,
        ``NotFoundError`` for an unknown endpoint, ``APIConnectionError`` ...) when the endpoint cannot be
        used at all; the journal is left consistent either way. Cancelling the task behaves like ``stop()``
        followed by re-raising the cancellation.
        """
        self._reset()
        self._loop = asyncio.get_running_loop()
        self.summary = summary = BatchSummary(total=self.total)
        started = time.monotonic()
        self._in_flight_changed = asyncio.Event()
        self._wake = asyncio.Event()
        try:
            async with AsyncClient(
                self._api_key,
                base_url=self._base_url,
                timeout=self._timeout,
                retries=Retries.off(),  # every retry is decided here, where the journal is
                rate_limits=self._client_limits,
                max_connections=max(100, self._poll_concurrency * 2),
            ) as client:
                self._ep = client.endpoint(self.endpoint_id)
                self._run_limiter = AsyncLimiter(self._run_limits)
                await self._check_endpoint()  # before the journal exists: a typo leaves no files behind
                self._journal = jn.Journal(self.journal_path, endpoint_id=self.endpoint_id)
                try:
                    await self._run_journaled(inputs, started)
                finally:
                    self._journal.close()
            if self._fatal is not None:
                raise self._fatal
        finally:
            summary.elapsed = time.monotonic() - started
            unfinished = not self._fed_all or summary.in_flight > 0 or self._left_over > 0
            summary.interrupted = unfinished and (summary.interrupted or self._stop_requested)
            self._loop = None
            self._stop_requested = False
            self._emit_progress()
        return copy.copy(summary)

    async def _run_journaled(self, inputs: Iterable[Any], started: float) -> None:
        summary, journal = self.summary, self._journal
        out = self.output_path
        if out is not None and out.exists() and out.stat().st_size > 0 and not journal.counts():
            raise jn.JournalError(
                f"{out} already has results but the journal {self.journal_path} is new: pass the "
                "journal that produced them, or move the file away"
            )
        # Before anything is counted or written: a --listen address that is taken fails the run cleanly.
        receiver = await self._start_receiver() if self.webhook_url is not None else None
        journal.begin_run()
        self._count_finished(journal.final_counts())
        summary.reused = summary.finished
        self._output = _Output(out, journal, self._on_result)
        try:
            self._output.open()
        except BaseException:
            if receiver is not None:
                await receiver.stop()
            raise
        ticker = asyncio.create_task(self._tick(started))
        try:
            self._resume_submitted()
            if self._stop_requested:
                self._begin_stop()
            dispatcher = asyncio.create_task(self._dispatch())
            try:
                await self._feed(inputs)
                while summary.in_flight > 0 and not self._stopping:
                    self._in_flight_changed.clear()
                    await self._in_flight_changed.wait()
            except BaseException:
                summary.interrupted = True
                raise
            finally:
                self._begin_stop()
                await self._drain(dispatcher)
        finally:
            ticker.cancel()
            if receiver is not None:
                await receiver.stop()
            self._output.close()

    # -- feeding and submitting --------------------------------------------------------------------------

    async def _check_endpoint(self) -> None:
        """One health call before anything is sent: a wrong key or endpoint id fails the batch at once."""
        for attempt in range(1, 4):
            try:
                await self._ep.health()
                return
            except (APIConnectionError, ServerError, RateLimitError):
                if attempt == 3:
                    raise
                await asyncio.sleep(backoff_delay(self._backoff, attempt, None, self._rng))

    def _warn(self, message: str) -> None:
        if self._on_warning is not None:
            self._on_warning(message)
        else:
            log.warning("%s", message)

    def _count_finished(self, counts: dict[str, int]) -> None:
        s = self.summary
        for status, n in counts.items():
            if status == "COMPLETED":
                s.completed += n
            elif status in ("FAILED", "TIMED_OUT", "CANCELLED"):
                s.failed += n
            elif status == "LOST":
                s.lost += n
            elif status == "INVALID":
                s.invalid += n
            elif status == "REJECTED":
                s.rejected += n

    def _resume_submitted(self) -> None:
        """Jobs an earlier run submitted: polled first, oldest first (they are nearest to expiring)."""
        now_mono, now_wall = time.monotonic(), time.time()
        for row in self._journal.in_state(jn.SUBMITTED):
            assert row.job_id is not None
            age = max(0.0, now_wall - (row.submitted_at or now_wall))
            job = _Job(row.key, row.line, row.job_id, max(1, row.attempts), now_mono - age)
            self._by_id[job.job_id] = job
            self._push(job, now_mono)
            self.summary.resumed += 1
            self.summary.in_flight += 1

    async def _feed(self, inputs: Iterable[Any]) -> None:
        s = self.summary
        journal = self._journal
        for line, raw in enumerate(inputs, 1):
            if self._stopping:
                return
            item = parse_item(raw, line)
            if item is _SKIP:
                continue
            s.read += 1
            if isinstance(item, _Invalid):
                key = key_text(line)
                row = journal.get(key)
                if row is not None and row.seen == journal.run:
                    self._duplicate(line, key, row.line)
                elif row is not None:
                    journal.see(key, line)  # recorded by an earlier run
                else:
                    self._warn(f"line {line}: malformed input, recorded as INVALID: {item.message}")
                    invalid = BatchResult(line, None, "INVALID", error=f"line {line}: {item.message}")
                    self._record(key, line, invalid)
                continue
            assert isinstance(item, tuple)
            key_value, payload = item
            key = key_text(key_value)
            row = journal.get(key)
            if row is not None and row.seen == journal.run:
                self._duplicate(line, key, row.line)
                continue
            if row is not None:
                journal.see(key, line)
            if row is not None and row.state in (jn.SUBMITTED, jn.TERMINAL):
                continue  # being collected, or done: never sent again
            if row is not None and row.state == jn.SUBMITTING:
                s.ambiguous += 1
                self._warn(
                    f"line {line} (key {key}): an earlier run was stopped while submitting it, before its "
                    "job id was recorded; submitting it again (it may run twice)"
                )
            elif row is None:
                journal.add_pending(key, line)
            while s.in_flight >= self.max_in_flight and not self._stopping:
                self._in_flight_changed.clear()
                await self._in_flight_changed.wait()
            if self._stopping:
                return
            s.in_flight += 1
            s.waiting += 1
            task = asyncio.create_task(self._guarded_submit(key, line, payload))
            self._submits.add(task)
            task.add_done_callback(self._submits.discard)
            if s.read % 256 == 0:
                await asyncio.sleep(0)  # let results flow while a long input streams in
        self._fed_all = True

    def _duplicate(self, line: int, key: str, first: int) -> None:
        self.summary.duplicates += 1
        self._warn(f"line {line}: key {key} was already used on line {first}; line skipped")

    async def _guarded_submit(self, key: str, line: int, payload: Any) -> None:
        try:
            await self._submit(key, line, payload)
        except Exception as exc:  # a bug or a failing callback: stop cleanly and report it
            self._fail_batch(exc)
        finally:
            self.summary.waiting -= 1

    async def _submit(self, key: str, line: int, payload: Any) -> None:
        s = self.summary
        attempt = 0
        try:
            while True:
                await self._paused("run")
                window = await self._run_limiter.acquire(self.endpoint_id, "run")
                try:
                    if self._stopping:
                        self._left_over += 1
                        self._released()
                        return  # stays pending: the next run submits it
                    attempt += 1
                    self._journal.submitting(key, line)
                    s.run_calls += 1
                    with self._on_the_wire():
                        webhook = None if self._signer is None else self._signer.sign(self.webhook_url)
                        job = await self._ep.run(payload, policy=self.policy, webhook=webhook)
                except (ValueError, TypeError, BadRequestError, PayloadTooLargeError) as exc:
                    s.rejected += 1
                    self._finish(key, line, BatchResult(json.loads(key), None, "REJECTED", error=str(exc)))
                    return
                except (AuthenticationError, PermissionDeniedError, NotFoundError) as exc:
                    self._fail_batch(exc)
                    self._released()
                    return
                except RunpodQueueError as exc:
                    delay = self._submit_error(exc, key, line, attempt)
                    self._run_limiter.release(window)
                    window = None
                    await asyncio.sleep(delay)
                    continue
                finally:
                    if window is not None:
                        self._run_limiter.release(window)
                self._journal.submitted(key, job.id, time.time())
                s.submitted += 1
                now = time.monotonic()
                watched = self._by_id[job.id] = _Job(key, line, job.id, 1, now)
                self._push(watched, now + self._first_gap())
                return
        except asyncio.CancelledError:
            # Cancelled while waiting (a stop): the row stays pending or submitting, resolved on resume.
            self._left_over += 1
            self._released()
            raise

    def _submit_error(self, exc: RunpodQueueError, key: str, line: int, attempt: int) -> float:
        """Classify a failed /run; returns the pause before sending it again."""
        s = self.summary
        retry_after: float | None = None
        if isinstance(exc, RateLimitError):
            s.rate_limited += 1
            retry_after = exc.retry_after
            self._pause("run", retry_after)
        elif isinstance(exc, ServerError) and exc.status_code == 503:
            s.transient_errors += 1  # refused before it was accepted
        elif isinstance(exc, APIConnectionError) and not exc.sent:
            s.transient_errors += 1
        elif isinstance(exc, APIConnectionError | ServerError | APIResponseError | APIStatusError):
            # The server may have created the job, and RunPod has no idempotency key: resubmitting is the
            # only way to get a result, at the risk of running it twice.
            s.transient_errors += 1
            s.ambiguous += 1
            self._warn(
                f"line {line} (key {key}): no job id came back ({exc}); submitting again (it may run twice)"
            )
        return backoff_delay(self._backoff, min(attempt, 8), retry_after, self._rng)

    def _pause(self, op: str, retry_after: float | None) -> None:
        """A 429 despite the limiter (another client on the same key?): every request of that operation
        waits, instead of each queued one collecting its own 429."""
        pause = min(self._backoff.max_retry_after, retry_after if retry_after is not None else 1.0)
        until = time.monotonic() + pause
        self._pause_until[op] = max(self._pause_until.get(op, 0.0), until)

    async def _paused(self, op: str) -> None:
        while (wait := self._pause_until.get(op, 0.0) - time.monotonic()) > 0:  # noqa: ASYNC110 - may grow
            await asyncio.sleep(wait)

    def _released(self) -> None:
        self.summary.in_flight -= 1
        self._in_flight_changed.set()

    # -- polling -----------------------------------------------------------------------------------------

    def _implied_queued(self, job: _Job, now: float) -> bool:
        """The queue is first in, first out: a job that entered after one seen IN_QUEUE more recently than
        this job's own last check is still queued too — reschedule it without spending a status call.

        With a backlog (thousands submitted at once, few workers) this keeps polling on the queue's front
        instead of on jobs that cannot have started; a wrong guess only delays one check by one interval.
        """
        evidence = self._queued_evidence
        if evidence is None or (job.status is not JobStatus.IN_QUEUE and job.checked > 0):
            return False
        entered, seen = evidence
        if job.since <= entered or seen <= job.checked:
            return False
        due = seen + self._gap(job, seen)
        if due <= now:
            return False
        job.checked = seen
        self._set_status(job, JobStatus.IN_QUEUE)
        self._push(job, due)
        return True

    def _late(self) -> float:
        """With webhooks: how long a job may go without a delivery before it is polled."""
        usual = 0.0 if self._latency is None else 2 * self._latency
        return max(self._webhook_grace, usual)

    def _first_gap(self) -> float:
        """First status check after submission: a little before jobs have been taking to finish."""
        if self._signer is not None:
            return self._late()
        if self._latency is None:
            return self._min_gap
        return min(self._max_gap, max(self._min_gap, 0.8 * self._latency))

    def _gap(self, job: _Job, now: float) -> float:
        """Later checks: half the job's age, so a long job costs a few calls, not one per interval."""
        gap = min(self._max_gap, max(self._min_gap, 0.5 * (now - job.since)))
        return max(gap, self._late()) if self._signer is not None else gap

    def _push(self, job: _Job, due: float) -> None:
        self._seq += 1
        job.due_seq = self._seq
        heapq.heappush(self._heap, (due, self._seq, job))
        self._wake.set()

    async def _next_due(self) -> _Job | None:
        while not self._stopping:
            timeout: float | None = None
            if self._heap:
                due = self._heap[0][0]
                now = time.monotonic()
                if due <= now:
                    _, seq, job = heapq.heappop(self._heap)
                    if job.done or seq != job.due_seq:
                        continue  # finished by a webhook, or rescheduled since
                    if self._implied_queued(job, now):
                        continue
                    return job
                timeout = due - now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        return None

    async def _dispatch(self) -> None:
        """Hand the most overdue job to a status check whenever one of ``poll_concurrency`` slots is free.

        One waiter on the heap (not one per slot), so a push wakes one task, not the whole pool.
        """
        slots = asyncio.Semaphore(self._poll_concurrency)
        while True:
            await slots.acquire()
            await self._paused("status")
            job = await self._next_due()
            if job is None:
                slots.release()
                return
            task = asyncio.create_task(self._guarded_check(job))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _guarded_check(self, job: _Job) -> None:
        try:
            await self._check(job)
        except _Fatal:
            pass
        except Exception as exc:  # a bug or a failing on_result callback: stop cleanly, report it
            self._fail_batch(exc)

    async def _check(self, job: _Job) -> None:
        s = self.summary
        job.checking = True
        try:
            snapshot = await self._ep.status(job.job_id)
        except RunpodQueueError as exc:
            s.status_calls += 1
            if not job.done:
                self._check_failed(job, exc)
            return
        finally:
            job.checking = False
        s.status_calls += 1
        if job.done:
            return  # a webhook delivered its result while we asked
        job.failures = 0
        now = time.monotonic()
        job.checked = now
        if not snapshot.is_terminal:
            self._set_status(job, snapshot.status)
            if snapshot.status is JobStatus.IN_QUEUE:
                self._queued_evidence = (job.since, now)
            self._push(job, now + self._gap(job, now))
            return
        self._set_status(job, None)
        self._learn_latency(job, snapshot)
        if snapshot.status in (JobStatus.FAILED, JobStatus.TIMED_OUT) and job.attempts <= self.retries:
            if self._stopping:
                return  # the next run sees the failure again and retries it
            await self._retry(job)
            return
        self._finish_job(job, snapshot)

    def _learn_latency(self, job: _Job, snapshot: Job) -> None:
        """How long jobs take from submission to their end, for the first check of the next ones.

        RunPod's own delayTime + executionTime when present: what we observe is inflated by our polling
        interval, and an estimate built on it would only ever grow."""
        if snapshot.delay_time is not None and snapshot.execution_time is not None:
            sample = snapshot.delay_time + snapshot.execution_time
        else:
            sample = time.monotonic() - job.since
        self._latency = sample if self._latency is None else 0.9 * self._latency + 0.1 * sample

    def _check_failed(self, job: _Job, error: RunpodQueueError) -> None:
        if isinstance(error, NotFoundError):
            self._lost(job)
        elif isinstance(error, AuthenticationError | PermissionDeniedError):
            self._fail_batch(error)
            self._push(job, time.monotonic())  # stays submitted in the journal; the next run collects it
            raise _Fatal from error
        else:
            self._transient(job, error)

    def _transient(self, job: _Job, exc: BaseException) -> None:
        s = self.summary
        if isinstance(exc, RateLimitError):
            s.rate_limited += 1
            self._pause("status", exc.retry_after)
        else:
            s.transient_errors += 1
        job.failures += 1
        retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
        delay = backoff_delay(self._backoff, min(job.failures, 8), retry_after, self._rng)
        self._push(job, time.monotonic() + max(delay, self._min_gap))

    async def _retry(self, job: _Job) -> None:
        self._journal.retrying(job.key)
        job.attempts += 1
        try:
            with self._on_the_wire():
                await self._ep.retry(job.job_id)
        except BadRequestError:
            pass  # no longer FAILED/TIMED_OUT: an earlier /retry whose answer was lost already took
        except NotFoundError:
            self._lost(job)
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._fail_batch(exc)
            raise _Fatal from exc
        except RunpodQueueError as exc:
            unsent = (
                isinstance(exc, RateLimitError)
                or (isinstance(exc, ServerError) and exc.status_code == 503)
                or (isinstance(exc, APIConnectionError) and not exc.sent)
            )
            if unsent:  # the retry certainly did not happen: it does not count
                self._journal.retry_unsent(job.key)
                job.attempts -= 1
            else:  # it may have happened: the next status check tells (a second /retry answers 400)
                self.summary.retried += 1
            self._transient(job, exc)
            return
        self.summary.retried += 1
        now = job.since = time.monotonic()
        self._push(job, now + self._first_gap())

    def _set_status(self, job: _Job, status: JobStatus | None) -> None:
        s = self.summary
        if job.status is JobStatus.IN_QUEUE:
            s.in_queue -= 1
        elif job.status is JobStatus.IN_PROGRESS:
            s.in_progress -= 1
        if status is JobStatus.IN_QUEUE:
            s.in_queue += 1
        elif status is JobStatus.IN_PROGRESS:
            s.in_progress += 1
        job.status = status

    def _lost(self, job: _Job) -> None:
        job.done = True
        self._by_id.pop(job.job_id, None)
        self._set_status(job, None)
        self.summary.lost += 1
        message = (
            f"job {job.job_id} was gone (404) when collected: RunPod keeps a result 30 minutes after the job "
            "ends (and removes a job whose ttl ran out), and it expired before this batch fetched it"
        )
        self._warn(f"line {job.line} (key {job.key}): lost to retention: {message}")
        result = BatchResult(json.loads(job.key), job.job_id, "LOST", error=message, attempts=job.attempts)
        self._finish(job.key, job.line, result)

    def _finish_job(self, job: _Job, snapshot: Job) -> None:
        job.done = True
        self._by_id.pop(job.job_id, None)
        s = self.summary
        if snapshot.status is JobStatus.COMPLETED:
            s.completed += 1
        else:
            s.failed += 1
        result = BatchResult(
            json.loads(job.key),
            job.job_id,
            snapshot.status.value,
            output=snapshot.output,
            error=snapshot.error,
            delay_time=snapshot.raw.get("delayTime"),
            execution_time=snapshot.raw.get("executionTime"),
            attempts=job.attempts,
        )
        self._finish(job.key, job.line, result)

    def _record(self, key: str, line: int, result: BatchResult) -> None:
        """A result for an item that was never in flight (a malformed line)."""
        self.summary.invalid += 1
        text = result.to_json()
        self._journal.terminal(key, line, result.status, text)
        self._output.deliver(key, text)
        self.summary.done_this_run += 1

    def _finish(self, key: str, line: int, result: BatchResult) -> None:
        text = result.to_json()
        self._journal.terminal(key, line, result.status, text)  # journal first: the file follows it
        self._output.deliver(key, text)
        self.summary.done_this_run += 1
        self._released()

    # -- webhooks ----------------------------------------------------------------------------------------

    async def _start_receiver(self) -> _Receiver:
        """Sign every submission and take deliveries on this loop. The secret is kept in the journal, so
        jobs submitted before a restart still verify after it."""
        import secrets

        from runpod_queue.webhooks import WebhookReceiver, WebhookSigner

        secret = self._webhook_secret or self._journal.meta("webhook_secret")
        if secret is None:
            secret = secrets.token_urlsafe(32)
            self._journal.set_meta("webhook_secret", secret)
        self._signer = WebhookSigner(secret)
        receiver = WebhookReceiver(self._signer, self._on_delivery)
        assert self.listen is not None
        server = _Receiver(receiver, *self.listen)
        await server.start()
        return server

    async def _on_delivery(self, snapshot: Job) -> None:
        """A verified delivery (called once per job id and status by the receiver)."""
        self.summary.webhook_deliveries += 1
        job = self._by_id.get(snapshot.id)
        if job is None or job.done or not snapshot.is_terminal:
            return
        if snapshot.status is JobStatus.COMPLETED:
            # Final: a COMPLETED job is never retried, so this cannot be a late word on an older attempt.
            self._set_status(job, None)
            self._learn_latency(job, snapshot)
            self._finish_job(job, snapshot)
        elif not job.checking:
            self._push(job, time.monotonic())  # the status check decides: /retry or record

    # -- stopping and progress ---------------------------------------------------------------------------

    def _fail_batch(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._begin_stop()

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._wake.set()
            self._in_flight_changed.set()

    @contextlib.contextmanager
    def _on_the_wire(self) -> Iterator[None]:
        """Marks a request whose answer must be journaled (/run, /retry): a stop waits for it."""
        task = asyncio.current_task()
        assert task is not None
        self._wire.add(task)
        try:
            yield
        finally:
            self._wire.discard(task)

    async def _drain(self, dispatcher: asyncio.Task[None]) -> None:
        """After a stop: requests on the wire finish (their answers get journaled); everything else — waits
        for a rate-limit slot, status checks, which only read — is cancelled at once."""
        tasks = [dispatcher, *self._submits, *self._checks]
        for task in tasks:
            if task not in self._wire:
                task.cancel()
        on_wire = [task for task in tasks if task in self._wire]
        if on_wire:
            await asyncio.wait(on_wire, timeout=self._timeout + 5)
        for task in on_wire:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _tick(self, started: float) -> None:
        while True:
            await asyncio.sleep(self._progress_interval)
            self.summary.elapsed = time.monotonic() - started
            self._output.flush_marks()
            self._emit_progress()

    def _emit_progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(copy.copy(self.summary))
