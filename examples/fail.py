"""A handler that validates its input and raises: the job ends FAILED with RunPod's JSON error string
(error_type, error_message, error_traceback), which the client parses into `Job.error_type` /
`Job.error_message` and `rpq` prints as one line.

Returning {"error": "..."} instead of raising also fails the job, with that plain message.
"""

from __future__ import annotations

from typing import Any


def handler(job: dict[str, Any]) -> Any:
    spec = job["input"]
    if not isinstance(spec, dict):
        raise TypeError("input must be a JSON object")
    if "prompt" not in spec:
        raise ValueError(f"input needs a 'prompt' (got keys: {sorted(spec)})")
    if not isinstance(spec["prompt"], str):
        return {"error": "'prompt' must be a string"}
    return {"prompt": spec["prompt"], "length": len(spec["prompt"])}
