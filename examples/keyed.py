"""A handler ready for `rpq batch --native`: `keep_key` carries each item's key through RunPod's Batch Jobs,
whose results say nothing about their input. `rpq serve examples/keyed.py` serves it as endpoint `keyed`."""

from typing import Any

from runpod_queue.worker import keep_key


@keep_key
def handler(job: dict[str, Any]) -> Any:
    return {"upper": str(job["input"].get("text", "")).upper()}
