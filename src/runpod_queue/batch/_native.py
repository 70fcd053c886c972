"""``BatchRunner(native=True)`` / ``rpq batch --native``: the input file through RunPod's Batch Jobs.

Source of the rules kept here: `runpod/docs` `serverless/advanced-workflows/batch-jobs.mdx` (at most 5,000
requests per batch, 10 active batches per endpoint, 10 MiB per add call, states DRAFT → FINALIZED, done
when completed + failed == total, results without input or index in unspecified order).

Each batch goes through the journal (the runner's SQLite file, two more tables) like this::

    intent (members, positions) ─> create_sent ─> POST /batch [] ─> id journaled ─> adds ─> finalize
        ─> counts polled until done ─> results paged, each journaled with the output line ─> done

* **Created empty, then filled.** The create call carries no requests: a crash between its answer and
  journaling the id can then only leave an *empty* DRAFT behind (no cost, no items, reported by id on
  resume) — never a second batch holding the same items. A display name could not close that window
  either: ``PUT`` needs the id the lost answer carried.
* **Adds are counted by the server.** Only this run adds to its DRAFT, in journal order, so the batch's
  ``requestTotal`` says exactly which members are in it after any crash: the rest are added, none twice.
* **Finalize** is re-derived the same way: a DRAFT is finalized (again), a FINALIZED batch is waited on.
* **Results** are journaled as they are paged (journal first, then the output line): a crash mid-results
  re-pages the batch and skips keys already journaled, so each key's line is written exactly once.

Keys cross the gap inside the input (``runpod_queue.worker``): RunPod's mapping (an echoed ``input``) is
used when a result has one, the handler's echo (``keep_key``) otherwise; a result that carries neither is
never guessed (see ``_settle``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from runpod_queue._aio import AsyncClient, AsyncEndpoint
from runpod_queue._batch_jobs import (
    ADD_LIMIT,
    AsyncBatches,
    Batch,
    BatchRequestResult,
    BatchStatus,
    create_flow,
    page_flow,
)
from runpod_queue._retry import backoff_delay
from runpod_queue.batch._inputs import SKIP, Invalid, parse_item
from runpod_queue.batch._journal import ItemState, Journal
from runpod_queue.batch._output import OutputFile
from runpod_queue.batch._types import BatchResult, BatchSummary, ItemStatus, count_finished, key_text
from runpod_queue.errors import (
    APIConnectionError,
    APIStatusError,
    JournalError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from runpod_queue.worker._keys import INPUT_FIELD, NO_KEY, OUTPUT_FIELD, add_key, split_key

if TYPE_CHECKING:
    from runpod_queue.batch._runner import BatchRunner

__all__ = ["ACTIVE_BATCHES", "BATCH_SIZE", "run_native"]

#: RunPod's limits (the batch-jobs page): requests per batch, active batches per endpoint.
BATCH_SIZE: Final = 5_000
ACTIVE_BATCHES: Final = 10
_MODE: Final = "native"
_PAGE: Final = 500
# An empty DRAFT found after a lost create answer is ours only if created after the intent (minus skew).
_CLOCK_SKEW_S: Final = 120.0
_MAX_BACKOFF_STEP: Final = 8
_ADD_OVERHEAD: Final = len(b'{"requests":[{"input":}]}')  # around one request in an add call
_FEED_BUFFER: Final = 1_000  # new items journaled per transaction while the input is read

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS native_batches (
    seq INTEGER PRIMARY KEY,        -- our number for the batch, in formation order
    batch_id TEXT,                  -- RunPod's id once the create answered
    state TEXT NOT NULL,            -- creating | draft | finalized | done
    create_sent INTEGER NOT NULL DEFAULT 0,  -- a create may have reached RunPod without its answer
    size INTEGER NOT NULL,          -- members
    intent_at REAL NOT NULL         -- wall clock seconds when the members were assigned
);
CREATE TABLE IF NOT EXISTS native_items (
    key TEXT PRIMARY KEY,           -- items.key
    body TEXT NOT NULL,             -- the request's input as sent (JSON), the key inside
    batch INTEGER,                  -- native_batches.seq; NULL: waiting for a batch
    pos INTEGER,                    -- place in the batch: the first requestTotal ones were added
    attempts INTEGER NOT NULL DEFAULT 0  -- batches the item was sent in
);
CREATE INDEX IF NOT EXISTS native_items_batch ON native_items (batch, pos);
"""


def _names_an_upload(payload: Any) -> bool:
    """The native path sends inputs as they are: an upload in one would reach the handler as a marker."""
    from runpod_queue.batch._uploads import BadUpload, find_uploads

    try:
        return bool(find_uploads(payload))
    except BadUpload:
        return True


def checkpoint(name: str) -> None:
    """A named point of a batch's life (``created``, ``added``, ``finalized``, ``page``); tests make a
    run crash here. Does nothing."""


@dataclass(frozen=True, slots=True)
class _Member:
    key: str
    line: int
    body: str
    pos: int
    attempts: int


@dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    batch_id: str | None
    state: str
    create_sent: bool
    size: int
    intent_at: float


class _Tables:
    """The native tables on the runner's journal connection (each method one transaction)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.db = journal._db
        self.db.executescript(_SCHEMA)

    def batches(self, *, unfinished: bool) -> list[_Batch]:
        where = "WHERE state != 'done'" if unfinished else ""
        rows = self.db.execute(
            f"SELECT seq, batch_id, state, create_sent, size, intent_at FROM native_batches {where} "  # noqa: S608
            "ORDER BY seq"
        ).fetchall()
        return [_Batch(int(s), b, str(st), bool(c), int(n), float(t)) for s, b, st, c, n, t in rows]

    def batch(self, seq: int) -> _Batch:
        return next(b for b in self.batches(unfinished=False) if b.seq == seq)

    def known_ids(self) -> set[str]:
        return {str(b) for (b,) in self.db.execute("SELECT batch_id FROM native_batches") if b}

    def add(self, items: list[tuple[str, int, str]]) -> None:
        """New items, waiting for a batch (one transaction for many: the feed buffers them)."""
        run = self.journal.run
        with self.journal._transaction():
            self.db.executemany(
                "INSERT INTO items (key, line, state, seen) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                ((key, line, ItemState.PENDING, run) for key, line, _ in items),
            )
            self.db.executemany(
                "INSERT INTO native_items (key, body) VALUES (?, ?)", ((key, body) for key, _, body in items)
            )

    def known(self) -> dict[str, bool]:
        """Every journaled key → whether it needs nothing more from the feed (a final result, or a row
        here: waiting for or in a batch). One query instead of one per input line."""
        rows = self.db.execute(
            "SELECT i.key, i.state = ? OR n.key IS NOT NULL "
            "FROM items i LEFT JOIN native_items n USING (key)",
            (ItemState.TERMINAL,),
        )
        return {str(key): bool(done) for key, done in rows}

    def see(self, seen: list[tuple[str, int]]) -> None:
        """This run met these keys on these lines (results are listed in the latest input order)."""
        run = self.journal.run
        with self.journal._transaction():
            self.db.executemany(
                "UPDATE items SET seen = ?, line = ? WHERE key = ?", ((run, line, key) for key, line in seen)
            )

    def terminal(self, rows: list[tuple[str, int, str, str]]) -> None:
        """Final results (key, line, status, output line), as ``Journal.terminal`` writes one."""
        self.db.executemany(
            "INSERT INTO items (key, line, state, status, result, seen) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = excluded.state, status = excluded.status, "
            "result = excluded.result",
            (
                (key, line, ItemState.TERMINAL, status, text, self.journal.run)
                for key, line, status, text in rows
            ),
        )

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM native_items WHERE key = ?", (key,)).fetchone() is not None

    def unassigned(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM native_items WHERE batch IS NULL").fetchone()[0])

    def form(self, limit: int) -> int | None:
        """Assign up to ``limit`` waiting items to a new batch (the intent, one transaction)."""
        with self.journal._transaction():
            keys = [
                str(k)
                for (k,) in self.db.execute(
                    "SELECT key FROM native_items WHERE batch IS NULL ORDER BY rowid LIMIT ?", (limit,)
                )
            ]
            if not keys:
                return None
            cursor = self.db.execute(
                "INSERT INTO native_batches (state, size, intent_at) VALUES ('creating', ?, ?)",
                (len(keys), time.time()),
            )
            seq = int(cursor.lastrowid or 0)
            self.db.executemany(
                "UPDATE native_items SET batch = ?, pos = ?, attempts = attempts + 1 WHERE key = ?",
                ((seq, pos, key) for pos, key in enumerate(keys)),
            )
        return seq

    def members(self, seq: int) -> list[_Member]:
        rows = self.db.execute(
            "SELECT n.key, i.line, n.body, n.pos, n.attempts FROM native_items n JOIN items i USING (key) "
            "WHERE n.batch = ? ORDER BY n.pos",
            (seq,),
        ).fetchall()
        return [_Member(str(k), int(li), str(b), int(p), int(a)) for k, li, b, p, a in rows]

    def update(self, seq: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE native_batches SET {names} WHERE seq = ?", (*fields.values(), seq))  # noqa: S608

    def requeue(self, keys: Sequence[str]) -> None:
        """Failed members go back to waiting for a later batch (a retry)."""
        self.db.executemany(
            "UPDATE native_items SET batch = NULL, pos = NULL WHERE key = ?", ((k,) for k in keys)
        )

    def terminal_keys(self, seq: int) -> set[str]:
        """Members of batch ``seq`` that already have their final result."""
        rows = self.db.execute(
            "SELECT n.key FROM native_items n JOIN items i USING (key) WHERE n.batch = ? AND i.state = ?",
            (seq, ItemState.TERMINAL),
        )
        return {str(key) for (key,) in rows}

    def in_flight(self) -> int:
        """Items sent or waiting to be, without a final result."""
        found = self.db.execute(
            "SELECT COUNT(*) FROM native_items n JOIN items i USING (key) WHERE i.state != ?",
            (ItemState.TERMINAL,),
        ).fetchone()
        return int(found[0])


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def result_key(result: BatchRequestResult) -> Any:
    """The key a result carries: RunPod's echoed ``input`` first, then the handler's echo (``keep_key``);
    ``NO_KEY`` when it carries none."""
    key, _ = split_key(result.input, INPUT_FIELD)
    if key is not NO_KEY:
        return key
    key, _ = split_key(result.output, OUTPUT_FIELD)
    if key is not NO_KEY:
        return key
    output = result.output
    if isinstance(output, list) and output:  # a generator handler's aggregated chunks, each keyed
        keys = [split_key(chunk, OUTPUT_FIELD)[0] for chunk in output]
        if keys[0] is not NO_KEY and all(k == keys[0] for k in keys):
            return keys[0]
    return NO_KEY


def _clean_output(output: Any) -> Any:
    """The output as the handler returned it: the key the wrapper added is taken out again."""
    key, value = split_key(output, OUTPUT_FIELD)
    if key is not NO_KEY:
        return value
    if isinstance(output, list) and output:
        parts = [split_key(chunk, OUTPUT_FIELD) for chunk in output]
        if all(key is not NO_KEY for key, _ in parts):
            return [value for _, value in parts]
    return output


def _status(result: BatchRequestResult) -> ItemStatus | str:
    if result.status == "COMPLETED":
        return ItemStatus.COMPLETED
    if result.status in ("FAILED", "TIMED_OUT"):
        return ItemStatus.FAILED
    if result.status == "CANCELLED":
        return ItemStatus.CANCELLED
    return result.status


class _Native:
    """One native run on one event loop."""

    def __init__(
        self, runner: BatchRunner, batches: AsyncBatches, journal: Journal, summary: BatchSummary
    ) -> None:
        self.runner = runner
        self.batches = batches
        self.journal = journal
        self.tables = _Tables(journal)
        self.summary = summary
        self.output = OutputFile(runner.output_path, journal, runner._on_result)
        self.slots = asyncio.Semaphore(ACTIVE_BATCHES)
        self.tasks: set[asyncio.Task[None]] = set()
        self.fatal: BaseException | None = None
        self.stopping = False
        self.batch_counts: dict[int, Batch] = {}
        self._pending: list[tuple[str, str]] = []  # output lines of results journaled, to deliver
        self._rows: list[tuple[str, int, str, str]] = []  # results to journal in the open transaction
        # Batches are created, filled and finalized one at a time (collected concurrently): adds of up to
        # 10 MiB do not compete for the uplink, and a kill finds at most one batch between create and
        # finalize — at most one create whose answer may be lost.
        self._filling = asyncio.Lock()
        self._rng = random.Random()
        settings = runner.endpoint.client._settings
        self._backoff = settings.retries

    # -- pacing -----------------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        from runpod_queue.batch._state import log

        if self.runner._on_warning is not None:
            self.runner._on_warning(message)
        else:
            log.warning("%s", message)

    async def _pause(self, attempt: int, retry_after: float | None = None) -> None:
        step = min(attempt, _MAX_BACKOFF_STEP)
        await asyncio.sleep(backoff_delay(self._backoff, step, retry_after, self._rng))

    def _refresh_counts(self) -> None:
        s = self.summary
        s.in_flight = self.tables.in_flight()
        s.waiting = self.tables.unassigned()
        s.in_progress = sum(b.in_progress for b in self.batch_counts.values())
        s.in_queue = sum(
            max(0, b.total - b.completed - b.failed - b.in_progress) for b in self.batch_counts.values()
        )

    # -- the run ----------------------------------------------------------------------------------

    async def run(self, inputs: Iterable[Any]) -> None:
        runner = self.runner
        self.output.open()
        ticker = asyncio.create_task(self._tick())
        try:
            for batch in self.tables.batches(unfinished=True):  # an earlier run's batches first
                await self.slots.acquire()
                self.summary.resumed += batch.size
                self._spawn(batch.seq)
            await self._feed(inputs)
            while not self._stopped():
                while self.tables.unassigned() and not self._stopped():
                    await self._form(BATCH_SIZE)
                if not self.tasks:
                    break
                await asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ticker.cancel()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(ticker, *self.tasks, return_exceptions=True)
            self.output.close()
            self._refresh_counts()
            runner._summary.in_queue = runner._summary.in_progress = 0
        if self.fatal is not None:
            raise self.fatal

    def _stopped(self) -> bool:
        if self.runner._stop_requested and not self.stopping:
            self.stopping = True
        return self.stopping or self.fatal is not None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.runner._progress_interval)
            self._stopped()
            self._refresh_counts()
            self.output.flush_marks()
            self.runner._emit_progress()
            if self.stopping:
                for task in self.tasks:
                    task.cancel()

    async def _feed(self, inputs: Iterable[Any]) -> None:
        s, tables = self.summary, self.tables
        waiting = tables.unassigned()
        known = tables.known()
        first_line: dict[str, int] = {}  # this run's keys: a second line with one is a duplicate
        seen: list[tuple[str, int]] = []  # known keys met again: their line is updated in bulk
        buffer: dict[str, tuple[str, int, str]] = {}  # new items, journaled together
        for line, raw in enumerate(inputs, 1):
            if self._stopped():
                break
            item = parse_item(raw, line)
            if item is SKIP:
                continue
            s.read += 1
            key_value, payload = item if isinstance(item, tuple) else (line, None)
            key = key_text(key_value)
            if key in first_line:
                self._duplicate(line, key, first_line[key])
                continue
            first_line[key] = line
            if key in known:
                seen.append((key, line))
                if known[key] or isinstance(item, Invalid):
                    continue  # done, or already waiting for / in a batch
            if isinstance(item, Invalid):
                self.warn(f"line {line}: malformed input, recorded as INVALID: {item.message}")
                s.invalid += 1
                error = f"line {line}: {item.message}"
                self._record(key, line, BatchResult(line, None, ItemStatus.INVALID, error=error))
                continue
            if _names_an_upload(payload):
                s.rejected += 1
                error = (
                    'a file to upload ({"$upload": ...} or Upload) in a --native input: Batch Jobs inputs '
                    "are sent as they are; upload it first (rpq upload FILE) and put the URL it prints "
                    "in the input"
                )
                self._record(key, line, BatchResult(key_value, None, ItemStatus.REJECTED, error=error))
                continue
            try:
                body = json.dumps(add_key(payload, key_value), ensure_ascii=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                s.rejected += 1
                error = f"input cannot be sent as JSON: {exc}"
                self._record(key, line, BatchResult(key_value, None, ItemStatus.REJECTED, error=error))
                continue
            if len(body.encode()) + _ADD_OVERHEAD > ADD_LIMIT:
                s.rejected += 1
                error = (
                    f"input is over the {ADD_LIMIT:,}-byte limit of one Batch Jobs add call as JSON: "
                    "put it in object storage and pass a URL"
                )
                self._record(key, line, BatchResult(key_value, None, ItemStatus.REJECTED, error=error))
                continue
            buffer[key] = (key, line, body)
            waiting += 1
            if waiting >= BATCH_SIZE or len(buffer) >= _FEED_BUFFER:
                tables.add(list(buffer.values()))
                buffer.clear()
                if waiting >= BATCH_SIZE:
                    await self._form(BATCH_SIZE)
                    waiting = tables.unassigned()
                else:
                    await asyncio.sleep(0)
        if buffer:
            tables.add(list(buffer.values()))
        if seen:
            tables.see(seen)

    def _duplicate(self, line: int, key: str, first: int) -> None:
        self.summary.duplicates += 1
        self.warn(f"line {line}: key {key} was already used on line {first}; line skipped")

    async def _form(self, limit: int) -> None:
        """Wait for one of the 10 active-batch slots, then assign up to ``limit`` waiting items to it."""
        await self.slots.acquire()
        if self._stopped():
            self.slots.release()
            return
        seq = self.tables.form(limit)
        if seq is None:
            self.slots.release()
            return
        self._spawn(seq)

    def _spawn(self, seq: int) -> None:
        task = asyncio.create_task(self._drive(seq))
        self.tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A batch task ended: an exception nobody expected (a bug, a crash) ends the run with it."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.fatal is None:
            self.fatal = task.exception()

    def _journal_results(self) -> None:
        """Write the results ``_finish`` gathered (inside the caller's transaction)."""
        rows, self._rows = self._rows, []
        if rows:
            self.tables.terminal(rows)

    def _deliver(self) -> None:
        """Output lines of results journaled by a committed transaction (never before: a kill between
        the two then only leaves lines for ``OutputFile.open`` to deliver on resume)."""
        pending, self._pending = self._pending, []
        for key, text in pending:
            self.output.deliver(key, text)

    def _record(self, key: str, line: int, result: BatchResult) -> None:
        text = result.to_json()
        self.journal.terminal(key, line, result.status, text)
        self.output.deliver(key, text)
        if result.status != ItemStatus.INVALID:
            self.summary.done_this_run += 1

    # -- one batch --------------------------------------------------------------------------------

    async def _drive(self, seq: int) -> None:
        """Take batch ``seq`` from wherever the journal says it is to done; resends after transient errors
        re-derive the state from the journal and RunPod, so they never add anything twice."""
        attempt = 0
        try:
            while not self._stopped():
                try:
                    batch = self.tables.batch(seq)
                    if batch.state in ("creating", "draft"):
                        async with self._filling:  # one batch filled at a time: see __init__
                            if self._stopped():
                                return
                            await self._fill(batch)
                    elif batch.state == "finalized":
                        await self._collect(batch)
                    else:
                        return
                    attempt = 0
                except RateLimitError as exc:  # 10 active batches (someone else's too) or 50,000 queued
                    attempt += 1
                    self.summary.rate_limited += 1
                    polling = self.runner.polling
                    wait = min(polling.max_interval, polling.min_interval * 2 ** min(attempt, 20))
                    await asyncio.sleep(max(exc.retry_after or 0.0, wait))
                except (APIConnectionError, ServerError):
                    attempt += 1
                    self.summary.transient_errors += 1
                    await self._pause(attempt)
        except (APIStatusError, JournalError, ValueError) as exc:
            if self.fatal is None:
                self.fatal = exc
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, a kill: no other batch may take a step after it
            if self.fatal is None:
                self.fatal = exc
            raise
        finally:
            self.batch_counts.pop(seq, None)
            self.slots.release()

    async def _fill(self, batch: _Batch) -> None:
        if batch.state == "creating":
            await self._create(batch)
            batch = self.tables.batch(batch.seq)
        await self._fill_and_finalize(batch)

    async def _create(self, batch: _Batch) -> None:
        if batch.create_sent:
            await self._report_orphans(batch)
        self.tables.update(batch.seq, create_sent=1)
        client = self.batches._client  # the create answer itself, not the GET after it: the id first
        created = await client._run(create_flow(client._rules, self.batches.endpoint_id, []))
        self.tables.update(batch.seq, batch_id=created.id, state="draft")
        checkpoint("created")

    async def _report_orphans(self, batch: _Batch) -> None:
        """A create whose answer never came may have left an empty DRAFT: say which, never adopt one (it
        could be someone else's) and never cancel one."""
        known = self.tables.known_ids()
        since = batch.intent_at - _CLOCK_SKEW_S
        found = [
            b.id
            for b in await self.batches.list()
            if b.status == BatchStatus.DRAFT
            and b.total == 0
            and b.id not in known
            and (b.created_at is None or b.created_at.timestamp() >= since)
        ]
        if found:
            self.warn(
                "an earlier create's answer was lost; empty DRAFT batches it may have left: "
                f"{', '.join(found)} "
                "(no requests, no cost, but each counts against the 10 active batches: cancel with "
                f"client.endpoint({self.batches.endpoint_id!r}).batches.cancel(ID))"
            )

    async def _fill_and_finalize(self, batch: _Batch) -> None:
        assert batch.batch_id is not None
        try:
            current = await self.batches.get(batch.batch_id)
        except NotFoundError:
            self._lose(batch, "its batch is gone (404) before it was finalized")
            return
        if current.status == BatchStatus.DRAFT:
            members = self.tables.members(batch.seq)
            missing = members[current.total :]  # only we add to it, in position order
            if missing:
                added = await self.batches.add(batch.batch_id, [json.loads(m.body) for m in missing])
                self.summary.submitted += added
                checkpoint("added")
            await self.batches.finalize(batch.batch_id)
            checkpoint("finalized")
        self.tables.update(batch.seq, state="finalized")

    async def _collect(self, batch: _Batch) -> None:
        assert batch.batch_id is not None
        polling = self.runner.polling
        pause = polling.min_interval
        while True:
            try:
                current = await self.batches.get(batch.batch_id)
            except NotFoundError:
                self._lose(batch, "its batch is gone (404): RunPod's retention ran out before collection")
                return
            self.batch_counts[batch.seq] = current
            if current.is_done:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, polling.max_interval)
        members = {m.key: m for m in self.tables.members(batch.seq)}
        done = self.tables.terminal_keys(batch.seq)
        orphans: list[BatchRequestResult] = []
        offset = 0
        while True:  # paged here so each page is journaled before the next is asked for
            page, more = await self._page(batch.batch_id, offset)
            offset += len(page)
            with self.journal._transaction():
                orphans += self._tie(batch, page, members, done)
                self._journal_results()
            self._deliver()
            checkpoint("page")
            if not more or not page:
                break
        with self.journal._transaction():
            self._settle(batch, orphans, members, done)
            self._journal_results()
            self.tables.update(batch.seq, state="done")
        self._deliver()

    async def _page(self, batch_id: str, offset: int) -> tuple[list[BatchRequestResult], bool]:
        client = self.batches._client
        flow = page_flow(client._rules, self.batches.endpoint_id, batch_id, offset, _PAGE)
        return await client._run(flow)

    # -- tying results to keys --------------------------------------------------------------------

    def _tie(
        self,
        batch: _Batch,
        page: list[BatchRequestResult],
        members: dict[str, _Member],
        done: set[str],
    ) -> list[BatchRequestResult]:
        """Journal and write every result of ``page`` whose key is known; return the others."""
        orphans: list[BatchRequestResult] = []
        for result in page:
            key_value = result_key(result)
            key = None if key_value is NO_KEY else key_text(key_value)
            member = None if key is None else members.get(key)
            if member is None:
                if key is not None and self.tables.has(key):
                    continue  # an item this batch held before a retry moved it on: handled then
                if key is not None:
                    self.warn(f"batch {batch.batch_id}: a result carries key {key}, not one of the batch's")
                orphans.append(result)
                continue
            if member.key in done:
                continue
            self._finish(batch, member, result, _status(result))
            done.add(member.key)
        return orphans

    def _finish(
        self,
        batch: _Batch,
        member: _Member,
        result: BatchRequestResult | None,
        status: ItemStatus | str,
        error: Any = None,
    ) -> None:
        retry = self.runner.retry_failed
        if status == ItemStatus.FAILED and member.attempts <= retry:
            self.tables.requeue([member.key])
            self.summary.retried += 1
            return
        key_value = json.loads(member.key)
        if result is not None:
            output = _clean_output(result.output) if status == ItemStatus.COMPLETED else None
            error = error if error is not None else result.error
            line = BatchResult(
                key_value,
                result.id,
                status,
                output=output,
                error=error,
                execution_time=_seconds_between(result.started_at, result.completed_at),
                attempts=member.attempts,
            )
        else:
            line = BatchResult(key_value, batch.batch_id, status, error=error, attempts=member.attempts)
        text = line.to_json()
        self._rows.append((member.key, member.line, str(line.status), text))
        self._pending.append((member.key, text))
        self.summary.done_this_run += 1
        self._count(status)

    def _count(self, status: ItemStatus | str) -> None:
        s = self.summary
        if status == ItemStatus.COMPLETED:
            s.completed += 1
        elif status == ItemStatus.LOST:
            s.lost += 1
        elif status == ItemStatus.UNMATCHED:
            s.unmatched += 1
        else:
            s.failed += 1

    def _settle(
        self, batch: _Batch, orphans: list[BatchRequestResult], members: dict[str, _Member], done: set[str]
    ) -> None:
        """After the last page: the members no result named, against the results that named no member.

        Never a guess: one of each are each other's (every request has one result); several members
        against results that all FAILED (or were all CANCELLED) certainly share that end, so they get it
        (FAILED ones are retried like any failure), with the errors listed; otherwise each is UNMATCHED —
        its request ran, its result is among the unkeyed ones, and which one cannot be known.
        """
        left = [m for key, m in members.items() if key not in done]
        if not left:
            return
        where = f"batch {batch.batch_id}"
        if len(left) == 1 and len(orphans) == 1:
            self._finish(batch, left[0], orphans[0], _status(orphans[0]))
            return
        ends = {_status(r) for r in orphans}
        if orphans and len(ends) == 1 and ends <= {ItemStatus.FAILED, ItemStatus.CANCELLED}:
            (end,) = ends
            errors = sorted({str(r.error) for r in orphans if r.error is not None})[:3]
            error = f"{end} in {where}: one of {len(orphans)} {end} requests whose results carry no key" + (
                f"; their errors include: {' | '.join(errors)}" if errors else ""
            )
            for member in left:
                self._finish(batch, member, None, end, error)
            return
        self.warn(
            f"{where}: {len(left)} items' results carry no key (a handler not wrapped with keep_key, or "
            "failures without output); recorded UNMATCHED, not resent"
        )
        error = (
            f"ran in {where}, but its result cannot be tied to it: {len(orphans)} results carry no key "
            f"(list them with client.endpoint({self.batches.endpoint_id!r})"
            f".batches.results({batch.batch_id!r}));"
            " wrap the handler with runpod_queue.worker.keep_key"
        )
        for member in left:
            self._finish(batch, member, None, ItemStatus.UNMATCHED, error)

    def _lose(self, batch: _Batch, why: str) -> None:
        members = self.tables.members(batch.seq)
        done = self.tables.terminal_keys(batch.seq)
        with self.journal._transaction():
            for member in members:
                if member.key not in done:
                    self._finish(batch, member, None, ItemStatus.LOST, f"{why} (batch {batch.batch_id})")
            self._journal_results()
            self.tables.update(batch.seq, state="done")
        self._deliver()


async def run_native(runner: BatchRunner, inputs: Iterable[Any]) -> BatchSummary:
    """``BatchRunner.arun`` with ``native=True``: see the module docstring."""
    runner._loop = asyncio.get_running_loop()
    runner._summary = summary = BatchSummary(total=runner.total)
    runner._run = None
    started = time.monotonic()
    endpoint = runner.endpoint
    owned: AsyncClient | None = None
    if isinstance(endpoint, AsyncEndpoint):
        engine = endpoint
    else:
        owned = AsyncClient._from_settings(endpoint.client._settings)
        engine = owned.endpoint(endpoint.id)
    native: _Native | None = None
    stop_asked = False
    try:
        await runner._check_endpoint(engine, endpoint.client._settings.retries)
        journal = Journal(runner.journal_path, endpoint_id=endpoint.id)
        try:
            mode = journal.meta("mode")
            if mode is None and journal.counts():
                raise JournalError(
                    f"{runner.journal_path} journals a /run batch; resume it without --native, or pass "
                    "another --journal"
                )
            journal.set_meta("mode", _MODE)
            out = runner.output_path
            if out is not None and out.exists() and out.stat().st_size > 0 and not journal.counts():
                raise JournalError(
                    f"{out} already has results but the journal {runner.journal_path} is new: pass the "
                    "journal that produced them, or move the file away"
                )
            journal.begin_run()
            count_finished(summary, journal.final_counts())
            summary.reused = summary.finished
            native = _Native(runner, engine.batches, journal, summary)
            runner._emit_progress()
            try:
                await native.run(inputs)
            except BaseException:
                summary.interrupted = True
                raise
            finally:
                stop_asked = native.stopping
        finally:
            journal.close()
    finally:
        if owned is not None:
            await owned.aclose()
        summary.elapsed = time.monotonic() - started
        stop_asked = stop_asked or runner._stop_requested
        summary.interrupted = summary.in_flight > 0 and (summary.interrupted or stop_asked)
        runner._loop = None
        runner._stop_requested = False
        runner._emit_progress()
    return copy.copy(summary)
