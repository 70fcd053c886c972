"""`rpq`: one typer app; each command lives in its own module and registers itself here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rpq",
    help="runpod-queue: talk to RunPod Serverless queue endpoints, or emulate one locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    # Import for the side effect of registering commands.
    from runpod_queue.cli import serve  # noqa: F401

    app()


@app.callback()
def _root() -> None:
    """runpod-queue: talk to RunPod Serverless queue endpoints, or emulate one locally."""
