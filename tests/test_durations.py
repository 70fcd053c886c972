"""Every public duration argument takes seconds as a number or a ``datetime.timedelta``, as ``_units``
promises: a walk over the public surface finds them all, and each one is called both ways."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runpod_queue import (
    AsyncManagement,
    AsyncS3Store,
    Client,
    Endpoint,
    Management,
    Policy,
    RateLimits,
    Retries,
    S3Config,
    S3Store,
)
from runpod_queue.batch import BatchRunner, PollOptions, WebhookOptions
from runpod_queue.emulator import (
    Emulator,
    EndpointSpec,
    Faults,
    Recording,
    SimConfig,
    Timings,
    Traffic,
    VirtualClock,
    simulate,
)
from runpod_queue.webhooks import WebhookSigner

PUBLIC_MODULES = (
    "runpod_queue",
    "runpod_queue.batch",
    "runpod_queue.emulator",
    "runpod_queue.errors",
    "runpod_queue.testing",
    "runpod_queue.webhooks",
)
# A parameter with one of these words in its name is a duration (unless it is a count, a flag or a
# choice of words: `per_window`, `Readings(queued_ttl)`).
DURATION_WORD = re.compile(
    r"(^|_)(timeout|interval|backoff|after|window|margin|ttl|grace|expires|latency|seconds|for|retention|"
    r"wait|hold|gap|delay)(_|$)"
)
# Records the library fills in and hands out (read, not built by users), and the clock's scheduling
# primitive (the emulator calls it with float seconds; a real clock hands it to asyncio's call_later).
NOT_ARGUMENTS = {
    "BatchResult",
    "ConfigReport",
    "SimulationReport",
    "BatchSummary",
    "EndpointInfo",
    "Job",
    "RecordedRequest",
    "RetryNotice",
    "TokenClaims",
    "WaitTimeoutError",
    "WebhookAttempt",
    "Clock.call_later",
    "RealClock.call_later",
    "VirtualClock.call_later",
    "Clock.advance",  # the base class: always "a real clock cannot be advanced"
}
SECRET = "s" * 32
LOOPBACK = "http://127.0.0.1:9/v2"


def _callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or not callable(obj):
                continue
            seen.add(id(obj))
            yield name, obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    method = inspect.isfunction(value) or isinstance(value, classmethod | staticmethod)
                    if method and not attr.startswith("_"):
                        yield f"{name}.{attr}", getattr(obj, attr)


def duration_parameters() -> dict[str, str]:
    """``"Owner.method(param)"`` -> its annotation, for every duration parameter of the public surface."""
    found: dict[str, str] = {}
    for where, fn in _callables():
        if where in NOT_ARGUMENTS or where.partition(".")[0] in NOT_ARGUMENTS:
            continue
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in parameters:
            annotation = str(p.annotation)
            if (
                DURATION_WORD.search(p.name)
                and annotation not in ("bool", "int")
                and "Literal" not in annotation
            ):
                found[f"{where}({p.name})"] = str(p.annotation)
    return found


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator({"echo": lambda job: job["input"]}, clock="virtual") as emulator:
        yield emulator


def _endpoint(emu: Emulator) -> Endpoint:
    return Client(base_url=emu.base_url).endpoint("echo")


def _batch(value: Any, tmp: Path) -> None:
    BatchRunner(
        Client(base_url=LOOPBACK).endpoint("e"),
        journal=tmp / "j",
        output=tmp / "o",
        progress_interval=value,
    )


def _batch_wait(emu: Emulator, value: Any) -> None:
    batches = _endpoint(emu).batches
    batch = batches.create(inputs=[{}])
    batches.finalize(batch.id)
    batches.wait(batch.id, timeout=value)


def _timings(name: str) -> Callable[[Emulator, Any, Path], object]:
    return lambda emu, v, tmp: Timings(**{name: v})


# How to pass each one a value: (emulator, value, a scratch directory) -> None. 10 s is valid everywhere.
_S3 = S3Config("id", "secret", "bucket", "http://127.0.0.1:9")
_MOTO: list[S3Config] = []


def _s3_store() -> S3Store:
    """A store over moto's S3 on loopback, started once: upload() needs a server for the valid values."""
    if not _MOTO:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        _MOTO.append(
            S3Config("id", "secret", "durations", f"http://127.0.0.1:{server.get_host_and_port()[1]}")
        )
        S3Store(_MOTO[0]).client.create_bucket(Bucket="durations")
    return _store(_MOTO[0])


# One store per config for the method rows: each new store builds a boto3 client on first use (~5 ms CPU
# from the process's shared session), and which instance's method takes the value does not matter.
@functools.cache
def _store(config: S3Config) -> S3Store:
    return S3Store(config)


@functools.cache
def _async_store(config: S3Config) -> AsyncS3Store:
    return AsyncS3Store(config)


CALLS: dict[str, Callable[[Emulator, Any, Path], object]] = {
    "Client(timeout)": lambda emu, v, tmp: Client(base_url=LOOPBACK, timeout=v),
    "Client.with_options(timeout)": lambda emu, v, tmp: Client(base_url=LOOPBACK).with_options(timeout=v),
    "AsyncClient(timeout)": lambda emu, v, tmp: _async_client(timeout=v),
    "AsyncClient.with_options(timeout)": lambda emu, v, tmp: _async_client(with_timeout=v),
    "Endpoint.run_sync(timeout)": lambda emu, v, tmp: _endpoint(emu).run_sync({}, timeout=v),
    "Endpoint.wait(timeout)": lambda emu, v, tmp: _endpoint(emu).wait(_endpoint(emu).run({}).id, timeout=v),
    "Endpoint.stream(timeout)": lambda emu, v, tmp: list(
        _endpoint(emu).stream(_endpoint(emu).run({}).id, timeout=v)
    ),
    "Endpoint.status(keep_result_for)": lambda emu, v, tmp: _endpoint(emu).status(
        _endpoint(emu).run({}).id, keep_result_for=v
    ),
    "AsyncEndpoint.run_sync(timeout)": lambda emu, v, tmp: _async_call(emu, "run_sync", timeout=v),
    "AsyncEndpoint.wait(timeout)": lambda emu, v, tmp: _async_call(emu, "wait", timeout=v),
    "AsyncEndpoint.stream(timeout)": lambda emu, v, tmp: _async_call(emu, "stream", timeout=v),
    "AsyncEndpoint.status(keep_result_for)": lambda emu, v, tmp: _async_call(
        emu, "status", keep_result_for=v
    ),
    "Batches.wait(timeout)": lambda emu, v, tmp: _batch_wait(emu, v),
    "AsyncBatches.wait(timeout)": lambda emu, v, tmp: _async_call(emu, "batch_wait", timeout=v),
    "Policy(execution_timeout)": lambda emu, v, tmp: Policy(execution_timeout=v),
    "Policy(ttl)": lambda emu, v, tmp: Policy(ttl=v),
    "Retries(backoff)": lambda emu, v, tmp: Retries(backoff=v),
    "Retries(max_backoff)": lambda emu, v, tmp: Retries(max_backoff=v),
    "Retries(max_retry_after)": lambda emu, v, tmp: Retries(max_retry_after=v),
    "RateLimits(window)": lambda emu, v, tmp: RateLimits(window=v),
    "RateLimits(margin)": lambda emu, v, tmp: RateLimits(margin=v),
    "BatchRunner(progress_interval)": lambda emu, v, tmp: _batch(v, tmp),
    "PollOptions(min_interval)": lambda emu, v, tmp: PollOptions(min_interval=v, max_interval=60),
    "PollOptions(max_interval)": lambda emu, v, tmp: PollOptions(max_interval=v),
    "PollOptions(hold)": lambda emu, v, tmp: PollOptions(hold=v),
    "WebhookOptions(grace)": lambda emu, v, tmp: WebhookOptions(listen=("127.0.0.1", 0), grace=v),
    "WebhookSigner(expires_in)": lambda emu, v, tmp: WebhookSigner(SECRET, expires_in=v),
    "WebhookSigner.token(expires_in)": lambda emu, v, tmp: WebhookSigner(SECRET).token(expires_in=v),
    "WebhookSigner.sign(expires_in)": lambda emu, v, tmp: WebhookSigner(SECRET).sign(LOOPBACK, expires_in=v),
    "Emulator.advance(seconds)": lambda emu, v, tmp: emu.advance(v),
    "Emulator.call(timeout)": lambda emu, v, tmp: emu.call(_nothing, timeout=v),
    "Emulator(loop_warn_after)": lambda emu, v, tmp: Emulator({}, loop_warn_after=v),
    "VirtualClock.advance(seconds)": lambda emu, v, tmp: asyncio.run(VirtualClock().advance(v)),
    "VirtualClock.advance_idle(seconds)": lambda emu, v, tmp: VirtualClock().advance_idle(v),
    "Faults(latency)": lambda emu, v, tmp: Faults(latency=v),
    **{
        f"Timings({name})": _timings(name)
        for name in inspect.signature(Timings).parameters
        if name != "max_retained_jobs"  # a count, not a duration
    },
    "Recording(delay)": lambda emu, v, tmp: Recording("e", None, delay=v),
    "EndpointSpec(idle_timeout)": lambda emu, v, tmp: EndpointSpec(_handler, workers_max=1, idle_timeout=v),
    "SimConfig(idle_timeout)": lambda emu, v, tmp: SimConfig(idle_timeout=v),
    "SimConfig(execution_timeout)": lambda emu, v, tmp: SimConfig(execution_timeout=v),
    "simulate(ttl)": lambda emu, v, tmp: simulate(Traffic.trace([0.0]), ["max=1"], ttl=v),
    "Emulator.update_endpoint(idle_timeout)": lambda emu, v, tmp: Emulator(
        {"f": EndpointSpec(_handler, workers_max=1)}, clock="virtual"
    ).update_endpoint("f", idle_timeout=v),
    "Management(timeout)": lambda emu, v, tmp: Management(base_url=LOOPBACK, timeout=v).close(),
    "AsyncManagement(timeout)": lambda emu, v, tmp: _async_management(timeout=v),
    "Management.update_endpoint(idle_timeout)": lambda emu, v, tmp: _update(idle_timeout=v),
    "Management.update_endpoint(execution_timeout)": lambda emu, v, tmp: _update(execution_timeout=v),
    "AsyncManagement.update_endpoint(idle_timeout)": lambda emu, v, tmp: _update(True, idle_timeout=v),
    "AsyncManagement.update_endpoint(execution_timeout)": lambda emu, v, tmp: _update(
        True, execution_timeout=v
    ),
    # presigning is local signing: the loopback endpoint is never contacted
    "S3Store(expires_in)": lambda emu, v, tmp: S3Store(_S3, expires_in=v),
    "S3Store.url(expires_in)": lambda emu, v, tmp: _store(_S3).url("k", expires_in=v),
    "AsyncS3Store(expires_in)": lambda emu, v, tmp: AsyncS3Store(_S3, expires_in=v),
    "AsyncS3Store.url(expires_in)": lambda emu, v, tmp: asyncio.run(_async_store(_S3).url("k", expires_in=v)),
    "S3Store.upload(expires_in)": lambda emu, v, tmp: _s3_store().upload(b"x", expires_in=v),
    "AsyncS3Store.upload(expires_in)": lambda emu, v, tmp: asyncio.run(
        _async_store(_s3_store().config).upload(b"x", expires_in=v)
    ),
}


def _handler(job: dict[str, Any]) -> Any:
    return job["input"]


def _async_management(**kwargs: Any) -> None:
    async def make() -> None:
        async with AsyncManagement(base_url=LOOPBACK, **kwargs):
            pass

    asyncio.run(make())


def _update(use_async: bool = False, **kwargs: Any) -> None:
    """A PATCH through the management client, to an emulated fleet (a fixed endpoint would refuse it)."""
    with Emulator({"f": EndpointSpec(_handler, workers_max=1)}, clock="virtual") as fleet:
        if not use_async:
            with Management(base_url=fleet.management_url) as mgmt:
                mgmt.update_endpoint("f", **kwargs)
            return

        async def patch() -> None:
            async with AsyncManagement(base_url=fleet.management_url) as mgmt:
                await mgmt.update_endpoint("f", **kwargs)

        asyncio.run(patch())


async def _nothing() -> None:
    return None


def _async_client(*, timeout: Any = 30.0, with_timeout: Any = None) -> None:
    from runpod_queue import AsyncClient

    async def make() -> None:
        async with AsyncClient(base_url=LOOPBACK, timeout=timeout) as client:
            if with_timeout is not None:
                client.with_options(timeout=with_timeout)

    asyncio.run(make())


def _async_call(emu: Emulator, method: str, **kwargs: Any) -> None:
    from runpod_queue import AsyncClient

    async def call() -> None:
        async with AsyncClient(base_url=emu.base_url) as client:
            ep = client.endpoint("echo")
            if method == "run_sync":
                await ep.run_sync({}, **kwargs)
            elif method == "batch_wait":
                batch = await ep.batches.create(inputs=[{}])
                await ep.batches.finalize(batch.id)
                await ep.batches.wait(batch.id, **kwargs)
            elif method == "stream":
                async for _ in ep.stream((await ep.run({})).id, **kwargs):
                    pass
            else:
                await getattr(ep, method)((await ep.run({})).id, **kwargs)

    asyncio.run(call())


def test_the_walk_finds_every_duration_and_each_is_typed_as_one() -> None:
    found = duration_parameters()
    assert set(found) == set(CALLS), "a duration parameter without a check below, or a check of none"
    not_typed = {where: annotation for where, annotation in found.items() if "Duration" not in annotation}
    assert not not_typed, f"annotate these as runpod_queue._units.Duration: {not_typed}"


@pytest.mark.parametrize("where", sorted(CALLS))
def test_each_takes_a_number_or_a_timedelta(where: str, emu: Emulator, tmp_path: Path) -> None:
    call = CALLS[where]
    call(emu, 10, tmp_path)
    call(emu, 10.0, tmp_path)
    call(emu, timedelta(seconds=10), tmp_path)


@pytest.mark.parametrize("where", sorted(CALLS))
def test_anything_else_is_refused_saying_what_a_duration_is(
    where: str, emu: Emulator, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match=r"(number of )?seconds or a (datetime\.)?timedelta"):
        CALLS[where](emu, "10s", tmp_path)


def test_a_timedelta_and_its_seconds_make_equal_settings() -> None:
    assert Retries(backoff=timedelta(milliseconds=250)) == Retries(backoff=0.25)
    assert RateLimits(window=timedelta(seconds=5), margin=timedelta(0)) == RateLimits(window=5, margin=0)
