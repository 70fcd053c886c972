"""What a simulation is fed: traffic (when jobs arrive), work (how long each runs) and configurations.

Each has a text form for `rpq simulate` (``2/s``, ``lognormal:median=4s,p95=12s``,
``min=0,max=5,idle=5s,scaler=queue_delay:4``) parsed here, so the command line and Python accept the
same spellings and fail with the same one-line messages.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from runpod_queue._units import Duration, parse_duration, seconds

__all__ = ["Arrival", "DurationModel", "SimConfig", "Traffic", "parse_rate"]

# z of the standard normal's 95th percentile: a lognormal's p95 is median * exp(1.6448536 * sigma).
_Z95: Final = 1.6448536269514722
_RATE: Final = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*$", re.I)
_PER: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str | float, name: str = "rate") -> float:
    """``"2/s"``, ``"120/min"``, ``"7200/h"`` or a bare number (per second) → jobs per second (>= 0)."""
    if isinstance(text, bool):
        raise TypeError(f"{name} must be a number of jobs per second or text such as '2/s', got bool")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _RATE.match(text)
        if match is None:
            stripped = text.strip()
            if stripped.startswith("-"):
                raise ValueError(f"{name} must be at least 0 jobs per second, got {stripped!r}")
            raise ValueError(
                f"{name} {text!r} is not a rate: write jobs per second, minute or hour (2/s, 120/min, 7200/h)"
            )
        value = float(match.group(1)) / _PER[(match.group(2) or "s").lower()]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be at least 0 jobs per second, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Arrival:
    """One job of a trace: when it arrives and, optionally, its input and how long it runs.

    Args:
        at: Seconds from the start of the simulation.
        input: The job's input (the simulation runs no handler; kept for the record).
        duration: Seconds the job runs; ``None`` draws it from the simulation's duration model.
    """

    at: float
    input: Any = None
    duration: float | None = None


class Traffic:
    """When jobs arrive: a Poisson rate, a rate per hour of the day, or a trace of arrivals.

    Build one with `Traffic.poisson`, `Traffic.profile`, `Traffic.trace`, `Traffic.from_file` (a JSONL
    trace, an ``rpq batch`` journal or a CSV profile). A trace is also the hook for other recordings
    (e.g. the cassettes of a future record/replay feature): read them into `Arrival` records and pass
    them to `Traffic.trace`.

    Attributes:
        kind: ``"poisson"``, ``"profile"`` or ``"trace"``.
        hours: The span the traffic covers, in hours.
        rates: Jobs per second for each hour (``poisson``: one value; ``profile``: one per hour of the
            day, repeated for a span over 24 hours).
        arrivals: The trace's arrivals in time order (``trace`` only; else empty).
    """

    kind: Literal["poisson", "profile", "trace"]
    hours: float
    rates: tuple[float, ...]
    arrivals: tuple[Arrival, ...]

    def __init__(
        self,
        kind: Literal["poisson", "profile", "trace"],
        *,
        hours: float,
        rates: Sequence[float] = (),
        arrivals: Sequence[Arrival] = (),
    ) -> None:
        """Prefer the constructors (`poisson`, `profile`, `trace`, `from_file`), which check their input.

        Args:
            kind: ``"poisson"``, ``"profile"`` or ``"trace"``.
            hours: The span in hours (> 0).
            rates: Jobs per second (one, or one per hour of the day).
            arrivals: A trace's arrivals.
        """
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not (0 < hours <= 24 * 366):
            raise ValueError(f"hours must be a number in (0, 8784] (a year at most), got {hours!r}")
        self.kind = kind
        self.hours = float(hours)
        self.rates = tuple(rates)
        self.arrivals = tuple(arrivals)

    def __repr__(self) -> str:
        if self.kind == "trace":
            return f"Traffic.trace({len(self.arrivals)} arrivals over {self.hours:g} h)"
        return f"Traffic.{self.kind}({', '.join(f'{r:g}/s' for r in self.rates)}, hours={self.hours:g})"

    @classmethod
    def poisson(cls, rate: str | float, *, hours: float = 1.0) -> Traffic:
        """Jobs arriving at random (a Poisson process) at `rate` for `hours`.

        Args:
            rate: Jobs per second, or text such as ``"2/s"``, ``"120/min"``, ``"7200/h"``.
            hours: How long the traffic lasts.

        Returns:
            The traffic.
        """
        return cls("poisson", hours=hours, rates=(parse_rate(rate),))

    @classmethod
    def profile(cls, rates: Sequence[str | float], *, hours: float = 24.0) -> Traffic:
        """A Poisson rate that changes every hour: `rates[h]` for hour h of the day (repeated daily).

        Args:
            rates: One rate per hour (1 to 24 values; fewer than 24 repeat), each as in `poisson`.
            hours: How long the traffic lasts.

        Returns:
            The traffic.
        """
        if not rates or len(rates) > 24:
            raise ValueError(f"a profile gives 1 to 24 hourly rates, got {len(rates)}")
        parsed = tuple(parse_rate(r, f"the rate of hour {h}") for h, r in enumerate(rates))
        return cls("profile", hours=hours, rates=parsed)

    @classmethod
    def trace(cls, arrivals: Iterable[Arrival | float], *, hours: float | None = None) -> Traffic:
        """Jobs arriving exactly when a trace says.

        Args:
            arrivals: `Arrival` records, or bare arrival times in seconds.
            hours: The span; ``None`` runs to the last arrival.

        Returns:
            The traffic.
        """
        items = sorted(
            (a if isinstance(a, Arrival) else Arrival(float(a)) for a in arrivals), key=lambda a: a.at
        )
        for a in items:
            if not math.isfinite(a.at) or a.at < 0:
                raise ValueError(
                    f"a trace's arrival time must be a finite number of seconds >= 0, got {a.at!r}"
                )
            if a.duration is not None and (not math.isfinite(a.duration) or a.duration < 0):
                raise ValueError(f"a trace's duration must be a number of seconds >= 0, got {a.duration!r}")
        last = items[-1].at if items else 0.0
        span = hours if hours is not None else max(last, 1.0) / 3600.0
        return cls("trace", hours=span, arrivals=items)

    @classmethod
    def from_file(cls, path: str | Path, *, hours: float | None = None) -> Traffic:
        """Read traffic from a file: a ``.csv`` profile, an ``rpq batch`` journal (SQLite) or a JSONL trace.

        A CSV profile has one rate per hour of the day, one per row, optionally after the hour
        (``hour,rate`` or ``rate``; a header row is skipped). A JSONL trace has one object per line:
        ``{"at": seconds, "input": ..., "duration": seconds}`` (``input`` and ``duration`` optional).
        A batch journal gives its items' submission times (from the first) and, for finished items,
        RunPod's ``executionTime`` as each job's duration.

        Args:
            path: The file.
            hours: The span; ``None``: 24 hours for a profile, the last arrival for a trace.

        Returns:
            The traffic.
        """
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"traffic file {str(p)!r} does not exist")
        with p.open("rb") as fh:
            head = fh.read(16)
        if head.startswith(b"SQLite format 3"):
            return cls.trace(_journal_arrivals(p), hours=hours)
        if p.suffix.lower() == ".csv":
            return cls.profile(_profile_rates(p), hours=24.0 if hours is None else hours)
        return cls.trace(_jsonl_arrivals(p), hours=hours)

    def iter_arrivals(self, rng: random.Random) -> Iterator[Arrival]:
        """The arrivals in time order within the span (random ones drawn from `rng`).

        Args:
            rng: The random source (seeded by `simulate`).

        Yields:
            Each arrival.
        """
        end = self.hours * 3600.0
        if self.kind == "trace":
            for a in self.arrivals:
                if a.at > end:
                    return
                yield a
            return
        t = 0.0
        rates = self.rates
        while True:
            hour = int(t // 3600.0)
            rate = rates[hour % len(rates)] if self.kind == "profile" else rates[0]
            hour_end = min((hour + 1) * 3600.0, end)
            if rate <= 0:
                t = hour_end
            else:
                nxt = t + rng.expovariate(rate)
                if nxt < hour_end:
                    t = nxt
                    yield Arrival(t)
                    continue
                # Memoryless: starting afresh at the hour's end is the same Poisson process.
                t = hour_end
            if t >= end:
                return


def _profile_rates(path: Path) -> list[str]:
    rates: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            value = cells[-1]
            if n == 1 and not any(ch.isdigit() for ch in value):
                continue  # a header
            if len(cells) > 2:
                raise ValueError(
                    f"{path}:{n}: a profile row is 'hour,rate' or 'rate', got {','.join(cells)!r}"
                )
            rates.append(value)
    if not rates:
        raise ValueError(f"{path}: no rates found: write one rate per hour of the day (2/s, 120/min, ...)")
    return rates


def _jsonl_arrivals(path: Path) -> list[Arrival]:
    arrivals: list[Arrival] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                raise ValueError(f'{path}:{n}: not JSON: a trace line is {{"at": seconds, ...}}') from None
            if not isinstance(data, dict) or "at" not in data:
                raise ValueError(
                    f'{path}:{n}: a trace line is an object with "at" (seconds), got {line.strip()[:60]!r}'
                )
            at, dur = data["at"], data.get("duration")
            if isinstance(at, bool) or not isinstance(at, int | float):
                raise ValueError(f'{path}:{n}: "at" must be a number of seconds, got {at!r}')
            if isinstance(dur, str):
                dur = parse_duration(dur)
            elif dur is not None and (isinstance(dur, bool) or not isinstance(dur, int | float)):
                raise ValueError(f'{path}:{n}: "duration" must be seconds (4 or "4s"), got {dur!r}')
            arrivals.append(Arrival(float(at), data.get("input"), None if dur is None else float(dur)))
    return arrivals


def _journal_arrivals(path: Path) -> list[Arrival]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT submitted_at, result FROM items WHERE submitted_at IS NOT NULL ORDER BY submitted_at"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: not an rpq batch journal ({exc})") from None
    if not rows:
        return []
    first = float(rows[0][0])
    arrivals: list[Arrival] = []
    for submitted_at, result in rows:
        duration: float | None = None
        if result:
            try:
                ms = json.loads(result).get("executionTime")
            except (ValueError, AttributeError):
                ms = None
            if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
                duration = ms / 1000.0
        arrivals.append(Arrival(float(submitted_at) - first, None, duration))
    return arrivals


class DurationModel:
    """How long each job runs: fixed, lognormal (by median and p95) or exponential (by mean).

    Attributes:
        kind: ``"fixed"``, ``"lognormal"`` or ``"exponential"``.
        median: Seconds: the fixed value, the lognormal's median, or the exponential's mean.
        p95: The lognormal's 95th percentile in seconds (else ``None``).
    """

    kind: Literal["fixed", "lognormal", "exponential"]
    median: float
    p95: float | None

    def __init__(
        self,
        kind: Literal["fixed", "lognormal", "exponential"],
        median: Duration,
        p95: Duration | None = None,
    ) -> None:
        """Prefer `DurationModel.parse`.

        Args:
            kind: ``"fixed"``, ``"lognormal"`` or ``"exponential"``.
            median: The fixed value, the lognormal's median or the exponential's mean (seconds).
            p95: The lognormal's p95 (seconds, above `median`).
        """
        if kind not in ("fixed", "lognormal", "exponential"):
            raise ValueError(f"a duration model is fixed, lognormal or exponential, got {kind!r}")
        self.kind = kind
        self.median = seconds(median, "duration")
        self.p95 = None if p95 is None else seconds(p95, "p95")
        if kind == "lognormal" and (self.p95 is None or self.p95 <= self.median or self.median <= 0):
            raise ValueError(
                f"lognormal needs 0 < median < p95, got median={self.median:g}s p95={self.p95}: "
                "e.g. lognormal:median=4s,p95=12s"
            )
        if kind == "exponential" and self.median <= 0:
            raise ValueError("exponential needs a mean above 0: e.g. exponential:mean=4s")

    def __repr__(self) -> str:
        return f"DurationModel.parse({str(self)!r})"

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.median:g}s"
        if self.kind == "exponential":
            return f"exponential:mean={self.median:g}s"
        return f"lognormal:median={self.median:g}s,p95={self.p95:g}s"

    @classmethod
    def parse(cls, text: str | Duration) -> DurationModel:
        """``"4s"`` (fixed), ``"lognormal:median=4s,p95=12s"`` or ``"exponential:mean=4s"``.

        Args:
            text: The model, or a plain duration in seconds.

        Returns:
            The model.
        """
        if not isinstance(text, str):
            return cls("fixed", text)
        kind, sep, rest = text.strip().partition(":")
        if not sep:
            return cls("fixed", parse_duration(kind))
        params: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"duration model {text!r}: {part!r} is not key=value")
            params[key.strip().lower()] = parse_duration(value.strip())
        kind = kind.lower()
        wanted = {"lognormal": {"median", "p95"}, "exponential": {"mean"}}.get(kind)
        if wanted is None:
            raise ValueError(
                f"duration model {text!r}: unknown kind {kind!r}; use 4s, lognormal:median=4s,p95=12s "
                "or exponential:mean=4s"
            )
        if set(params) != wanted:
            raise ValueError(f"duration model {text!r}: {kind} takes {', '.join(sorted(wanted))}")
        if kind == "lognormal":
            return cls("lognormal", params["median"], params["p95"])
        return cls("exponential", params["mean"])

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A no-argument callable drawing one duration (seconds) per call from `rng`.

        Args:
            rng: The random source.

        Returns:
            The sampler.
        """
        if self.kind == "fixed":
            value = self.median
            return lambda: value
        if self.kind == "exponential":
            rate = 1.0 / self.median
            expo = rng.expovariate
            return lambda: expo(rate)
        assert self.p95 is not None
        mu, sigma = math.log(self.median), (math.log(self.p95) - math.log(self.median)) / _Z95
        lognorm = rng.lognormvariate
        return lambda: lognorm(mu, sigma)


_CONFIG_KEYS: Final = ("name", "min", "max", "idle", "scaler", "flashboot", "cold", "timeout", "price")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One endpoint configuration to simulate (RunPod's endpoint settings).

    Args:
        workers_min: Active workers, always running (RunPod's ``workersMin``).
        workers_max: The most workers the scaler runs (``workersMax``).
        idle_timeout: Seconds an idle worker above the minimum lives.
        scaler: ``"queue_delay"`` or ``"request_count"``.
        scaler_value: The scaler's threshold (seconds of queue delay, or requests per worker).
        flashboot: Whether FlashBoot is on (the emulator's rule: docs/fleet.md); ``None`` takes
            `simulate`'s ``flashboot``.
        cold_start: Seconds a new worker initializes; ``None`` takes `simulate`'s ``cold_start``.
        execution_timeout: Jobs' executionTimeout in seconds (RunPod's default 600).
        price: Price per worker-second; ``None`` takes `simulate`'s ``price``.
        name: The column heading; ``None``: the settings written out.
    """

    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: Duration = 5.0
    scaler: Literal["queue_delay", "request_count"] = "queue_delay"
    scaler_value: float = 4.0
    flashboot: bool | None = None
    cold_start: Duration | None = None
    execution_timeout: Duration = 600.0
    price: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for key in ("workers_min", "workers_max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"SimConfig.{key} must be an int >= 0, got {value!r}")
        if self.workers_min > self.workers_max:
            raise ValueError(
                f"SimConfig: workers_min ({self.workers_min}) is above workers_max ({self.workers_max})"
            )
        object.__setattr__(self, "idle_timeout", seconds(self.idle_timeout, "SimConfig.idle_timeout"))
        object.__setattr__(
            self, "execution_timeout", seconds(self.execution_timeout, "SimConfig.execution_timeout", low=1.0)
        )
        if self.cold_start is not None:
            object.__setattr__(self, "cold_start", seconds(self.cold_start, "SimConfig.cold_start"))
        if self.scaler not in ("queue_delay", "request_count"):
            raise ValueError(
                f"SimConfig.scaler must be 'queue_delay' or 'request_count', got {self.scaler!r}"
            )
        low = 0.5 if self.scaler == "queue_delay" else 1.0  # REST v2: queueDelay >= 0.5, requestCount >= 1
        value = self.scaler_value
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
            raise ValueError(
                f"SimConfig.scaler_value must be at least {low:g} for {self.scaler}, got {value!r}"
            )
        if self.price is not None and (
            isinstance(self.price, bool)
            or not isinstance(self.price, int | float)
            or not 0 <= self.price < math.inf
        ):
            raise ValueError(f"SimConfig.price must be a number >= 0 per worker-second, got {self.price!r}")

    @property
    def label(self) -> str:
        """The column heading: `name`, else the settings as `parse` reads them."""
        if self.name:
            return self.name
        text = f"min={self.workers_min},max={self.workers_max},idle={seconds(self.idle_timeout, 'idle'):g}s"
        if (self.scaler, self.scaler_value) != ("queue_delay", 4.0):
            text += f",scaler={self.scaler}:{self.scaler_value:g}"
        if self.flashboot is not None:
            text += f",flashboot={'on' if self.flashboot else 'off'}"
        if self.cold_start is not None:
            text += f",cold={seconds(self.cold_start, 'cold'):g}s"
        return text

    @classmethod
    def parse(cls, text: str) -> SimConfig:
        """``"min=0,max=5,idle=5s,scaler=queue_delay:4"``: keys name, min, max, idle, scaler
        (``queue_delay:SECONDS`` or ``request_count:N``), flashboot (on/off), cold, timeout, price.

        Args:
            text: The configuration.

        Returns:
            The configuration.
        """
        values: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, eq, value = part.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not eq or not value:
                raise ValueError(f"config {text!r}: {part!r} is not key=value (e.g. min=0,max=5,idle=5s)")
            if key not in _CONFIG_KEYS:
                raise ValueError(f"config {text!r}: unknown key {key!r}; keys are {', '.join(_CONFIG_KEYS)}")
            try:
                values[key] = _config_value(key, value)
            except ValueError as exc:
                raise ValueError(f"config {text!r}: {exc}") from None
        scaler, scaler_value = values.pop("scaler", ("queue_delay", 4.0))
        wmin = values.get("min", 0)
        wmax = values.get("max", max(3, wmin))
        if wmin > wmax:
            raise ValueError(f"config {text!r}: min ({wmin}) is above max ({wmax})")
        return cls(
            workers_min=wmin,
            workers_max=wmax,
            idle_timeout=values.get("idle", 5.0),
            scaler=scaler,
            scaler_value=scaler_value,
            flashboot=values.get("flashboot"),
            cold_start=values.get("cold"),
            execution_timeout=values.get("timeout", 600.0),
            price=values.get("price"),
            name=values.get("name"),
        )


def _config_value(key: str, value: str) -> Any:
    if key == "name":
        return value
    if key in ("min", "max"):
        if not value.isdigit():
            raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
        return int(value)
    if key in ("idle", "cold", "timeout"):
        return parse_duration(value)
    if key == "flashboot":
        flag = value.lower()
        if flag not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"flashboot is on or off, got {value!r}")
        return flag in ("on", "true", "1", "yes")
    if key == "price":
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"price must be a number >= 0 per worker-second, got {value!r}") from None
        if not math.isfinite(price) or price < 0:
            raise ValueError(f"price must be a number >= 0 per worker-second, got {value!r}")
        return price
    kind, _, threshold = value.partition(":")
    kind = kind.lower()
    if kind not in ("queue_delay", "request_count"):
        raise ValueError(f"scaler is queue_delay:SECONDS or request_count:N, got {value!r}")
    number = (
        4.0 if not threshold else (parse_duration(threshold) if kind == "queue_delay" else float(threshold))
    )
    low = 0.5 if kind == "queue_delay" else 1.0  # REST v2: queueDelay >= 0.5, requestCount >= 1
    if not math.isfinite(number) or number < low:
        raise ValueError(f"the {kind} scaler's value must be at least {low:g}, got {threshold!r}")
    return kind, number
