"""A command's connection: where to (flags over environment), the client, and what each failure exits with.

One place turns the library's errors into one-line messages and exit codes, so no command can print a
traceback (unless ``--debug``) or a message that names the API key.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.text import Text

from runpod_queue import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    Client,
    Endpoint,
    JobFailedError,
    RunpodQueueError,
    WaitTimeoutError,
)
from runpod_queue._contract import DEFAULT_BASE_URL
from runpod_queue._settings import is_loopback
from runpod_queue._wire import ENV_API_KEY, ENV_BASE_URL
from runpod_queue.cli._app import EXIT_API, EXIT_INTERRUPTED, EXIT_JOB, EXIT_USAGE
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._render import Printer

__all__ = ["Session", "configure_debug_logging", "local_base_url", "resolve", "session"]


def local_base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2"


def resolve(api_key: str | None, base_url: str | None, local: int | None) -> tuple[str | None, str]:
    """Flags win over the environment; a remote base URL without a key is refused before any request."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
    if local is not None:
        url = local_base_url(local)
    else:
        url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise UsageProblem(f"--base-url must start with http:// or https://, got {url!r}")
    if key is not None and not key.strip():
        raise UsageProblem(f"the API key is empty: `export {ENV_API_KEY}=...`")
    if key is None and not is_loopback(url):
        raise UsageProblem(
            f"no API key for {url}. Create one in the RunPod console (Settings > API Keys), then "
            f"`export {ENV_API_KEY}=...` (rather than --api-key, which `ps` shows to every user of the "
            "machine). For a local emulator, use --local."
        )
    return key, url.rstrip("/")


def configure_debug_logging() -> logging.Handler:
    """``--debug``: the library's request log on stderr; the caller removes the handler when done."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("runpod_queue")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


@dataclass
class Session(Printer):
    """One command's connection and output. The client is made on first use, so a usage error (bad
    INPUT, an option out of range) answers before any connection setup."""

    base_url: str = ""
    local: bool = False
    job_id: str | None = None  # the job in hand, named if the user interrupts
    _api_key: str | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(api_key=self._api_key, base_url=self.base_url)
        return self._client

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return self.client.endpoint(endpoint_id)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _hint_for(exc: RunpodQueueError, s: Session | None) -> str:
    if isinstance(exc, APIConnectionError) and s is not None:
        if s.local:
            port = urlsplit(s.base_url).port
            return f"\n  start the emulator with: rpq serve HANDLER.py --port {port}"
        return f"\n  check --base-url / ${ENV_BASE_URL} ({s.base_url}) and your network"
    if isinstance(exc, AuthenticationError):
        return f"\n  set the right key with `export {ENV_API_KEY}=...`"
    return ""


@contextmanager
def session(
    api_key: str | None, base_url: str | None, local: int | None, json_out: bool, debug: bool
) -> Iterator[Session]:
    """Resolve the connection and map every failure to a message and an exit code (see ``rpq --help``)."""
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    handler = configure_debug_logging() if debug else None
    current: Session | None = None

    def fail(code: int, message: str, exc: BaseException | None = None) -> NoReturn:
        if debug and exc is not None:
            err.print(Text("".join(traceback.format_exception(exc)).rstrip(), style="dim"))
        err.print(Text(f"error: {message}", style="red"), soft_wrap=True)
        raise typer.Exit(code)

    try:
        key, url = resolve(api_key, base_url, local)
        current = Session(json_out, debug, out, err, base_url=url, local=local is not None, _api_key=key)
        yield current
    except UsageProblem as exc:
        fail(EXIT_USAGE, str(exc))
    except WaitTimeoutError as exc:
        last = f" (last seen {exc.job.status_text})" if exc.job is not None else ""
        fail(
            EXIT_JOB,
            f"job {exc.job_id} did not finish within {exc.timeout:g} s{last}; it keeps running",
            exc,
        )
    except JobFailedError as exc:
        fail(EXIT_JOB, str(exc), exc)
    except (APIStatusError, APIConnectionError, APIResponseError) as exc:
        fail(EXIT_API, f"{exc}{_hint_for(exc, current)}", exc)
    except RunpodQueueError as exc:
        fail(EXIT_API, str(exc), exc)
    except KeyboardInterrupt:
        job = current.job_id if current is not None else None
        message = "interrupted" + (f"; job {job} keeps running on the endpoint" if job else "")
        err.print(message, style="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if current is not None:
            current.close()
        if handler is not None:
            logging.getLogger("runpod_queue").removeHandler(handler)
