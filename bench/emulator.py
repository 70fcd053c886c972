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
import sys
import time
from collections.abc import Awaitable, Callable

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
        while True:
            async with session.get(f"{status_url}/{job_id}") as response:
                data = await response.json(content_type=None)
            if data.get("status") in TERMINAL:
                return

    return one


def measure(name: str, base: str, clients: list[int], seconds: float) -> dict[tuple[str, int], float]:
    results: dict[tuple[str, int], float] = {}
    for concurrency in clients:
        for mode, job in (
            ("runsync", runsync_job(f"{base}/runsync")),
            ("run+status", run_status_job(f"{base}/run", f"{base}/status")),
        ):
            rate = asyncio.run(drive(concurrency, seconds, job))
            results[(mode, concurrency)] = rate
            print(f"{name} {mode} clients={concurrency}: {rate:.0f} jobs/s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s per measurement instead of 4 s")
    parser.add_argument("--clients", default="1,8,64")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else 4.0
    clients = [int(c) for c in args.clients.split(",")]

    port = free_port()
    with emulator_process("noop=bench/_noop_worker.py", port, "--no-rate-limits", "--workers", "4") as base:
        ours = measure("emulator", f"{base}/noop", clients, seconds)
    port = free_port()
    with official_test_server(port) as root:
        theirs = measure("official", root, clients, seconds)

    print("--- ratios (emulator / official test server) ---")
    for key in sorted(ours):
        mode, concurrency = key
        ratio = ours[key] / theirs[key] if theirs[key] else float("inf")
        print(f"ratio {mode} clients={concurrency}: {ratio:.2f}x")
    target = ours[("runsync", 8)] / theirs[("runsync", 8)] if ("runsync", 8) in ours else None
    if target is not None:
        print(f"target runsync@8 >= 2.0x: {'met' if target >= 2 else 'NOT met'} ({target:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
