"""Client benchmarks against the emulator (run in a subprocess, so its CPU does not share our GIL).

1. Per-call overhead, sync: `Endpoint.status` against raw `httpx.Client.get` on the same server and job,
   sequential, interleaved rounds, medians (target (issue #27): ratio <= 1.05).
2. Per-call overhead, async: `AsyncEndpoint.status` against raw `aiohttp.ClientSession.get`, 32 calls in
   flight, limiter off, interleaved rounds, medians (target: ratio <= 1.10).
3. Submit and collect 1000 no-op jobs (run + wait per job, 100 at a time) through `AsyncClient`, against
   the same requests on a bare aiohttp session (`raw_aiohttp_batch`: same /run bodies, same /status-sync
   long-polls, same bound; `batch_same_requests` checks it from the emulator's request log) and against
   the official `runpod` package's `AsyncioEndpoint` (run all with asyncio.gather, then output()).
   The goal (<= 1.1x raw aiohttp) applies to the client with its rate limits OFF: raw aiohttp has no
   limiter, so only that comparison is like-for-like — it measures what the client's own code costs.
   The default (RunPod's limits on) is printed too: it adds the limiter's bookkeeping and would add any
   pacing the table imposes on a bigger batch, which is the limiter doing its job, not overhead.

Per-call figures are this process's CPU time per call (`time.process_time`, the server runs in another
process) — what the client itself costs — and wall time per call.

Prints `name: value` lines, then the ratios. `python bench/client.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from _harness import launch, stop
from runpod_queue import AsyncClient, Client, OperationLimit, RateLimits

API_KEY = "bench-key"
# Binds port 0 and prints the address it got (read by _harness.launch): no probe-then-bind race.
SERVER = """
from runpod_queue.emulator import Emulator
def noop(job):
    return 1
emu = Emulator({"noop": noop}, api_key=%r, workers=8, rate_limits=False, port=0)
emu.serve_forever(on_ready=lambda e: print(e.base_url, flush=True))
"""


# Limits that keep the limiter's bookkeeping on the path but never make a call wait.
_NEVER_WAITS = RateLimits(
    limits={op: OperationLimit(10**9, 400) for op in ("run", "runsync", "status", "status-sync")}
)


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    proc, root = launch([sys.executable, "-c", SERVER % API_KEY], ready_path="/v2/")
    return proc, f"{root}/v2"


def per_call(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def bench_status(base: str, calls: int, rounds: int) -> dict[str, float]:
    # The limiter stays on (its bookkeeping is part of the overhead) with a window that never makes it wait.
    with Client(API_KEY, base_url=base, rate_limits=_NEVER_WAITS) as client, httpx.Client() as raw:
        ep = client.endpoint("noop")
        job = ep.wait(ep.run({}).id, timeout=10)  # a /run job: kept 30 min, a /runsync one only 1 min
        url = f"{base}/noop/status/{job.id}"
        headers = {"Authorization": f"Bearer {API_KEY}"}

        def raw_status() -> object:
            response = raw.get(url, headers=headers)
            response.raise_for_status()
            return response.json()

        def our_status() -> object:
            return ep.status(job.id)

        per_call(raw_status, 200)  # warm both pools
        per_call(our_status, 200)
        raw_runs, our_runs = [], []
        for _ in range(rounds):
            raw_runs.append(per_call(raw_status, calls))
            our_runs.append(per_call(our_status, calls))
    return _figures("status", "raw_httpx", raw_runs, "endpoint", our_runs)


def _figures(
    prefix: str, raw_name: str, raw: list[tuple[float, float]], our_name: str, ours: list[tuple[float, float]]
) -> dict[str, float]:
    raw_cpu, our_cpu = statistics.median(r[0] for r in raw), statistics.median(o[0] for o in ours)
    return {
        f"{prefix}_{raw_name}_cpu_us": raw_cpu,
        f"{prefix}_{our_name}_cpu_us": our_cpu,
        f"{prefix}_{raw_name}_wall_us": statistics.median(r[1] for r in raw),
        f"{prefix}_{our_name}_wall_us": statistics.median(o[1] for o in ours),
        f"{prefix}_ratio": our_cpu / raw_cpu,
    }


async def _concurrently(fn: Callable[[], Awaitable[object]], n: int, in_flight: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, ``n`` calls made by ``in_flight`` tasks."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await fn()

    share = n // in_flight
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(share) for _ in range(in_flight)))
    done = share * in_flight
    return (time.process_time() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6


async def bench_async_status(base: str, calls: int, rounds: int, in_flight: int = 32) -> dict[str, float]:
    import aiohttp

    # As in bench_status: the limiter keeps its books but never waits. RunPod's own table (2000 status per
    # 10 s) would throttle the later rounds, and idle waits change the CPU cost per call.
    async with (
        AsyncClient(API_KEY, base_url=base, rate_limits=False) as client,
        AsyncClient(API_KEY, base_url=base, rate_limits=_NEVER_WAITS) as limited_client,
        aiohttp.ClientSession() as session,
    ):
        ep = client.endpoint("noop")
        limited_ep = limited_client.endpoint("noop")
        job = await ep.wait((await ep.run({})).id, timeout=10)  # kept 30 min (a /runsync job: 1 min)
        url = f"{base}/noop/status/{job.id}"
        headers = {"Authorization": f"Bearer {API_KEY}"}

        async def raw_status() -> object:
            async with session.get(url, headers=headers) as response:
                response.raise_for_status()
                return await response.json()

        async def our_status() -> object:
            return await ep.status(job.id)

        async def limited_status() -> object:
            return await limited_ep.status(job.id)

        await _concurrently(raw_status, 200, in_flight)  # warm all pools
        await _concurrently(our_status, 200, in_flight)
        await _concurrently(limited_status, 200, in_flight)
        raw_runs: list[tuple[float, float]] = []
        our_runs: list[tuple[float, float]] = []
        limited_runs: list[tuple[float, float]] = []
        variants = [(raw_status, raw_runs), (our_status, our_runs), (limited_status, limited_runs)]
        for i in range(rounds):
            # Every other round in reverse order, so a drift in the machine's load hits each side alike.
            for fn, runs in variants if i % 2 == 0 else variants[::-1]:
                runs.append(await _concurrently(fn, calls, in_flight))
    figures = _figures("async_status", "raw_aiohttp", raw_runs, "endpoint", our_runs)
    limited = _figures("async_limiter", "off", our_runs, "on", limited_runs)
    return figures | limited


async def ours_batch(base: str, jobs: int, concurrency: int, rate_limits: RateLimits) -> float:
    async with AsyncClient(API_KEY, base_url=base, rate_limits=rate_limits) as client:
        ep = client.endpoint("noop")
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> object:
            async with gate:
                job = await ep.run({"i": i})
                return (await ep.wait(job.id, timeout=120)).output

        await ep.health()  # open the pool outside the timing, as the official client's session is
        started = time.perf_counter()
        outputs = await asyncio.gather(*(one(i) for i in range(jobs)))
        elapsed = time.perf_counter() - started
    assert outputs == [1] * jobs, "not every job completed"
    return elapsed


TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
WAIT_HOLD_MS = 30_000  # the hold AsyncEndpoint.wait asks of /status-sync (request_mix checks it matches)


async def raw_aiohttp_batch(base: str, jobs: int, concurrency: int) -> float:
    """The anchor: the requests AsyncClient makes, on a bare aiohttp session with no limiter.

    Same /run bodies (compact JSON, as the client encodes them), same polling (a /status-sync long-poll
    held by the server until the job ends — what ``AsyncEndpoint.wait`` sends — repeated if a hold ends
    first), same bound (100 jobs at a time over aiohttp's default 100-connection pool, which is also the
    client's default). ``request_mix`` checks the emulator saw the same requests from both sides."""
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    json_body = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> object:
            async with gate:
                body = json.dumps({"input": {"i": i}}, separators=(",", ":")).encode()
                async with session.post(f"{base}/noop/run", data=body, headers=json_body) as response:
                    response.raise_for_status()
                    job_id = (await response.json())["id"]
                while True:
                    url = f"{base}/noop/status-sync/{job_id}?wait={WAIT_HOLD_MS}"
                    async with session.get(url) as response:
                        response.raise_for_status()
                        data = await response.json()
                    if data["status"] in TERMINAL:
                        return data.get("output")

        async with session.get(f"{base}/noop/health") as response:
            await response.read()
        started = time.perf_counter()
        outputs = await asyncio.gather(*(one(i) for i in range(jobs)))
        elapsed = time.perf_counter() - started
    assert outputs == [1] * jobs, "not every job completed"
    return elapsed


def request_mix(base: str) -> str:
    """The API requests the emulator received since the last call, by method, operation and query
    (job ids left out), e.g. ``POST run x1000, GET status-sync?wait=30000 x1000``; then forgets them."""
    root = base.removesuffix("/v2")
    auth = {"Authorization": API_KEY}
    records = httpx.get(f"{root}/_emulator/requests", headers=auth).json()["requests"]
    httpx.delete(f"{root}/_emulator/requests", headers=auth)
    mix = collections.Counter(
        f"{r['method']} {r['operation']}{'?' + r['query'] if r['query'] else ''}"
        for r in records
        if r["operation"] != "health"
    )
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(mix.items()))


async def runpod_batch(base: str, jobs: int) -> float:
    import aiohttp
    import runpod

    logging.getLogger().setLevel(logging.WARNING)  # `import runpod` switched the root logger to INFO
    runpod.api_key = API_KEY
    runpod.endpoint_url_base = base
    async with aiohttp.ClientSession() as session:
        ep = runpod.AsyncioEndpoint("noop", session)
        await ep.health()
        started = time.perf_counter()
        handles = await asyncio.gather(*(ep.run({"i": i}) for i in range(jobs)))
        outputs = await asyncio.gather(*(h.output(timeout=120) for h in handles))
        elapsed = time.perf_counter() - started
    assert outputs == [1] * jobs, "not every job completed"
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds (smoke run)")
    args = parser.parse_args(argv)
    calls, rounds, jobs, repeats = (300, 3, 1000, 1) if args.quick else (1000, 5, 1000, 3)
    os.environ.pop("RUNPOD_API_KEY", None)
    proc, base = start_server()
    try:
        figures = bench_status(base, calls, rounds)
        figures |= asyncio.run(bench_async_status(base, calls * 2, rounds))
        times: dict[str, list[float]] = {"on": [], "off": [], "raw": [], "runpod": []}
        mixes: dict[str, set[str]] = {"on": set(), "off": set(), "raw": set()}
        request_mix(base)  # forget the status benches' requests
        for _ in range(repeats):  # interleaved, so load drift hits all four alike
            times["on"].append(asyncio.run(ours_batch(base, jobs, 100, RateLimits.runpod())))
            mixes["on"].add(request_mix(base))
            times["off"].append(asyncio.run(ours_batch(base, jobs, 100, RateLimits.off())))
            mixes["off"].add(request_mix(base))
            times["raw"].append(asyncio.run(raw_aiohttp_batch(base, jobs, 100)))
            mixes["raw"].add(request_mix(base))
            times["runpod"].append(asyncio.run(runpod_batch(base, jobs)))
            request_mix(base)
    finally:
        stop(proc)
    figures["batch_jobs"] = jobs
    figures["batch_async_client_s"] = statistics.median(times["off"])
    figures["batch_async_client_limits_on_s"] = statistics.median(times["on"])
    figures["batch_raw_aiohttp_s"] = statistics.median(times["raw"])
    figures["batch_runpod_asyncio_s"] = statistics.median(times["runpod"])
    figures["batch_raw_ratio"] = figures["batch_async_client_s"] / figures["batch_raw_aiohttp_s"]
    figures["batch_raw_limits_on_ratio"] = (
        figures["batch_async_client_limits_on_s"] / figures["batch_raw_aiohttp_s"]
    )
    figures["batch_ratio"] = figures["batch_async_client_limits_on_s"] / figures["batch_runpod_asyncio_s"]
    for name, value in figures.items():
        if not name.endswith("_ratio"):
            print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    print(f"status_ratio: {figures['status_ratio']:.3f}  (Endpoint.status / raw httpx, CPU, target <= 1.05)")
    print(
        f"async_status_ratio: {figures['async_status_ratio']:.3f}  "
        "(AsyncEndpoint.status / raw aiohttp, 32 in flight, CPU, target <= 1.10)"
    )
    print(
        f"async_limiter_ratio: {figures['async_limiter_ratio']:.3f}  "
        "(AsyncEndpoint.status limiter on / off, 32 in flight, CPU, target <= 1.1)"
    )
    for side, mix in mixes.items():
        print(f"batch_requests_{side}: {' | '.join(sorted(mix))}")
    same = mixes["off"] == mixes["raw"] == mixes["on"]
    print(f"batch_same_requests: {'yes' if same else 'NO - the raw anchor is not like-for-like'}")
    print(
        f"batch_raw_ratio: {figures['batch_raw_ratio']:.3f}  "
        "(1000 jobs, AsyncClient limits off / raw aiohttp, same requests, wall, target <= 1.1)"
    )
    print(
        f"batch_raw_limits_on_ratio: {figures['batch_raw_limits_on_ratio']:.3f}  "
        "(the same with RunPod's rate limits on, the default; raw aiohttp has none: not the goal's figure)"
    )
    ratio = figures["batch_ratio"]
    print(f"batch_ratio: {ratio:.3f}  (AsyncClient, limits on / runpod AsyncioEndpoint, lower is better)")


if __name__ == "__main__":
    main()
