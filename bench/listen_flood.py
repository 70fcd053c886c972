"""`rpq listen` (the receiver meant to face the internet) under two floods.

    python bench/listen_flood.py [--quick] [--connections 40] [--megabytes 25]
    python bench/listen_flood.py --slowloris [--seconds 20] [--rate 100] [--before-src PATH]

Uploads (default): each connection POSTs a `--megabytes` body with no token, 1 MB at a time, to a fresh
`rpq listen` on a loopback port; the listener's RSS is sampled from /proc until every upload ends (or 60 s
pass).

Slowloris (`--slowloris`): `--rate` connections a second (no credentials) each send the start of a request
line and then nothing, reconnecting whenever the listener closes one, while one signed delivery goes out
every 0.1 s; prints how many legitimate deliveries were answered 200. With `--before-src` (the `src` folder
of another checkout, e.g. a `git worktree` of main) the same flood runs against that code's listener too,
one after the other in this run, and both counts are printed side by side.

Bounded in count and time, loopback only. Prints `name: value` lines.
"""

from __future__ import annotations

import argparse
import json
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


SECRET = "bench-secret-0123456789abcdef"


def start_listener(tmp: str, src: str | None) -> tuple[subprocess.Popen[str], int] | None:
    """A fresh `rpq listen` on port 0 (from ``src`` when given); its process and the port it reports."""
    env = {**os.environ, "HOOK_SECRET": SECRET}
    if src is not None:
        env["PYTHONPATH"] = src  # ahead of the installed package
    command = [sys.executable, "-m", "runpod_queue.cli", "listen", "--out", f"{tmp}/out.jsonl"]
    command += ["--secret-env", "HOOK_SECRET", "--port", "0"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    found = re.search(r":(\d+)/", proc.stderr.readline())
    if not found:
        proc.terminate()
        return None
    # Its per-answer log lines must not fill the pipe and block it.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, int(found.group(1))


def slowloris(port: int, rate: float, stop: threading.Event, held: list[socket.socket]) -> None:
    """Open ``rate`` half-sent requests a second; keep them; drop the ones the listener closed."""
    interval = 1.0 / rate
    due = time.monotonic()
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
            sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # headers never end
            sock.setblocking(False)
            held.append(sock)
        except OSError:
            pass
        alive = []
        for sock in held:
            try:
                if sock.recv(1) == b"":  # closed by the listener: the slot is free, take it again
                    sock.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                continue
            alive.append(sock)
        held[:] = alive
        due += interval
        stop.wait(max(0.0, due - time.monotonic()))


def deliveries(port: int, seconds: float) -> dict[str, int]:
    """One signed delivery every 0.1 s for ``seconds``; the count of each answer."""
    from runpod_queue.webhooks import WebhookSigner

    signer = WebhookSigner(SECRET)
    counts: dict[str, int] = {}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        body = json.dumps({"id": f"job-{n}", "status": "COMPLETED", "output": n}).encode()
        head = f"POST /hook?rpq_token={signer.token()} HTTP/1.1\r\nHost: x\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head.encode() + body)
                line = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
                answer = line[9:12] if line.startswith("HTTP/") else "closed"
        except OSError as exc:
            answer = type(exc).__name__
        counts[answer] = counts.get(answer, 0) + 1
        time.sleep(0.1)
    return counts


def slowloris_run(src: str | None, seconds: float, rate: float) -> dict[str, int] | None:
    """Deliveries during a slowloris against a fresh listener: a warm-up of ``1000 / rate`` s (enough to
    fill 1,000 slots), then ``seconds`` of deliveries with the flood still on."""
    with tempfile.TemporaryDirectory() as tmp:
        started = start_listener(tmp, src)
        if started is None:
            return None
        proc, port = started
        stop = threading.Event()
        held: list[socket.socket] = []
        flood = threading.Thread(target=slowloris, args=(port, rate, stop, held), daemon=True)
        try:
            flood.start()
            time.sleep(min(12.0, 1000 / rate))
            counts = deliveries(port, seconds)
            counts["held_at_end"] = len(held)
        finally:
            stop.set()
            flood.join(5)
            for sock in held:
                sock.close()
            proc.terminate()
            proc.wait(10)
    return counts


def slowloris_main(args: argparse.Namespace) -> int:
    runs = [("before", args.before_src)] if args.before_src else []
    runs.append(("after", None))
    ok: dict[str, float] = {}
    for name, src in runs:
        counts = slowloris_run(src, args.seconds, args.rate)
        if counts is None:
            print(f"{name}: listener did not start", file=sys.stderr)
            return 1
        held = counts.pop("held_at_end")
        total = sum(counts.values())
        ok[name] = counts.get("200", 0) / total if total else 0.0
        print(f"{name}_answers: {counts}")
        print(f"{name}_legitimate_200: {counts.get('200', 0)}/{total} ({ok[name]:.0%})")
        print(f"{name}_half_open_held: {held}")
    if "before" in ok:
        print(f"after_vs_before_200_share: {ok['after']:.0%} vs {ok['before']:.0%}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 connections instead of 40")
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--megabytes", type=int, default=25)
    parser.add_argument("--slowloris", action="store_true", help="the half-open connection flood")
    parser.add_argument("--seconds", type=float, default=20.0, help="slowloris: seconds of deliveries")
    parser.add_argument("--rate", type=float, default=100.0, help="slowloris: connections a second")
    parser.add_argument("--before-src", help="slowloris: also run against the listener of this src folder")
    args = parser.parse_args()
    if args.slowloris:
        return slowloris_main(args)
    connections = 10 if args.quick else args.connections
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOOK_SECRET": SECRET}
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
