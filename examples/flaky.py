"""A handler that fails its first attempt at each job and succeeds when the job is retried.

It stands for a transient error (a GPU out of memory, a model download that timed out): the job ends
FAILED, `rpq retry ENDPOINT JOB` requeues it under the same id with the same input, and the second
attempt completes. State is per process, so this only works in-process (`rpq serve`, `rpq demo`).
"""

from __future__ import annotations

import threading
from typing import Any

_seen: set[str] = set()
_lock = threading.Lock()


def handler(job: dict[str, Any]) -> Any:
    with _lock:
        first_attempt = job["id"] not in _seen
        _seen.add(job["id"])
    if first_attempt:
        raise RuntimeError("CUDA out of memory (simulated): retry the job")
    return {"ok": True, "input": job["input"]}
