"""A fleet: an endpoint's workers as RunPod runs them, started by a scaler and stopped when idle.

Opt-in per endpoint (`EndpointSpec(workers_min=…, workers_max=…)`); every other endpoint keeps its fixed
ready workers. All times are the emulator's clock; RunPod seconds go through `Core.span` (the real
clock's `time_scale`). Each rule names its source in docs/fleet.md, or says it is ours:

- A worker is INITIALIZING for `cold_start` (a tenth of it with FlashBoot while a stopped worker's
  resources are kept), then IDLE ⇄ RUNNING; an IDLE worker above `workers_min` stops after
  `idle_timeout` (RunPod: endpoint settings, "Idle timeout").
- The scaler: `queue_delay` adds a worker for each queued job that has waited `scaler_value` seconds
  and has no idle or starting worker coming for it; `request_count` runs ceil((queued + in progress) /
  `scaler_value`) workers (RunPod: endpoint settings, "Auto-scaling type"). Never above `workers_max`,
  never below `workers_min`. A job on an endpoint with no live worker starts one at once (ours).
- GPU capacity (`set_capacity`): a worker that cannot get a GPU waits THROTTLED; when one frees it
  starts INITIALIZING (ours; RunPod shows such workers as THROTTLED).
- An endpoint without requests for 3 days may run 2 workers at most, after 7 days none (RunPod:
  endpoint settings, "idle endpoints"); the cap holds until its settings are updated (ours).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from runpod_queue._contract import JobStatus
from runpod_queue._units import seconds
from runpod_queue.emulator._clock import TimerHandle
from runpod_queue.emulator._jobs import EndpointState, WorkerSlot

if TYPE_CHECKING:
    from runpod_queue.emulator._core import Core

__all__ = ["Fleet", "WorkerState", "WorkerView", "fixed_worker_views"]

# [ours] FlashBoot: RunPod keeps a stopped worker's resources "for some time" and gives no figures.
FLASHBOOT_KEEP_S: Final = 600.0
FLASHBOOT_FACTOR: Final = 0.1
# RunPod's endpoint settings: an endpoint idle 3 days may run 2 workers at most, after 7 days none.
DORMANT_AFTER_S: Final = ((7 * 86_400.0, 0), (3 * 86_400.0, 2))
# How close to a queued job's due time counts as due (the virtual clock's grid is 1 ns).
_DUE_SLACK_S: Final = 1e-9
# RunPod's default max workers when only `workers_min` is given.
DEFAULT_WORKERS_MAX: Final = 3


class WorkerState(StrEnum):
    """A worker's state, as REST v2's `GET /serverless/{id}/workers` spells it."""

    INITIALIZING = "INITIALIZING"
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    THROTTLED = "THROTTLED"
    UNHEALTHY = "UNHEALTHY"


# Live workers that cannot take a queued job (`wanted`: the others are spare).
_NOT_SPARE: Final = frozenset({WorkerState.RUNNING, WorkerState.UNHEALTHY})
# States that hold a GPU (count against `set_capacity`).
_HOLDING: Final = frozenset({WorkerState.INITIALIZING, WorkerState.IDLE, WorkerState.RUNNING})


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker of an emulated endpoint, as `Emulator.workers` shows it (a snapshot).

    Args:
        id: The worker's id (what job answers name as ``workerId``).
        status: INITIALIZING, IDLE, RUNNING, THROTTLED or UNHEALTHY.
        created_at: Clock seconds when it was asked for.
        ready_at: Clock seconds when its cold start ended; ``None`` while it has not.
        job_id: The job it runs, if RUNNING.
        reason: Why it is UNHEALTHY or THROTTLED, in a sentence; else ``None``.
        started_at: Clock seconds when its cold start began (it got a GPU); ``None`` while THROTTLED.
    """

    id: str
    status: WorkerState
    created_at: float
    ready_at: float | None
    job_id: str | None
    reason: str | None
    started_at: float | None = None


class _Member:
    """One fleet worker: its slot (the core's view) and the fleet's bookkeeping."""

    __slots__ = ("booted_at", "created_at", "idle_timer", "ready_at", "reason", "slot", "state", "timer")

    def __init__(self, slot: WorkerSlot, state: WorkerState, now: float) -> None:
        self.slot = slot
        self.state = state
        self.created_at = now
        self.ready_at: float | None = None
        self.booted_at: float | None = None  # when its cold start began
        self.reason: str | None = None
        self.timer: TimerHandle | None = None  # the cold start's end
        self.idle_timer: TimerHandle | None = None


class Fleet:
    """The workers of one fleet endpoint; the core calls it at each change of the queue."""

    def __init__(self, core: Core, ep: EndpointState) -> None:
        spec = ep.spec
        self.core = core
        self.ep = ep
        self.workers_min: int = spec.workers_min or 0
        self.workers_max: int = (
            spec.workers_max if spec.workers_max is not None else max(DEFAULT_WORKERS_MAX, self.workers_min)
        )
        self.idle_timeout: float = seconds(spec.idle_timeout, "EndpointSpec.idle_timeout")
        self.cold_start: float = seconds(spec.cold_start, "EndpointSpec.cold_start")
        self.scaler: str = spec.scaler
        self.scaler_value: float = spec.scaler_value
        self.flashboot: bool = spec.flashboot
        self.capacity: int | None = None
        self.members: dict[str, _Member] = {}
        self._by_slot: dict[WorkerSlot, _Member] = {}
        self._check_at: float | None = None  # when a queue-delay check is already scheduled
        self._warm: list[float] = []  # FlashBoot: until when each stopped worker's resources are kept
        self._last_request: float = 0.0
        self.dormant_cap: int | None = None
        self.started: int = 0  # workers ever started (a crash loop shows as a climbing count)
        # Members whose state is UNHEALTHY: whoever sets that state adds to it (nothing does today).
        self._unhealthy: int = 0
        self._scaling = False

    # -- what the core calls --------------------------------------------------------------------

    def begin(self) -> None:
        """The emulator started: `workers_min` workers begin their cold start."""
        self._last_request = self.core.clock.now()
        self.scale()

    def on_request(self) -> None:
        """A job arrived: apply the idle-endpoint cap if the endpoint slept long enough."""
        now = self.core.clock.now()
        gap = now - self._last_request
        for after, cap in DORMANT_AFTER_S:
            if gap >= self.core.span(after):
                self.dormant_cap = cap if self.dormant_cap is None else min(cap, self.dormant_cap)
                break
        self._last_request = now

    def on_start(self, slot: WorkerSlot) -> None:
        """The core handed a job to `slot`: IDLE → RUNNING."""
        member = self._by_slot.get(slot)
        if member is not None:
            member.state = WorkerState.RUNNING
            _cancel(member, "idle_timer")

    def on_release(self, slot: WorkerSlot) -> None:
        """`slot` finished its job: RUNNING → IDLE (its idle timeout starts)."""
        member = self._by_slot.get(slot)
        if member is not None and member.state is WorkerState.RUNNING:
            self._become_idle(member)

    def replace(self, slot: WorkerSlot) -> None:
        """The worker stops (``refresh_worker``, a job it could not stop): the scaler starts another."""
        member = self._by_slot.get(slot)
        if member is not None:
            self._stop(member, "replaced")

    def update(
        self,
        *,
        workers_min: int | None = None,
        workers_max: int | None = None,
        idle_timeout: float | None = None,
        scaler: str | None = None,
        scaler_value: float | None = None,
    ) -> None:
        """New settings (PATCH /serverless/{id}); an update also lifts the idle-endpoint cap."""
        new_min = self.workers_min if workers_min is None else workers_min
        new_max = self.workers_max if workers_max is None else workers_max
        if new_min > new_max:
            raise ValueError(f"workers_min ({new_min}) is above workers_max ({new_max})")
        self.workers_min, self.workers_max = new_min, new_max
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
            for member in self.members.values():
                if member.state is WorkerState.IDLE:
                    self._become_idle(member)  # restart its idle timeout under the new value
        if scaler is not None:
            self.scaler = scaler
        if scaler_value is not None:
            self.scaler_value = scaler_value
        self.dormant_cap = None
        self.scale()

    def set_capacity(self, gpus: int | None) -> None:
        """At most `gpus` workers hold a GPU (None: no limit); the rest wait THROTTLED."""
        self.capacity = gpus
        self._promote_throttled()
        self.scale()

    # -- views ------------------------------------------------------------------------------------

    def counts(self) -> dict[WorkerState, int]:
        """How many workers are in each state."""
        counts = dict.fromkeys(WorkerState, 0)
        for member in self.members.values():
            counts[member.state] += 1
        return counts

    def views(self) -> list[WorkerView]:
        """Every live worker, oldest first."""
        return [
            WorkerView(
                id=m.slot.id,
                status=m.state,
                created_at=m.created_at,
                ready_at=m.ready_at,
                job_id=m.slot.job.id if m.slot.job is not None else None,
                reason=m.reason,
                started_at=m.booted_at,
            )
            for m in self.members.values()
        ]

    @property
    def effective_max(self) -> int:
        """`workers_max`, lowered by the idle-endpoint cap while it holds."""
        if self.dormant_cap is None:
            return self.workers_max
        return min(self.workers_max, self.dormant_cap)

    # -- the scaler -------------------------------------------------------------------------------

    def _live(self) -> Iterator[_Member]:
        return (m for m in self.members.values() if m.state is not WorkerState.UNHEALTHY)

    def _live_count(self) -> int:
        """`len(list(self._live()))`, without the walk while no member is UNHEALTHY (the scaler asks
        several times per job; `_unhealthy` counts the members marked so, none today: a fleet runs
        in-process workers, and only external workers report failed fitness checks)."""
        if not self._unhealthy:
            return len(self.members)
        return sum(1 for m in self.members.values() if m.state is not WorkerState.UNHEALTHY)

    def wanted(self) -> int:
        """How many live workers the scaler wants now, within [min, effective max]."""
        ep = self.ep
        cap = self.effective_max
        if self.scaler == "request_count":
            want = math.ceil((ep.in_queue + ep.in_progress) / self.scaler_value)
        else:
            live = self._live_count()
            # Shortcuts that give what the full count below gives (the scaler runs at every change of
            # the queue, so they matter to `simulate`): with nothing queued nothing is overdue, and at
            # the cap more overdue jobs cannot raise the answer. Skipping `_overdue` there skips only
            # its next check, which could start no worker either; the next change schedules it.
            if not ep.in_queue:
                want = live
            elif live >= cap:
                want = cap
            else:
                spare = sum(1 for m in self.members.values() if m.state not in _NOT_SPARE)
                want = live + max(0, self._overdue() - spare)
                if not live:
                    want = max(want, 1)  # ours: nothing measures a delay with no worker at all
        return max(self.workers_min, min(want, cap))

    def _overdue(self) -> int:
        """Queued jobs that have waited the queue-delay threshold; schedules the next check."""
        ep = self.ep
        now = self.core.clock.now()
        threshold = self.core.span(self.scaler_value)
        overdue = 0
        next_due: float | None = None
        for q in (ep.queue, ep.low_queue):
            for job, attempt in q:
                if job.attempt != attempt or job.id not in ep.jobs or job.status is not JobStatus.IN_QUEUE:
                    continue
                due = job.queued_at + threshold
                # Within a nanosecond counts as due: a virtual clock keeps due times on a 1 ns grid, so
                # the check timer may fire a rounding step before `due` and would re-arm itself forever.
                if due <= now + _DUE_SLACK_S:
                    overdue += 1
                else:
                    next_due = due if next_due is None else min(next_due, due)
                    break  # queued in order: the rest are younger
        if next_due is not None and (
            self._check_at is None or self._check_at <= now or next_due < self._check_at
        ):
            self._check_at = next_due
            self.core.clock.call_later(next_due - now, self._delay_check)
        return overdue

    def _delay_check(self) -> None:
        self._check_at = None
        self.scale()

    def scale(self) -> None:
        """Start workers up to what the scaler wants; stop those above a lowered max."""
        if self._scaling:  # a worker that is ready at once dispatches, which scales again
            return
        self._scaling = True
        try:
            while self._live_count() < self.wanted():
                self._start()
        finally:
            self._scaling = False
        cap = self.effective_max
        if self._live_count() > cap:
            live = list(self._live())
            # A lowered max (or the idle-endpoint cap): waiting and idle workers go first, busy ones
            # finish their job and then stop when they go idle (`_become_idle`).
            order = {WorkerState.THROTTLED: 0, WorkerState.INITIALIZING: 1, WorkerState.IDLE: 2}
            extra = len(live) - cap
            for member in sorted(live, key=lambda m: order.get(m.state, 9)):
                if extra <= 0 or member.state is WorkerState.RUNNING:
                    break
                self._stop(member)
                extra -= 1

    # -- transitions ----------------------------------------------------------------------------

    def _holding(self) -> int:
        return sum(1 for m in self.members.values() if m.state in _HOLDING)

    def _start(self) -> None:
        now = self.core.clock.now()
        slot = WorkerSlot(self.ep)
        member = _Member(slot, WorkerState.THROTTLED, now)
        self.members[slot.id] = member
        self._by_slot[slot] = member
        self.started += 1
        if self.capacity is not None and self._holding() >= self.capacity:
            member.reason = f"no GPU free: capacity is {self.capacity}"
            self.core.logs.system(self.ep.id, slot.id, f"worker THROTTLED: {member.reason}")
            return
        self._boot(member)

    def _boot(self, member: _Member) -> None:
        """THROTTLED (or new) → INITIALIZING for the cold start."""
        member.state = WorkerState.INITIALIZING
        member.reason = None
        now = self.core.clock.now()
        member.booted_at = now
        self._warm = [until for until in self._warm if until > now]
        cold = self.cold_start
        if self.flashboot and self._warm:
            self._warm.pop(0)
            cold *= FLASHBOOT_FACTOR
        self.core.logs.system(self.ep.id, member.slot.id, f"worker INITIALIZING: cold start {cold:g} s")
        if cold <= 0:
            self._ready(member)
        else:
            member.timer = self.core.clock.call_later(self.core.span(cold), self._ready, member)

    def _ready(self, member: _Member) -> None:
        """INITIALIZING → IDLE: the worker takes jobs."""
        member.timer = None
        if member.slot.id not in self.members:
            return
        member.ready_at = self.core.clock.now()
        self.core.logs.system(self.ep.id, member.slot.id, "worker ready")
        self.ep.workers.append(member.slot)
        self._become_idle(member)

    def _become_idle(self, member: _Member) -> None:
        member.state = WorkerState.IDLE
        _cancel(member, "idle_timer")
        if self._live_count() > self.effective_max:
            self._stop(member)
            return
        if member.slot not in self.ep.idle:
            self.ep.idle.append(member.slot)
        member.idle_timer = self.core.clock.call_later(
            self.core.span(self.idle_timeout), self._idle_out, member
        )
        self.core.dispatch(self.ep)

    def _idle_out(self, member: _Member) -> None:
        member.idle_timer = None
        if member.state is not WorkerState.IDLE or member.slot.id not in self.members:
            return
        if self._live_count() <= self.workers_min:
            return  # an active (min) worker never idles out
        self._stop(member, "idle timeout")

    def _stop(self, member: _Member, why: str = "scaled down") -> None:
        """The worker is gone (its slot retired); a freed GPU goes to a throttled worker."""
        self.core.logs.end(self.ep.id, member.slot.id, why)
        _cancel(member, "timer")
        _cancel(member, "idle_timer")
        slot = member.slot
        self.members.pop(slot.id, None)
        self._by_slot.pop(slot, None)
        slot.retired = True
        if slot in self.ep.workers:
            self.ep.workers.remove(slot)
        if slot in self.ep.idle:
            self.ep.idle.remove(slot)
        if member.ready_at is not None and self.flashboot:
            self._warm.append(self.core.clock.now() + self.core.span(FLASHBOOT_KEEP_S))
        self._promote_throttled()

    def _promote_throttled(self) -> None:
        for member in list(self.members.values()):
            if member.state is not WorkerState.THROTTLED:
                continue
            if self.capacity is not None and self._holding() >= self.capacity:
                return
            self._boot(member)


def fixed_worker_views(ep: EndpointState, *, now: float, lost_after: float) -> list[WorkerView]:
    """The workers of an endpoint without a fleet: its ready in-process ones and its external ones (an
    external worker that reported a failed fitness check, or went silent, is UNHEALTHY)."""
    views: list[WorkerView] = []
    for w in ep.workers:
        reason: str | None = None
        if w.external and w.unhealthy is not None:
            reason = w.unhealthy
        elif w.external and now - w.last_seen >= lost_after:
            reason = f"silent for {now - w.last_seen:g} s: lost"
        if reason is not None:
            status = WorkerState.UNHEALTHY
        else:
            status = WorkerState.RUNNING if w.job is not None else WorkerState.IDLE
        views.append(
            WorkerView(
                id=w.id,
                status=status,
                created_at=0.0,
                ready_at=0.0,
                job_id=w.job.id if w.job is not None and status is not WorkerState.UNHEALTHY else None,
                reason=reason,
                started_at=0.0,
            )
        )
    return views


def _cancel(member: _Member, attr: str) -> None:
    handle = getattr(member, attr)
    if handle is not None:
        handle.cancel()
        setattr(member, attr, None)
