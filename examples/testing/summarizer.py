"""An application that calls a RunPod endpoint, written as RunPod's docs show: `requests`, the API's
URL hard-coded, the key from $RUNPOD_API_KEY. Nothing in it knows about tests or the emulator;
`test_summarizer.py` tests it unchanged with `mock_runpod`."""

from __future__ import annotations

import os
import time
from typing import Any

import requests

API = "https://api.runpod.ai/v2/summarizer"


class SummaryFailed(Exception):
    """The job failed on the endpoint; the message is the worker's error."""


class SummaryExpired(Exception):
    """The job never ran (its ttl ran out in the queue) or its result is gone (RunPod keeps it 30 min)."""


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['RUNPOD_API_KEY']}"}


def submit(text: str) -> str:
    """Queue a summary; returns the job id."""
    r = requests.post(f"{API}/run", json={"input": {"text": text}}, headers=_headers(), timeout=10)
    r.raise_for_status()
    return str(r.json()["id"])


def result(job_id: str, *, poll_every: float = 0.05, max_polls: int = 1000) -> Any:
    """Poll until the job ends; its output, or SummaryFailed / SummaryExpired."""
    for _ in range(max_polls):
        r = requests.get(f"{API}/status/{job_id}", headers=_headers(), timeout=10)
        if r.status_code == 404:
            raise SummaryExpired(f"job {job_id} is gone: fetch results within 30 minutes")
        r.raise_for_status()
        job = r.json()
        if job["status"] == "COMPLETED":
            return job["output"]
        if job["status"] == "FAILED":
            raise SummaryFailed(job.get("error", "no error given"))
        if job["status"] == "TIMED_OUT":
            raise SummaryExpired(f"job {job_id} timed out before a worker took it")
        time.sleep(poll_every)
    requests.post(f"{API}/cancel/{job_id}", headers=_headers(), timeout=10)  # do not pay for it any more
    raise TimeoutError(f"job {job_id} did not finish; cancelled")


def summarize(text: str) -> Any:
    return result(submit(text))
