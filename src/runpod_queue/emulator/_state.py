"""State that survives a restart: `rpq serve --state FILE` / `Emulator(state=FILE)`, in SQLite (WAL).

What is kept: every job the emulator answers for (queued, running, finished and retained), the
`/health` counters, webhook deliveries still owed, and the clock's reading. Each change is committed
before the request that caused it is answered (a `/run` is acknowledged only once its job is in the
file), so a `kill -9` loses nothing acknowledged: WAL with ``synchronous=NORMAL`` loses a committed
transaction only if the machine itself goes down, never when the process dies.

On start, the file is read back: queued jobs queue again in their order, each with what was left of its
ttl; a job that was running is requeued at the front (`retries` + 1, as RunPod requeues a lost worker's
job: its worker is gone); a finished job keeps the rest of its retention; owed webhooks are sent again;
a virtual clock reads where it stopped, a real one goes on from there. A job of an endpoint the emulator
no longer serves stays in the file, unserved, and is logged.

It hooks the core by wrapping its state-changing methods on the instance: the queue's logic stays
where it is and knows nothing of files.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._jobs import JobRecord, WorkerSlot
from runpod_queue.errors import ConfigurationError

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._delivery import WebhookDelivery

__all__ = ["STATE_FORMAT", "StateFile", "StateFileError"]

log = logging.getLogger("runpod_queue.emulator")

#: The file's format version: a file written by a newer one is refused, never rewritten.
STATE_FORMAT: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, endpoint TEXT NOT NULL,
                                 row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (endpoint TEXT PRIMARY KEY, completed INTEGER NOT NULL,
                                     failed INTEGER NOT NULL, retried INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS webhooks (job_id TEXT PRIMARY KEY, url TEXT NOT NULL, payload BLOB NOT NULL);
"""


class StateFileError(ConfigurationError):
    """A state file that cannot be used (another program's, or a newer version's); says what to do."""


def _row(job: JobRecord) -> bytes:
    return orjson.dumps(
        {
            "status": job.status.value,
            "attempt": job.attempt,
            "retries": job.retries,
            "queued_at": job.queued_at,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "delay_ms": job.delay_ms,
            "execution_ms": job.execution_ms,
            "worker": job.worker.id if job.worker is not None else None,
            "output": job.output_json.decode() if job.output_json is not None else None,
            "error": job.error,
            "body": (job.raw_body or b"{}").decode(),
            "webhook": job.webhook,
            "execution_timeout": job.policy_execution_timeout,
            "ttl": job.policy_ttl,
            "low_priority": job.low_priority,
            "s3_config": job.s3_config,
            "sync": job.sync,
            "expires_at": job.expires_at,
            "retention_override": job.retention_override,
            "warning": job.warning,
        }
    )


class StateFile:
    """One emulator's state file: opened (and checked) at construction, written on every change."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path: Path = Path(path)
        try:
            self.db: sqlite3.Connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            found = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            tables = {name for (name,) in found}
        except sqlite3.DatabaseError as exc:
            raise StateFileError(
                f"{self.path}: not a runpod-queue state file ({exc}); give --state a new file name"
            ) from None
        if tables and "meta" not in tables:
            raise StateFileError(
                f"{self.path}: an SQLite file, but not a runpod-queue state file (tables {sorted(tables)}); "
                "give --state a new file name"
            )
        self.db.executescript(_SCHEMA)
        version = self._meta("format")
        if version is None:
            self._set_meta("format", str(STATE_FORMAT))
        elif not version.isdigit() or int(version) > STATE_FORMAT:
            raise StateFileError(
                f"{self.path}: written by a newer runpod-queue (state format {version}; this version "
                f"reads {STATE_FORMAT}); upgrade runpod-queue, or give --state another file"
            )
        (top,) = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
        self._seq = int(top)
        self._seqs: dict[str, int] = {}
        self.core: Core | None = None  # set by `attach`

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        """Close the file (the emulator stops)."""
        self.db.close()

    # -- writing --------------------------------------------------------------------------------

    def save(self, job: JobRecord) -> None:
        """Write one job as it is now, with the clock's reading, in one transaction."""
        if job.endpoint.jobs.get(job.id) is not job:
            return  # removed meanwhile (ttl mid-run, purge): `delete` has seen to it
        seq = self._seqs.get(job.id)
        if seq is None:
            self._seq += 1
            seq = self._seqs[job.id] = self._seq
        assert self.core is not None
        db = self.db
        db.execute("BEGIN")
        row = (job.id, seq, job.endpoint.id, _row(job))
        db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)", row)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('now', ?)", (repr(self.core.clock.now()),))
        db.execute("COMMIT")

    def save_counters(self, job: JobRecord) -> None:
        """Write the job's endpoint's `/health` counters."""
        ep = job.endpoint
        counts = (ep.id, ep.completed, ep.failed, ep.retried)
        self.db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?)", counts)

    def delete(self, job: JobRecord) -> None:
        """The job is gone (retention over, ttl, purge)."""
        self._seqs.pop(job.id, None)
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def save_now(self) -> None:
        """Record the clock's reading (after a virtual clock is advanced)."""
        assert self.core is not None
        self._set_meta("now", repr(self.core.clock.now()))

    def clear(self) -> None:
        """Everything but the format gone (``POST /_emulator/reset``)."""
        self.db.execute("BEGIN")
        for table in ("jobs", "counters", "webhooks"):
            self.db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        self.db.execute("DELETE FROM meta WHERE key != 'format'")
        self.db.execute("COMMIT")
        self._seqs.clear()

    def drop_endpoint(self, endpoint_id: str) -> None:
        """An endpoint was removed at run time: its jobs and counters leave the file."""
        self.db.execute("DELETE FROM jobs WHERE endpoint = ?", (endpoint_id,))
        self.db.execute("DELETE FROM counters WHERE endpoint = ?", (endpoint_id,))

    # -- hooking --------------------------------------------------------------------------------

    def attach(self, core: Core, delivery: WebhookDelivery) -> None:
        """Wrap the core's state-changing methods (and the webhook sender) so each change is written."""
        self.core = core
        save, delete = self.save, self.delete

        def after(name: str, then: Callable[[JobRecord], None]) -> None:
            original = getattr(core, name)

            def wrapped(job: JobRecord, *args: Any, **kwargs: Any) -> Any:
                result = original(job, *args, **kwargs)
                then(job)
                return result

            setattr(core, name, wrapped)

        def finished(job: JobRecord) -> None:
            save(job)
            self.save_counters(job)

        for name in ("start", "retry", "status_ttl", "shorten_retention"):
            after(name, save)
        after("_finish", finished)
        after("requeue_lost", finished)
        after("_remove", delete)

        submit = core.submit

        def submitted(*args: Any, **kwargs: Any) -> JobRecord:
            job = submit(*args, **kwargs)
            save(job)
            return job

        core.submit = submitted  # type: ignore[method-assign]

        advance = core.clock.advance

        async def advanced(seconds: Any) -> float:
            now = await advance(seconds)
            self.save_now()
            return now

        core.clock.advance = advanced  # type: ignore[method-assign]

        send, post = delivery.send, delivery._post

        def owed(job_id: str, url: str, payload: bytes) -> None:
            self.db.execute("INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?)", (job_id, url, payload))
            send(job_id, url, payload)

        async def posted(job_id: str, url: str, payload: bytes, attempt: int) -> None:
            await post(job_id, url, payload, attempt)
            last = delivery.attempts[-1] if delivery.attempts else None
            done = last is not None and last.job_id == job_id and last.delivered
            if done or attempt >= delivery.attempts_allowed:
                self.db.execute("DELETE FROM webhooks WHERE job_id = ?", (job_id,))

        delivery.send = owed  # type: ignore[method-assign]
        delivery._post = posted  # type: ignore[method-assign]

    # -- reading back ---------------------------------------------------------------------------

    def restore(self, core: Core, delivery: WebhookDelivery) -> int:
        """Put the file's jobs, counters and clock back into `core` (the emulator is starting, on its
        loop). Returns how many jobs were restored."""
        now_text = self._meta("now")
        if now_text is not None:
            core.clock.resume(float(now_text))
        now = core.clock.now()
        for endpoint_id, completed, failed, retried in self.db.execute("SELECT * FROM counters"):
            ep = core.endpoints.get(endpoint_id)
            if ep is not None:
                ep.completed, ep.failed, ep.retried = completed, failed, retried
        restored = broken = 0
        skipped: dict[str, int] = {}
        running: list[JobRecord] = []
        queued: list[JobRecord] = []
        for job_id, seq, endpoint_id, blob in self.db.execute("SELECT * FROM jobs ORDER BY seq"):
            ep = core.endpoints.get(endpoint_id)
            if ep is None:
                skipped[endpoint_id] = skipped.get(endpoint_id, 0) + 1
                continue
            try:
                job, status = _job_from_row(ep, job_id, blob)
            except (KeyError, TypeError, ValueError, AttributeError):
                # One broken row must not keep the rest from being served: it stays in the file as it
                # is (never rewritten), and the log names it.
                log.error("%s", _row_problem(self.path, job_id, blob))
                broken += 1
                continue
            self._seqs[job_id] = seq
            ep.jobs[job_id] = job
            restored += 1
            if status.is_terminal:
                job.status = status
                left = (job.expires_at if job.expires_at is not None else now) - now
                job.retention_handle = core.clock.call_later(max(left, 0.0), core._remove, job)
            elif status is JobStatus.IN_PROGRESS:
                running.append(job)
            else:
                queued.append(job)
        # A lost worker's job goes back first (RunPod puts it at the front), then the queue, in order.
        for job in running:
            job.attempt += 1
            job.retries += 1
            job.endpoint.retried += 1
            job.worker = None
            job.started_at = job.delay_ms = None
            job.queued_at = now
            core._enqueue(job)
            self.save(job)
            self.save_counters(job)
        for job in queued:
            core._enqueue(job)
            _ttl_left(core, job, now)
        for endpoint_id, count in sorted(skipped.items()):
            log.warning(
                "state file %s: %d job(s) of endpoint %r kept but not served: serve that endpoint to "
                "answer them again",
                self.path,
                count,
                endpoint_id,
            )
        owed = self.db.execute("SELECT job_id, url, payload FROM webhooks").fetchall()
        for job_id, url, payload in owed:
            delivery.send(job_id, url, payload)
        return restored


def _job_from_row(ep: Any, job_id: str, blob: bytes) -> tuple[JobRecord, JobStatus]:
    """A job as its row describes it (KeyError/TypeError/ValueError when the row is broken)."""
    data = orjson.loads(blob)
    body = data["body"].encode()
    job = JobRecord(
        job_id,
        ep,
        orjson.loads(body).get("input"),
        webhook=data["webhook"],
        execution_timeout=data["execution_timeout"],
        ttl=data["ttl"],
        low_priority=data["low_priority"],
        s3_config=data["s3_config"],
        sync=data["sync"],
        now=data["created_at"],
    )
    job.raw_body = body
    job.attempt, job.retries = data["attempt"], data["retries"]
    job.queued_at = data["queued_at"]
    job.started_at, job.finished_at = data["started_at"], data["finished_at"]
    job.delay_ms, job.execution_ms = data["delay_ms"], data["execution_ms"]
    job.output_json = data["output"].encode() if data["output"] is not None else None
    job.error, job.warning = data["error"], data["warning"]
    job.expires_at, job.retention_override = data["expires_at"], data["retention_override"]
    if data["worker"]:
        slot = WorkerSlot(ep, worker_id=data["worker"])
        slot.retired = True  # a worker of the last run, shown in workerId only
        job.worker = slot
    return job, JobStatus(data["status"])


def _row_problem(file: Path, job_id: str, blob: bytes) -> str:
    """One line naming the file, the row and the field that is wrong."""
    try:
        _check_row(file, job_id, blob)
    except StateFileError as exc:
        return f"{exc}; the row is kept in the file but not served"
    return (
        f"{file}: jobs row {job_id!r}: a field has the wrong type; the row is kept in the file but not served"
    )


def _ttl_left(core: Core, job: JobRecord, now: float) -> None:
    """A queued job keeps what was left of its ttl (from when it was queued), not a fresh one."""
    handle = job.ttl_handle
    if handle is None:
        return
    handle.cancel()
    left = job.queued_at + core.span(job.policy_ttl) - now
    job.ttl_handle = core.clock.call_later(max(left, 0.0), core._ttl_expired, job, job.attempt)


# -- snapshots ------------------------------------------------------------------------------------

_ROW_FIELDS: Final = ("status", "attempt", "retries", "queued_at", "created_at", "body", "webhook", "ttl")


def write_snapshot(core: Core, state: StateFile | None, dest: str | os.PathLike[str]) -> int:
    """A consistent copy of the emulator's state in `dest` (a new state file, one self-contained file:
    journal mode DELETE); returns how many jobs it holds.

    With a state file this is SQLite's online backup of it, so owed webhooks are in it too. Without
    one, the jobs, counters and clock are written from memory (webhooks owed are not: an in-memory
    emulator does not track them). Called on the emulator's loop, between two changes, so either way
    no change is half in it.
    """
    target = Path(dest)
    if state is not None:
        copy = sqlite3.connect(target)
        try:
            state.db.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            (count,) = copy.execute("SELECT COUNT(*) FROM jobs").fetchone()
        finally:
            copy.close()
        return int(count)
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(STATE_FORMAT),))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('now', ?)", (repr(core.clock.now()),))
        seq = 0
        for ep in core.endpoints.values():
            db.execute(
                "INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?)",
                (ep.id, ep.completed, ep.failed, ep.retried),
            )
            for job in ep.jobs.values():
                seq += 1
                db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)", (job.id, seq, ep.id, _row(job)))
        db.execute("COMMIT")
    finally:
        db.close()
    return seq


def check_snapshot(path: str | os.PathLike[str]) -> int:
    """Check that `path` is a state file this version reads, every job row whole; returns its job count.

    Raises:
        StateFileError: Missing, not a state file, a newer format, or a row with a field wrong (one line
            naming the file, the table and row, and the field).
    """
    file = Path(path)
    if not file.is_file():
        raise StateFileError(f"{file}: no such snapshot file")
    try:
        db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateFileError(f"{file}: cannot open the snapshot: {exc}") from None
    try:
        try:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StateFileError(f"{file}: not a runpod-queue snapshot ({exc})") from None
        missing = sorted({"meta", "jobs", "counters", "webhooks"} - tables)
        if missing:
            raise StateFileError(f"{file}: not a runpod-queue snapshot: no table {missing[0]}")
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        version = None if row is None else str(row[0])
        if version is None or not version.isdigit():
            raise StateFileError(f"{file}: meta.format: must be the state format version, got {version!r}")
        if int(version) > STATE_FORMAT:
            raise StateFileError(
                f"{file}: meta.format: written by a newer runpod-queue (state format {version}; this version "
                f"reads {STATE_FORMAT}); upgrade runpod-queue"
            )
        now = db.execute("SELECT value FROM meta WHERE key = 'now'").fetchone()
        if now is not None:
            try:
                float(now[0])
            except ValueError:
                raise StateFileError(
                    f"{file}: meta.now: must be the clock's seconds, got {now[0]!r}"
                ) from None
        count = 0
        for job_id, blob in db.execute("SELECT id, row FROM jobs ORDER BY seq"):
            count += 1
            _check_row(file, job_id, blob)
        return count
    finally:
        db.close()


def _check_row(file: Path, job_id: str, blob: bytes) -> None:
    where = f"{file}: jobs row {job_id!r}"
    try:
        data = orjson.loads(blob)
    except orjson.JSONDecodeError as exc:
        raise StateFileError(f"{where}: row: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise StateFileError(f"{where}: row: must be a JSON object")
    for name in _ROW_FIELDS:
        if name not in data:
            raise StateFileError(f"{where}: {name}: missing")
    try:
        JobStatus(data["status"])
    except ValueError:
        raise StateFileError(f"{where}: status: not a job status: {data['status']!r}") from None
    try:
        body = orjson.loads(data["body"])
    except (orjson.JSONDecodeError, TypeError):
        raise StateFileError(f"{where}: body: not the job's JSON request body") from None
    if not isinstance(body, dict):
        raise StateFileError(f"{where}: body: must be a JSON object")


def restore_snapshot(snapshot: str | os.PathLike[str], state: str | os.PathLike[str]) -> int:
    """Make `state` a copy of `snapshot` (checked first; the snapshot is only read); returns its jobs.

    Raises:
        StateFileError: The snapshot is broken or newer (see `check_snapshot`), or `state` cannot be
            written.
    """
    count = check_snapshot(snapshot)
    source = sqlite3.connect(f"{Path(snapshot).resolve().as_uri()}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(state)
    except sqlite3.Error as exc:
        source.close()
        raise StateFileError(f"{state}: cannot write the state file: {exc}") from None
    try:
        source.backup(target)
    except sqlite3.Error as exc:
        raise StateFileError(f"{state}: cannot write the state file: {exc}") from None
    finally:
        target.close()
        source.close()
    return count
