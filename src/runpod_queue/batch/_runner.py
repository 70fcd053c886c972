"""The durable batch runner: every input through one endpoint, every result back, nothing paid twice.

Shape (one event loop), one module per part:

* a **feeder** (here) streams the inputs (``inputs.parse_item``, never loading them), checks each key
  against the ``journal`` and starts a submit task while fewer than ``max_in_flight`` items are between
  submission and result;
* each **submit** task (``submit.py``) takes a ``/run`` slot from the runner's own limiter, *then*
  journals ``submitting``, sends, and journals the job id;
* one **dispatcher** (``collect.py``) hands due jobs from the pure ``schedule`` to status checks, sends
  FAILED/TIMED_OUT jobs to ``/retry``, and takes webhook deliveries from the ``receiver``;
* results go to the journal first, then to the ``output`` file.

The runner sends through the user's own endpoint with the client's transport retries switched off
(``with_options(retries=Retries.off())``): every resend is decided here, where the journal is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import hashlib
import hmac
import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from runpod_queue._aio import AsyncClient, AsyncEndpoint
from runpod_queue._client import Endpoint
from runpod_queue._limits import AsyncLimiter, RateLimits
from runpod_queue._models import Policy
from runpod_queue._retry import Retries, backoff_delay
from runpod_queue._storage import async_store
from runpod_queue._units import Duration, seconds
from runpod_queue.batch._collect import Collector
from runpod_queue.batch._inputs import SKIP, Invalid, parse_item
from runpod_queue.batch._journal import ItemState, Journal
from runpod_queue.batch._options import PollOptions, WebhookOptions
from runpod_queue.batch._output import OutputFile, drop_lines
from runpod_queue.batch._receiver import ReceiverServer
from runpod_queue.batch._schedule import Schedule, Watched
from runpod_queue.batch._state import RunConfig, RunState
from runpod_queue.batch._submit import runner_limits, submit
from runpod_queue.batch._types import BatchResult, BatchSummary, ItemStatus, count_finished, key_text
from runpod_queue.batch._uploads import BatchUploads
from runpod_queue.batch._warm import Warm
from runpod_queue.errors import APIConnectionError, JournalError, RateLimitError, ServerError

__all__ = ["BatchRunner"]

_HEALTH_ATTEMPTS = 3
# Connections of a sync Endpoint's engine client at most: RunPod's 200 /run in flight, the default 64
# checks and 256 held long-polls, under the common 1024 open-file limit (with limits off, more would only
# queue in the pool).
_MAX_ENGINE_CONNECTIONS = 600
# Final statuses the summary counts as ``failed``: the job ran (or was asked to) and gave no output.


def _size(path: Path | None) -> int | None:
    """A file's size, None when it does not exist (or no path)."""
    try:
        return None if path is None else path.stat().st_size
    except FileNotFoundError:
        return None


class BatchRunner:
    """Push every input through one endpoint and collect every result, durably.

    ```python
    with Client() as client:
        runner = BatchRunner(client.endpoint("abc123"), journal="run.journal", output="results.jsonl")
        summary = runner.run(open("prompts.jsonl"))
    # asyncio: async with AsyncClient() as client: ... await runner.arun(items)
    ```

    Running again with the same journal and inputs resumes: journaled jobs are collected, not
    resubmitted, and journaled results are not fetched again.

    Args:
        endpoint: An ``Endpoint`` (``run()`` or ``arun()``; the async engine gets a client of its own built
            from the same settings) or an ``AsyncEndpoint`` (``arun()`` only: its connections belong to
            its event loop). Its client supplies the key, base URL, timeout and the backoff timing of the
            runner's own resends; its transport retries are switched off for the batch.
        journal: The SQLite file that makes the run resumable (created when missing).
        output: A JSON-lines file, one line per item, appended as results arrive and valid after any
            kill; ``None`` keeps them in the journal only (``results()`` reads them).
        max_in_flight: Items between being read and their result (waiting for a ``/run`` slot or
            running), at most.
        retry_failed: How many times a FAILED or TIMED_OUT job is sent to ``/retry``.
        policy: The execution policy every job is submitted with.
        rate_limits: The limits the runner keeps to (the client's own, where stricter, still apply).
        polling: How results are collected by status checks.
        webhooks: Collect results from webhook deliveries instead, polling only late jobs.
        total: How many inputs to expect, for the progress display's ETA.
        on_result: Sees each result once, as it is written.
        on_progress: Sees a copy of the summary at the start and every ``progress_interval`` seconds.
        on_warning: Sees one line per malformed, duplicate, ambiguous or lost item (default: the
            ``runpod_queue.batch`` logger).
        progress_interval: Seconds between ``on_progress`` calls.
        resubmit_lost: Submit anew the items an earlier run recorded LOST (their job may have run: they
            are counted in ``summary.ambiguous`` and ``resubmitted_lost``).
        warm: Raise the endpoint's ``workersMin`` to this many workers for the run (RunPod's management
            API, same key), so they cold-start once instead of the batch waiting for the scaler; the
            previous value is journaled first and put back when the run ends — after Ctrl-C and errors
            too, and after a crash by the next run on the journal. ``None`` leaves the endpoint alone.
        native: Send the inputs through RunPod's Batch Jobs (batches of up to 5,000, at most 10 active)
            instead of ``/run``; the handler must be wrapped with ``runpod_queue.worker.keep_key``.
            ``retry_failed`` then re-sends FAILED items in a later batch; ``policy``, ``webhooks`` and
            ``max_in_flight`` do not apply (see docs/batch-jobs.md, "rpq batch --native").

    Raises:
        TypeError: ``endpoint`` is not an ``Endpoint`` or ``AsyncEndpoint``, or an option has the wrong type.
        ValueError: ``max_in_flight``, ``retry_failed`` or ``warm`` out of range, or ``native`` with
            ``webhooks``, ``policy`` or ``warm``.
    """

    def __init__(
        self,
        endpoint: Endpoint | AsyncEndpoint,
        *,
        journal: str | os.PathLike[str],
        output: str | os.PathLike[str] | None = None,
        max_in_flight: int = 1000,
        retry_failed: int = 2,
        policy: Policy | None = None,
        rate_limits: RateLimits = RateLimits.runpod(),  # noqa: B008 - frozen, never mutated
        polling: PollOptions = PollOptions(),  # noqa: B008 - frozen, never mutated
        webhooks: WebhookOptions | None = None,
        total: int | None = None,
        on_result: Callable[[BatchResult], object] | None = None,
        on_progress: Callable[[BatchSummary], object] | None = None,
        on_warning: Callable[[str], object] | None = None,
        progress_interval: Duration = 0.25,
        resubmit_lost: bool = False,
        warm: int | None = None,
        native: bool = False,
    ) -> None:
        if not isinstance(endpoint, Endpoint | AsyncEndpoint):
            raise TypeError(
                "BatchRunner takes the endpoint of a client you made, e.g. "
                f"BatchRunner(Client().endpoint('abc123'), journal=...); got {type(endpoint).__name__}"
            )
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if isinstance(retry_failed, bool) or not isinstance(retry_failed, int) or retry_failed < 0:
            raise ValueError(f"retry_failed must be an integer >= 0, got {retry_failed!r}")
        for name, value, kind in (
            ("policy", policy, Policy),
            ("rate_limits", rate_limits, RateLimits),
            ("polling", polling, PollOptions),
            ("webhooks", webhooks, WebhookOptions),
        ):
            if not isinstance(value, kind) and not (value is None and name in ("policy", "webhooks")):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if native and (webhooks is not None or policy is not None):
            which = "webhooks" if webhooks is not None else "policy"
            raise ValueError(
                f"native=True sends Batch Jobs requests, which take no {which}: drop {which}= (or native=)"
            )
        self.endpoint: Endpoint | AsyncEndpoint = endpoint
        self.journal_path: Path = Path(journal)
        self.output_path: Path | None = None if output is None else Path(output)
        self.max_in_flight: int = max_in_flight
        self.retry_failed: int = retry_failed
        self.resubmit_lost: bool = bool(resubmit_lost)
        if warm is not None and (isinstance(warm, bool) or not isinstance(warm, int) or warm < 1):
            raise ValueError(f"warm must be an integer >= 1 (workers kept running for the run), got {warm!r}")
        if warm is not None and native:
            # Batch Jobs run on RunPod's separate batch capacity, not on the endpoint's kept-warm workers.
            raise ValueError("warm= raises the /run workers' minimum; native=True batches do not use it")
        self.warm: int | None = warm
        self.native: bool = bool(native)
        self.policy: Policy | None = policy
        self.rate_limits: RateLimits = rate_limits
        self.polling: PollOptions = polling
        self.webhooks: WebhookOptions | None = webhooks
        self.total: int | None = total
        self._on_result = on_result
        self._on_progress = on_progress
        self._on_warning = on_warning
        self._progress_interval = seconds(progress_interval, "progress_interval", low=0.001)
        self._summary = BatchSummary(total=total)
        self._run: RunState | None = None
        self._receiver: ReceiverServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"BatchRunner({self.endpoint!r}, journal={str(self.journal_path)!r})"

    @property
    def summary(self) -> BatchSummary:
        """The live counts of the current (or last) run."""
        run = self._run
        if run is not None:
            self._summary.in_queue = run.schedule.in_queue
            self._summary.in_progress = run.schedule.in_progress
        return self._summary

    @property
    def webhook_address(self) -> tuple[str, int] | None:
        """(host, port) the webhook receiver listens on, once it does (port 0 in ``listen`` picks one)."""
        return None if self._receiver is None else self._receiver.address

    # -- public entry points -----------------------------------------------------------------------

    def run(self, inputs: Iterable[Any]) -> BatchSummary:
        """Run the batch to the end, or until ``stop()``, and return its summary.

        Ctrl-C stops it like ``stop()`` (requests on the wire finish and are journaled), then raises
        KeyboardInterrupt.

        Args:
            inputs: Any iterable of JSON lines, dicts or ``(key, input)`` tuples, read lazily (an open
                ``.jsonl`` file works as it is).

        Returns:
            The counts of the whole batch, earlier runs included.

        Raises:
            RuntimeError: Called with an ``AsyncEndpoint`` or inside a running event loop (use ``arun``).
            JournalError: The journal belongs to another endpoint or is not a journal.
            ConfigurationError: ``warm`` is above the endpoint's max workers.
            APIStatusError: The endpoint cannot be used at all (``AuthenticationError``, ``NotFoundError``).
            APIConnectionError: The endpoint cannot be reached.
        """
        if isinstance(self.endpoint, AsyncEndpoint):
            raise RuntimeError(
                "BatchRunner.run() needs a sync Endpoint: an AsyncEndpoint's connections belong to the "
                "event loop it runs in. Use `await runner.arun(inputs)` there"
            )
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
        loop, run = self._loop, self._run
        if loop is not None and run is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just closed: the run is over
                loop.call_soon_threadsafe(run.begin_stop)

    def results(self) -> Iterator[BatchResult]:
        """Every journaled result, in input order (reads the journal; usable after a run)."""
        journal = Journal(self.journal_path, endpoint_id=self.endpoint.id)
        try:
            for line in journal.results():
                yield BatchResult.from_dict(json.loads(line))
        finally:
            journal.close()

    async def arun(self, inputs: Iterable[Any]) -> BatchSummary:
        """Run the batch in the current event loop and return its summary.

        The journal is left consistent whatever happens. Cancelling the task behaves like ``stop()``
        followed by re-raising the cancellation.

        Args:
            inputs: Any iterable of JSON lines, dicts or ``(key, input)`` tuples, read lazily.

        Returns:
            The counts of the whole batch, earlier runs included.

        Raises:
            JournalError: The journal belongs to another endpoint or is not a journal.
            ConfigurationError: ``warm`` is above the endpoint's max workers.
            APIStatusError: The endpoint cannot be used at all (``AuthenticationError``, ``NotFoundError``).
            APIConnectionError: The endpoint cannot be reached.
        """
        if self.native:  # RunPod's Batch Jobs: batch/_native.py
            from runpod_queue.batch._native import run_native

            return await run_native(self, inputs)
        self._loop = asyncio.get_running_loop()
        self._summary = summary = BatchSummary(total=self.total)
        self._run = None
        self._receiver = None
        started = time.monotonic()
        settings = self.endpoint.client._settings
        limits = runner_limits(self.rate_limits, settings.rate_limits)
        client, owned = self._engine_client(limits)
        run: RunState | None = None
        journal_existed = self.journal_path.exists()
        output_size = _size(self.output_path)
        try:
            endpoint = client.endpoint(self.endpoint.id)
            limiter = AsyncLimiter(limits)
            await self._check_endpoint(endpoint, settings.retries)  # a typo leaves no files behind
            journal = Journal(self.journal_path, endpoint_id=self.endpoint.id)
            if journal.meta("mode") == "native":
                journal.close()
                raise JournalError(
                    f"{self.journal_path} journals a native batch (Batch Jobs): resume it with --native "
                    "(native=True), or pass another --journal"
                )
            refused = False
            try:
                config = RunConfig(
                    max_in_flight=self.max_in_flight,
                    retry_failed=self.retry_failed,
                    policy=self.policy,
                    poll_concurrency=self.polling.concurrency,
                    long_polls=self._long_polls(limits, client),
                    hold=self.polling.hold,
                    backoff=settings.retries,
                    request_timeout=settings.timeout,
                    on_warning=self._on_warning,
                )
                wake = asyncio.Event()
                self._run = run = RunState(
                    config,
                    endpoint=endpoint,
                    limiter=limiter,
                    journal=journal,
                    output=OutputFile(self.output_path, journal, self._on_result),
                    schedule=self._schedule(wake.set),
                    summary=summary,
                    wake=wake,
                )
                run.uploads = BatchUploads(journal, async_store(self.endpoint.client._store))
                warm = Warm(client, settings.retries, self.endpoint.id, journal, self.warm, run.warn)
                async with warm:  # workersMin raised for the run, put back after it (batch/_warm.py)
                    await self._run_journaled(run, inputs, started)
                refused = run.fatal is not None and not journal.reached_server()
            except Exception:
                refused = not journal.reached_server()
                raise
            finally:
                if run is not None:  # exact now: the live count only announced resends to come
                    summary.ambiguous = journal.ambiguous()
                journal.close()
                if refused and not journal_existed:
                    self._forget_refused_run(output_size)
            if run.fatal is not None:
                raise run.fatal
        finally:
            if owned is not None:
                await owned.aclose()
            summary.elapsed = time.monotonic() - started
            if run is not None:
                unfinished = not run.fed_all or summary.in_flight > 0 or run.left_over > 0
            else:
                unfinished = True
            summary.interrupted = unfinished and (summary.interrupted or self._stop_requested)
            self._loop = None
            self._stop_requested = False
            self._emit_progress()
        return copy.copy(self.summary)

    # -- the run -----------------------------------------------------------------------------------

    def _forget_refused_run(self, output_size: int | None) -> None:
        """A run refused before any job could exist (a bad key or endpoint, a --listen address taken, an
        output that cannot be written): the journal it created goes, and the output returns to how it
        was, so the corrected command starts clean. Nothing a job produced is ever removed."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.journal_path}{suffix}")
        out = self.output_path
        if out is None:
            return
        with contextlib.suppress(OSError):
            if output_size is None:
                out.unlink()
            elif out.stat().st_size > output_size:
                os.truncate(out, output_size)

    def _engine_client(self, limits: RateLimits) -> tuple[AsyncClient, AsyncClient | None]:
        """The async client the batch sends through, with transport retries off; and the one to close.

        An AsyncEndpoint's own client, sharing its pool, limiter and key. A sync Endpoint's pool and
        limiter belong to threads, not to an event loop: the engine gets a client of its own, with the
        same settings and a connection for every /run and status check the limits let go at once (a
        granted /run never waits for a connection after its ``submitting`` record).
        """
        if isinstance(self.endpoint, AsyncEndpoint):
            return self.endpoint.client.with_options(retries=Retries.off()), None
        settings = self.endpoint.client._settings
        run_limit = limits.limits.get("run") if limits.enabled else None
        runs = self.max_in_flight
        if run_limit is not None and run_limit.in_flight is not None:
            runs = min(runs, run_limit.in_flight)
        wanted = min(runs + self.polling.concurrency + self.polling.long_polls, _MAX_ENGINE_CONNECTIONS)
        engine = AsyncClient._from_settings(
            dataclasses.replace(
                settings, retries=Retries.off(), max_connections=max(settings.max_connections, wanted)
            )
        )
        return engine, engine

    def _long_polls(self, limits: RateLimits, client: AsyncClient) -> int:
        """Long-polls held at once: the option, under RunPod's in-flight cap for /status-sync, and at most
        half the pool — a held request keeps its connection, and /run and short checks need the rest."""
        cap = min(self.polling.long_polls, client._settings.max_connections // 2)
        limit = limits.limits.get("status-sync") if limits.enabled else None
        if limit is not None and limit.in_flight is not None:
            cap = min(cap, limit.in_flight)
        return cap

    def _schedule(self, on_due: Callable[[], object]) -> Schedule:
        return Schedule(
            min_interval=self.polling.min_interval,
            max_interval=self.polling.max_interval,
            late_after=None if self.webhooks is None else self.webhooks.grace,
            on_due=on_due,
        )

    async def _check_endpoint(self, endpoint: AsyncEndpoint, backoff: Retries) -> None:
        """One health call before anything is sent: a wrong key or endpoint id fails the batch at once."""
        rng = random.Random()
        for attempt in range(1, _HEALTH_ATTEMPTS + 1):
            try:
                await endpoint.health()
                return
            except (APIConnectionError, ServerError, RateLimitError):
                if attempt == _HEALTH_ATTEMPTS:
                    raise
                await asyncio.sleep(backoff_delay(backoff, attempt, None, rng))

    async def _run_journaled(self, run: RunState, inputs: Iterable[Any], started: float) -> None:
        summary, journal = run.summary, run.journal
        out = self.output_path
        if out is not None and out.exists() and out.stat().st_size > 0 and not journal.counts():
            raise JournalError(
                f"{out} already has results but the journal {self.journal_path} is new: pass the "
                "journal that produced them, or move the file away"
            )
        collector = Collector(run)
        # Before anything is counted or written: a --listen address that is taken fails the run cleanly.
        receiver = await self._start_receiver(run, collector) if self.webhooks is not None else None
        journal.begin_run()
        if self.resubmit_lost:
            self._reopen_lost(run)
        summary.ambiguous = journal.ambiguous()  # the journal's whole life, not only this run
        count_finished(summary, journal.final_counts())
        summary.reused = summary.finished
        try:
            run.output.open()
        except BaseException:
            if receiver is not None:
                await receiver.stop()
            raise
        self._emit_progress()
        ticker = asyncio.create_task(self._tick(run, started))
        submits: set[asyncio.Task[None]] = set()
        try:
            self._resume_submitted(run)
            if self._stop_requested:
                run.begin_stop()
            dispatcher = asyncio.create_task(collector.dispatch())
            try:
                await self._feed(run, inputs, submits)
                while summary.in_flight > 0 and not run.stopping:
                    run.in_flight_changed.clear()
                    await run.in_flight_changed.wait()
            except BaseException:
                summary.interrupted = True
                raise
            finally:
                run.begin_stop()
                await run.drain([dispatcher, *submits, *collector.checks])
        finally:
            ticker.cancel()
            if receiver is not None:
                await receiver.stop()
            run.output.close()

    async def _start_receiver(self, run: RunState, collector: Collector) -> ReceiverServer:
        """Sign every submission and take deliveries on this loop, with a secret a resumed run finds
        again, so jobs submitted before a restart still verify after it."""
        from runpod_queue.webhooks import WebhookReceiver, WebhookSigner

        options = self.webhooks
        assert options is not None
        secret = options.secret or self._journal_secret(run)
        run.signer = WebhookSigner(secret)
        receiver = WebhookReceiver(run.signer, collector.on_delivery)
        self._receiver = server = ReceiverServer(receiver, *options.listen)
        bound = await server.start()
        run.webhook_url = options.public_url(bound)
        return server

    def _journal_secret(self, run: RunState) -> str:
        """The signing secret when none is given, never written to the journal where it can be avoided.

        With an API key, the journal keeps only a random salt and the secret is HMAC(key, salt): a copied
        or world-readable journal signs nothing, and a resume (which needs the key anyway) derives the
        same secret. A journal written by an earlier version keeps its stored secret. Without a key (a
        keyless local emulator) there is nothing to derive from, so a random secret is stored.
        """
        stored = run.journal.meta("webhook_secret")
        if stored is not None:
            return stored
        key = self.endpoint.client._settings.api_key
        if not key:
            secret = secrets.token_urlsafe(32)
            run.journal.set_meta("webhook_secret", secret)
            return secret
        salt = run.journal.meta("webhook_salt")
        if salt is None:
            salt = secrets.token_urlsafe(32)
            run.journal.set_meta("webhook_salt", salt)
        digest = hmac.new(key.encode(), f"runpod-queue webhook secret {salt}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    @staticmethod
    def _reopen_lost(run: RunState) -> None:
        """LOST items become pending: their lines leave the output file first (atomically), then the
        journal reopens them; a kill between the two only puts the lines back on the next start."""
        keys = run.journal.lost_keys()
        if not keys:
            return
        if run.output.path is not None:
            drop_lines(run.output.path, set(keys))
        run.journal.reopen(keys)
        run.summary.resubmitted_lost = len(keys)
        run.warn(f"{len(keys)} items recorded LOST are submitted anew (each may run twice)")

    @staticmethod
    def _resume_submitted(run: RunState) -> None:
        """Jobs an earlier run submitted: polled first, oldest first (they are nearest to expiring)."""
        now_mono, now_wall = time.monotonic(), time.time()
        unconfirmed = run.journal.unconfirmed_retries()  # a kill around a /retry: settled by the first check
        for row in run.journal.in_state(ItemState.SUBMITTED):
            assert row.job_id is not None
            age = max(0.0, now_wall - (row.submitted_at or now_wall))
            job = Watched(row.key, row.line, row.job_id, max(1, row.attempts), now_mono - age)
            job.retry_for = unconfirmed.get(row.key)
            run.by_id[job.job_id] = job
            run.schedule.at(job, now_mono)
            run.summary.resumed += 1
            run.summary.in_flight += 1

    async def _feed(self, run: RunState, inputs: Iterable[Any], submits: set[asyncio.Task[None]]) -> None:
        s, journal = run.summary, run.journal
        for line, raw in enumerate(inputs, 1):
            if run.stopping:
                return
            item = parse_item(raw, line)
            if item is SKIP:
                continue
            s.read += 1
            if isinstance(item, Invalid):
                key = key_text(line)
                row = journal.get(key)
                if row is not None and row.seen == journal.run:
                    self._duplicate(run, line, key, row.line)
                elif row is not None:
                    journal.see(key, line)  # recorded by an earlier run
                else:
                    run.warn(f"line {line}: malformed input, recorded as INVALID: {item.message}")
                    s.invalid += 1
                    invalid = BatchResult(
                        line, None, ItemStatus.INVALID, error=f"line {line}: {item.message}"
                    )
                    run.record(key, line, invalid)
                continue
            assert isinstance(item, tuple)
            key_value, payload = item
            key = key_text(key_value)
            row = journal.get(key)
            if row is not None and row.seen == journal.run:
                self._duplicate(run, line, key, row.line)
                continue
            if row is not None:
                journal.see(key, line)
            if row is not None and row.state in (ItemState.SUBMITTED, ItemState.TERMINAL):
                continue  # being collected, or done: never sent again
            if row is not None and row.state is ItemState.SUBMITTING:  # counted by journal.ambiguous()
                run.warn(
                    f"line {line} (key {key}): an earlier run was stopped while submitting it, before its "
                    "job id was recorded; submitting it again (it may run twice)"
                )
            elif row is None:
                journal.add_pending(key, line)
            while s.in_flight >= self.max_in_flight and not run.stopping:
                run.in_flight_changed.clear()
                await run.in_flight_changed.wait()
            if run.stopping:
                return
            s.in_flight += 1
            s.waiting += 1
            task = asyncio.create_task(submit(run, key, line, payload))
            submits.add(task)
            task.add_done_callback(submits.discard)
            if s.read % 256 == 0:
                await asyncio.sleep(0)  # let results flow while a long input streams in
        run.fed_all = True

    @staticmethod
    def _duplicate(run: RunState, line: int, key: str, first: int) -> None:
        run.summary.duplicates += 1
        run.warn(f"line {line}: key {key} was already used on line {first}; line skipped")

    # -- progress ----------------------------------------------------------------------------------

    async def _tick(self, run: RunState, started: float) -> None:
        while True:
            await asyncio.sleep(self._progress_interval)
            run.summary.elapsed = time.monotonic() - started
            run.output.flush_marks()
            self._emit_progress()

    def _emit_progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(copy.copy(self.summary))
