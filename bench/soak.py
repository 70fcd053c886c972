"""Reliability soak: the adversarial run of issue #12 as a repeatable, bounded check on loopback.

    python bench/soak.py [--quick] [--clients 64] [--seconds 30] [--inputs 1000] [--kills 3]

1. Soak: ``--clients`` aiohttp clients for ``--seconds`` against an emulator (`rpq serve`, rate limits off)
   mixing runsync, run + status, health and unknown-job status calls. Prints requests, requests/s, errors by
   class, the 5xx count and the emulator's RSS at start and end.
2. Fault-injected batch: ``--inputs`` items through `rpq batch` against an emulator injecting 5% each of
   429, 503, 500 and dropped connections, the batch killed with SIGKILL ``--kills`` times at random moments
   and run again until it finishes. Prints lost keys (no result line), doubled keys (an input the handler
   ran under two job ids), and the ambiguity the batch reported against the real number of doubles.

Everything is bounded in count and time (each batch run at most 120 s) and binds 127.0.0.1 only.
Prints `name: value` lines; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from _harness import emulator_process

HANDLER = "def handler(job):\n    return job['input']\n"


def rss_mb(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) / 1024 if found else 0.0


# -- 1. soak ------------------------------------------------------------------------------------------


async def soak(base: str, clients: int, seconds: float) -> tuple[int, Counter[str]]:
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30)

    async def record(response: aiohttp.ClientResponse) -> Any:
        body = await response.read()
        outcomes[f"{response.status // 100}xx"] += 1
        if response.status >= 500:
            outcomes[f"http {response.status}"] += 1
        return json.loads(body) if response.status == 200 else None

    async def client(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            try:
                pick = rng.random()
                if pick < 0.4:
                    async with session.post(f"{base}/echo/runsync", json={"input": {"n": n}}) as r:
                        await record(r)
                elif pick < 0.8:
                    async with session.post(f"{base}/echo/run", json={"input": {"n": n}}) as r:
                        job = await record(r)
                    while job is not None and job.get("status") not in ("COMPLETED", "FAILED"):
                        async with session.get(f"{base}/echo/status/{job['id']}") as r:
                            job = await record(r)
                elif pick < 0.9:
                    async with session.get(f"{base}/echo/health") as r:
                        await record(r)
                else:
                    async with session.get(f"{base}/echo/status/no-such-job") as r:
                        await record(r)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(n) for n in range(clients)))
    requests = sum(v for k, v in outcomes.items() if k.endswith("xx") and not k.startswith("http"))
    return requests, outcomes


def run_soak(tmp: Path, clients: int, seconds: float) -> None:
    handler = tmp / "echo.py"
    handler.write_text(HANDLER)
    with emulator_process(f"echo={handler}", "--no-rate-limits", "--workers", "4") as (base, pid):
        start = rss_mb(pid)
        began = time.monotonic()
        requests, outcomes = asyncio.run(soak(base, clients, seconds))
        elapsed = time.monotonic() - began
        end = rss_mb(pid)
    errors = {k: v for k, v in outcomes.items() if not k.endswith("xx")}
    print(f"soak_clients: {clients}")
    print(f"soak_seconds: {elapsed:.1f}")
    print(f"soak_requests: {requests}")
    print(f"soak_requests_per_s: {requests / elapsed:.0f}")
    print(f"soak_answers_by_class: {dict(sorted((k, v) for k, v in outcomes.items() if k.endswith('xx')))}")
    print(f"soak_5xx: {outcomes.get('5xx', 0)}")
    print(f"soak_errors_by_class: {errors}")
    print(f"soak_emulator_rss_start_mb: {start:.0f}")
    print(f"soak_emulator_rss_end_mb: {end:.0f}")


# -- 2. fault-injected batch with kills ----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[Any, set[str]] = defaultdict(set)

    def __call__(self, job: dict[str, Any]) -> Any:
        with self.lock:
            self.ids[job["input"]["n"]].add(job["id"])
        return {"n": job["input"]["n"]}


def run_fault_batch(tmp: Path, inputs: int, kills: int, seed: int) -> None:
    from runpod_queue.emulator import Emulator, Faults

    rng = random.Random(seed)
    source = tmp / "in.jsonl"
    source.write_text("".join(json.dumps({"key": f"k{n}", "input": {"n": n}}) + "\n" for n in range(inputs)))
    out, journal = tmp / "out.jsonl", tmp / "out.journal"
    recorder = Recorder()
    faults = Faults(error_429=0.05, error_503=0.05, error_500=0.05, drop=0.05, seed=seed)
    killed = 0
    summary_line = ""
    reported: re.Match[str] | None = None
    with Emulator({"ep": recorder}, workers=8, rate_limits=False, faults=faults) as emu:
        command = [sys.executable, "-m", "runpod_queue.cli", "batch", str(source), "-e", "ep", "-o", str(out)]
        command += ["--journal", str(journal), "--base-url", emu.base_url, "--no-rate-limits"]
        env = {**os.environ, "RUNPOD_API_KEY": "soak"}
        for attempt in range(kills + 5):  # every kill, then runs until one finishes (bounded)
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            if killed < kills:
                time.sleep(rng.uniform(0.3, 1.5))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    killed += 1
                    continue
            try:
                _, stderr = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
            summary_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            reported = re.search(r"(\d+) submissions were ambiguous", stderr)
            if proc.returncode == 0:
                break
            print(f"batch_run_{attempt}_exit: {proc.returncode}")
    results = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        results.setdefault(row["key"], []).append(row)
    lost = [f"k{n}" for n in range(inputs) if f"k{n}" not in results]
    written_twice = sum(1 for rows in results.values() if len(rows) > 1)
    doubled = sum(1 for ids in recorder.ids.values() if len(ids) > 1)
    db = sqlite3.connect(journal)
    try:
        submits_over_one, still_submitting = db.execute(
            "SELECT COALESCE(SUM(MAX(submits - 1, 0)), 0), COALESCE(SUM(state = 'submitting'), 0) FROM items"
        ).fetchone()
    finally:
        db.close()
    print(f"batch_inputs: {inputs}")
    print(f"batch_kills: {killed}")
    print(f"batch_lost_keys: {len(lost)}")
    print(f"batch_keys_written_twice: {written_twice}")
    print(f"batch_doubled_keys_real: {doubled}")
    print(f"batch_ambiguity_reported: {int(reported.group(1)) if reported else 0}")  # by the last run
    print(f"batch_ambiguity_in_journal: {submits_over_one + still_submitting}")  # /runs resent, any run
    print(f"batch_final_message: {summary_line}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 clients for 5 s; 300 inputs")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--only", choices=["soak", "batch"], help="run one half only")
    args = parser.parse_args()
    clients, seconds, inputs = (
        (8, 5.0, 300) if args.quick else (args.clients, min(args.seconds, 600), args.inputs)
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "soak"):
            run_soak(Path(tmp), clients, seconds)
        if args.only in (None, "batch"):
            run_fault_batch(Path(tmp), min(inputs, 20_000), min(args.kills, 10), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
