"""`mock_runpod`: an emulator that this process's RunPod traffic reaches without the code under test
changing anything (see `_intercept` for how each HTTP library is rerouted)."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from runpod_queue._contract import DEFAULT_BASE_URL
from runpod_queue._settings import ENV_API_KEY, ENV_BASE_URL
from runpod_queue.emulator import Emulator, EndpointSpec, Handler
from runpod_queue.testing import _intercept

__all__ = ["MOCK_API_KEY", "mock_runpod"]

# The key the environment gets when the emulator accepts any key: clearly not a real one.
MOCK_API_KEY: Final = "rpq-mock-runpod-key"

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Final = object()


class _Active:
    """One entered mock: its emulator, its reroute target and what it points the process at."""

    def __init__(self, emulator: Emulator, key: str) -> None:
        self.emulator = emulator
        self.target = _intercept.Target(emulator.host, emulator.port)
        self.key = key


class _Baseline:
    """What the process looked like before the first of all active mocks was entered."""

    def __init__(self) -> None:
        self.env = {name: os.environ.get(name) for name in (ENV_API_KEY, ENV_BASE_URL)}
        sdk = sys.modules.get("runpod")
        self.sdk_imported = sdk is not None
        self.sdk = {name: getattr(sdk, name, _MISSING) for name in _SDK_NAMES} if sdk is not None else {}
        # Every mock URL the process was pointed at since: an SDK imported meanwhile may hold one.
        self.urls: set[str] = set()


_SDK_NAMES: Final = ("api_key", "endpoint_url_base")
# Every active mock of every instance, in entry order: they may exit in any order (threads, async
# tasks), so the process is always pointed at the newest one still active, and back at the baseline
# taken before the first once none is.
_entries_lock = threading.Lock()
_entries: list[_Active] = []
_baseline: _Baseline | None = None


def _point(active: _Active) -> None:
    for name, value in ((ENV_API_KEY, active.key), (ENV_BASE_URL, active.emulator.base_url)):
        os.environ[name] = value
    sdk = sys.modules.get("runpod")
    if sdk is not None:
        for name, value in zip(_SDK_NAMES, (active.key, active.emulator.base_url), strict=True):
            setattr(sdk, name, value)


def _restore_baseline(baseline: _Baseline) -> None:
    for name, previous in baseline.env.items():
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
    sdk = sys.modules.get("runpod")
    if sdk is None:
        return
    for name, value in baseline.sdk.items():
        if value is _MISSING:
            vars(sdk).pop(name, None)
        else:
            setattr(sdk, name, value)
    if not baseline.sdk_imported and sdk.__dict__.get("endpoint_url_base") in baseline.urls:
        # Imported inside a block, the SDK read a mock's URL from the environment: give it what it
        # would have read outside.
        vars(sdk)["endpoint_url_base"] = os.environ.get(ENV_BASE_URL, DEFAULT_BASE_URL)


class mock_runpod:  # lower case: used like a function, as moto's mock_aws
    """Start an emulator and route every request this process makes to `https://api.runpod.ai/...` to it.

    ```python
    with mock_runpod({"my-endpoint": handler}) as emu:      # or `async with`, or @mock_runpod({...})
        app_code_that_calls_runpod()                      # requests, httpx, aiohttp, runpod SDK, ours
        assert emu.jobs("my-endpoint")[0].status == "COMPLETED"
    ```

    For the duration, `RUNPOD_API_KEY` (the emulator's `api_key`, else a placeholder accepted by an
    emulator that takes any key) and `RUNPOD_ENDPOINT_BASE_URL` (`emu.base_url`) are set, and so are
    the official SDK's `runpod.api_key` / `runpod.endpoint_url_base` when it is imported; all are
    restored on exit, even after an exception. RunPod's management API (`https://api.runpod.io/v2`,
    REST v2) goes to the emulator's ``management_url``. Requests to other hosts are untouched. Mocks
    nest: the newest active one receives the traffic. Mocks may also end in any order (threads, async
    tasks): the process then points at the newest one still active, and once none is, back at what it
    was before the first. One instance is active once at a time (entering it again before it exits
    raises ``RuntimeError``); the decorator makes a fresh one per call, so decorated functions may overlap.

    Args:
        endpoints: As ``Emulator``'s: endpoint id to handler, ``EndpointSpec`` or ``None``.
        **emulator_options: ``Emulator``'s options, with two defaults changed for tests:
            ``clock="auto"`` (a wait that only time can end skips ahead, so a job's 24 h ttl runs out at
            once; ``"virtual"`` moves time only with ``emu.advance()``, ``"real"`` is wall-clock time)
            and ``rate_limits=False`` (on a virtual clock rate-limit windows slide only with virtual
            time, so a test polling in a loop would hit a 429 that real time never lifts; pass
            ``rate_limits=True`` with ``clock="real"`` to test against RunPod's limits). ``host`` and
            ``port`` are chosen by the mock. ``s3=True`` adds the emulator's embedded S3 (the ``s3``
            extra): handlers' ``rp_upload`` writes there, ``emu.s3_config`` reads it back.

    Raises:
        TypeError: ``endpoints`` is not a mapping, or an option is not one of ``Emulator``'s.
        ValueError: ``host`` or ``port`` given, or an option out of range.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Handler | EndpointSpec | None] | None = None,
        **emulator_options: Any,
    ) -> None:
        if endpoints is not None and not isinstance(endpoints, Mapping):
            raise TypeError(
                f"mock_runpod(endpoints) takes a mapping of endpoint id to handler, got "
                f"{type(endpoints).__name__}: write mock_runpod({{'my-endpoint': handler}})"
            )
        if "host" in emulator_options or "port" in emulator_options:
            raise ValueError(
                "mock_runpod chooses the emulator's host and port itself (127.0.0.1, a free port): "
                "drop host= / port="
            )
        options: dict[str, Any] = {"clock": "auto", "rate_limits": False}
        options.update(emulator_options)
        self._endpoints = dict(endpoints or {})
        self._options = options
        Emulator(self._endpoints, **options)  # validate now: a bad option fails where it was written
        self._lock = threading.Lock()
        self._active: _Active | None = None

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        """Start the emulator and reroute RunPod traffic to it until the ``with`` block ends.

        Raises:
            RuntimeError: This instance is already active (entered and not exited): two tasks or
                threads sharing it could not tell whose exit stops which emulator. Create one
                ``mock_runpod(...)`` per ``with`` (the decorator does so per call).
        """
        global _baseline
        with self._lock:
            if self._active is not None:
                raise RuntimeError(
                    "this mock_runpod instance is already active (entered by another with block, task or "
                    "thread): create one mock_runpod(...) per with block"
                )
            emulator = Emulator(self._endpoints, **self._options).start()
            active = _Active(emulator, self._options.get("api_key") or MOCK_API_KEY)
            self._active = active
        try:
            with _entries_lock:
                if not _entries or _baseline is None:
                    _baseline = _Baseline()
                _baseline.urls.add(emulator.base_url)
                _entries.append(active)
                _intercept.activate(active.target)
                _point(active)
        except BaseException:
            with self._lock:
                self._active = None
            self._leave(active)
            raise
        return emulator

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            active, self._active = self._active, None
        if active is not None:
            self._leave(active)

    async def __aenter__(self) -> Emulator:
        # Starting takes a few ms of a background thread coming up: short enough to block the loop.
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator ------------------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        """Run `func` (a plain or `async` function, e.g. a test) inside a fresh mock per call."""
        if not callable(func):
            raise TypeError(f"mock_runpod(...) decorates a function, got {type(func).__name__}")
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return cast(F, run)

    def _fresh(self) -> mock_runpod:
        # One instance per call: calls of a decorated function may overlap (threads, async tasks).
        return mock_runpod(self._endpoints, **self._options)

    # -- environment ----------------------------------------------------------------------------

    @staticmethod
    def _leave(active: _Active) -> None:
        global _baseline
        try:
            with _entries_lock:
                last = _entries[-1] if _entries else None
                if active in _entries:
                    _entries.remove(active)
                if _entries:
                    if last is active:  # the newest one left: point back at the newest still active
                        _point(_entries[-1])
                elif _baseline is not None:
                    _restore_baseline(_baseline)
                    _baseline = None
        finally:
            _intercept.deactivate(active.target)
            active.emulator.stop()
