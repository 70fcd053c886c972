"""Run unmodified official worker files as child processes pointed at an emulator.

Used by `rpq serve ID=worker.py --runpod-worker` and by tests. Each worker gets its own process group
(`start_new_session`): the official worker forks a ping process that outlives a killed parent, so
stopping a worker means signalling the whole group, never just the pid.

A worker must not outlive the process that started it (it would retry a gone emulator forever, at high
CPU): `rpq serve` stops every group when it is stopped by SIGINT, SIGTERM or SIGHUP, and in case it dies
without cleaning up (SIGKILL, a crash) each worker also watches its parent — through
`PR_SET_PDEATHSIG` on Linux, and a thread polling its parent pid elsewhere — and exits with it. (On
Linux the "parent" is the thread that started the worker: the main thread, or the supervisor thread for
a restarted worker, which runs until `close()` stops every worker anyway.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from runpod_queue.emulator._external import worker_environment
from runpod_queue.emulator._jobs import new_worker_id

__all__ = ["ManagedWorker", "WorkerProcesses"]

_QUICK_EXIT_S = 10.0
# Run in front of the worker file, in the worker's process: exit with the parent, then run the file as
# `python worker.py` would (argv, __main__, sys.path[0]). argv: [file, parent pid].
_LAUNCH = """
import os, runpy, signal, sys, threading
path, parent = sys.argv[1], int(sys.argv[2])
watched = False
if sys.platform.startswith("linux"):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        watched = libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
if os.getppid() != parent:  # the parent died before the watch was set
    os._exit(0)
if not watched:
    def watch():
        import time
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="rpq-parent-watch", daemon=True).start()
sys.argv = [path]
sys.path[0] = os.path.dirname(path)
runpy.run_path(path, run_name="__main__")
"""
_MAX_BACKOFF_S = 30.0


class LineSink(Protocol):
    """Where a worker process's output lines go (the emulator's `WorkerLogs`)."""

    def add(
        self, endpoint_id: str, worker_id: str, source: str, text: str, job_id: str | None = None
    ) -> None: ...

    def end(self, endpoint_id: str, worker_id: str, why: str) -> None: ...


class ManagedWorker:
    """One worker process and what it takes to start it again."""

    __slots__ = (
        "endpoint_id",
        "env",
        "file",
        "proc",
        "quick_exits",
        "restart_at",
        "restarts",
        "started_at",
        "worker_id",
    )

    def __init__(self, endpoint_id: str, file: Path, worker_id: str, env: Mapping[str, str]) -> None:
        self.endpoint_id = endpoint_id
        self.file = file
        self.worker_id = worker_id
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.started_at = 0.0
        # Exits soon after start in a row (a worker file that cannot import): restarts back off.
        self.quick_exits = 0
        self.restart_at: float | None = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"<ManagedWorker {self.endpoint_id}/{self.worker_id} pid={pid}>"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class WorkerProcesses:
    """A set of official worker processes for one emulator; stops them all on exit.

    `supervise()` (or the background thread of `start_supervisor`) starts a fresh process — with a new
    worker id, as the platform does — for a worker that asked for `stopPod` (`request_replace`, called
    by the emulator) and, with `restart_exited`, for one that exited or was killed.
    """

    def __init__(
        self,
        root_url: str,
        *,
        api_key: str | None = None,
        ping_interval: float = 1.0,
        output: Path | None = None,
        quiet: bool = False,
        restart_exited: bool = True,
        python: str = sys.executable,
        logs: LineSink | None = None,
    ) -> None:
        self.root_url = root_url
        self.api_key = api_key
        self.ping_interval = ping_interval  # seconds; the worker's RUNPOD_PING_INTERVAL is ms
        self.output = output
        self.quiet = quiet
        self.restart_exited = restart_exited
        self.python = python
        self.workers: list[ManagedWorker] = []
        self._lock = threading.Lock()
        self._replace: set[tuple[str, str]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: IO[bytes] | None = None
        # Each process's stdout and stderr, line by line, into its worker's log (the logs route), and
        # on to where they went before (the terminal, `output`, or nowhere when quiet).
        self.logs = logs
        self._log_lock = threading.Lock()

    # -- starting and stopping ------------------------------------------------------------------

    def start(
        self,
        endpoint_id: str,
        worker_file: str | Path,
        *,
        worker_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ManagedWorker:
        """Start one worker process serving `endpoint_id`; returns at once (it imports in the background)."""
        path = Path(worker_file)
        if not path.is_file():
            raise FileNotFoundError(f"worker file {path} does not exist")
        worker = ManagedWorker(endpoint_id, path, worker_id or new_worker_id(), env or {})
        self._spawn(worker)
        with self._lock:
            self.workers.append(worker)
        return worker

    def _spawn(self, worker: ManagedWorker) -> None:
        env = dict(os.environ)
        env.update(
            worker_environment(
                self.root_url,
                worker.endpoint_id,
                worker_id=worker.worker_id,
                api_key=self.api_key,
                ping_interval=self.ping_interval,
            )
        )
        env.update(worker.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        out: Any = None
        if self.quiet:
            out = subprocess.DEVNULL
        elif self.output is not None:
            if self._log is None:
                self._log = self.output.open("ab")
            out = self._log
        # The user's own worker file, run by the same interpreter: nothing untrusted is interpolated.
        worker.started_at = time.monotonic()
        worker.restart_at = None
        file = str(worker.file.resolve())
        piped = self.logs is not None
        worker.proc = proc = subprocess.Popen(  # noqa: S603
            [self.python, "-c", _LAUNCH, file, str(os.getpid())],
            env=env,
            cwd=str(Path(file).parent),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else out,
            stderr=subprocess.PIPE if piped else subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        if piped:
            for stream, fd in ((proc.stdout, 1), (proc.stderr, 2)):
                assert stream is not None
                threading.Thread(
                    target=self._pump,
                    args=(stream, fd, worker.endpoint_id, worker.worker_id, proc if fd == 1 else None),
                    name=f"rpq-worker-output-{worker.worker_id}",
                    daemon=True,
                ).start()

    def _pump(
        self,
        stream: IO[bytes],
        fd: int,
        endpoint_id: str,
        worker_id: str,
        proc: subprocess.Popen[bytes] | None,
    ) -> None:
        """Copy one output stream of a worker process, a line at a time, to its log and on."""
        logs = self.logs
        assert logs is not None
        with stream:
            for raw in iter(stream.readline, b""):
                logs.add(endpoint_id, worker_id, "container", raw.decode("utf-8", "replace"))
                if self.quiet:
                    continue
                if self.output is not None:
                    with self._log_lock:
                        if self._log is not None:  # None once closed
                            self._log.write(raw)
                            self._log.flush()
                else:
                    with contextlib.suppress(OSError):
                        os.write(fd, raw)
        if proc is not None:  # stdout's reader says when the process is gone
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            logs.end(endpoint_id, worker_id, f"process exited ({proc.poll()})")

    def kill(self, worker: ManagedWorker) -> None:
        """SIGKILL the worker and its ping process at once (a crash, as far as the queue can tell)."""
        _signal_group(worker, signal.SIGKILL)
        if worker.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=5)

    def stop(self, worker: ManagedWorker, timeout: float = 3.0) -> None:
        """SIGTERM the group (the official worker finishes running jobs), SIGKILL what is left."""
        if worker.proc is not None:
            _stop_process(worker.proc, timeout)

    def close(self, timeout: float = 3.0) -> None:
        """Stop the supervisor and every worker process. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            workers = list(self.workers)
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                _signal_group(worker, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in workers:
            if worker.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(worker, signal.SIGKILL)
            if worker.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(timeout=5)
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    # -- supervision ----------------------------------------------------------------------------

    def request_replace(self, endpoint_id: str, worker_id: str) -> None:
        """The emulator saw `stopPod` from this worker: replace its process (thread-safe)."""
        with self._lock:
            self._replace.add((endpoint_id, worker_id))

    def supervise(self) -> None:
        """Replace workers that exited or asked to be replaced, each under a new worker id."""
        with self._lock:
            replace, self._replace = self._replace, set()
            workers = list(self.workers)
        now = time.monotonic()
        for worker in workers:
            asked = (worker.endpoint_id, worker.worker_id) in replace
            if self._stopping.is_set():
                return
            if asked:
                # The successor first: it imports for a second or two while the old one shuts down
                # (the queue hands the retired worker no jobs meanwhile).
                old = worker.proc
                worker.worker_id = new_worker_id()
                worker.restarts += 1
                self._spawn(worker)
                if old is not None:
                    _stop_process(old, timeout=2.0)
                continue
            if self.restart_exited and worker.proc is not None and not worker.alive:
                if worker.restart_at is None:
                    _signal_group(worker, signal.SIGKILL)  # a dead parent's ping process
                    quick = now - worker.started_at < _QUICK_EXIT_S
                    worker.quick_exits = worker.quick_exits + 1 if quick else 0
                    worker.restart_at = now + min(_MAX_BACKOFF_S, 0.5 * 2**worker.quick_exits if quick else 0)
                if now < worker.restart_at:
                    continue
            else:
                continue
            worker.worker_id = new_worker_id()
            worker.restarts += 1
            self._spawn(worker)

    def start_supervisor(self, every_s: float = 0.5) -> None:
        def main() -> None:
            while not self._stopping.wait(every_s):
                self.supervise()

        self._thread = threading.Thread(target=main, name="rpq-worker-supervisor", daemon=True)
        self._thread.start()

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _signal_group(worker: ManagedWorker, sig: signal.Signals) -> None:
    if worker.proc is not None:
        _signal_process_group(worker.proc, sig)


def _signal_process_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        _signal_process_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # The ping process may outlive its parent: always clear the whole group.
    _signal_process_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
