"""`rpq simulate`'s speed (issue #28): simulated jobs per second of CPU, one configuration at a time.

Runs `simulate` on Poisson traffic at 2 jobs/s, 4 s jobs, a 20 s cold start, for each configuration of
the issue's done-when command, and prints jobs, CPU seconds (process time: the machine may be shared,
wall time is printed too) and simulated jobs per CPU second. A day (`--hours 24`, ~172,800 jobs per
configuration) must take under 30 s of one core.

    python bench/simulate.py [--hours 2] [--profile]

`--profile` prints cProfile's top functions by own time for the first configuration.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from runpod_queue.emulator import Traffic, simulate

CONFIGS = ("min=0,max=10,idle=5s", "min=2,max=10,idle=60s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    traffic = Traffic.poisson("2/s", hours=args.hours)
    print(f"--- simulate: {traffic!r}, 4 s jobs, cold start 20 s ---")
    for config in CONFIGS:
        profiler = cProfile.Profile() if args.profile and config == CONFIGS[0] else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = simulate(traffic, [config], duration="4s", cold_start=20, price=0.0003)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        jobs = report.configs[0].jobs
        print(
            f"{config:24} {jobs:>8,} jobs  cpu {cpu:6.2f} s  wall {wall:6.2f} s  "
            f"{jobs / cpu:>8,.0f} jobs/cpu-s  (a day: {172_800 / (jobs / cpu):5.1f} cpu-s)"
        )
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
