"""Reliability soak: the adversarial run of issue #12 as a repeatable, bounded check on loopback.

    python bench/soak.py [--quick] [--clients 64] [--seconds 30] [--inputs 1000] [--kills 3]

1. Soak: ``--clients`` aiohttp clients for ``--seconds`` against an emulator (`rpq serve`, rate limits off)
   mixing runsync, run + status, health and unknown-job status calls. Prints requests, requests/s, errors by
   class, the 5xx count and the emulator's RSS at start and end.
2. Fault-injected batch: ``--inputs`` items through `rpq batch` against an emulator injecting 5% each of
   429, 503, 500 and dropped connections, the batch killed with SIGKILL ``--kills`` times at random moments
   and run again until it finishes. Prints lost keys (no result line), doubled keys (an input the handler
   ran under two job ids), and the ambiguity the batch reported against the real number of doubles.

3. Edges (issue #26), each run against this checkout and, with ``--before COMMIT``, against that commit's
   emulator side by side (``git archive``; nothing is checked out):
   - freeze: one OpenAI chat completion with n = 300,000 to `examples/fake_llm.py` while /health is polled
     every 50 ms: the request's status and time, the slowest /health answer, the SIGTERM exit time.
   - clock: two ``POST /_emulator/advance {"seconds": 1e308}``, then 10 /run: the statuses.
   - deep: a /run with an input nested 1,000 levels, then GET /_emulator/jobs: the statuses.
   - retained: ``--retained`` (100,000) trivial /run jobs finished and kept: the emulator's RSS growth and
     the bytes per retained job, without a cap and under ``--max-retained-jobs`` (``--cap``, 10,000).

Everything is bounded in count and time (each batch run at most 120 s) and binds 127.0.0.1 only.
Prints `name: value` lines; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


# -- 3. edges of issue #26 ----------------------------------------------------------------------------

FAKE_LLM = Path(__file__).resolve().parents[1] / "examples" / "fake_llm.py"


def _version(tmp: Path, before: str | None) -> tuple[str | None, Path]:
    """The `source` for emulator_process and the fake_llm file of this checkout or of `before`."""
    if before is None:
        return None, FAKE_LLM
    target = tmp / f"before-{before}"
    if not target.exists():
        target.mkdir()
        archive = subprocess.run(
            ["git", "archive", before, "src", "examples"],
            capture_output=True,
            check=True,
            cwd=FAKE_LLM.parents[1],
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target / "src"), target / "examples" / "fake_llm.py"


async def _freeze(base: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 300_000}
    worst = 0.0
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def big() -> tuple[int, float]:
            began = time.monotonic()
            async with session.post(f"{base}/fake_llm/openai/v1/chat/completions", json=body) as r:
                await r.read()
                return r.status, time.monotonic() - began

        task = asyncio.create_task(big())
        await asyncio.sleep(0.05)
        polls = 0
        while not task.done() or polls < 5:
            began = time.monotonic()
            async with session.get(f"{base}/fake_llm/health") as r:
                await r.read()
            worst = max(worst, time.monotonic() - began)
            polls += 1
            await asyncio.sleep(0.05)
        status, took = await task
    return {"status": status, "seconds": took, "health_worst_ms": worst * 1000, "health_polls": polls}


def run_freeze(tmp: Path, label: str, before: str | None) -> None:
    source, fake_llm = _version(tmp, before)
    with emulator_process(f"fake_llm={fake_llm}", "--no-rate-limits", source=source) as (base, pid):
        found = asyncio.run(_freeze(base))
        start_rss = rss_mb(pid)
    print(f"freeze_{label}_n300000_status: {found['status']}")
    print(f"freeze_{label}_n300000_seconds: {found['seconds']:.2f}")
    print(f"freeze_{label}_health_worst_ms: {found['health_worst_ms']:.0f} ({found['health_polls']} polls)")
    print(f"freeze_{label}_rss_after_mb: {start_rss:.0f}")


def _hog_exit_seconds(tmp: Path, source: str | None) -> float | None:
    """Seconds `rpq serve` takes to exit on SIGTERM while an async handler holds its loop (None: not
    within 20 s, then killed)."""
    hog = tmp / "hog.py"
    hog.write_text("import time\n\nasync def handler(job):\n    time.sleep(60)\n    return {}\n")
    args = [sys.executable, "-m", "runpod_queue.cli", "serve", f"hog={hog}", "--port", "0"]
    env = {**os.environ, **({"PYTHONPATH": source} if source else {})}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        base = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert base, "rpq serve did not print its address"
        with contextlib.suppress(Exception):
            import httpx

            httpx.post(f"{base.group(1)}/hog/run", json={"input": {}}, timeout=0.5)
        time.sleep(1.0)  # the handler now holds the loop
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_sigterm(tmp: Path, label: str, before: str | None) -> None:
    source, _ = _version(tmp, before)
    took = _hog_exit_seconds(tmp, source)
    print(f"sigterm_{label}_exit_seconds: {'not within 20 s (killed)' if took is None else f'{took:.1f}'}")


async def _edges(base: str, root: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        advances = []
        for _ in range(2):
            async with session.post(f"{root}/_emulator/advance", json={"seconds": 1e308}) as r:
                advances.append(r.status)
        runs: Counter[int] = Counter()
        for _ in range(10):
            async with session.post(f"{base}/echo/run", json={"input": {}}) as r:
                runs[r.status] += 1
        deep = b'{"input": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
        headers = {"content-type": "application/json"}
        async with session.post(f"{base}/echo/run", data=deep, headers=headers) as r:
            deep_run = r.status
        async with session.get(f"{root}/_emulator/jobs") as r:
            jobs = r.status
    return {"advances": advances, "runs": dict(runs), "deep_run": deep_run, "jobs": jobs}


def run_edges(tmp: Path, label: str, before: str | None) -> None:
    source, _ = _version(tmp, before)
    handler = tmp / "echo.py"
    handler.write_text(HANDLER)
    with emulator_process(f"echo={handler}", "--clock", "virtual", source=source) as (base, _):
        found = asyncio.run(_edges(base, base.removesuffix("/v2")))
    print(f"clock_{label}_advance_1e308_statuses: {found['advances']}")
    print(f"clock_{label}_later_run_statuses: {found['runs']}")
    print(f"deep_{label}_run_1000_levels_status: {found['deep_run']}")
    print(f"deep_{label}_emulator_jobs_status: {found['jobs']}")


async def _fill(base: str, jobs: int) -> None:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        sent = 0

        async def client() -> None:
            nonlocal sent
            while sent < jobs:
                sent += 1
                async with session.post(f"{base}/echo/run", json={"input": {"n": sent}}) as r:
                    await r.read()

        await asyncio.gather(*(client() for _ in range(64)))
        while True:  # every job finished (and so retained, or forgotten past the cap)
            async with session.get(f"{base}/echo/health") as r:
                if (await r.json())["jobs"]["completed"] >= jobs:
                    return
            await asyncio.sleep(0.2)


def run_retained(tmp: Path, label: str, before: str | None, jobs: int, cap: int | None) -> None:
    source, _ = _version(tmp, before)
    handler = tmp / "echo.py"
    handler.write_text(HANDLER)
    extra = ["--no-rate-limits", "--workers", "4"]
    if before is None:
        extra += ["--max-retained-jobs", str(cap or 0)]
    with emulator_process(f"echo={handler}", *extra, source=source) as (base, pid):
        asyncio.run(_fill(base, 1000))  # warm: imports, first allocations
        start = rss_mb(pid)
        began = time.monotonic()
        asyncio.run(_fill(base, jobs + 1000))
        elapsed = time.monotonic() - began
        end = rss_mb(pid)
    kept = jobs if cap is None else min(jobs, cap)
    name = f"retained_{label}_{'no_cap' if cap is None else f'cap_{cap}'}"
    print(f"{name}_jobs: {jobs} in {elapsed:.0f} s")
    print(f"{name}_rss_start_mb: {start:.0f}")
    print(f"{name}_rss_end_mb: {end:.0f}")
    if cap is None or jobs <= cap:
        print(f"{name}_bytes_per_retained_job: {(end - start) * 1024 * 1024 / kept:.0f}")


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
    parser.add_argument(
        "--only",
        choices=["soak", "batch", "freeze", "sigterm", "edges", "retained"],
        help="run one part only (the edges of issue #26 run only when named, or with --edges)",
    )
    parser.add_argument("--edges", action="store_true", help="also run freeze, sigterm, edges, retained")
    parser.add_argument("--before", metavar="COMMIT", help="run the edges against this commit too")
    parser.add_argument("--retained", type=int, default=100_000, help="jobs for the retained part")
    parser.add_argument("--cap", type=int, default=10_000, help="--max-retained-jobs for the retained part")
    args = parser.parse_args()
    clients, seconds, inputs = (
        (8, 5.0, 300) if args.quick else (args.clients, min(args.seconds, 600), args.inputs)
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "soak"):
            run_soak(Path(tmp), clients, seconds)
        if args.only in (None, "batch"):
            run_fault_batch(Path(tmp), min(inputs, 20_000), min(args.kills, 10), args.seed)
        versions: list[tuple[str, str | None]] = [("after", None)]
        if args.before:
            versions.insert(0, ("before", args.before))
        retained = min(args.retained, 1_000_000)
        for label, before in versions:
            if args.only == "freeze" or args.edges:
                run_freeze(Path(tmp), label, before)
            if args.only == "sigterm" or args.edges:
                run_sigterm(Path(tmp), label, before)
            if args.only == "edges" or args.edges:
                run_edges(Path(tmp), label, before)
            if args.only == "retained" or args.edges:
                run_retained(Path(tmp), label, before, retained, None)
                if before is None:
                    run_retained(Path(tmp), label, before, retained, args.cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
