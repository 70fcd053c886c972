"""A command's connection: where to (flags over environment), the client, and what each failure exits with.

One place turns the library's errors into one-line messages and exit codes, so no command can print a
traceback (unless ``--debug``) or a message that names the API key.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from runpod_queue import (
    Client,
    Endpoint,
    JobFailedError,
    JournalError,
    RateLimits,
    RunpodQueueError,
    S3Store,
    WaitTimeoutError,
)
from runpod_queue._logs import debug_to_stderr
from runpod_queue._settings import ENV_API_KEY, key_missing, resolve_api_key, resolve_base_url
from runpod_queue.cli._app import EXIT_API, EXIT_INTERRUPTED, EXIT_JOB, EXIT_USAGE
from runpod_queue.cli._errors import UsageProblem
from runpod_queue.cli._next import Connection, failure_hint
from runpod_queue.cli._ready import wait_for_listener
from runpod_queue.cli._render import Printer
from runpod_queue.cli._retrying import RetryLine

__all__ = ["Session", "local_base_url", "resolve", "session"]


def local_base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2"


def resolve(api_key: str | None, base_url: str | None, local: int | None) -> tuple[str | None, str]:
    """Flags win over the environment (``_settings`` resolves both, as for a ``Client``); a remote base URL
    without a key is refused before any request. Problems are usage errors, worded for the command line."""
    try:
        url = resolve_base_url(local_base_url(local) if local is not None else base_url, name="--base-url")
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    try:
        key = resolve_api_key(api_key)
    except ValueError:
        raise UsageProblem(f"the API key is empty: `export {ENV_API_KEY}=...`") from None
    if key_missing(key, url):
        raise UsageProblem(
            f"no API key for {url}. Create one in the RunPod console (Settings > API Keys), then "
            f"`export {ENV_API_KEY}=...` (rather than --api-key, which `ps` shows to every user of the "
            "machine). For a local emulator, use --local."
        )
    return key, url


@dataclass
class Session(Printer):
    """One command's connection and output. The client is made on first use, so a usage error (bad
    INPUT, an option out of range) answers before any connection setup."""

    base_url: str = ""
    local: bool = False
    connection: Connection = field(default_factory=Connection)  # what hints repeat (never the key)
    endpoint_id: str | None = None  # the endpoint in hand, named in hints
    job_id: str | None = None  # the job in hand, named if the user interrupts
    streaming: bool = False  # the job's chunks are being printed: an interrupt also offers `rpq stream`
    # While a submission is on the wire (no id yet): `rpq run` arguments that would submit it again.
    submitting: list[str] | None = None
    sync: bool = False  # that submission is a /runsync
    rate_limits: RateLimits | bool = True  # for the client, when it is made (`rpq batch --no-rate-limits`)
    store: S3Store | None = field(default=None, repr=False)  # for Upload values (`rpq batch`)
    # A command's own words after a failure or a Ctrl-C (`rpq batch`: its journal and resume command);
    # None: the words every command uses (``explain`` / ``interrupted``).
    explainer: Callable[[RunpodQueueError], str] | None = field(default=None, repr=False)
    on_interrupt: Callable[[], str] | None = field(default=None, repr=False)
    _api_key: str | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            wait_for_listener(self.base_url, self.err)  # `rpq serve … &` pasted just before: let it bind
            self._client = Client(
                api_key=self._api_key,
                base_url=self.base_url,
                rate_limits=self.rate_limits,
                on_retry=self.retrying,
                store=self.store,
            )
        return self._client

    def explain(self, exc: RunpodQueueError) -> str:
        """What follows an error's own message: where to look ("" when there is nothing to add)."""
        if self.explainer is not None:
            return self.explainer(exc)
        return failure_hint(exc, self.local, self.base_url)

    def endpoint(self, endpoint_id: str) -> Endpoint:
        self.endpoint_id = endpoint_id
        return self.client.endpoint(endpoint_id)

    def next_steps(self, job_id: str) -> str:
        """How to follow or cancel the job in hand, as commands that work when pasted."""
        endpoint = self.endpoint_id or "ENDPOINT"
        steps = [("follow it with", ["wait", endpoint, job_id])]
        if self.streaming:
            steps.append(("or print its remaining chunks", ["stream", endpoint, job_id]))
        steps.append(("cancel it with", ["cancel", endpoint, job_id]))
        return self.connection.commands(*steps)

    def interrupted(self) -> str:
        """What Ctrl-C leaves behind, and how to carry on from there."""
        if self.on_interrupt is not None:
            return self.on_interrupt()
        endpoint = self.endpoint_id or "ENDPOINT"
        if self.job_id is not None:
            running = f"interrupted; job {self.job_id} keeps running on endpoint {endpoint}"
            return f"{running}\n{self.next_steps(self.job_id)}"
        if self.submitting is None:
            return "interrupted"
        route = "/runsync" if self.sync else "/run"
        message = (
            f"interrupted before {route} answered: the job may still run on endpoint {endpoint}, but its "
            "id is not known (RunPod offers no list of jobs to find it in)"
        )
        if self.sync:
            again = self.connection.commands(("run it with", self.submitting))
            message += f"; without --sync, `rpq run` names the job at once:\n{again}"
        return message

    def close(self) -> None:
        if self.retrying is not None:
            self.retrying.close()
        if self._client is not None:
            self._client.close()


@contextmanager
def session(
    api_key: str | None, base_url: str | None, local: int | None, json_out: bool, debug: bool
) -> Iterator[Session]:
    """Resolve the connection and map every failure to a message and an exit code (see ``rpq --help``)."""
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False)
    handler = debug_to_stderr() if debug else None
    current: Session | None = None

    def fail(code: int, message: str, exc: BaseException | None = None) -> NoReturn:
        if current is not None:
            current.settle()
        if debug and exc is not None:
            err.print(Text("".join(traceback.format_exception(exc)).rstrip(), style="dim"))
        err.print(Text(f"error: {message}", style="red"), soft_wrap=True)
        raise typer.Exit(code)

    try:
        key, url = resolve(api_key, base_url, local)
        current = Session(
            json_out,
            debug,
            out,
            err,
            RetryLine(err),
            base_url=url,
            local=local is not None,
            connection=Connection.given(api_key, base_url, local),
            _api_key=key,
        )
        yield current
    except UsageProblem as exc:
        fail(EXIT_USAGE, str(exc))
    except WaitTimeoutError as exc:
        last = f" (last seen {exc.job.status_text})" if exc.job is not None else ""
        steps = f"\n{current.next_steps(exc.job_id)}" if current is not None and exc.job_id else ""
        fail(
            EXIT_JOB,
            f"job {exc.job_id} did not finish within {exc.timeout:g} s{last}; it keeps running{steps}",
            exc,
        )
    except JobFailedError as exc:
        fail(EXIT_JOB, str(exc), exc)
    except JournalError as exc:  # `rpq batch` given a journal it cannot use: fix the command, not the server
        fail(EXIT_USAGE, str(exc), exc)
    except RunpodQueueError as exc:  # an APIError (a request failed) or another: its message, then what to do
        fail(EXIT_API, f"{exc}{current.explain(exc) if current is not None else ''}", exc)
    except KeyboardInterrupt:
        if current is not None:
            current.settle()
        message = current.interrupted() if current is not None else "interrupted"
        err.print(message, style="yellow", markup=False, highlight=False, soft_wrap=True)  # INPUT is in it
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if current is not None:
            current.close()
        if handler is not None:
            logging.getLogger("runpod_queue").removeHandler(handler)
