"""An unmodified official worker: its behaviour is chosen per job by `input["mode"]`.

Polling files and blocking calls are deliberate: this is a test double, not an example.
"""
# ruff: noqa: ASYNC240, ASYNC251

import asyncio
import pathlib
import time

import runpod


async def handler(job):
    job_input = job["input"]
    mode = job_input.get("mode", "echo")
    if mode == "echo":
        return {"echo": job_input.get("value"), "worker": runpod.serverless.modules.worker_state.WORKER_ID}
    if mode == "batch-id":
        return {"batchId": job.get("batchId")}  # a Batch Jobs request carries its batch's id
    if mode == "big":
        return {"blob": "x" * job_input["size"]}
    if mode == "raise":
        raise ValueError(f"boom: {job_input.get('value')}")
    if mode == "error":
        return {"error": "bad input", "partial": 1}
    if mode == "refresh":
        return {"ok": True, "refresh_worker": True}
    if mode == "progress":
        runpod.serverless.progress_update(job, {"pct": 50})
        release = pathlib.Path(job_input["release"])
        while not release.exists():
            await asyncio.sleep(0.05)
        return {"done": True}
    if mode == "sleep":
        try:
            while True:
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            # Written aside, then renamed: the test polls for the file, so it must never see it empty.
            marker = pathlib.Path(job_input["marker"])
            marker.with_suffix(".tmp").write_text(job["id"])
            marker.with_suffix(".tmp").replace(marker)
            raise
    if mode == "hang":
        # Blocks the worker's loop: only killing the process ends it.
        while True:
            time.sleep(1)
    raise ValueError(f"unknown mode {mode!r}")


runpod.serverless.start({"handler": handler})
