"""An unmodified official worker running up to 3 jobs at once (it takes them with job-take-batch)."""

import asyncio

import runpod

running = 0
peak = 0


async def handler(job):
    global running, peak
    running += 1
    peak = max(peak, running)
    try:
        await asyncio.sleep(job["input"].get("seconds", 0.5))
    finally:
        running -= 1
    return {"peak": peak}


runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 3})
