"""Support for the batch tests: an emulator handler that records every job it runs, and small helpers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runpod_queue import BatchRunner, Client, Retries
from runpod_queue.batch import PollOptions

# The runner's own resends take their timing from the client's Retries: short pauses keep tests fast.
FAST = Retries(backoff=0.01, max_backoff=0.05, max_retry_after=0.05)
QUICK_POLLS = PollOptions(min_interval=0.01, max_interval=0.2)


class Recorder:
    """A handler that remembers which job ids ran for which input ``n``: a second id for one ``n`` is a
    second /run (a /retry keeps the id). Inputs may ask for a failure, a pause or a failing first try."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[Any, set[str]] = defaultdict(set)
        self.runs: dict[str, int] = defaultdict(int)

    def __call__(self, job: dict[str, Any]) -> Any:
        data = job["input"]
        with self.lock:
            self.ids[data.get("n")].add(job["id"])
            self.runs[job["id"]] += 1
            run = self.runs[job["id"]]
        if data.get("sleep"):
            time.sleep(data["sleep"])
        if data.get("fail"):
            raise RuntimeError(f"asked to fail (run {run})")
        if data.get("fail_first") and run == 1:
            raise RuntimeError("first try fails")
        return {"n": data.get("n"), "run": run}

    def reset(self) -> None:
        with self.lock:
            self.ids.clear()
            self.runs.clear()

    def executed(self) -> int:
        with self.lock:
            return sum(self.runs.values())

    def duplicates(self) -> int:
        """Extra /run submissions beyond one per input."""
        with self.lock:
            return sum(len(ids) - 1 for ids in self.ids.values())


def batch_runner(client: Client, tmp_path: Path, endpoint: str = "ep", **kwargs: Any) -> BatchRunner:
    """A runner over ``client``'s endpoint with the journal and output in ``tmp_path`` and quick polling."""
    kwargs.setdefault("output", tmp_path / "out.jsonl")
    kwargs.setdefault("polling", QUICK_POLLS)
    return BatchRunner(client.endpoint(endpoint), journal=tmp_path / "j.sqlite", **kwargs)


def write_inputs(path: Path, count: int, **extra: Any) -> Path:
    with open(path, "w") as fh:
        for n in range(count):
            fh.write(json.dumps({"key": f"k{n}", "input": {"n": n, **extra}}) + "\n")
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def keys_once(path: Path) -> dict[Any, dict[str, Any]]:
    """The output by key, asserting that no key appears twice."""
    rows = read_output(path)
    by_key = {json.dumps(r["key"]): r for r in rows}
    assert len(by_key) == len(rows), "a key appears twice in the output"
    return by_key


def lines(path: Path) -> Iterator[str]:
    """The input file's lines, read lazily as a runner consumes them, closed at the end."""
    with open(path) as fh:
        yield from fh


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition on the runner's own state (it has no event to wait on from outside)."""
    while not condition():
        await asyncio.sleep(0.005)
