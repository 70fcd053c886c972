"""S3 client libraries side by side on loopback against moto's server mode: which one `S3Store` rides on.

Each transfer runs in a fresh child process (`--child`), so its peak RSS (`ru_maxrss`) is its own: the
figure printed is the child's peak, and beside it the RSS after the library was imported (what the transfer
itself added is the difference). The server (moto's `ThreadedMotoServer`, 127.0.0.1, port 0) runs in its
own process too, so its CPU does not share the clients' GIL. Rounds are interleaved, each starting with
the next library in turn (boto3, obstore, minio, ours, then obstore, minio, ours, boto3, ...), and each
transfer waits until the server is idle, so no library is billed for the server's clean-up after
another's transfer. Medians are printed, then each library's figures as a ratio of boto3's and ours as a
ratio of the raw library it wraps (goal >= 0.9x throughput; peak RSS uploading 300 MB < 150 MB). Beside
the speed, each transfer's CPU seconds in the client and in the server: on a shared machine the
wall-clock figures swing with the load, while the work each side did barely moves.

`python bench/s3.py [--size-mb 200] [--rounds 3] [--rss-size-mb 300]`
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import launch, stop

BUCKET = "bench"
KEY_ID = "bench-key-id"
SECRET = "bench-secret"  # moto accepts any credentials; nothing real is ever used here
LIBRARIES = ("boto3", "obstore", "minio", "ours")  # and "ours-crc32" when asked for with --libraries

_SERVER = """
from moto.server import ThreadedMotoServer
import time
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://127.0.0.1:{port}/", flush=True)
while True:
    time.sleep(3600)
"""


def _rss_mb() -> float:
    """Peak RSS so far (VmHWM): unlike ru_maxrss, it is not inherited from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(library: str, op: str, endpoint: str, key: str, path: str) -> None:
    """One transfer; prints `seconds baseline_rss_mb peak_rss_mb`."""
    if library == "boto3":
        import boto3

        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )  # fmt: skip
        baseline = _rss_mb()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if op == "upload":
            client.upload_file(path, BUCKET, key)
        else:
            client.download_file(BUCKET, key, path)
    elif library == "obstore":
        import obstore
        from obstore.store import S3Store as ObStore

        store = ObStore(
            BUCKET, endpoint=endpoint, access_key_id=KEY_ID, secret_access_key=SECRET, region="us-east-1",
            client_options={"allow_http": True},
        )  # fmt: skip
        baseline = _rss_mb()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if op == "upload":
            obstore.put(store, key, Path(path))
        else:
            with open(path, "wb") as out:
                for chunk in obstore.get(store, key).stream():
                    out.write(chunk)
    elif library == "minio":
        from minio import Minio

        client_m = Minio(
            endpoint.split("//", 1)[1].rstrip("/"), KEY_ID, SECRET, secure=False, region="us-east-1"
        )
        baseline = _rss_mb()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if op == "upload":
            client_m.fput_object(BUCKET, key, path)
        else:
            client_m.fget_object(BUCKET, key, path)
    else:
        from runpod_queue import S3Config, S3Store

        # ours-crc32: the opt-in S3Store(checksum="CRC32"), declaring the CRC32 boto3's upload_file declares
        checksum = "CRC32" if library == "ours-crc32" else None
        ours = S3Store(S3Config(KEY_ID, SECRET, BUCKET, endpoint), checksum=checksum)
        # Built before the timer, as the boto3 child builds its client: the lazy `import boto3` and the
        # client's construction (2-3 s on a loaded 2-core machine) are paid once per process, not per
        # transfer, and timing them here measured the import, not the transfer.
        ours.client  # noqa: B018
        baseline = _rss_mb()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if op == "upload":
            ours.upload(Path(path), key=key)
        else:
            ours.download(key, to=path)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(f"{elapsed:.4f} {cpu:.4f} {baseline:.1f} {_rss_mb():.1f}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux); 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quiet(server_pid: int, limit: float = 10.0) -> None:
    """Wait until the server stops working (its CPU time still for 0.3 s, at most ``limit`` s): what it
    still does after one transfer (freeing a 200 MB object) must not be billed to the next."""
    deadline = time.monotonic() + limit
    last = _cpu_seconds(server_pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = _cpu_seconds(server_pid)
        if now - last < 0.02:
            return
        last = now


def _run_child(
    library: str, op: str, endpoint: str, key: str, path: str, server_pid: int = 0
) -> tuple[float, float, float, float, float]:
    """(seconds, client CPU seconds, RSS after import, peak RSS, server CPU seconds) of one transfer."""
    if server_pid:
        _quiet(server_pid)
    server_before = _cpu_seconds(server_pid)
    out = subprocess.run(
        [sys.executable, __file__, "--child", library, op, endpoint, key, path],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds, cpu, baseline, peak = (float(x) for x in out.stdout.split()[-4:])
    return seconds, cpu, baseline, peak, _cpu_seconds(server_pid) - server_before


def _make_file(path: Path, size_mb: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for _ in range(size_mb):
            out.write(block)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rss-size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--child", nargs=5)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    libraries = args.libraries.split(",")

    import boto3

    proc, endpoint = launch([sys.executable, "-c", _SERVER], ready_path="/")
    try:
        admin = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )  # fmt: skip
        admin.create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "source.bin"
            _make_file(source, args.size_mb)
            size = source.stat().st_size
            results: dict[tuple[str, str], list[tuple[float, float, float, float, float]]] = {}
            for round_no in range(args.rounds):
                # Each round starts with the next library: none always follows the same neighbour.
                shift = round_no % len(libraries)
                for library in libraries[shift:] + libraries[:shift]:
                    key = f"{library}-{round_no}"
                    results.setdefault((library, "upload"), []).append(
                        _run_child(library, "upload", endpoint, key, str(source), proc.pid)
                    )
                    target = Path(tmp) / f"{key}.out"
                    results.setdefault((library, "download"), []).append(
                        _run_child(library, "download", endpoint, key, str(target), proc.pid)
                    )
                    if target.stat().st_size != size:
                        raise SystemExit(f"{library}: downloaded {target.stat().st_size} bytes of {size}")
                    target.unlink()
                    admin.delete_object(Bucket=BUCKET, Key=key)
            print(f"file: {args.size_mb} MB, rounds: {args.rounds} (medians; RSS = child process peak)")
            speed: dict[tuple[str, str], float] = {}
            for (library, op), runs in results.items():
                seconds = statistics.median(r[0] for r in runs)
                speed[(library, op)] = size / seconds / 1e6
                cpu = statistics.median(r[1] for r in runs)
                after_import = statistics.median(r[2] for r in runs)
                server_cpu = statistics.median(r[4] for r in runs)
                print(
                    f"{library:8} {op:8}: {speed[(library, op)]:7.1f} MB/s  CPU client {cpu:5.2f} s "
                    f"server {server_cpu:5.2f} s  RSS after import {after_import:6.1f} MB  peak RSS "
                    f"{max(r[3] for r in runs):6.1f} MB"
                )
            for library in libraries:
                for op in ("upload", "download"):
                    print(f"ratio {library}/boto3 {op}: {speed[(library, op)] / speed[('boto3', op)]:.2f}")
            if "ours" in libraries:
                big = Path(tmp) / "big.bin"
                _make_file(big, args.rss_size_mb)
                _, _, baseline, peak, _ = _run_child("ours", "upload", endpoint, "rss", str(big), proc.pid)
                print(
                    f"ours upload {args.rss_size_mb} MB: peak RSS {peak:.1f} MB (baseline {baseline:.1f} MB)"
                )
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
