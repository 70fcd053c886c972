"""Results over RunPod's 20 MB limit: dropped as RunPod drops them, but loudly.

RunPod refuses a worker's job-done body over 20 MB with a 400; the official worker only logs it (it
retries 5xx alone), so the job ends COMPLETED without `output` (runpod-python `rp_tips.py` warns of the
limit; runpod-python issue 309 shows the empty result). MB is 10**6 bytes, as `rp_tips.py` counts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from runpod_queue._contract import RESULT_LIMIT, JobStatus
from runpod_queue.emulator._http import HTTPError

if TYPE_CHECKING:
    from runpod_queue.emulator._jobs import JobRecord

__all__ = ["RESULT_LIMIT", "dropped_warning", "is_progress", "progress_warning", "refusal"]

_LIMIT_MB = RESULT_LIMIT // 1_000_000
_ADVICE = "Upload big results to object storage (s3Config) and return a URL"


def dropped_warning(job: JobRecord, size: int) -> str:
    return (
        f"job {job.id} on endpoint {job.endpoint.id}: its result is {size / 1_000_000:.1f} MB, over "
        f"RunPod's {_LIMIT_MB} MB limit, so it was dropped (the job ends without output, as on RunPod). "
        f"{_ADVICE}"
    )


def progress_warning(job: JobRecord, size: int) -> str:
    return (
        f"job {job.id} on endpoint {job.endpoint.id}: a progress update of {size / 1_000_000:.1f} MB was "
        f"refused (over RunPod's {_LIMIT_MB} MB limit); the run goes on"
    )


def refusal(size: int) -> HTTPError:
    """The 400 a job-done body over the limit gets."""
    return HTTPError(
        400, f"job-done body is {size / 1_000_000:.1f} MB; RunPod accepts at most {_LIMIT_MB} MB. {_ADVICE}"
    )


def is_progress(body: bytes) -> bool:
    """Whether an oversized job-done body is a progress update (which ends nothing)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("status") == JobStatus.IN_PROGRESS.value
