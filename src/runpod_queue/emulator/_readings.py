"""Where RunPod's own documents contradict each other, which reading the emulator follows.

The defaults are the emulator's long-standing behaviour; each alternative is the other documented
reading, selectable so a test can check code against both. docs/emulator.md cites both sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Readings"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "queued_ttl": ("timed_out", "deleted"),
    "finished_ttl": ("retention", "deleted"),
    "execution_timeout": ("TIMED_OUT", "FAILED"),
    "status_ttl": ("retention", "job_ttl"),
    "batch_answers": ("summary", "status"),
    "batch_list": ("object", "array"),
    "batch_request_status": ("job", "short"),
    "batch_result_input": ("omitted", "echoed"),
    "batch_result_order": ("submitted", "finished"),
    "batch_retention": ("kept", "retention"),
}


@dataclass(frozen=True, slots=True)
class Readings:
    """The emulator's reading of each contested rule.

    - `queued_ttl`: a job whose ttl runs out in the queue ends `"timed_out"` (TIMED_OUT, kept for the
      retention window, webhook sent: docs `serverless/endpoints/job-states`) or is `"deleted"` (404, no
      webhook: docs `serverless/endpoints/send-requests`, "deleted regardless of state").
    - `finished_ttl`: a finished job is kept for the `"retention"` window whatever its ttl (send-requests,
      "retained for a fixed period separate from TTL"), or is also `"deleted"` when its ttl, counted from
      submission, runs out first (`serverless/endpoints/endpoint-configurations`, "queued, running, or
      completed").
    - `execution_timeout`: a run past its executionTimeout ends `"TIMED_OUT"` (job-states: "the worker
      failed to report back before reaching the timeout threshold") or `"FAILED"` (endpoint-configurations:
      "the job fails and the worker stops"), with an `error` saying so.
    - `status_ttl`: `/status?ttl=MS` shortens how long a finished job's result is kept (`"retention"`,
      never longer) or sets the job's ttl to MS from now (`"job_ttl"`; docs
      `serverless/endpoints/operation-reference`: "sets the TTL to 6 seconds").

    Batch Jobs (`serverless/advanced-workflows/batch-jobs`, beta) leaves these open; each default is
    ours, the alternative the other likely reading, so one setting follows RunPod once it is known:

    - `batch_answers`: add, finalize, cancel, update and remove answer the batch's `"summary"` (the
      `GET` shape) or only `{id, status}` (`"status"`, as create does).
    - `batch_list`: `GET /batch` answers `{"batches": [...]}` (`"object"`, as REST v2 wraps lists) or a
      bare `"array"`.
    - `batch_request_status`: a waiting/running request shows `IN_QUEUE`/`IN_PROGRESS` (`"job"`, the /run
      names) or `QUEUED`/`RUNNING` (`"short"`).
    - `batch_result_input`: result items carry no `input` (`"omitted"`, the documented fields) or echo it
      (`"echoed"`).
    - `batch_result_order`: results in the order requests were added (`"submitted"`) or finished ones
      first, by finish time (`"finished"`; the page: "unspecified order").
    - `batch_retention`: a batch and its results stay while the emulator runs (`"kept"`) or go away a
      /run result's retention after the batch settles (`"retention"`).
    """

    queued_ttl: Literal["timed_out", "deleted"] = "timed_out"
    finished_ttl: Literal["retention", "deleted"] = "retention"
    execution_timeout: Literal["TIMED_OUT", "FAILED"] = "TIMED_OUT"
    status_ttl: Literal["retention", "job_ttl"] = "retention"
    batch_answers: Literal["summary", "status"] = "summary"
    batch_list: Literal["object", "array"] = "object"
    batch_request_status: Literal["job", "short"] = "job"
    batch_result_input: Literal["omitted", "echoed"] = "omitted"
    batch_result_order: Literal["submitted", "finished"] = "submitted"
    batch_retention: Literal["kept", "retention"] = "kept"

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"Readings.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
                )
