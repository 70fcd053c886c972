"""The batch journal: one SQLite file (WAL) that remembers every item's state, so a batch survives a crash.

Why SQLite: each transition is one atomic statement that either happened or did not, even under kill -9,
and a 100,000-item batch stays on disk instead of in memory. Writes use ``synchronous=NORMAL``: in WAL mode
that survives a killed process (the OS still holds the pages); only a power cut may lose the last few
transitions, which a resume then treats like any other crash.

States of an item (``items.state``)::

    pending ──> submitting ──> submitted (job_id) ──> terminal (result)
       ^            │   └───── back to submitting on resume: the /run may or may not have arrived
       └────────────┤───────── back to pending: the /run certainly did not arrive (429, 503, no connection)
                    └───────── terminal (REJECTED: the API refused the input)

``submitting`` is written immediately before a /run is sent and ``submitted`` immediately after its answer
arrives, so only an item caught between the two is ambiguous. ``written`` says the item's output line was
delivered; the output file itself is the final authority on resume (see ``output.OutputFile``).

Keys are stored as their JSON text, so ``1`` and ``"1"`` are different keys, as they are in the input.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runpod_queue.batch._types import ItemStatus
from runpod_queue.errors import JournalError

__all__ = ["ItemState", "Journal", "JournalError", "Row"]

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,           -- the item's key as JSON text
    line INTEGER NOT NULL,          -- 1-based position in the input, as last seen
    state TEXT NOT NULL,            -- pending | submitting | submitted | terminal
    job_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,   -- executions asked for: 1 per /run that got an id, +1 per /retry
    submits INTEGER NOT NULL DEFAULT 0,    -- /run calls that may have reached the server; >1: ambiguous
    submitted_at REAL,              -- wall-clock seconds; the oldest are polled first on resume
    status TEXT,                    -- the final status once terminal (COMPLETED, FAILED, LOST, ...)
    result TEXT,                    -- the item's output line (JSON) once terminal
    written INTEGER NOT NULL DEFAULT 0,
    seen INTEGER NOT NULL DEFAULT 0 -- the last run whose input contained the key (duplicate detection)
);
CREATE INDEX IF NOT EXISTS items_state ON items (state, written);
"""


class ItemState(enum.StrEnum):
    """``items.state``: where an item is on the path above (each value is the text stored, so journals
    written before this type existed still resume)."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    TERMINAL = "terminal"


_RETRY_MARK = "retry:"  # meta rows: a /retry sent and not yet confirmed, by item key


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    line: int
    state: ItemState
    job_id: str | None
    attempts: int
    submits: int
    submitted_at: float | None
    result: str | None
    written: bool
    seen: int


_COLUMNS = "key, line, state, job_id, attempts, submits, submitted_at, result, written, seen"


def _row(values: tuple[object, ...]) -> Row:
    key, line, state, job_id, attempts, submits, submitted_at, result, written, seen = values
    return Row(
        key=str(key),
        line=int(line),  # type: ignore[call-overload]
        state=ItemState(str(state)),
        job_id=None if job_id is None else str(job_id),
        attempts=int(attempts),  # type: ignore[call-overload]
        submits=int(submits),  # type: ignore[call-overload]
        submitted_at=None if submitted_at is None else float(submitted_at),  # type: ignore[arg-type]
        result=None if result is None else str(result),
        written=bool(written),
        seen=int(seen),  # type: ignore[call-overload]
    )


def _create_private(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600) unless it exists: a journal holds inputs, results
    and webhook material. SQLite gives its -wal and -shm files the database file's mode."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError:  # a missing folder or no permission: sqlite's own error names it below
        return
    os.close(fd)


class Journal:
    """One batch's journal. Not thread-safe: the runner uses it from its event loop only.

    Every method is one statement in autocommit mode (one transaction) unless it says otherwise, so the
    file is consistent after any kill.
    """

    def __init__(self, path: str | Path, *, endpoint_id: str) -> None:
        self.path = Path(path)
        _create_private(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a usable batch journal ({exc})") from exc
        self._lock_fd = self._lock()
        self.run = 0
        try:
            self._check_meta(endpoint_id)
        except JournalError:
            self.close()
            raise

    def _check_meta(self, endpoint_id: str) -> None:
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            self._db.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("schema", SCHEMA_VERSION), ("endpoint", endpoint_id), ("created", str(time.time()))],
            )
        elif meta.get("schema") != SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal schema {meta.get('schema')!r}, expected 1")
        elif meta.get("endpoint") != endpoint_id:
            raise JournalError(
                f"{self.path} belongs to a batch on endpoint {meta.get('endpoint')!r}, "
                f"not {endpoint_id!r}; pass another --journal"
            )

    def meta(self, name: str) -> str | None:
        found = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    def set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def delete_meta(self, name: str) -> None:
        self._db.execute("DELETE FROM meta WHERE name = ?", (name,))

    def begin_run(self) -> int:
        """Number this run: a key seen twice within one run is a duplicate, across runs a resume."""
        found = self._db.execute("SELECT value FROM meta WHERE name = 'runs'").fetchone()
        self.run = (int(found[0]) if found else 0) + 1
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('runs', ?)", (str(self.run),))
        return self.run

    def _lock(self) -> int | None:
        """One run per journal: a second process on it would submit the same pending items again.

        An advisory ``flock`` on the file itself (independent of SQLite's own fcntl locks on Linux and
        macOS); released by ``close`` or when the process dies, however it dies. None where unsupported.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return None
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._db.close()
            raise JournalError(f"{self.path} is in use by another running batch") from None
        return fd

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:  # after SQLite: closing another fd first would drop its locks
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reads ----------------------------------------------------------------------------------------

    def get(self, key: str) -> Row | None:
        query = f"SELECT {_COLUMNS} FROM items WHERE key = ?"  # noqa: S608 - a constant column list
        found = self._db.execute(query, (key,)).fetchone()
        return None if found is None else _row(found)

    def in_state(self, state: ItemState) -> Iterator[Row]:
        """Rows in ``state``, oldest submission first (fetched lazily)."""
        query = f"SELECT {_COLUMNS} FROM items WHERE state = ? ORDER BY submitted_at, line"  # noqa: S608
        cursor = self._db.execute(query, (state,))
        for values in cursor:
            yield _row(values)

    def unwritten_results(self) -> list[tuple[str, str]]:
        """(key, result line) of terminal items whose output line was not delivered yet."""
        rows = self._db.execute(
            "SELECT key, result FROM items WHERE state = ? AND written = 0 ORDER BY line",
            (ItemState.TERMINAL,),
        ).fetchall()
        return [(str(k), str(r)) for k, r in rows]

    def results(self) -> Iterator[str]:
        """Every terminal item's output line, in input order."""
        for (result,) in self._db.execute(
            "SELECT result FROM items WHERE state = ? ORDER BY line", (ItemState.TERMINAL,)
        ):
            yield str(result)

    def counts(self) -> dict[str, int]:
        """Items per state."""
        return {
            str(state): int(n)
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state")
        }

    def reached_server(self) -> bool:
        """Did any /run of this journal's life possibly reach the server (a job id, or a submission not
        ruled out)? If not, the journal holds nothing that costs money to redo."""
        found = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM items WHERE submits > 0 OR job_id IS NOT NULL)"
        ).fetchone()
        return bool(found[0])

    def final_counts(self) -> dict[str, int]:
        """Terminal items per final status."""
        return {
            str(status): int(n)
            for status, n in self._db.execute(
                "SELECT status, COUNT(*) FROM items WHERE state = ? GROUP BY status", (ItemState.TERMINAL,)
            )
        }

    # -- transitions ------------------------------------------------------------------------------------

    def add_pending(self, key: str, line: int) -> None:
        self._db.execute(
            "INSERT INTO items (key, line, state, seen) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (key, line, ItemState.PENDING, self.run),
        )

    def see(self, key: str, line: int) -> None:
        """The current run met ``key`` on ``line`` (results are listed in the latest input order)."""
        self._db.execute("UPDATE items SET seen = ?, line = ? WHERE key = ?", (self.run, line, key))

    def submitting(self, key: str, line: int) -> None:
        """Written immediately before the /run is sent."""
        self._db.execute(
            "INSERT INTO items (key, line, state, submits, seen) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = excluded.state, submits = submits + 1",
            (key, line, ItemState.SUBMITTING, self.run),
        )

    def unsent(self, key: str) -> None:
        """The /run certainly did not reach the server (429, 503, no connection): back to ``pending``, so
        a kill while it waits to be sent again does not make the resume suspect a duplicate."""
        self._db.execute(
            "UPDATE items SET state = ?, submits = submits - 1 WHERE key = ? AND state = ?",
            (ItemState.PENDING, key, ItemState.SUBMITTING),
        )

    def ambiguous(self) -> int:
        """Submissions, over the journal's whole life, that may have created a job nobody heard of: every
        /run after an item's first, and every item still caught in ``submitting``."""
        found = self._db.execute(
            "SELECT COALESCE(SUM(MAX(submits - 1, 0)), 0) + COALESCE(SUM(state = ?), 0) FROM items",
            (ItemState.SUBMITTING,),
        ).fetchone()
        return int(found[0])

    def submitted(self, key: str, job_id: str, at: float) -> None:
        """Written as soon as the /run answer (the job id) arrives."""
        self._db.execute(
            "UPDATE items SET state = ?, job_id = ?, submitted_at = ?, attempts = attempts + 1 WHERE key = ?",
            (ItemState.SUBMITTED, job_id, at, key),
        )

    # A /retry is counted in ``attempts`` only once the service confirms it (its 200, or a later status
    # that is not the failure it was sent for). Until then a marker in ``meta`` holds the failure it was
    # sent for, so a resume after a kill can tell a retry that happened from one that never left.

    def retrying(self, key: str, failure: str) -> None:
        """Written before a /retry is sent: ``failure`` describes the status it answers (see Watched)."""
        self._db.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (_RETRY_MARK + key, failure)
        )

    def retry_confirmed(self, key: str) -> None:
        """The service confirmed the /retry: one execution more (one transaction)."""
        with self._transaction():
            self._db.execute("UPDATE items SET attempts = attempts + 1 WHERE key = ?", (key,))
            self._db.execute("DELETE FROM meta WHERE name = ?", (_RETRY_MARK + key,))

    def retry_unsent(self, key: str) -> None:
        """The /retry did not happen (certainly not sent, or the job still shows the same failure)."""
        self._db.execute("DELETE FROM meta WHERE name = ?", (_RETRY_MARK + key,))

    def unconfirmed_retries(self) -> dict[str, str]:
        """Key → the failure a /retry was sent for, for every /retry not yet confirmed or ruled out."""
        rows = self._db.execute(
            "SELECT name, value FROM meta WHERE substr(name, 1, ?) = ?", (len(_RETRY_MARK), _RETRY_MARK)
        )
        return {str(name)[len(_RETRY_MARK) :]: str(value) for name, value in rows}

    def lost_keys(self) -> list[str]:
        """Items recorded LOST (the service no longer knew their job)."""
        rows = self._db.execute(
            "SELECT key FROM items WHERE state = ? AND status = ?", (ItemState.TERMINAL, ItemStatus.LOST)
        )
        return [str(key) for (key,) in rows]

    def reopen(self, keys: Iterable[str]) -> None:
        """Make terminal items pending again, to be submitted anew (one transaction). ``submits`` is kept:
        the earlier job may have run, so the new submission counts in ``ambiguous()``."""
        with self._transaction():
            self._db.executemany(
                "UPDATE items SET state = ?, job_id = NULL, status = NULL, result = NULL, written = 0, "
                "attempts = 0, submitted_at = NULL WHERE key = ? AND state = ?",
                ((ItemState.PENDING, key, ItemState.TERMINAL) for key in keys),
            )

    def terminal(self, key: str, line: int, status: ItemStatus | str, result: str) -> None:
        """The item's final result (also for items that never reached the API, such as malformed lines)."""
        self._db.execute(
            "INSERT INTO items (key, line, state, status, result, seen) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = excluded.state, status = excluded.status, "
            "result = excluded.result",
            (key, line, ItemState.TERMINAL, status, result, self.run),
        )

    def mark_written(self, keys: Iterable[str]) -> None:
        """Record delivered output lines; several keys in one transaction."""
        with self._transaction():
            self._db.executemany("UPDATE items SET written = 1 WHERE key = ?", ((k,) for k in keys))

    def reset_written(self, keys: Iterable[str]) -> None:
        """Make the output file the authority: exactly ``keys`` are written (one transaction)."""
        with self._transaction():
            self._db.execute("UPDATE items SET written = 0 WHERE written = 1")
            self._db.executemany("UPDATE items SET written = 1 WHERE key = ?", ((k,) for k in keys))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
