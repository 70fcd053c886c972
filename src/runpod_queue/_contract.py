"""Facts of the RunPod queue API (RunPod's docs and SDKs), in one place for the client and the emulator.

Nothing here does I/O. Numbers are the documented ones; where the contract is silent the emulator and
the client make the same choice, recorded in docs/emulator.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_EXECUTION_TIMEOUT_MS",
    "DEFAULT_TTL_MS",
    "LIMITS",
    "MAX_DURATION_MS",
    "MIN_EXECUTION_TIMEOUT_MS",
    "MIN_HOLD_MS",
    "MIN_TTL_MS",
    "RATE_WINDOW_S",
    "RESULT_LIMIT",
    "RETENTION_RUN_MS",
    "RETENTION_SYNC_MS",
    "RUNSYNC_DEFAULT_WAIT_MS",
    "RUNSYNC_MAX_WAIT_MS",
    "RUNSYNC_MIN_WAIT_MS",
    "RUNSYNC_PAYLOAD_LIMIT",
    "RUN_PAYLOAD_LIMIT",
    "STREAM_CHUNK_LIMIT",
    "TERMINAL_STATUSES",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_RETRY_GAP_MS",
    "JobStatus",
    "OperationLimit",
]

DEFAULT_BASE_URL: Final = "https://api.runpod.ai/v2"


class JobStatus(enum.StrEnum):
    """A job's state, spelled as RunPod spells it on the wire."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED, CANCELLED or TIMED_OUT: a job in it will not change any more."""
        return self in TERMINAL_STATUSES


# CANCELLED is terminal: the official SDK forgets it and its stream never ends on a cancelled job.
TERMINAL_STATUSES: Final = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

# Execution policy bounds (ms).
MIN_EXECUTION_TIMEOUT_MS: Final = 5_000
DEFAULT_EXECUTION_TIMEOUT_MS: Final = 600_000
MIN_TTL_MS: Final = 10_000
DEFAULT_TTL_MS: Final = 86_400_000
MAX_DURATION_MS: Final = 7 * 24 * 3_600_000

# runsync's ?wait= window (ms).
RUNSYNC_MIN_WAIT_MS: Final = 1_000
RUNSYNC_MAX_WAIT_MS: Final = 300_000
RUNSYNC_DEFAULT_WAIT_MS: Final = 90_000
# The shortest hold a client asks of /stream (and, by our choice, /status-sync): RunPod's own tooling
# documents `wait` 1000 to 300000 ms for /stream.
MIN_HOLD_MS: Final = 1_000

# Payload limits (bytes of the encoded request body). MB here is 10**6, as RunPod writes it.
RUN_PAYLOAD_LIMIT: Final = 10_000_000
RUNSYNC_PAYLOAD_LIMIT: Final = 20_000_000
STREAM_CHUNK_LIMIT: Final = 1_000_000
# A worker's result (the job-done body): over this, RunPod refuses it and the job ends without output.
RESULT_LIMIT: Final = 20_000_000

# How long a finished job's result stays readable (ms).
RETENTION_RUN_MS: Final = 30 * 60_000
RETENTION_SYNC_MS: Final = 60_000

# Webhook delivery: the first attempt plus up to 2 more, about 10 s apart.
WEBHOOK_ATTEMPTS: Final = 3
WEBHOOK_RETRY_GAP_MS: Final = 10_000

RATE_WINDOW_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class OperationLimit:
    """Requests allowed per rate window, and how many may be in flight at once (None: no cap)."""

    per_window: int
    in_flight: int | None


# Keyed by operation name. status, status-sync and stream share one documented row but are counted
# separately per operation, as each is its own route.
LIMITS: Final[dict[str, OperationLimit]] = {
    "run": OperationLimit(1000, 200),
    "runsync": OperationLimit(2000, 400),
    "status": OperationLimit(2000, 400),
    "status-sync": OperationLimit(2000, 400),
    "stream": OperationLimit(2000, 400),
    "cancel": OperationLimit(100, 20),
    "purge-queue": OperationLimit(2, None),
    # every route under /v2/<endpoint>/openai/ (send-requests.mdx: `/openai/*`)
    "openai": OperationLimit(2000, 400),
}
