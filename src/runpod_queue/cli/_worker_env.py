"""`rpq worker-env`: the environment an unmodified official worker needs to serve an emulated endpoint."""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer

from runpod_queue.cli._app import app
from runpod_queue.cli._duration import DURATION_METAVAR, duration
from runpod_queue.cli._options import DURATIONS_HELP


@app.command("worker-env", epilog=DURATIONS_HELP)
def worker_env(
    endpoint_id: Annotated[
        str,
        typer.Argument(
            metavar="ENDPOINT_ID",
            help="The endpoint the worker serves (as `rpq serve` names it).",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(metavar="HOST", help="The emulator's address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="The emulator's port.")] = 8000,
    api_key: Annotated[
        bool | None,
        typer.Option(
            "--api-key/--no-api-key",
            help="The emulator requires a key: the worker takes it from $RPQ_EMULATOR_API_KEY, the "
            "variable `rpq serve --api-key` also reads (the key itself is never printed). "
            "Default: on when that variable is set.",
            show_default=False,
        ),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="RUNPOD_POD_ID for the worker (default: a fresh random id)."),
    ] = None,
    ping_interval: Annotated[
        float,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="How often the worker pings, 1s to 60s (default 1s; the worker sleeps whole seconds).",
            show_default=False,
        ),
    ] = 1.0,
) -> None:
    """Print `export` lines for a worker written with `runpod.serverless.start` (eval them, then run it).

    \b
        eval "$(rpq worker-env my-endpoint --port 8000)"
        python my_worker.py
    """
    from runpod_queue.emulator._external import worker_environment
    from runpod_queue.emulator._jobs import new_worker_id

    if not 1.0 <= ping_interval <= 60.0:
        raise typer.BadParameter(
            f"{ping_interval:g} s is outside 1s..60s (a bare number is seconds: write 1500ms for 1.5 s)",
            param_hint="--ping-interval",
        )
    shown_host = f"[{host}]" if ":" in host else host
    needs_key = bool(os.environ.get(_KEY_VAR)) if api_key is None else api_key
    env = worker_environment(
        f"http://{shown_host}:{port}",
        endpoint_id,
        worker_id=worker_id or new_worker_id(),
        api_key=_KEY_PLACEHOLDER if needs_key else None,
        ping_interval=ping_interval,
    )
    typer.echo(f"# official runpod worker -> emulated endpoint {endpoint_id} at {shown_host}:{port}")
    typer.echo("# RUNPOD_SKIP_* switch off the start-up fitness checks (one dials 8.8.8.8: fatal offline)")
    for name, value in env.items():
        if value == _KEY_PLACEHOLDER:
            # A reference, never the key: this output ends up in terminals, logs and shell history.
            typer.echo(f'export {name}="${{{_KEY_VAR}:?set {_KEY_VAR} to the key of the emulator}}"')
        else:
            typer.echo(f"export {name}={shlex.quote(value)}")


_KEY_VAR = "RPQ_EMULATOR_API_KEY"
_KEY_PLACEHOLDER = "\x00rpq-api-key\x00"
