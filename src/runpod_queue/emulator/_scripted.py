"""Scripted endpoints: an endpoint defined by data — canned answers instead of a handler's code.

A script is a list of answers, each an `output`, an `error` or a `stream` of chunks, with a `delay` before
it (seconds on the emulator's clock: virtual seconds on a virtual clock, scaled by `time_scale` on a real
one; a number or a distribution). Answers are given in order (`order = "sequence"`, the default) or
picked by the job's input (`order = "match"`: the first answer whose `match` object is contained in the
input; an answer with no `match` matches anything). When a sequence runs out, `exhausted` says what
follows: `"cycle"` (from the first again, the default), `"repeat_last"` or `"error"` (the job FAILS).

The handler the emulator runs is a callable that hands back a coroutine or an async generator; it runs
on the emulator's loop, so answers are chosen in order of arrival and the delays are its clock's timers.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from runpod_queue.emulator._clock import Clock

__all__ = ["FieldError", "Script", "ScriptedHandler", "parse_script"]

ORDERS: Final = ("sequence", "match")
EXHAUSTED: Final = ("cycle", "repeat_last", "error")
DISTRIBUTIONS: Final = ("uniform", "normal", "exponential")
_SCRIPT_FIELDS: Final = ("answers", "order", "exhausted", "seed")
_ANSWER_FIELDS: Final = ("output", "error", "stream", "delay", "chunk_delay", "match")

Path = tuple[str | int, ...]


class FieldError(ValueError):
    """A field of an endpoint's definition is wrong: `path` names it, the message says how to fix it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    @property
    def field(self) -> str:
        """The field's dotted name: ``script.answers[2].delay``."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.path else self.message


@dataclass(frozen=True, slots=True)
class Delay:
    """A fixed delay, or a distribution to draw one from (seconds, never below 0)."""

    kind: str  # "fixed" or one of DISTRIBUTIONS
    a: float = 0.0
    b: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "normal":
            return max(0.0, rng.gauss(self.a, self.b))
        return rng.expovariate(1 / self.a) if self.a > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One canned answer."""

    output: Any = None
    error: str | None = None
    stream: tuple[Any, ...] | None = None
    delay: Delay = Delay("fixed")
    chunk_delay: Delay = Delay("fixed")
    match: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Script:
    """A scripted endpoint's answers and rules."""

    answers: tuple[Answer, ...]
    order: str = "sequence"
    exhausted: str = "cycle"
    seed: int | None = None


def _number(value: Any, path: Path, *, low: float = 0.0) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < low:
        raise FieldError(path, f"must be a number of seconds >= {low:g}, got {value!r}")
    return float(value)


def parse_delay(value: Any, path: Path) -> Delay:
    """`0.5`, `{uniform = [0.1, 0.9]}`, `{normal = [mean, stdev]}` or `{exponential = mean}`."""
    if not isinstance(value, dict):
        return Delay("fixed", _number(value, path))
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise FieldError(
            path,
            "a delay is seconds (0.5) or one distribution: {uniform = [low, high]}, "
            f"{{normal = [mean, stdev]}} or {{exponential = mean}}; got keys {sorted(value)}",
        )
    kind, args = next(iter(value.items()))
    inner = (*path, kind)
    if kind == "exponential":
        return Delay(kind, _number(args, inner))
    if not isinstance(args, list) or len(args) != 2:
        raise FieldError(inner, f"takes two numbers [{'low, high' if kind == 'uniform' else 'mean, stdev'}]")
    a, b = _number(args[0], (*inner, 0)), _number(args[1], (*inner, 1))
    if kind == "uniform" and b < a:
        raise FieldError(inner, f"low {a:g} is above high {b:g}")
    return Delay(kind, a, b)


def _answer(value: Any, path: Path) -> Answer:
    if not isinstance(value, dict):
        raise FieldError(path, f'an answer is a table/object such as {{output = "hi"}}, got {value!r}')
    unknown = sorted(value.keys() - set(_ANSWER_FIELDS))
    if unknown:
        raise FieldError((*path, unknown[0]), f"unknown field; an answer takes {', '.join(_ANSWER_FIELDS)}")
    kinds = [k for k in ("output", "error", "stream") if k in value]
    if len(kinds) != 1:
        raise FieldError(path, f"give exactly one of output, error or stream (got {kinds or 'none'})")
    error = value.get("error")
    if error is not None and (not isinstance(error, str) or not error):
        raise FieldError((*path, "error"), "must be a non-empty string (the job's error message)")
    stream = value.get("stream")
    if stream is not None and not isinstance(stream, list):
        raise FieldError((*path, "stream"), "must be a list of chunks")
    match = value.get("match")
    if match is not None and not isinstance(match, dict):
        raise FieldError((*path, "match"), "must be a table/object whose fields the input must contain")
    return Answer(
        output=value.get("output"),
        error=error,
        stream=tuple(stream) if stream is not None else None,
        delay=parse_delay(value.get("delay", 0), (*path, "delay")),
        chunk_delay=parse_delay(value.get("chunk_delay", 0), (*path, "chunk_delay")),
        match=match,
    )


def parse_script(value: Any, path: Path = ("script",)) -> Script:
    """A `Script` from its data (a TOML table or a JSON object); `FieldError` names what is wrong."""
    if not isinstance(value, dict):
        raise FieldError(path, "must be a table/object with answers = [...]")
    unknown = sorted(value.keys() - set(_SCRIPT_FIELDS))
    if unknown:
        raise FieldError((*path, unknown[0]), f"unknown field; a script takes {', '.join(_SCRIPT_FIELDS)}")
    answers = value.get("answers")
    if not isinstance(answers, list) or not answers:
        raise FieldError((*path, "answers"), "must be a non-empty list of answers")
    parsed = tuple(_answer(a, (*path, "answers", i)) for i, a in enumerate(answers))
    order = value.get("order", "match" if any(a.match is not None for a in parsed) else "sequence")
    if order not in ORDERS:
        raise FieldError((*path, "order"), f"must be one of {', '.join(ORDERS)}, got {order!r}")
    exhausted = value.get("exhausted", "cycle")
    if exhausted not in EXHAUSTED:
        raise FieldError((*path, "exhausted"), f"must be one of {', '.join(EXHAUSTED)}, got {exhausted!r}")
    seed = value.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FieldError((*path, "seed"), f"must be an integer, got {seed!r}")
    return Script(parsed, order, exhausted, seed)


def _contains(value: Any, pattern: Any) -> bool:
    """Whether `value` holds `pattern`: every key of a pattern object, recursively; else equality."""
    if isinstance(pattern, dict):
        items = pattern.items()
        return isinstance(value, dict) and all(k in value and _contains(value[k], v) for k, v in items)
    return bool(value == pattern)


class ScriptedHandler:
    """The handler of a scripted endpoint. `bind(clock)` before the first job (the emulator does)."""

    #: Called on the emulator's loop (see `InProcessRunner.start`): it only picks an answer and hands
    #: back a coroutine or an async generator, so its delays are timers on the clock, set at once.
    runs_on_loop = True

    def __init__(self, script: Script) -> None:
        self.script = script
        self._rng = random.Random(script.seed)
        self._next = 0
        self._lock = threading.Lock()  # called on a lane thread; reset/PUT come from the loop
        self._clock: Clock | None = None

    def bind(self, clock: Clock) -> None:
        """Wait on `clock`: delays are the emulator's seconds (virtual ones on a virtual clock)."""
        self._clock = clock

    def describe(self) -> str:
        """What `GET /_emulator/endpoints` shows for the handler."""
        return f"script: {len(self.script.answers)} answer(s), {self.script.order}"

    def reset(self) -> None:
        """Back to the first answer, and the draws to the seed (``POST /_emulator/reset``)."""
        with self._lock:
            self._next = 0
            self._rng = random.Random(self.script.seed)

    def _pick(self, job_input: Any) -> tuple[Answer | None, str | None, float, list[float]]:
        script = self.script
        with self._lock:
            if script.order == "match":
                answer = next(
                    (a for a in script.answers if a.match is None or _contains(job_input, a.match)), None
                )
                if answer is None:
                    return None, f"no scripted answer matches the input {job_input!r}", 0.0, []
            else:
                index = self._next
                total = len(script.answers)
                if index >= total:
                    if script.exhausted == "error":
                        used_up = f"the script's {total} answer(s) are used up (exhausted = error)"
                        return None, used_up, 0.0, []
                    index = index % total if script.exhausted == "cycle" else total - 1
                answer = script.answers[index]
                self._next += 1
            delay = answer.delay.draw(self._rng)
            gaps = [answer.chunk_delay.draw(self._rng) for _ in answer.stream or ()]
        return answer, None, delay, gaps

    def __call__(self, job: dict[str, Any]) -> Awaitable[Any] | AsyncIterator[Any]:
        answer, problem, delay, gaps = self._pick(job.get("input"))
        if answer is None or answer.stream is None:
            return self._answer(answer, problem, delay)
        return self._stream(answer.stream, delay, gaps)

    async def _sleep(self, seconds: float) -> None:
        clock = self._clock
        if seconds <= 0 or clock is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = clock.call_later(seconds * clock.scale, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()

    async def _answer(self, answer: Answer | None, problem: str | None, delay: float) -> Any:
        await self._sleep(delay)
        if answer is None:
            return {"error": problem}
        if answer.error is not None:
            return {"error": answer.error}
        return answer.output

    async def _stream(self, chunks: tuple[Any, ...], delay: float, gaps: list[float]) -> AsyncIterator[Any]:
        await self._sleep(delay)
        for i, chunk in enumerate(chunks):
            if i:
                await self._sleep(gaps[i])
            yield chunk


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
