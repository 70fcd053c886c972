"""Run-time changes to a serving emulator: reset, endpoints created/changed/removed, faults as JSON.

The HTTP control plane (`control.Control`) and `Emulator.reset` call these on the server's loop. They
live apart from the queue's state machine (`core.Core`) because they end jobs *without* a lifecycle
event: a reset or a removed endpoint sends no webhook and counts no cancellation — the jobs are simply
gone, as if the emulator had been started afresh.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runpod_queue._contract import JobStatus
from runpod_queue.emulator._cassette import ReplayHandler
from runpod_queue.emulator._config import EndpointSpec, Faults
from runpod_queue.emulator._endpoint_file import parse_endpoint
from runpod_queue.emulator._http import HTTPError, type_name
from runpod_queue.emulator._jobs import EndpointState, WorkerSlot
from runpod_queue.emulator._scripted import FieldError, ScriptedHandler

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core
    from runpod_queue.emulator._delivery import WebhookDelivery
    from runpod_queue.emulator._external import ExternalWorkers
    from runpod_queue.emulator._inspect import RequestLog
    from runpod_queue.emulator._ratelimit import RateLimiter
    from runpod_queue.emulator._state import StateFile

__all__ = [
    "Admin",
    "endpoint_dict",
    "faults_dict",
    "faults_from_dict",
    "spec_from_dict",
]

_FAULT_FIELDS = ("error_429", "error_503", "error_500", "drop", "latency", "seed")


def faults_dict(faults: Faults) -> dict[str, Any]:
    """`Faults` as the JSON object `GET /_emulator/faults` answers."""
    return {name: getattr(faults, name) for name in _FAULT_FIELDS}


def faults_from_dict(data: dict[str, Any]) -> Faults:
    """The `Faults` a `PUT /_emulator/faults` body describes; fields left out are off (their default)."""
    unknown = sorted(data.keys() - set(_FAULT_FIELDS))
    if unknown:
        raise HTTPError(400, f"unknown fault field(s) {unknown}; the fields are {list(_FAULT_FIELDS)}")
    for name, value in data.items():
        if name == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise HTTPError(400, f'"seed" must be an integer or null, got {type_name(value)} {value!r}')
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise HTTPError(400, f'"{name}" must be a number, got {type_name(value)} {value!r}')
    try:
        return Faults(**data)
    except (TypeError, ValueError) as exc:
        raise HTTPError(400, str(exc)) from None


def endpoint_dict(ep: EndpointState) -> dict[str, Any]:
    """One endpoint as `GET /_emulator/endpoints` lists it."""
    handler = ep.spec.handler
    in_process = sum(1 for w in ep.workers if not w.external)
    return {
        "id": ep.id,
        "handler": None if handler is None else _handler_name(handler),
        "workers": in_process,
        "externalWorkers": sum(1 for w in ep.workers if w.external),
        "returnAggregateStream": ep.spec.return_aggregate_stream,
        "jobs": len(ep.jobs),
    }


def _handler_name(handler: Callable[..., Any]) -> str:
    describe = getattr(handler, "describe", None)
    if callable(describe):  # a scripted endpoint says what it is
        return str(describe())
    module = getattr(handler, "__module__", None) or "?"
    return f"{module}:{getattr(handler, '__qualname__', type(handler).__name__)}"


class Admin:
    """The operations behind the control plane, over the parts of one emulator."""

    def __init__(
        self,
        core: Core,
        *,
        default_workers: int,
        delivery: WebhookDelivery,
        external: ExternalWorkers,
        requests: RequestLog,
        limiter: RateLimiter,
        state: StateFile | None = None,
    ) -> None:
        self.core: Core = core
        self.default_workers: int = default_workers
        self.delivery: WebhookDelivery = delivery
        self.external: ExternalWorkers = external
        self.requests: RequestLog = requests
        self.limiter: RateLimiter = limiter
        self.state: StateFile | None = state

    # -- reset ----------------------------------------------------------------------------------

    async def reset(self) -> None:
        """Every job, recorded request, webhook attempt, warning and counter gone; the clock at 0.

        Endpoints stay, with their handlers and worker counts; external workers stay registered. A
        request held on a job (runsync, status-sync, stream) is answered at once: CANCELLED.
        """
        for ep in self.core.endpoints.values():
            self._drop_jobs(ep)
            ep.completed = ep.failed = ep.retried = 0
            if isinstance(ep.spec.handler, ScriptedHandler | ReplayHandler):
                ep.spec.handler.reset()  # a sequence starts from its first answer again
        self.delivery.reset()
        self.requests.clear()
        self.core.notices.clear()
        self.limiter.reset()
        await self.core.clock.restart()
        if self.state is not None:
            self.state.clear()

    def snapshot(self, path: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Write a consistent copy of the state to `path` (see `state.write_snapshot`).

        Raises:
            FileExistsError: `path` exists and `overwrite` is false.
            OSError: `path` cannot be written.
        """
        from pathlib import Path

        from runpod_queue.emulator._state import STATE_FORMAT, write_snapshot

        target = Path(path).resolve()
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists: overwrite it on purpose, or give another path")
        if not target.parent.is_dir():
            raise OSError(f"cannot write {target}: no directory {target.parent}")
        if target.exists():
            target.unlink()
        try:
            jobs = write_snapshot(self.core, self.state, target)
        except sqlite3.Error as exc:
            raise OSError(f"cannot write {target}: {exc}") from None
        return {"path": str(target), "jobs": jobs, "format": STATE_FORMAT, "now": self.core.clock.now()}

    def _drop_jobs(self, ep: EndpointState) -> None:
        """End every job of `ep` with no lifecycle event (no webhook, no counter)."""
        clock = self.core.clock
        for job in list(ep.jobs.values()):
            for name in ("ttl_handle", "timer_handle", "retention_handle"):
                handle = getattr(job, name)
                if handle is not None:
                    handle.cancel()
                    setattr(job, name, None)
            stop, job.stop_run = job.stop_run, None
            if stop is not None:
                stop()  # an external worker is told through job-stop
            if job.status is JobStatus.IN_PROGRESS and clock.reports:
                clock.work_ended()
            if not job.status.is_terminal:
                job.status = JobStatus.CANCELLED
            for attr in ("waiters", "stream_waiters"):
                waiters = getattr(job, attr)
                setattr(job, attr, None)
                for fut in waiters or ():
                    if not fut.done():
                        fut.set_result(None)
        ep.jobs.clear()
        ep.queue.clear()
        ep.low_queue.clear()
        ep.in_queue = ep.in_progress = 0
        for worker in list(ep.workers):
            if worker.job is None:
                continue
            worker.job = None
            if not worker.external:
                # Its handler thread may still be running: a fresh slot takes its place, and the old
                # run's result is dropped (its job is gone, so the core sees it as stale).
                self._retire(worker)
                self._add_worker(ep)

    # -- endpoints ------------------------------------------------------------------------------

    def put_endpoint(self, endpoint_id: str, spec: EndpointSpec) -> bool:
        """Create the endpoint, or change it in place (its jobs stay; new runs use the new spec).

        Returns:
            True when it was created.
        """
        if isinstance(spec.handler, ScriptedHandler):
            spec.handler.bind(self.core.clock)
        elif isinstance(spec.handler, ReplayHandler):
            spec.handler.bind(self.core.clock, endpoint_id)
        ep = self.core.endpoints.get(endpoint_id)
        wanted = (self.default_workers if spec.workers is None else spec.workers) if spec.handler else 0
        if ep is None:
            self.core.endpoints[endpoint_id] = ep = EndpointState(endpoint_id, spec, wanted)
            created = True
        else:
            ep.spec = spec
            ep.in_process_workers = wanted
            created = False
        in_process = [w for w in ep.workers if not w.external]
        for _ in range(wanted - len(in_process)):
            self._add_worker(ep)
        surplus = len(in_process) - wanted
        # Idle ones go first; a busy one finishes its run and then leaves.
        for worker in sorted(in_process, key=lambda w: w.job is not None)[: max(surplus, 0)]:
            self._retire(worker)
        self.core.dispatch(ep)
        return created

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Remove the endpoint: its jobs are dropped (requests held on them answer CANCELLED), its
        id answers 404 from now on, and external workers polling it are released."""
        ep = self.core.endpoints.pop(endpoint_id)
        self._drop_jobs(ep)
        if self.state is not None:
            self.state.drop_endpoint(endpoint_id)
        for worker in list(ep.workers):
            self._retire(worker)
        while ep.take_waiters:
            fut = ep.take_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        for key in [k for k in self.external.workers if k[0] == endpoint_id]:
            del self.external.workers[key]

    @staticmethod
    def _add_worker(ep: EndpointState) -> None:
        worker = WorkerSlot(ep)
        ep.workers.append(worker)
        ep.idle.append(worker)

    @staticmethod
    def _retire(worker: WorkerSlot) -> None:
        worker.retired = True
        ep = worker.endpoint
        if worker in ep.workers:
            ep.workers.remove(worker)
        if worker in ep.idle:
            ep.idle.remove(worker)


def spec_from_dict(endpoint_id: str, data: dict[str, Any]) -> EndpointSpec:
    """The `EndpointSpec` a `PUT /_emulator/endpoints/{id}` body describes (see `endpoint_file`).

    `handler` is a reference as `rpq serve` takes one (``path/to/file.py[:function]`` or
    ``package.module:function``, read from the server's working directory); `script` canned answers;
    neither: an endpoint fed only by external workers.
    """
    try:
        return parse_endpoint(endpoint_id, data)
    except FieldError as exc:
        raise HTTPError(400, f"field {exc}") from None
