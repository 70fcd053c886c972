"""`rpq`: one typer app; each public module of this package defines its commands on `app`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="rpq",
    help="runpod-queue: talk to RunPod Serverless queue endpoints, or emulate one locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """runpod-queue: talk to RunPod Serverless queue endpoints, or emulate one locally."""


def load_commands() -> None:
    """Import every command module (`cli/<name>.py` not starting with `_`) so it registers itself."""
    import runpod_queue.cli as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def main() -> None:
    load_commands()
    app()
