"""Batch runner benchmark against the emulator (in a subprocess, so its CPU does not share our GIL).

1. Rate: 5,000 no-op inputs with the emulator's real rate limits (`/run` 1000 per 10 s), zero 429s
   expected. RunPod counts requests per 10 s window, so the first 1,000 may go at once and the rate that
   bounds a batch is the sustained one after them: `run_rate_fraction_of_limit` is
   `(N - 1000) / (t_N - t_1000)` over 100/s (target >= 0.95; the client's 0.25 s safety margin per
   window caps it at 10 / 10.25 = 0.976). `run_rate_fraction_incl_first_burst` is stricter: a client
   whose bursts took no time at all would make its last submission `floor((N - 1) / 1000) * 10` s
   after its first; that ideal span over the measured one (sending the first 1,000 takes about a
   second here, and every later window inherits that spread). Also: status calls per job (one shared
   polling budget, not one poll per interval). N must be a multiple of 1,000.
2. Polling cost of real work: 1,000 jobs of 0.5-2 s on 100 workers (so most wait in the queue first),
   limits off: status calls per job and how late a result is seen after its job ended, on average.
   The same jobs again as a webhook-driven batch (signed webhooks to a receiver the runner serves):
   status calls per job and the ratio to polling.
3. Calls per job of a queue that waits: 200 jobs of 1-10 s on 8 workers (limits off), collected with held
   `/status-sync` long-polls (the default) and, side by side, with short `/status` polls on the schedule
   only (`PollOptions(long_polls=0)`, what the runner did before): status calls per job (goal <= 1.5).
4. Memory: peak RSS of a runner process pushing 100,000 inputs through (limits off), inputs streamed from a
   file — target < 300 MB.

Prints `name: value` lines. `python bench/batch.py [--quick] [--calls-only]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import launch, stop

SERVER = """
import asyncio, gc, sys
from runpod_queue.emulator import Emulator, EndpointSpec
def noop(job):
    return 1
async def slow(job):
    await asyncio.sleep(job["input"]["sleep"])
    return 1
gc.freeze()
gc.set_threshold(50_000, 20, 100)
endpoints = {
    "noop": noop,
    "slow": EndpointSpec(handler=slow, workers=100),
    "eight": EndpointSpec(handler=slow, workers=8),
}
emu = Emulator(endpoints, workers=8, rate_limits=sys.argv[1] == "on")
emu.serve_forever(on_ready=lambda e: print(e.base_url, flush=True))
"""

RUN_LIMIT = 1000  # per 10 s window
WINDOW = 10.0


def start_emulator(limits: bool) -> tuple[subprocess.Popen[bytes], str]:
    # The server binds port 0 and prints its address: no free-port probe to race with.
    proc, root = launch([sys.executable, "-c", SERVER, "on" if limits else "off"], "/v2/noop/health")
    return proc, f"{root}/v2"


def write_inputs(path: Path, count: int) -> None:
    with open(path, "w") as fh:
        for n in range(count):
            fh.write(json.dumps({"key": n, "input": {"n": n}}) + "\n")


def bench_rate(count: int) -> None:
    from runpod_queue import BatchRunner, BatchSummary, Client

    proc, base = start_emulator(limits=True)
    samples: list[tuple[float, int]] = []

    def progress(summary: BatchSummary) -> None:
        samples.append((time.monotonic(), summary.submitted))

    try:
        with tempfile.TemporaryDirectory(prefix="rpq-bench-batch-") as tmp:
            inputs = Path(tmp) / "in.jsonl"
            write_inputs(inputs, count)
            with Client(base_url=base) as client:
                runner = BatchRunner(
                    client.endpoint("noop"),
                    journal=Path(tmp) / "journal",
                    output=Path(tmp) / "out.jsonl",
                    on_progress=progress,
                    progress_interval=0.01,
                )
                started = time.monotonic()
                with open(inputs) as lines:
                    summary = runner.run(lines)
            elapsed = time.monotonic() - started
    finally:
        stop(proc)
    assert summary.ok and summary.completed == count, summary
    first = next(t for t, n in samples if n >= 1)
    first_window = next(t for t, n in samples if n >= RUN_LIMIT)
    last = next(t for t, n in samples if n >= count)
    sustained = (count - RUN_LIMIT) / (last - first_window)
    ideal = ((count - 1) // RUN_LIMIT) * WINDOW
    print(f"rate_inputs: {count}")
    print(f"rate_elapsed_s: {elapsed:.1f}")
    print(f"first_window_s: {first_window - first:.2f}")
    print(f"run_per_s_sustained: {sustained:.1f}")
    print(f"run_rate_fraction_of_limit: {sustained / (RUN_LIMIT / WINDOW):.3f}")
    print(f"run_rate_fraction_incl_first_burst: {ideal / (last - first):.3f}")
    print(f"run_429s: {summary.rate_limited}")
    print(f"transient_errors: {summary.transient_errors}")
    print(f"status_calls_per_job: {summary.status_calls / count:.2f}")


def bench_slow(count: int, *, webhooks: bool = False) -> float:
    """Returns status calls per job. With ``webhooks`` every job carries a signed webhook to a receiver
    the runner serves on loopback, and only late jobs are polled."""
    import random

    from runpod_queue import BatchResult, BatchRunner, BatchSummary, Client, RateLimits
    from runpod_queue.batch import WebhookOptions

    proc, base = start_emulator(limits=False)
    rng = random.Random(1)
    late: list[float] = []
    submitted: dict[int, float] = {}

    def on_progress(summary: BatchSummary) -> None:  # all are submitted within the first ~second
        submitted.setdefault(summary.submitted, time.monotonic())

    def on_result(result: BatchResult) -> None:
        ended = started + (result.delay_time or 0) + (result.execution_time or 0)
        late.append(time.monotonic() - ended)

    try:
        with tempfile.TemporaryDirectory(prefix="rpq-bench-batch-") as tmp:
            items = [(n, {"sleep": rng.uniform(0.5, 2.0)}) for n in range(count)]
            with Client(base_url=base, rate_limits=False) as client:
                runner = BatchRunner(
                    client.endpoint("slow"),
                    journal=Path(tmp) / "journal",
                    rate_limits=RateLimits.off(),
                    on_result=on_result,
                    on_progress=on_progress,
                    webhooks=WebhookOptions(listen=("127.0.0.1", 0)) if webhooks else None,
                )
                started = time.monotonic()
                summary = runner.run(items)
            elapsed = time.monotonic() - started
    finally:
        stop(proc)
    assert summary.ok and summary.completed == count, summary
    # Ideal: 100 workers drain the queue in sum(sleep) / 100 seconds.
    ideal = sum(item["sleep"] for _, item in items) / 100
    name = "webhook" if webhooks else "slow"
    print(f"{name}_jobs: {count}")
    print(f"{name}_elapsed_s: {elapsed:.1f}")
    print(f"{name}_elapsed_ideal_s: {ideal:.1f}")
    print(f"{name}_status_calls_per_job: {summary.status_calls / count:.2f}")
    if webhooks:
        print(f"{name}_deliveries_per_job: {summary.webhook_deliveries / count:.2f}")
    # How long after its job ended a result was seen (upper bound: submission time counted from the start).
    print(f"{name}_result_delay_mean_s: {sum(late) / len(late):.2f}")
    print(f"{name}_result_delay_max_s: {max(late):.2f}")
    return summary.status_calls / count


def bench_calls(count: int, *, long_polls: bool) -> float:
    """Status calls per job for ``count`` jobs of 1-10 s queued on 8 workers."""
    import random

    from runpod_queue import BatchRunner, Client, RateLimits
    from runpod_queue.batch import PollOptions

    proc, base = start_emulator(limits=False)
    rng = random.Random(2)
    polling = PollOptions() if long_polls else PollOptions(long_polls=0)
    try:
        with tempfile.TemporaryDirectory(prefix="rpq-bench-batch-") as tmp:
            items = [(n, {"sleep": rng.uniform(1.0, 10.0)}) for n in range(count)]
            with Client(base_url=base, rate_limits=False) as client:
                runner = BatchRunner(
                    client.endpoint("eight"),
                    journal=Path(tmp) / "journal",
                    rate_limits=RateLimits.off(),
                    polling=polling,
                )
                started = time.monotonic()
                summary = runner.run(items)
            elapsed = time.monotonic() - started
    finally:
        stop(proc)
    assert summary.ok and summary.completed == count, summary
    name = "held" if long_polls else "short_polls"
    print(f"calls_{name}_jobs: {count}")
    print(f"calls_{name}_elapsed_s: {elapsed:.1f}")
    print(f"calls_{name}_status_calls: {summary.status_calls}")
    print(f"calls_{name}_status_calls_per_job: {summary.status_calls_per_job:.2f}")
    return summary.status_calls_per_job


def rss_child(count: int, base: str) -> None:
    """Runs in a fresh process: only the runner's own memory is measured."""
    from runpod_queue import BatchRunner, Client, RateLimits

    with (
        tempfile.TemporaryDirectory(prefix="rpq-bench-batch-") as tmp,
        Client(base_url=base, rate_limits=False) as client,
    ):
        inputs = Path(tmp) / "in.jsonl"
        write_inputs(inputs, count)
        runner = BatchRunner(
            client.endpoint("noop"),
            journal=Path(tmp) / "journal",
            output=Path(tmp) / "out.jsonl",
            rate_limits=RateLimits.off(),
        )
        started = time.monotonic()
        with open(inputs) as lines:
            summary = runner.run(lines)
        elapsed = time.monotonic() - started
    assert summary.ok and summary.completed == count, summary
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rss_inputs: {count}")
    print(f"rss_elapsed_s: {elapsed:.1f}")
    print(f"rss_items_per_s: {count / elapsed:.0f}")
    print(f"rss_status_calls_per_job: {summary.status_calls / count:.2f}")
    print(f"peak_rss_mb: {peak_mb:.0f}")


def bench_rss(count: int) -> None:
    proc, base = start_emulator(limits=False)
    try:
        subprocess.run([sys.executable, __file__, "--rss-child", str(count), base], check=True)
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 rate inputs and 20,000 RSS inputs")
    parser.add_argument(
        "--calls-only", action="store_true", help="only part 3: status calls per job, held vs short polls"
    )
    parser.add_argument("--rss-child", nargs=2, metavar=("COUNT", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1])
        return
    held = bench_calls(200, long_polls=True)
    short = bench_calls(200, long_polls=False)
    print(f"status_calls_per_job_held_vs_short_polls: {held:.2f} vs {short:.2f}")
    if args.calls_only:
        return
    bench_rate(2_000 if args.quick else 5_000)
    slow = 300 if args.quick else 1_000
    polled = bench_slow(slow)
    hooked = bench_slow(slow, webhooks=True)
    print(f"status_calls_webhook_vs_polling: {hooked / polled if polled else 0:.3f}")
    bench_rss(20_000 if args.quick else 100_000)


if __name__ == "__main__":
    main()
