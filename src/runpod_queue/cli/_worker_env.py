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
    s3: Annotated[
        bool | None,
        typer.Option(
            "--s3/--no-s3",
            help="Add the BUCKET_* variables of the emulator's S3 (`rpq serve --s3`) and "
            "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=1, asked from the emulator. Default: when it serves one "
            "(an emulator that does not answer yet is left out, with a comment); --s3 insists.",
            show_default=False,
        ),
    ] = None,
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
    if s3 is not False:
        _bucket_lines(host, shown_host, port, required=s3 is True)


def _bucket_lines(host: str, shown_host: str, port: int, *, required: bool) -> None:
    """The storage variables ``rp_upload`` / ``rp_download`` read, for the emulator's embedded S3.

    Its key pair is moto's fixed local stand-in, printed as it is (no secret: the same on every machine,
    and moto accepts any). Anything else is printed as a reference to the variable, never its value.
    """
    from runpod_queue._storage import is_local_stand_in
    from runpod_queue.cli._local_s3 import emulator_s3
    from runpod_queue.errors import ConfigurationError

    try:
        config = emulator_s3(port, host=host)
    except ConfigurationError as exc:
        if required:
            raise typer.BadParameter(str(exc), param_hint="--s3") from None
        typer.echo(f"# no BUCKET_* variables: {exc}")
        return
    if config is None:
        if required:
            raise typer.BadParameter(
                f"the emulator at {shown_host}:{port} serves no S3: start it with `rpq serve --s3`",
                param_hint="--s3",
            )
        return
    typer.echo(f"# the emulator's S3 at {config.endpoint_url} (rp_upload / rp_download read these)")
    stand_in = is_local_stand_in(config)
    for name, value in (
        ("BUCKET_ENDPOINT_URL", config.endpoint_url),
        ("BUCKET_ACCESS_KEY_ID", config.access_id if stand_in else None),
        ("BUCKET_SECRET_ACCESS_KEY", config.access_secret if stand_in else None),
        ("BUCKET_NAME", config.bucket_name),
        # runpod >= 1.12: rp_download refuses loopback and private addresses without it
        ("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "1"),
    ):
        if value is None:
            typer.echo(f'export {name}="${{{name}:?set {name} for this storage}}"')
        else:
            typer.echo(f"export {name}={shlex.quote(value)}")


_KEY_VAR = "RPQ_EMULATOR_API_KEY"
_KEY_PLACEHOLDER = "\x00rpq-api-key\x00"
