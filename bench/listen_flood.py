"""Memory of `rpq listen` under a flood of tokenless uploads (the receiver meant to face the internet).

    python bench/listen_flood.py [--quick] [--connections 40] [--megabytes 25]

Each connection POSTs a `--megabytes` body with no token, 1 MB at a time, to a fresh `rpq listen` on a
loopback port; the listener's RSS is sampled from /proc until every upload ends (or 60 s pass). Bounded in
count and time, loopback only. Prints `name: value` lines.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MB = 1_000_000


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else 0.0


def upload(port: int, megabytes: int, deadline: float, answers: list[str]) -> None:
    """One tokenless upload, sent 1 MB at a time; records the status line (or how it ended)."""
    chunk = b"x" * MB
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            head = f"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: {megabytes * MB}\r\n\r\n"
            sock.sendall(head.encode())
            for _ in range(megabytes):
                if time.monotonic() > deadline:
                    break
                sock.sendall(chunk)
            answers.append(sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace") or "closed")
    except OSError as exc:
        answers.append(type(exc).__name__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 connections instead of 40")
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--megabytes", type=int, default=25)
    args = parser.parse_args()
    connections = 10 if args.quick else args.connections
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOOK_SECRET": "bench-secret-0123456789abcdef"}
        command = [sys.executable, "-m", "runpod_queue.cli", "listen", "--out", f"{tmp}/out.jsonl"]
        command += ["--secret-env", "HOOK_SECRET", "--port", "0"]
        proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            found = re.search(r":(\d+)/", banner)
            if not found:
                print(f"listener did not start: {banner}", file=sys.stderr)
                return 1
            port = int(found.group(1))
            start = rss_mb(proc.pid)
            answers: list[str] = []
            deadline = time.monotonic() + 60
            threads = [
                threading.Thread(target=upload, args=(port, args.megabytes, deadline, answers))
                for _ in range(connections)
            ]
            for thread in threads:
                thread.start()
            peak = start
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 5:
                peak = max(peak, rss_mb(proc.pid))
                time.sleep(0.02)
            for thread in threads:
                thread.join(5)
            end = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer] = counts.get(answer, 0) + 1
    print(f"connections: {connections} x {args.megabytes} MB tokenless")
    print(f"rss_start_mb: {start:.0f}")
    print(f"rss_peak_mb: {peak:.0f}")
    print(f"rss_end_mb: {end:.0f}")
    print(f"answers: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
