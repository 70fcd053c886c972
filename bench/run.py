"""Run every benchmark in bench/ (each a `name.py` with a `main()`) and print its figures.

    python bench/run.py [--quick] [name ...]

Each benchmark prints `name: value` lines and ratios measured side by side in one run; nothing here
asserts on time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem != "run")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    args = parser.parse_args()
    names = args.names or available()
    unknown = set(names) - set(available())
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {available()}")
    failed = 0
    for name in names:
        print(f"=== {name} ===", flush=True)
        started = time.perf_counter()
        command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *(["--quick"] if args.quick else [])]
        code = subprocess.call(command, cwd=BENCH_DIR.parent)
        print(f"({name}: exit {code}, {time.perf_counter() - started:.1f} s)", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
