"""The ``rpq`` command to run next, as every hint prints it: with this invocation's connection options, so
the line works when pasted into the same shell.

What is repeated is what the user typed: ``--local PORT`` (which wins over ``--base-url``), else
``--base-url URL``. A base URL or key taken from the environment is left there: the pasted command, in
the same shell, reads it the same way.

The API key is never part of a hint: it would land in the scrollback, in CI logs and, once pasted, in
``ps``. Nor is a placeholder option (``--api-key '<key>'`` pasted as is would send that text as the key).
When the key came from ``--api-key`` and ``$RUNPOD_API_KEY`` does not already hold it, the hint starts
with ``export RUNPOD_API_KEY=<your key>``, so the commands after it work with the key read from there.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from runpod_queue._settings import ENV_API_KEY, ENV_BASE_URL
from runpod_queue.errors import APIConnectionError, AuthenticationError

__all__ = ["Connection", "failure_hint"]

_EXPORT_KEY = f"export {ENV_API_KEY}=<your key>   # hints never repeat --api-key"


@dataclass(frozen=True)
class Connection:
    """How this invocation reached its server, as the options that reproduce it."""

    local: int | None = None
    base_url: str | None = None  # as given with --base-url; None under --local, which overrides it
    key_to_export: bool = False  # the key came from --api-key and the environment does not hold it

    @classmethod
    def given(cls, api_key: str | None, base_url: str | None, local: int | None) -> Connection:
        """From the connection options as the command received them (before the environment fills in)."""
        exported = os.environ.get(ENV_API_KEY) or None
        return cls(
            local=local,
            base_url=None if local is not None else base_url,
            key_to_export=api_key is not None and api_key != exported,
        )

    def options(self) -> list[str]:
        if self.local is not None:
            return ["--local", str(self.local)]  # the port even when it is the default: no guessing
        return ["--base-url", self.base_url] if self.base_url is not None else []

    def command(self, *args: str) -> str:
        """``rpq ARGS`` plus the connection options, quoted for a POSIX shell."""
        return shlex.join(["rpq", *args, *self.options()])

    def commands(self, *steps: tuple[str, list[str]]) -> str:
        """Indented ``label: rpq …`` lines (each step a label and the command's arguments), after the
        key's ``export`` line when the commands need it."""
        lines = [f"  {_EXPORT_KEY}"] if self.key_to_export else []
        lines += [f"  {label}: {self.command(*args)}" for label, args in steps]
        return "\n".join(lines)

    def script(self, *args: str) -> str:
        """One command to paste as is (``rpq batch``'s resume), after the key's ``export`` line when it
        needs it; the caller indents the first line, this indents the second like it."""
        command = self.command(*args)
        return f"{_EXPORT_KEY}\n  {command}" if self.key_to_export else command


def failure_hint(exc: Exception, local: bool, base_url: str) -> str:
    """What to check after a connection or key failure ("" for any other error)."""
    if isinstance(exc, APIConnectionError):
        if local:
            port = urlsplit(base_url).port
            return f"\n  start the emulator with: rpq serve HANDLER.py --port {port}"
        return f"\n  check --base-url / ${ENV_BASE_URL} ({base_url}) and your network"
    if isinstance(exc, AuthenticationError):
        return f"\n  set the right key with `export {ENV_API_KEY}=...`"
    return ""
