"""Shared pieces of the external-worker tests: worker files, short protocol timings, polling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from runpod_queue.emulator import Timings

WORKERS = Path(__file__).parent / "workers"
API_KEY = "test-external-key"
# On a virtual clock: polls are held for an hour of virtual time (60 real seconds at most), so a live
# worker always has one open and only a dead one can fall silent for the 30 s after which it is lost.
TIMINGS = Timings(job_take_hold=3600, worker_lost_after=30)

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Poll until `probe()` is truthy; the timeout only bounds a broken run, nothing asserts on time."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def runpod_imported() -> Iterator[None]:
    """`import runpod` calls logging.basicConfig(INFO): put the root logger back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import runpod  # noqa: F401
    finally:
        root.setLevel(level)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
    yield


def live_group_members(pgid: int) -> list[int]:
    """Pids of running (not zombie) processes in a process group, read from /proc.

    `os.killpg(pgid, 0)` is not enough: a container's init may never reap the orphaned ping process,
    and a zombie still counts as a group member."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members
