"""`simulate`: run traffic against endpoint configurations on the emulator's own core, in virtual time.

No second model of RunPod: each configuration gets a real `Core` with a real `Fleet` on a `VirtualClock`,
so queue order, the scaler, cold starts, FlashBoot, idle stop, executionTimeout and ttl are the
emulator's rules (docs/fleet.md). Three things stand in for what a served emulator has:

- the handler: `_TimedRunner` (the core's `RunStarter` seam) ends each run after the job's drawn
  duration, by a clock timer, through the same `Core.complete` / `Core.release_worker` a handler's end
  goes through; no handler code runs;
- the HTTP server and its loop: arrivals call `Core.submit` from clock timers, and the clock is driven
  event by event (`_drive`), jumping from one due timer to the next with no loop and no waiting;
- retention is 0: a finished job is read into the report and dropped at once (a day's 170,000 finished
  jobs need not stay in memory; retention decides only how long a result can be fetched).

Observation is by subclassing (`_SimCore._remove`, `_SimFleet._boot/_ready/_stop`): each calls the
original, so the rules are untouched.

Billing (RunPod, serverless/pricing.mdx): a worker is billed "from when a worker starts until it fully
stops, rounded up to the nearest second": here from the start of its cold start (a THROTTLED worker
waiting for a GPU is not billed) to its stop, each worker's time rounded up to a whole second.
"""

from __future__ import annotations

import logging
import math
import random
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from runpod_queue._contract import JobStatus
from runpod_queue._units import Duration, seconds
from runpod_queue.emulator._clock import VirtualClock
from runpod_queue.emulator._config import EndpointSpec, Timings
from runpod_queue.emulator._core import Core
from runpod_queue.emulator._fleet import Fleet, WorkerState
from runpod_queue.emulator._sim_models import Arrival, DurationModel, SimConfig, Traffic

if TYPE_CHECKING:
    from runpod_queue.emulator._fleet import _Member
    from runpod_queue.emulator._jobs import EndpointState, JobRecord, WorkerSlot

__all__ = ["ConfigReport", "Percentiles", "SimulationReport", "Timeline", "simulate"]

_ENDPOINT: Final = "sim"
_clock_log: Final = logging.getLogger("runpod_queue.emulator")
_RAW_BODY: Final = b'{"input":null}'
# Samples of the timeline per simulated span (the plot's resolution).
_SAMPLES: Final = 1440
# RunPod's default job ttl (24 h) and executionTimeout (600 s): serverless/endpoints/send-requests.mdx,
# endpoint-configurations.mdx ("Execution timeout"), as the emulator's Timings have them.
_DEFAULT_TTL: Final = 86_400.0


def _never_called(job: dict[str, Any]) -> Any:  # pragma: no cover - the duration model stands in
    raise AssertionError("a simulation runs no handler")


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A distribution of seconds over a configuration's jobs (nearest-rank percentiles).

    Args:
        mean: The mean.
        p50: The median.
        p95: The 95th percentile.
        p99: The 99th percentile.
        max: The largest value.
        count: How many values (0: every field is 0).
    """

    mean: float
    p50: float
    p95: float
    p99: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        """The distribution of `values` (seconds).

        Args:
            values: The values.

        Returns:
            Their mean, nearest-rank percentiles and max.
        """
        n = len(values)
        if n == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0)
        ordered = sorted(values)

        def rank(p: float) -> float:
            return ordered[max(0, math.ceil(p * n) - 1)]

        return cls(math.fsum(ordered) / n, rank(0.50), rank(0.95), rank(0.99), ordered[-1], n)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Workers and queue over time, sampled at a fixed step (what `--plot` draws).

    Args:
        step: Seconds between samples.
        at: Each sample's time (seconds from the start).
        workers: Billed workers at that time (starting, idle or running).
        running: Workers running a job.
        queued: Jobs waiting in the queue.
    """

    step: float
    at: tuple[float, ...]
    workers: tuple[int, ...]
    running: tuple[int, ...]
    queued: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConfigReport:
    """What one configuration did with the traffic.

    Args:
        label: The configuration as given (its ``name``, else its settings).
        config: The configuration.
        jobs: Jobs that arrived.
        completed: Jobs that completed.
        timed_out: Jobs stopped by their executionTimeout.
        expired: Jobs whose ttl ran out before they ran (or while they ran).
        jobs_waited: Jobs that started after a queue delay above 0.
        queue_delay: Seconds from arrival to start, over the jobs that started (RunPod's ``delayTime``).
        end_to_end: Seconds from arrival to completion, over the completed jobs.
        cold_starts: Workers that began a cold start.
        flashboot_starts: Of those, the ones FlashBoot shortened.
        jobs_waited_on_cold_start: Jobs that arrived while the worker that ran them was still starting
            (each worker's first job only: a later one waited on a busy worker, not on a start).
        workers_peak: The most billed workers at once.
        workers_mean: Billed workers on average over the span.
        worker_seconds: Billed worker-seconds (each worker's life rounded up to a second).
        worker_seconds_busy: Of those, seconds running jobs.
        worker_seconds_starting: Of those, seconds in cold starts.
        worker_seconds_idle: The rest: workers up with nothing to do.
        cost: `worker_seconds` times the price; ``None`` without a price.
        span: Seconds simulated: the traffic's span, or until the last job ended if later.
        timeline: Workers and queue over time.
    """

    label: str
    config: SimConfig
    jobs: int
    completed: int
    timed_out: int
    expired: int
    jobs_waited: int
    queue_delay: Percentiles
    end_to_end: Percentiles
    cold_starts: int
    flashboot_starts: int
    jobs_waited_on_cold_start: int
    workers_peak: int
    workers_mean: float
    worker_seconds: float
    worker_seconds_busy: float
    worker_seconds_starting: float
    worker_seconds_idle: float
    cost: float | None
    span: float
    timeline: Timeline


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """The outcome of `simulate`: one `ConfigReport` per configuration, same traffic and work for each.

    Args:
        traffic: The traffic, described.
        duration: The duration model, described.
        cold_start: Seconds of the default cold start.
        ttl: Seconds of the jobs' ttl.
        seed: The random seed (the same seed gives the same report).
        configs: One report per configuration, in the order given.
        elapsed: Real seconds the simulation took.
        jobs_per_second: Simulated jobs per real second (all configurations).
    """

    traffic: str
    duration: str
    cold_start: float
    ttl: float
    seed: int
    configs: tuple[ConfigReport, ...]
    elapsed: float
    jobs_per_second: float

    def to_dict(self, *, timeline: bool = False) -> dict[str, Any]:
        """The report as JSON-ready data (what ``rpq simulate --json`` prints).

        Args:
            timeline: Include each configuration's timeline samples (large for long spans).

        Returns:
            The report as nested dicts and lists.
        """
        data = asdict(self)
        if not timeline:
            for config in data["configs"]:
                config.pop("timeline")
        return data


# -- the engine ------------------------------------------------------------------------------------


class _Recorder:
    """What the report is made of, filled in as the simulation runs."""

    def __init__(self, end: float, step: float) -> None:
        self.end = end
        self.delays = array("d")
        self.e2e = array("d")
        self.jobs = 0
        self.completed = 0
        self.timed_out = 0
        self.expired = 0
        self.cold_waited = 0
        self.waited = 0
        self.cold_starts = 0
        self.flash_starts = 0
        self.busy = 0.0
        self.starting = 0.0
        self.billed = 0.0
        self.workers = 0
        self.peak = 0
        self.area = 0.0
        self.changed_at = 0.0
        self.step = step
        self.samples_at: list[float] = []
        self.samples_workers: list[int] = []
        self.samples_running: list[int] = []
        self.samples_queued: list[int] = []

    def workers_changed(self, delta: int, now: float) -> None:
        self.area += self.workers * (now - self.changed_at)
        self.changed_at = now
        self.workers += delta
        if self.workers > self.peak:
            self.peak = self.workers


class _SimCore(Core):
    """The core, reporting each job as it leaves (retention is 0, so right after it ends)."""

    rec: _Recorder
    durations: dict[str, float]

    def _remove(self, job: JobRecord) -> None:
        if job.endpoint.jobs.get(job.id) is job:
            self.durations.pop(job.id, None)
            rec = self.rec
            started = job.started_at
            if started is not None:
                delay = started - job.created_at
                rec.delays.append(delay)
                if delay > 1e-9:
                    rec.waited += 1
            status = job.status
            if status is JobStatus.COMPLETED:
                rec.completed += 1
                assert job.finished_at is not None
                rec.e2e.append(job.finished_at - job.created_at)
            elif started is not None and status is not JobStatus.CANCELLED:
                rec.timed_out += 1  # executionTimeout (TIMED_OUT, or FAILED under that reading)
            else:
                rec.expired += 1  # ttl: in the queue, or mid-run (removed)
        super()._remove(job)


class _SimFleet(Fleet):
    """The fleet, telling the recorder when a worker's billing starts and ends."""

    def __init__(self, core: Core, ep: EndpointState, rec: _Recorder) -> None:
        super().__init__(core, ep)
        self.rec = rec
        self.boot_at: dict[WorkerSlot, float] = {}
        self.ready_at: dict[WorkerSlot, float] = {}

    def _boot(self, member: _Member) -> None:
        now = self.core.clock.now()
        self.boot_at[member.slot] = now
        self.rec.cold_starts += 1
        self.rec.workers_changed(1, now)
        super()._boot(member)

    def _ready(self, member: _Member) -> None:
        slot = member.slot
        if slot.id in self.members:
            now = self.core.clock.now()
            took = now - self.boot_at[slot]
            self.rec.starting += took
            if took < self.cold_start - 1e-9:
                self.rec.flash_starts += 1
            self.ready_at[slot] = now
        super()._ready(member)

    def _stop(self, member: _Member, why: str = "scaled down") -> None:
        slot = member.slot
        if slot.id in self.members and member.state is not WorkerState.THROTTLED:
            now = self.core.clock.now()
            booted = self.boot_at.pop(slot)
            if member.state is WorkerState.INITIALIZING:
                self.rec.starting += now - booted
            self.rec.billed += math.ceil(now - booted - 1e-9)
            self.rec.workers_changed(-1, now)
        self.ready_at.pop(slot, None)
        super()._stop(member, why)


class _TimedRunner:
    """The core's `RunStarter`: a run lasts the job's drawn duration, then ends as a handler's would."""

    def __init__(self, clock: VirtualClock, core: _SimCore, fleet: _SimFleet, rec: _Recorder) -> None:
        self.clock = clock
        self.core = core
        self.fleet = fleet
        self.rec = rec
        self.arriving = 0.0  # the duration of the job being submitted now

    def start(self, job: JobRecord, worker: WorkerSlot, core: Core) -> None:
        # A job taken at once starts inside `Core.submit`, before its id is known to the arrival.
        duration = self.core.durations.get(job.id, self.arriving)
        # The worker's first job, if it arrived before the worker was ready, waited on its cold start.
        ready = self.fleet.ready_at.pop(worker, None)
        if ready is not None and ready > job.queued_at:
            self.rec.cold_waited += 1
        handle = self.clock.call_later(duration, self._done, job, job.attempt, worker, duration)

        def stop() -> None:  # executionTimeout or ttl ended the run: the worker was busy until now
            handle.cancel()
            assert job.started_at is not None
            self.rec.busy += self.clock.now() - job.started_at

        job.stop_run = stop

    def _done(self, job: JobRecord, attempt: int, worker: WorkerSlot, duration: float) -> None:
        self.rec.busy += duration
        core = self.core
        if core.complete(job, attempt, output_json=None, error=None):
            core.release_worker(worker)


class _NoRunner:
    def start(self, job: JobRecord, worker: WorkerSlot, core: Core) -> None:  # pragma: no cover
        raise AssertionError("replaced by _TimedRunner before any job runs")


class _NoWebhooks:
    def send(self, job_id: str, url: str, payload: bytes) -> None:  # pragma: no cover - no webhooks
        pass


class _Failures(logging.Handler):
    """Catches what the clock logs when a timer callback raises: in a simulation that is a bug, and the
    run must stop with it rather than go on with a job stuck half-way."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failed: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.failed.append(record)


def _drive(clock: VirtualClock, end: float, busy: Callable[[], bool]) -> None:
    """Fire the clock's timers in order, jumping from one due time to the next, until the span is over
    and no job is left (or no timer is left)."""
    next_due = clock._next_due
    fire = clock._fire_due
    failures = _Failures()
    failed = failures.failed
    _clock_log.addHandler(failures)
    try:
        while True:
            due = next_due()
            if due is None or (due > end and not busy()):
                return
            fire(due)
            if failed:
                exc = failed[0].exc_info
                raise RuntimeError(f"the simulation failed at {due:g} s: {failed[0].getMessage()}") from (
                    exc[1] if exc else None
                )
    finally:
        _clock_log.removeHandler(failures)


def _run_config(
    config: SimConfig,
    traffic: Traffic,
    work: DurationModel,
    *,
    cold_start: float,
    flashboot: bool,
    ttl: float,
    price: float | None,
    seed: int,
) -> ConfigReport:
    end = traffic.hours * 3600.0
    rec = _Recorder(end, end / _SAMPLES)
    clock = VirtualClock()
    timings = Timings(
        retention_run=0,
        retention_sync=0,
        default_execution_timeout=seconds(config.execution_timeout, "execution_timeout"),
        default_ttl=ttl,
        max_retained_jobs=None,
    )
    cold = cold_start if config.cold_start is None else seconds(config.cold_start, "cold_start")
    spec = EndpointSpec(
        _never_called,
        workers_min=config.workers_min,
        workers_max=config.workers_max,
        idle_timeout=config.idle_timeout,
        cold_start=cold,
        scaler=config.scaler,
        scaler_value=config.scaler_value,
        flashboot=flashboot if config.flashboot is None else config.flashboot,
    )
    core = _SimCore(
        {_ENDPOINT: spec}, default_workers=0, clock=clock, timings=timings, runner=_NoRunner(),
        webhooks=_NoWebhooks(),
    )  # fmt: skip
    core.rec = rec
    core.durations = {}
    ep = core.endpoints[_ENDPOINT]
    fleet = _SimFleet(core, ep, rec)
    ep.fleet = fleet  # in place of the plain Fleet the core built: the same rules, observed
    # The runner needs the fleet, which needs the core: handed over once all three exist.
    core._runner = runner = _TimedRunner(clock, core, fleet, rec)

    # The same seed gives every configuration the same arrivals and the same durations.
    arrivals = traffic.iter_arrivals(random.Random(seed))
    draw = work.sampler(random.Random(seed + 1))
    durations = core.durations
    submit = core.submit
    call_later = clock.call_later
    state = {"left": True}

    def arrive(arrival: Arrival) -> None:
        runner.arriving = took = arrival.duration if arrival.duration is not None else draw()
        job = submit(ep, arrival.input, raw_body=_RAW_BODY)
        if job.status is JobStatus.IN_QUEUE:
            durations[job.id] = took
        rec.jobs += 1
        schedule()

    def schedule() -> None:
        nxt = next(arrivals, None)
        if nxt is None:
            state["left"] = False
            return
        call_later(nxt.at - clock.now(), arrive, nxt)

    def sample() -> None:
        rec.samples_at.append(clock.now())
        rec.samples_workers.append(rec.workers)
        rec.samples_running.append(ep.in_progress)
        rec.samples_queued.append(ep.in_queue)
        if clock.now() + rec.step <= end + 1e-9 or busy():
            call_later(rec.step, sample)

    def busy() -> bool:
        return state["left"] or bool(ep.in_queue or ep.in_progress)

    fleet.begin()
    schedule()
    call_later(0, sample)
    _drive(clock, end, busy)
    span = max(end, clock.now())
    # Workers still up at the end are billed to the end of the span.
    for member in list(fleet.members.values()):
        if member.state is not WorkerState.THROTTLED:
            booted = fleet.boot_at[member.slot]
            if member.state is WorkerState.INITIALIZING:
                rec.starting += span - booted
            rec.billed += math.ceil(span - booted - 1e-9)
    rec.workers_changed(0, span)
    billed = rec.billed
    unit = price if config.price is None else config.price
    return ConfigReport(
        label=config.label,
        config=config,
        jobs=rec.jobs,
        completed=rec.completed,
        timed_out=rec.timed_out,
        expired=rec.expired,
        jobs_waited=rec.waited,
        queue_delay=Percentiles.of(rec.delays),
        end_to_end=Percentiles.of(rec.e2e),
        cold_starts=rec.cold_starts,
        flashboot_starts=rec.flash_starts,
        jobs_waited_on_cold_start=rec.cold_waited,
        workers_peak=rec.peak,
        workers_mean=rec.area / span if span > 0 else 0.0,
        worker_seconds=billed,
        worker_seconds_busy=rec.busy,
        worker_seconds_starting=rec.starting,
        worker_seconds_idle=max(0.0, billed - rec.busy - rec.starting),
        cost=None if unit is None else billed * unit,
        span=span,
        timeline=Timeline(
            step=rec.step,
            at=tuple(rec.samples_at),
            workers=tuple(rec.samples_workers),
            running=tuple(rec.samples_running),
            queued=tuple(rec.samples_queued),
        ),
    )


def simulate(
    traffic: Traffic,
    configs: Sequence[SimConfig | str],
    *,
    duration: DurationModel | str | Duration = 4.0,
    cold_start: Duration = 0.0,
    flashboot: bool = False,
    ttl: Duration = 86_400.0,
    price: float | None = None,
    seed: int = 0,
) -> SimulationReport:
    """Run `traffic` against each configuration on the emulator's core in virtual time, and report.

    Each configuration gets a fresh emulator core and fleet (docs/fleet.md has their rules) on a virtual
    clock driven from event to event; the duration model stands in for the handler. Every configuration
    sees the same arrivals and the same job durations (one `seed`), so their columns compare like with
    like. Jobs that arrive within the span are followed to their end, past the span if need be.

    Args:
        traffic: When jobs arrive (`Traffic`).
        configs: One or more configurations, as `SimConfig` or its text
            (``"min=0,max=5,idle=5s,scaler=queue_delay:4"``).
        duration: How long each job runs: a `DurationModel`, its text (``"4s"``,
            ``"lognormal:median=4s,p95=12s"``, ``"exponential:mean=4s"``) or seconds. A trace's own
            durations win where it has them.
        cold_start: Seconds a new worker initializes (a configuration's ``cold`` overrides it).
        flashboot: FlashBoot for the configurations that do not say (the fleet's rule decides which
            starts it shortens: docs/fleet.md).
        ttl: The jobs' ttl in seconds (RunPod's default 24 h).
        price: Price per worker-second (read yours from RunPod's pricing page); ``None``: no cost.
        seed: The random seed for Poisson arrivals and drawn durations.

    Returns:
        The report, one `ConfigReport` per configuration.
    """
    if not isinstance(traffic, Traffic):
        raise TypeError(f"traffic must be a Traffic (Traffic.poisson('2/s', hours=1), ...), got {traffic!r}")
    if not configs:
        raise ValueError("give at least one configuration, e.g. 'min=0,max=5,idle=5s'")
    parsed = [c if isinstance(c, SimConfig) else SimConfig.parse(c) for c in configs]
    for c in parsed:
        if c.workers_min > c.workers_max:
            raise ValueError(
                f"config {c.label!r}: workers_min ({c.workers_min}) is above workers_max ({c.workers_max})"
            )
    work = duration if isinstance(duration, DurationModel) else DurationModel.parse(duration)
    cold = seconds(cold_start, "cold_start")
    ttl_s = seconds(ttl, "ttl", low=1.0)
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0
    ):
        raise ValueError(f"price must be a number >= 0 per worker-second, got {price!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    started = time.perf_counter()
    reports = tuple(
        _run_config(
            c, traffic, work, cold_start=cold, flashboot=bool(flashboot), ttl=ttl_s, price=price, seed=seed
        )
        for c in parsed
    )
    elapsed = time.perf_counter() - started
    total = sum(r.jobs for r in reports)
    return SimulationReport(
        traffic=repr(traffic),
        duration=str(work),
        cold_start=cold,
        ttl=ttl_s,
        seed=seed,
        configs=reports,
        elapsed=elapsed,
        jobs_per_second=total / elapsed if elapsed > 0 else 0.0,
    )
