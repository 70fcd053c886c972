"""Instructions per status call, client side only: ours against raw aiohttp / raw httpx (issue #27).

bench/client.py's ratios are CPU time on a shared machine, and move by several percent between runs. This
counts the client process's instructions under ``valgrind --tool=callgrind`` (deterministic under load):
the emulator runs in another process, not under valgrind, and each variant runs twice (N1 and N2 calls) so
start-up cancels out: per call = (I(N2) - I(N1)) / (N2 - N1).

Variants: ``raw_aiohttp`` (``session.get`` + ``response.json()``, 32 in flight, as bench/client.py),
``async`` (``AsyncEndpoint.status``, rate limits off, 32 in flight), ``raw_httpx`` (``httpx.Client.get`` +
``.json()``, sequential) and ``sync`` (``Endpoint.status``, rate limits off, sequential).

``python bench/client_instr.py [--calls N1,N2] [--only async,raw_aiohttp]`` (about a minute per variant).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from _harness import launch, stop

API_KEY = "bench-key"
IN_FLIGHT = 32
VARIANTS = ("raw_aiohttp", "async", "raw_httpx", "sync")
SERVER = """
from runpod_queue.emulator import Emulator
def noop(job):
    return 1
emu = Emulator({"noop": noop}, api_key=%r, workers=2, rate_limits=False, port=0)
emu.serve_forever(on_ready=lambda e: print(e.base_url, flush=True))
"""


async def _async_child(variant: str, base: str, job_id: str, calls: int) -> None:
    import aiohttp

    from runpod_queue import AsyncClient

    share = calls // IN_FLIGHT
    if variant == "raw_aiohttp":
        async with aiohttp.ClientSession() as session:
            url = f"{base}/noop/status/{job_id}"
            headers = {"Authorization": f"Bearer {API_KEY}"}

            async def one() -> object:
                async with session.get(url, headers=headers) as response:
                    response.raise_for_status()
                    return await response.json()

            await _gather(one, share)
    else:
        async with AsyncClient(API_KEY, base_url=base, rate_limits=False) as client:
            ep = client.endpoint("noop")

            async def one() -> object:
                return await ep.status(job_id)

            await _gather(one, share)


async def _gather(one: object, share: int) -> None:
    async def worker() -> None:
        for _ in range(share):
            await one()  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def _sync_child(variant: str, base: str, job_id: str, calls: int) -> None:
    from runpod_queue import Client

    if variant == "raw_httpx":
        with httpx.Client() as raw:
            url = f"{base}/noop/status/{job_id}"
            headers = {"Authorization": f"Bearer {API_KEY}"}
            for _ in range(calls):
                response = raw.get(url, headers=headers)
                response.raise_for_status()
                response.json()
    else:
        with Client(API_KEY, base_url=base, rate_limits=False) as client:
            ep = client.endpoint("noop")
            for _ in range(calls):
                ep.status(job_id)


def child(variant: str, base: str, job_id: str, calls: int) -> None:
    if variant in ("raw_aiohttp", "async"):
        asyncio.run(_async_child(variant, base, job_id, calls))
    else:
        _sync_child(variant, base, job_id, calls)


def instructions(variant: str, base: str, job_id: str, calls: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                variant,
                base,
                job_id,
                str(calls),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parent,
        )
        text = out.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no totals in callgrind's output")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", default="640,2560", help="N1,N2 (multiples of 32)")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated")
    parser.add_argument(
        "--child", nargs=4, metavar=("VARIANT", "BASE", "JOB", "CALLS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        variant, base, job_id, calls = args.child
        child(variant, base, job_id, int(calls))
        return
    n1, n2 = (int(n) for n in args.calls.split(","))
    proc, root = launch([sys.executable, "-c", SERVER % API_KEY], ready_path="/v2/")
    try:
        base = f"{root}/v2"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        # A /run job is kept 30 min after it ends (a /runsync one 1 min): long enough for every variant.
        job_id = httpx.post(f"{base}/noop/run", json={"input": {}}, headers=headers, timeout=30).json()["id"]
        httpx.get(f"{base}/noop/status-sync/{job_id}?wait=10000", headers=headers, timeout=30)
        per_call: dict[str, float] = {}
        for variant in args.only.split(","):
            low = instructions(variant, base, job_id, n1)
            high = instructions(variant, base, job_id, n2)
            per_call[variant] = (high - low) / (n2 - n1)
            print(f"{variant}_instructions_per_call: {per_call[variant]:,.0f}", flush=True)
        if "async" in per_call and "raw_aiohttp" in per_call:
            print(f"async_instr_ratio: {per_call['async'] / per_call['raw_aiohttp']:.3f}  (target <= 1.10)")
        if "sync" in per_call and "raw_httpx" in per_call:
            print(f"sync_instr_ratio: {per_call['sync'] / per_call['raw_httpx']:.3f}  (target <= 1.05)")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
