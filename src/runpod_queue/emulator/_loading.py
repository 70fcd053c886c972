"""Turn `[ENDPOINT_ID=]HANDLER` strings into handlers: `path/to/file.py[:function]` or `pkg.module:function`.

A worker file written for the official package usually calls `runpod.serverless.start({...})` at import
time. Loading it here intercepts that call and takes the handler and `return_aggregate_stream` from its
config, so an unmodified worker file runs in-process without starting a real worker loop.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runpod_queue.emulator._config import EndpointSpec
from runpod_queue.errors import ConfigurationError

__all__ = ["HandlerLoadError", "LoadedEndpoint", "load_endpoint"]

_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class HandlerLoadError(ConfigurationError):
    """A handler reference that cannot be loaded; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class LoadedEndpoint:
    """An endpoint loaded from a handler reference: its id, its spec, and where it came from."""

    endpoint_id: str
    spec: EndpointSpec
    source: str


def _split(reference: str) -> tuple[str | None, str]:
    if "=" in reference:
        endpoint_id, _, target = reference.partition("=")
        if not _ENDPOINT_ID.match(endpoint_id):
            raise HandlerLoadError(
                f"invalid endpoint id {endpoint_id!r}: use letters, digits, '-', '_' or '.' "
                "(e.g. echo=examples/echo.py)"
            )
        return endpoint_id, target
    return None, reference


@contextmanager
def _capture_runpod_start(captured: dict[str, Any]) -> Iterator[None]:
    """While a worker file is imported, make `runpod.serverless.start(config)` record its config."""
    try:
        import logging

        level = logging.getLogger().level
        import runpod.serverless

        # `import runpod` calls logging.basicConfig(level=INFO); keep the host program's level.
        logging.getLogger().setLevel(level)
    except ImportError:
        yield
        return
    original = runpod.serverless.start

    def start(config: dict[str, Any]) -> None:
        captured.update(config)

    runpod.serverless.start = start
    try:
        yield
    finally:
        runpod.serverless.start = original


def _load_file(path: Path, function: str | None) -> tuple[Any, dict[str, Any]]:
    if not path.is_file():
        raise HandlerLoadError(f"handler file {path} does not exist")
    module_name = f"rpq_handler_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Like `python file.py`: sibling modules of the worker file are importable.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    captured: dict[str, Any] = {}
    source = path.read_bytes()
    uses_runpod = b"runpod" in source
    sys.modules[module_name] = module
    try:
        # Compiled from the source just read, not through the import system's bytecode cache: a cached
        # .pyc is trusted when the file's mtime (whole seconds) and size match, so an edit saved in the
        # same second as the last load with the same length (`1` -> `2`) was served stale by --reload.
        code = compile(source, str(path), "exec", dont_inherit=True)
        if uses_runpod:
            with _capture_runpod_start(captured):
                exec(code, module.__dict__)  # noqa: S102 - the user's handler file, as `python file.py` runs it
        else:
            exec(code, module.__dict__)  # noqa: S102
    except Exception as exc:
        raise HandlerLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module, captured


def load_endpoint(reference: str) -> LoadedEndpoint:
    """Load `[ENDPOINT_ID=]HANDLER`.

    The endpoint id defaults to the function's name when one other than `handler` is given, else to the
    file's stem (`examples/echo.py` → `echo`) or the module's last component (`pkg.mod:handler` → `mod`).
    """
    endpoint_id, target = _split(reference)
    if not target:
        raise HandlerLoadError(
            f"no handler in {reference!r}: use path/to/file.py[:function] or module:function"
        )
    function: str | None
    is_file = ".py" in target and (target.endswith(".py") or ".py:" in target)
    if is_file:
        file_part, sep, function_part = target.rpartition(".py:")
        if sep:
            file_name, function = file_part + ".py", function_part or None
        else:
            file_name, function = target, None
        module, captured = _load_file(Path(file_name), function)
        default_id = function if function not in (None, "handler") else Path(file_name).stem
    else:
        module_name, _, function_part = target.partition(":")
        function = function_part or None
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise HandlerLoadError(
                f"cannot import module {module_name!r} ({exc}); for a file, give its path ending in .py"
            ) from exc
        captured = {}
        default_id = function if function not in (None, "handler") else module_name.rpartition(".")[2]
    options: dict[str, Any] = {}
    if function is None and captured.get("handler") is not None:
        handler = captured["handler"]
        options["return_aggregate_stream"] = bool(captured.get("return_aggregate_stream", False))
    else:
        name = function or "handler"
        handler = getattr(module, name, None)
        if handler is None:
            raise HandlerLoadError(
                f"{target} has no function {name!r}; name it with {target.split(':')[0]}:<function>"
            )
        if captured.get("handler") is handler:
            options["return_aggregate_stream"] = bool(captured.get("return_aggregate_stream", False))
    if not callable(handler):
        raise HandlerLoadError(f"{target}: {function or 'handler'} is not callable")
    endpoint_id = endpoint_id or default_id
    if not _ENDPOINT_ID.match(endpoint_id):
        raise HandlerLoadError(f"cannot use {endpoint_id!r} as an endpoint id; name it: ID={target}")
    return LoadedEndpoint(endpoint_id, EndpointSpec(handler=handler, **options), target)
