"""The emulator's server cost under wrk, side by side with the official `runpod` test server (issue #16).

Two parts, each measured in rounds (default 3) whose figures are compared only within the round (the
machine may be shared: absolute figures drift, ratios from one round do not) and summed up as medians:

1. runsync: POST /runsync with wrk at 1 and 8 connections against three servers running at once, the
   same no-op handler (bench/_noop_worker.py): the emulator with it as a sync handler, the emulator with
   its async twin (bench/_noop_async.py: no handler-thread hand-off), and the official test server
   (`--rp_serve_api`), and the ceiling: a raw ASGI app answering a constant JSON on the same uvicorn +
   uvloop + httptools stack (bench/_ceiling_server.py), what any Python route can reach here. Targets
   (issue #27): the sync emulator >= 2.5x the official server at 8 connections, >= 1.5x at 1 (with
   `--workers 1`), and >= 0.5x the ceiling.
2. retained jobs: POST /run and GET /status/<id> with wrk against an emulator holding 100,000 finished
   jobs and an empty one (both on a virtual clock, so retention never expires). Target: within 10%.

`--baseline DIR` adds the emulator from another source tree (DIR holds its `runpod_queue` package) with
the sync handler to the runsync part: before/after ratios from one run. `--run-status` adds
run-then-poll-status jobs per second from an aiohttp client (the official server runs the job inside
/status). Needs wrk: `apt-get install wrk` (Debian/Ubuntu package `wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import httpx

from _harness import Served, ceiling_server, cpu_seconds, emulator_process, official_test_server

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
BODY = b'{"input": {"n": 1}}'
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}
EMULATOR_FLAGS = ["--no-rate-limits", "--workers", "8"]  # --workers N replaces the 8

POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"input": {"n": 1}}'
wrk.headers["Content-Type"] = "application/json"
"""

# Stops each wrk thread after its share of requests (`-- <count>`): wrk itself only knows durations.
FILL_SCRIPT = (
    POST_SCRIPT
    + """
local left = 0
function init(args) left = tonumber(args[1]) end
function response(status, headers, body)
  if status ~= 200 then error("fill: /run answered " .. status) end
  left = left - 1
  if left <= 0 then wrk.thread:stop() end
end
"""
)


@contextlib.contextmanager
def lua(text: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="rpq-bench-") as script:
        script.write(text)
        script.flush()
        yield script.name


def wrk_command(url: str, connections: int, seconds: float, script: str | None) -> list[str]:
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    return [*command, *(["-s", script] if script else []), url]


def wrk_run(url: str, connections: int, seconds: float, script: str | None = None) -> tuple[float, int]:
    """(requests per second, requests) wrk got from `url` (a C load generator: the figures are the
    server's)."""
    out = subprocess.run(
        wrk_command(url, connections, seconds, script), capture_output=True, text=True, check=True
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} failed answers from {url}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if not rate or not done:
        raise RuntimeError(f"cannot read wrk's output: {out}")
    return float(rate.group(1)), int(done.group(1))


def wrk_rate(url: str, connections: int, seconds: float, script: str | None = None) -> float:
    return wrk_run(url, connections, seconds, script)[0]


def wrk_cost(
    server: Served, path: str, connections: int, seconds: float, script: str | None = None
) -> tuple[float, float]:
    """(requests per second, the server's CPU µs per request): the second figure barely moves when other
    processes compete for the CPU, the first does."""
    cpu = cpu_seconds(server.pid)
    rate, done = wrk_run(server.url + path, connections, seconds, script)
    return rate, (cpu_seconds(server.pid) - cpu) / max(done, 1) * 1e6


def show_command(url: str, connections: int, seconds: float, script: str | None, note: str = "") -> None:
    shown = " ".join(wrk_command(url, connections, seconds, "post.lua" if script else None))
    print(f"wrk command: {shown}{note}")


def median_line(label: str, values: list[float], unit: str) -> float:
    """Print and return the median of the rounds' `values` (a ratio when `unit` is "x")."""
    middle = statistics.median(values)
    shown = (lambda v: f"{v:.2f}x") if unit == "x" else (lambda v: f"{v:.0f} {unit}")
    print(f"{label}: {shown(middle)}  (median of rounds: {', '.join(shown(v) for v in values)})")
    return middle


# -- 1. runsync ------------------------------------------------------------------------------------


def runsync_part(rounds: int, seconds: float, connections: list[int], baseline: str | None) -> None:
    print("--- runsync: wrk POST /runsync, no-op handler; the servers are up at once ---")
    rates: dict[tuple[str, int], list[float]] = {}
    costs: dict[tuple[str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    of_ceiling: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack, lua(POST_SCRIPT) as script:
        sync = stack.enter_context(emulator_process("noop=bench/_noop_worker.py", *EMULATOR_FLAGS))
        async_ = stack.enter_context(emulator_process("noop=bench/_noop_async.py", *EMULATOR_FLAGS))
        official = stack.enter_context(official_test_server())
        ceiling = stack.enter_context(ceiling_server())
        servers = {
            "emulator(sync handler)": (sync, "/noop/runsync"),
            "emulator(async handler)": (async_, "/noop/runsync"),
            "official": (official, "/runsync"),
            "ceiling": (ceiling, "/runsync"),
        }
        if baseline:
            before = emulator_process("noop=bench/_noop_worker.py", *EMULATOR_FLAGS, source=baseline)
            servers["baseline emulator(sync handler)"] = (stack.enter_context(before), "/noop/runsync")
        for c in connections:
            show_command("<server>/runsync", c, seconds, script)
        for server, path in servers.values():  # warm code paths and connections
            wrk_rate(server.url + path, 2, 1, script)
        for round_no in range(1, rounds + 1):
            for c in connections:
                # Each server twice, in the order A B C C B A, half the time each: drift on a shared
                # machine hits every server about equally.
                order = [*servers, *reversed(servers)]
                got: dict[str, tuple[float, float]] = {}
                for name in order:
                    server, path = servers[name]
                    rate, cost = wrk_cost(server, path, c, seconds / 2, script)
                    before = got.get(name)
                    got[name] = (
                        (rate, cost) if before is None else ((before[0] + rate) / 2, (before[1] + cost) / 2)
                    )
                for name, (rate, cost) in got.items():
                    rates.setdefault((name, c), []).append(rate)
                    costs.setdefault((name, c), []).append(cost)
                    if name not in ("official", "ceiling"):
                        ratios.setdefault((name, c), []).append(rate / got["official"][0])
                    if name != "ceiling":
                        of_ceiling.setdefault((name, c), []).append(rate / got["ceiling"][0])
                shown = ", ".join(f"{name} {rate:.0f} ({cost:.0f} µs)" for name, (rate, cost) in got.items())
                print(f"round {round_no} connections={c}: {shown} (jobs/s, server CPU per job)", flush=True)
    for (name, c), values in rates.items():
        median_line(f"{name} runsync connections={c}", values, "jobs/s")
    for (name, c), values in costs.items():
        median_line(f"{name} server CPU per runsync connections={c}", values, "µs")
    for (name, c), values in ratios.items():
        median_line(f"ratio {name} / official runsync connections={c}", values, "x")
    for (name, c), values in of_ceiling.items():
        median_line(f"ratio {name} ÷ ceiling runsync connections={c}", values, "x")
    cost_ratio = [
        a / b
        for a, b in zip(
            costs.get(("emulator(sync handler)", 8), []),
            costs.get(("emulator(async handler)", 8), []),
            strict=True,
        )
    ]
    if cost_ratio:
        median_line("ratio server CPU per job, sync ÷ async handler connections=8", cost_ratio, "x")
    if baseline:
        for c in connections:
            now = ratios[("emulator(sync handler)", c)]
            before = ratios[("baseline emulator(sync handler)", c)]
            change = [a / b for a, b in zip(now, before, strict=True)]
            median_line(f"this checkout / baseline, sync handler runsync connections={c}", change, "x")
    for c, target in ((8, 2.5), (1, 1.5)):
        if ("emulator(sync handler)", c) in ratios:
            got_ratio = statistics.median(ratios[("emulator(sync handler)", c)])
            verdict = "met" if got_ratio >= target else "NOT met"
            print(
                f"target runsync@{c} >= {target:.1f}x official (sync handler): {got_ratio:.2f}x ({verdict})"
            )
    if ("emulator(sync handler)", 8) in of_ceiling:
        got_ratio = statistics.median(of_ceiling[("emulator(sync handler)", 8)])
        verdict = "met" if got_ratio >= 0.5 else "NOT met"
        print(f"target runsync@8 >= 0.50x ceiling (sync handler): {got_ratio:.2f}x ({verdict})")


# -- 2. retained jobs ------------------------------------------------------------------------------


def idle_jobs(base: str) -> dict[str, int]:
    """Wait until the endpoint has nothing queued or running; returns its health's job counts."""
    while True:
        jobs: dict[str, int] = httpx.get(f"{base}/noop/health", headers=HEADERS).json()["jobs"]
        if not jobs["inQueue"] and not jobs["inProgress"]:
            return jobs
        time.sleep(0.1)


def finished_job(base: str) -> str:
    job_id: str = httpx.post(f"{base}/noop/run", content=BODY, headers=HEADERS).json()["id"]
    idle_jobs(base)
    return job_id


def fill(base: str, count: int) -> None:
    started = time.perf_counter()
    with lua(FILL_SCRIPT) as script:
        share = str(-(-count // 2))
        command = ["wrk", "-t2", "-c8", "-d600s", "-s", script, f"{base}/noop/run", "--", share]
        # A stopped wrk thread sends nothing more, but wrk itself runs for its whole -d: end it once
        # every job was submitted.
        with subprocess.Popen(command, stdout=subprocess.DEVNULL) as wrk:
            while wrk.poll() is None:
                time.sleep(0.5)
                jobs = httpx.get(f"{base}/noop/health", headers=HEADERS).json()["jobs"]
                if sum(jobs[k] for k in ("completed", "failed", "inProgress", "inQueue")) > count:
                    wrk.terminate()
    held = idle_jobs(base)["completed"]
    print(
        f"filled: {held} finished jobs retained, in {time.perf_counter() - started:.1f} s "
        f"(wrk -t2 -c8 POST /run, each thread stopping after {share} answers)",
        flush=True,
    )
    if held < count:
        raise RuntimeError(f"the filled emulator holds {held} jobs, fewer than {count}")


def retained_part(rounds: int, seconds: float, count: int) -> None:
    print(
        f"--- retained jobs: wrk /run and /status against {count} retained jobs vs none (virtual clock) ---"
    )
    flags = (*EMULATOR_FLAGS, "--clock", "virtual")
    show_command("<emulator>/noop/run", 8, seconds, POST_SCRIPT)
    show_command("<emulator>/noop/status/<id of a finished job>", 8, seconds, None)
    ratios: dict[str, list[float]] = {"run": [], "status": []}
    cost_ratios: dict[str, list[float]] = {"run": [], "status": []}
    with emulator_process("noop=bench/_noop_worker.py", *flags) as filled, lua(POST_SCRIPT) as script:
        filled_id = finished_job(filled.url)
        fill(filled.url, count)
        for round_no in range(1, rounds + 1):
            # A fresh empty emulator per round: the measured /run calls add jobs to it too.
            with emulator_process("noop=bench/_noop_worker.py", *flags) as empty:
                empty_id = finished_job(empty.url)
                # Warm both routes, as the filled one is.
                wrk_rate(f"{empty.url}/noop/run", 2, 1, script)
                wrk_rate(f"{empty.url}/noop/status/{empty_id}", 2, 1)
                idle_jobs(empty.url)
                got: dict[tuple[str, str], tuple[float, float]] = {}
                # empty, filled, filled, empty: drift on a shared machine hits both about equally.
                for kind, server, job_id in (
                    ("empty", empty, empty_id),
                    ("filled", filled, filled_id),
                    ("filled", filled, filled_id),
                    ("empty", empty, empty_id),
                ):
                    for op, path, body in (
                        ("status", f"/noop/status/{job_id}", None),
                        ("run", "/noop/run", script),
                    ):
                        rate, cost = wrk_cost(server, path, 8, seconds / 2, body)
                        before = got.get((op, kind))
                        got[(op, kind)] = (
                            (rate, cost)
                            if before is None
                            else ((before[0] + rate) / 2, (before[1] + cost) / 2)
                        )
                    idle_jobs(server.url)
            for op in ("run", "status"):
                ratios[op].append(got[(op, "filled")][0] / got[(op, "empty")][0])
                cost_ratios[op].append(got[(op, "filled")][1] / got[(op, "empty")][1])
            shown = ", ".join(
                f"{op} {kind} {rate:.0f} ({cost:.0f} µs)" for (op, kind), (rate, cost) in sorted(got.items())
            )
            print(f"round {round_no}: {shown} (requests/s, server CPU per request)", flush=True)
    for op in ("run", "status"):
        middle = median_line(f"ratio {op} requests/s with {count} retained / empty", ratios[op], "x")
        cost = median_line(
            f"ratio {op} server CPU per request with {count} retained / empty", cost_ratios[op], "x"
        )
        verdict = "met" if middle >= 0.9 and cost <= 1.1 else "NOT met"
        print(f"target {op} with {count} retained within 10% of empty: {verdict}")


# -- run + status (aiohttp, optional) --------------------------------------------------------------


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


def run_status_part(seconds: float, connections: list[int]) -> None:
    print("--- run + status: aiohttp client, jobs/s ---")
    results: dict[str, dict[int, float]] = {}
    with contextlib.ExitStack() as stack:
        bases = {
            "emulator(sync handler)": stack.enter_context(
                emulator_process("noop=bench/_noop_worker.py", *EMULATOR_FLAGS)
            )
            + "/noop",
            "official": stack.enter_context(official_test_server()),
        }
        for name, base in bases.items():
            for c in connections:
                rate = asyncio.run(drive(c, seconds, run_status_job(f"{base}/run", f"{base}/status")))
                results.setdefault(name, {})[c] = rate
                print(f"{name} run+status clients={c}: {rate:.0f} jobs/s", flush=True)
    for c in connections:
        ratio = results["emulator(sync handler)"][c] / results["official"][c]
        print(f"ratio sync handler run+status clients={c}: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 10,000 retained jobs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per part (medians are reported)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 4; --quick 1)")
    parser.add_argument("--connections", default="1,8", help="runsync connection counts")
    parser.add_argument("--jobs", type=int, help="retained jobs (default 100000; --quick 10000)")
    parser.add_argument("--only", choices=("runsync", "retained"), help="run one part only")
    parser.add_argument(
        "--workers", type=int, default=8, help="the emulator's in-process workers (default 8)"
    )
    parser.add_argument("--run-status", action="store_true", help="add run+status figures (aiohttp)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also serve the runpod_queue package in DIR (e.g. from `git archive <commit> src | tar -x -C "
        "DIR`, then DIR/src) with the sync handler in the runsync part: before/after in one run",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "error: wrk not found. This benchmark drives the servers with wrk (a C HTTP load generator) so "
            "the figures are the servers', not a Python client's. Install it: `sudo apt-get install wrk` "
            "(Debian/Ubuntu package `wrk`; Homebrew: `brew install wrk`), then run again.",
            file=sys.stderr,
        )
        return 2
    EMULATOR_FLAGS[-1] = str(args.workers)
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    count = args.jobs or (10_000 if args.quick else 100_000)
    connections = [int(c) for c in args.connections.split(",")]
    if args.only in (None, "runsync"):
        runsync_part(args.rounds, seconds, connections, args.baseline)
    if args.only in (None, "retained"):
        retained_part(args.rounds, seconds, count)
    if args.run_status:
        run_status_part(seconds, connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
