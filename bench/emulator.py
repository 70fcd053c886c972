"""End-to-end jobs per second through the emulator vs the official `runpod` test server, side by side.

Both serve the same no-op handler (bench/_noop_worker.py) in their own process; one aiohttp load
generator drives each with 1, 8 and 64 concurrent clients:

- runsync: POST /runsync, one job per call;
- run + status: POST /run, then GET /status until the job is terminal (the official server runs the
  job inside /status).

Prints `name: value` lines and the ratio at 8 clients (target >= 2.0). `--quick` shortens each run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from _harness import emulator_process, free_port, official_test_server

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
BODY = b'{"input": {"n": 1}}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


async def drive(
    concurrency: int, seconds: float, one_job: Callable[[aiohttp.ClientSession], Awaitable[None]]
) -> float:
    """Run `one_job` back to back on `concurrency` clients for `seconds`; returns jobs per second."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        for _ in range(min(concurrency, 8)):  # warm connections and code paths
            await one_job(session)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await one_job(session)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def runsync_job(url: str) -> Callable[[aiohttp.ClientSession], Awaitable[None]]:
    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(url, data=BODY) as response:
            data = await response.json(content_type=None)
            if data.get("status") != "COMPLETED":
                raise RuntimeError(f"unexpected runsync answer: {data}")

    return one


def run_status_job(run_url: str, status_url: str) -> Callable[[aiohttp.ClientSession], Awaitable[None]]:
    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(run_url, data=BODY) as response:
            job_id = (await response.json(content_type=None))["id"]
        for _ in range(10_000):
            # POST: the official test server only routes POST /status (the contract accepts both).
            async with session.post(f"{status_url}/{job_id}") as response:
                data = await response.json(content_type=None)
            if data.get("status") in TERMINAL:
                return
        raise RuntimeError(f"job {job_id} never finished: {data}")

    return one


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"input": {"n": 1}}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_rate(url: str, concurrency: int, seconds: float) -> float:
    """runsync through wrk (a C load generator, so the figure is the server's, not Python's client)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    threads = min(2, concurrency)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} failed answers from {url}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot read wrk's output: {out}")
    return float(match.group(1))


def measure(name: str, base: str, clients: list[int], seconds: float) -> dict[tuple[str, int], float]:
    results: dict[tuple[str, int], float] = {}
    for concurrency in clients:
        if USE_WRK:
            rate = wrk_rate(f"{base}/runsync", concurrency, seconds)
        else:
            rate = asyncio.run(drive(concurrency, seconds, runsync_job(f"{base}/runsync")))
        results[("runsync", concurrency)] = rate
        print(f"{name} runsync clients={concurrency}: {rate:.0f} jobs/s", flush=True)
        job = run_status_job(f"{base}/run", f"{base}/status")
        rate = asyncio.run(drive(concurrency, seconds, job))
        results[("run+status", concurrency)] = rate
        print(f"{name} run+status clients={concurrency}: {rate:.0f} jobs/s", flush=True)
    return results


USE_WRK = shutil.which("wrk") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s per measurement instead of 4 s")
    parser.add_argument("--clients", default="1,8,64")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else 4.0
    clients = [int(c) for c in args.clients.split(",")]

    print(f"load generator: {'wrk (runsync) + aiohttp (run+status)' if USE_WRK else 'aiohttp'}")
    if not USE_WRK:
        print(
            "note: install wrk (apt-get install wrk) so runsync figures measure the servers, "
            "not Python's client"
        )
    port = free_port()
    flags = ("--no-rate-limits", "--workers", "4")
    with emulator_process("noop=bench/_noop_worker.py", port, *flags) as base:
        ours = measure("emulator(sync handler)", f"{base}/noop", clients, seconds)
    port = free_port()
    with emulator_process("noop=bench/_noop_async.py", port, *flags) as base:
        ours_async = measure("emulator(async handler)", f"{base}/noop", clients, seconds)
    port = free_port()
    with official_test_server(port) as root:
        theirs = measure("official", root, clients, seconds)

    print("--- ratios (emulator / official test server, same no-op handler unless noted) ---")
    for label, mine in (("sync handler", ours), ("async handler", ours_async)):
        for key in sorted(mine):
            mode, concurrency = key
            ratio = mine[key] / theirs[key] if theirs[key] else float("inf")
            print(f"ratio {label} {mode} clients={concurrency}: {ratio:.2f}x")
    if ("runsync", 8) in ours:
        target = ours[("runsync", 8)] / theirs[("runsync", 8)]
        print(
            f"target runsync@8 >= 2.0x (sync handler, as the official server runs it): {target:.2f}x "
            f"({'met' if target >= 2 else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
