"""The state file's write cost (issue #24): `rpq serve --state FILE` against the same server without it.

1. jobs/s: wrk POST /runsync (a no-op handler, 4 workers) against two emulators up at once, one with
   `--state` (three committed writes per job: queued, started, finished) and one without; rounds
   alternate which goes first. Printed: jobs/s each, the ratio, and the server's CPU µs per job.
2. restart: an emulator with `--state` is filled with N finished jobs (retained 30 min) through wrk
   POST /run, stopped, and started again on the same file: the seconds until it answers.

    python bench/state.py [--quick] [--rounds 3] [--seconds 4] [--jobs 100000]

Needs wrk (`apt-get install wrk`). Figures vary with the machine; the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _harness import emulator_process
from emulator import POST_SCRIPT, fill, idle_jobs, lua, median_line, show_command, wrk_cost, wrk_run

FLAGS = ("--no-rate-limits", "--workers", "4")
HANDLER = "noop=bench/_noop_worker.py"


def jobs_part(rounds: int, seconds: float, folder: Path) -> None:
    print("--- jobs/s: wrk POST /runsync, no-op handler, 8 connections; both servers up at once ---")
    with (
        emulator_process(HANDLER, *FLAGS) as plain,
        emulator_process(HANDLER, *FLAGS, "--state", str(folder / "bench.db")) as stored,
        lua(POST_SCRIPT) as script,
    ):
        show_command(plain.url + "/noop/runsync", 8, seconds, script)
        for server in (plain, stored):  # warm up both
            wrk_run(server.url + "/noop/runsync", 2, 1, script)
        rates: dict[str, list[float]] = {"without": [], "with": []}
        costs: dict[str, list[float]] = {"without": [], "with": []}
        ratios: list[float] = []
        for round_ in range(rounds):
            order = [("without", plain), ("with", stored)]
            got: dict[str, float] = {}
            for name, server in order if round_ % 2 == 0 else order[::-1]:
                rate, cost = wrk_cost(server, "/noop/runsync", 8, seconds, script)
                rates[name].append(rate)
                costs[name].append(cost)
                got[name] = rate
            ratios.append(got["with"] / got["without"])
        median_line("jobs/s without --state", rates["without"], "jobs/s")
        median_line("jobs/s with --state", rates["with"], "jobs/s")
        median_line("server CPU per job without --state", costs["without"], "µs")
        median_line("server CPU per job with --state", costs["with"], "µs")
        median_line("with / without --state (jobs/s)", ratios, "x")


def restart_part(jobs: int, folder: Path) -> None:
    print(f"--- restart: {jobs:,} retained jobs in the state file ---")
    path = folder / "retained.db"
    with emulator_process(HANDLER, *FLAGS, "--state", str(path)) as server:
        fill(server.url, jobs)
        retained = idle_jobs(server.url)["completed"]
    started = time.monotonic()
    with emulator_process(HANDLER, *FLAGS, "--state", str(path)) as server:
        ready = time.monotonic() - started
        answered = idle_jobs(server.url)["completed"]
    size = sum(p.stat().st_size for p in folder.glob("retained.db*")) / 1e6
    print(f"retained jobs: {retained:,} (answered after restart: {answered:,}); file {size:.0f} MB")
    print(f"restart time with {retained:,} retained jobs: {ready:.2f} s (process start to first answer)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 10,000 retained jobs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 4; --quick 1)")
    parser.add_argument("--jobs", type=int, help="retained jobs (default 100000; --quick 10000)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    jobs = args.jobs or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="rpq-state-bench-") as tmp:
        jobs_part(args.rounds, seconds, Path(tmp))
        restart_part(jobs, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
