"""`rpq`: one typer app; each public module of this package defines its commands on `app`."""

from __future__ import annotations

import copy
import importlib
import sys

import typer

from runpod_queue.cli._help import show_only_metavars

__all__ = [
    "EXIT_API",
    "EXIT_CODES_HELP",
    "EXIT_INTERRUPTED",
    "EXIT_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "app",
    "load_commands",
    "main",
]

# Exit codes, the same for every command (documented in `rpq --help` and docs/cli.md).
EXIT_OK = 0  # the job completed (or the command did what it was asked)
EXIT_JOB = 1  # the job failed, timed out or was cancelled (or did not finish within --timeout)
EXIT_USAGE = 2  # usage error: bad option, bad INPUT JSON, missing API key
EXIT_API = 3  # API or connection error: HTTP 4xx/5xx, unreachable server, malformed answer
EXIT_INTERRUPTED = 130  # Ctrl-C: the job keeps running on the endpoint (the shell's 128 + SIGINT)

EXIT_CODES_HELP = (
    "Exit codes: 0 completed · 1 the job failed, timed out or was cancelled · 2 usage error "
    "(bad option or INPUT, missing API key) · 3 API or connection error · 130 interrupted (Ctrl-C; a "
    "submitted job keeps running)."
)

show_only_metavars()  # before any help is rendered: no <bool>/<str> noise in `rpq ... --help`
app = typer.Typer(
    name="rpq",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """runpod-queue: talk to RunPod Serverless queue endpoints, or emulate one locally.

    Configuration: RUNPOD_API_KEY and RUNPOD_ENDPOINT_BASE_URL, or --api-key and
    --base-url on each command (prefer the variable for the key: a command line is
    visible to every user in ps). --local [PORT] talks to `rpq serve` on this
    machine. Start with `rpq demo`.
    """


# The modules that define commands on `app`, imported by `load_commands` so each registers itself.
COMMAND_MODULES = (
    "_batch",
    "_demo",
    "_fleet",
    "_jobs",
    "_listen",
    "_record",
    "_serve",
    "_simulate",
    "_storage",
    "_why",
    "_worker_env",
)


def load_commands() -> None:
    """Import every command module so it registers its commands on `app`.

    Imported by name rather than through `runpod_queue.cli`: the package imports this module, so
    importing the package from here would close a cycle."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


# Modules of the optional extras: a command that needs a missing one says which extra to install.
_EXTRA_MODULES = {"uvicorn": "emulator", "uvloop": "emulator", "httptools": "emulator", "orjson": "emulator",
                  "typer": "cli", "rich": "cli", "matplotlib": "plot"}  # fmt: skip


def _command_name(info: typer.models.CommandInfo) -> str:
    callback_name = info.callback.__name__ if info.callback is not None else ""
    return info.name or callback_name.lower().replace("_", "-")  # typer's own naming rule


def _app_for(argv: list[str]) -> typer.Typer:
    """`app` with only the command `argv` names, when it names one: typer builds the click command of
    every registered command on each run (signatures and string annotations evaluated, ~50 ms of a
    `rpq status` that needs one). Help, a group, an unknown name or no name at all get the whole app, so
    listings and "No such command" read as before."""
    name = argv[0] if argv else ""
    chosen = [info for info in app.registered_commands if _command_name(info) == name]
    if len(chosen) != 1:
        return app
    only = copy.copy(app)
    only.registered_commands = chosen
    only.registered_groups = []
    return only


def main() -> None:
    load_commands()
    try:
        _app_for(sys.argv[1:])()
    except ModuleNotFoundError as exc:
        extra = _EXTRA_MODULES.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        sys.stderr.write(
            f"error: this command needs the '{extra}' extra ({exc.name} is missing): "
            "install the package with its extras, e.g. pip install './runpod-queue[all]'\n"
        )
        raise SystemExit(2) from None
