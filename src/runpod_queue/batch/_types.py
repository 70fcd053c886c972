"""What a batch hands back: one ``BatchResult`` per input, one ``BatchSummary`` per run."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runpod_queue._units import to_ms

__all__ = ["BatchResult", "BatchSummary", "ItemStatus", "count_finished", "item_status", "key_text"]


class ItemStatus(enum.StrEnum):
    """An item's final status, as the output file and the journal spell it (a ``str``: each value is
    the text written, so files written before this type existed still resume).

    RunPod's four final statuses, and five of our own.
    """

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    #: The input line was malformed (never sent).
    INVALID = "INVALID"
    #: The API refused the submission (400, 413, an input that cannot be encoded).
    REJECTED = "REJECTED"
    #: The job was gone (404) when collected: RunPod's retention or the job's ttl ran out first.
    LOST = "LOST"
    #: The job's answers broke the API contract, again and again.
    UNREADABLE = "UNREADABLE"
    #: A native batch (``BatchRunner(native=True)``) ran it, but no result carries its key (a handler not
    #: wrapped with ``runpod_queue.worker.keep_key``): its result is among the batch's unkeyed ones.
    UNMATCHED = "UNMATCHED"


_ITEM_STATUSES: dict[str, ItemStatus] = {status.value: status for status in ItemStatus}


def item_status(text: str) -> ItemStatus | str:
    """``text`` as its ``ItemStatus``; a status this version does not know stays the plain string."""
    return _ITEM_STATUSES.get(text, text)


def key_text(key: Any) -> str:
    """A key's identity in the journal: its JSON text (so 1 and "1" stay different keys)."""
    return json.dumps(key, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One output line: ``{"key", "id", "status", "output" | "error", "delayTime", "executionTime",
    "attempts"}``. ``id`` is None for items that never became a job (INVALID, REJECTED).

    ``delay_time`` (queue time) and ``execution_time`` are seconds, as everywhere on the Python side; the
    output line keeps RunPod's names and milliseconds, so files written before 1.0 still resume.
    """

    key: Any
    id: str | None
    status: ItemStatus | str
    output: Any = None
    error: Any = None
    delay_time: float | None = None
    execution_time: float | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """True when the item's job COMPLETED."""
        return self.status == ItemStatus.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """The result as its output line's object: RunPod's names and milliseconds.

        Returns:
            ``{"key", "id", "status", "output" | "error", "delayTime", "executionTime", "attempts"}``.
        """
        data: dict[str, Any] = {"key": self.key, "id": self.id, "status": str(self.status)}
        if self.status == ItemStatus.COMPLETED:
            data["output"] = self.output
        else:
            data["error"] = self.error
        data["delayTime"] = None if self.delay_time is None else to_ms(self.delay_time)
        data["executionTime"] = None if self.execution_time is None else to_ms(self.execution_time)
        data["attempts"] = self.attempts
        return data

    def to_json(self) -> str:
        """The result as one line of the results file (``to_dict()`` as compact JSON)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        """Read a result back from an output line's object (the inverse of ``to_dict``).

        Args:
            data: One parsed line of a results file.

        Returns:
            The result; milliseconds become seconds.
        """
        return cls(
            key=data.get("key"),
            id=data.get("id"),
            status=item_status(str(data.get("status"))),
            output=data.get("output"),
            error=data.get("error"),
            delay_time=_seconds(data.get("delayTime")),
            execution_time=_seconds(data.get("executionTime")),
            attempts=int(data.get("attempts") or 0),
        )


def _seconds(ms: Any) -> float | None:
    """An output line's milliseconds as seconds (None, or anything that is not a number, stays None)."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    return ms / 1000.0


@dataclass(slots=True)
class BatchSummary:
    """Counts for a whole batch (items finished by earlier runs included, see ``reused``); the live
    progress callback receives copies of the same object while the run goes on."""

    total: int | None = None  # inputs expected, when the caller said (for the ETA)
    read: int = 0  # input lines/items read this run
    submitted: int = 0  # jobs created by this run (/run answered with an id)
    resumed: int = 0  # jobs an earlier run submitted, collected by this one
    reused: int = 0  # results an earlier run already journaled: not fetched again
    completed: int = 0
    failed: int = 0  # FAILED / TIMED_OUT / CANCELLED after every allowed retry
    lost: int = 0  # expired before they could be collected (404)
    invalid: int = 0  # malformed input lines
    rejected: int = 0  # refused by the API at submission
    duplicates: int = 0  # input lines whose key was already used: skipped, reported
    unmatched: int = 0  # native batches: ran, but no result carries the item's key (never guessed)
    retried: int = 0  # /retry calls the service confirmed (see retry_failed)
    # Submissions that may have created a job without us learning its id (resubmitted), over the whole
    # journal: a resumed batch reports what its earlier runs could not rule out too.
    ambiguous: int = 0
    resubmitted_lost: int = 0  # LOST items made pending again by resubmit_lost (also counted as ambiguous)
    in_flight: int = 0  # items between being read and their result: waiting for a /run slot or running
    waiting: int = 0  # read, waiting for a /run slot (the endpoint's rate limit)
    in_queue: int = 0
    in_progress: int = 0
    run_calls: int = 0
    status_calls: int = 0
    webhook_deliveries: int = 0  # verified webhook deliveries received (webhook-driven batches)
    rate_limited: int = 0  # 429 answers seen (the limiter should keep this at 0)
    transient_errors: int = 0  # connection errors and 5xx, retried
    elapsed: float = 0.0  # seconds this run
    done_this_run: int = 0  # results this run produced (malformed lines and reused results not counted)
    interrupted: bool = False

    @property
    def finished(self) -> int:
        """Items with a final result, earlier runs included."""
        return self.completed + self.failed + self.lost + self.invalid + self.rejected + self.unmatched

    @property
    def status_calls_per_job(self) -> float:
        """Status calls (short ``/status`` and held ``/status-sync``) per job this run submitted or
        resumed: 1 when each job was held until it ended, 0 with webhooks that all arrived."""
        jobs = self.submitted + self.resumed
        return self.status_calls / jobs if jobs else 0.0

    @property
    def running(self) -> int:
        """Jobs on the endpoint (submitted, not yet collected)."""
        return self.in_flight - self.waiting

    @property
    def failures(self) -> int:
        """Items that did not complete: failed, lost, invalid, rejected, unmatched and duplicate lines."""
        return self.failed + self.lost + self.invalid + self.rejected + self.unmatched + self.duplicates

    @property
    def ok(self) -> bool:
        """Every item completed and nothing is left in flight."""
        return self.failures == 0 and self.in_flight == 0 and not self.interrupted

    @property
    def rate(self) -> float:
        """Results per second produced by this run (the ``rate`` of the live line and the ETA)."""
        return self.done_this_run / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every input is finished at the current rate; None when unknown."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0, self.total - self.finished - self.duplicates) / self.rate


# The final statuses summed as `failed`: the job ended without an output to keep.
_COUNTED_FAILED = frozenset(
    {ItemStatus.FAILED, ItemStatus.TIMED_OUT, ItemStatus.CANCELLED, ItemStatus.UNREADABLE}
)


def count_finished(summary: BatchSummary, counts: dict[str, int]) -> None:
    """Add the journal's terminal items per final status (``Journal.final_counts``) to `summary`'s
    counters: what a resumed run, `/run` or native, starts from."""
    for status, n in counts.items():
        if status == ItemStatus.COMPLETED:
            summary.completed += n
        elif status in _COUNTED_FAILED:
            summary.failed += n
        elif status == ItemStatus.LOST:
            summary.lost += n
        elif status == ItemStatus.INVALID:
            summary.invalid += n
        elif status == ItemStatus.REJECTED:
            summary.rejected += n
        elif status == ItemStatus.UNMATCHED:
            summary.unmatched += n
