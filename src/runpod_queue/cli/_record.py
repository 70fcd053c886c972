"""`rpq record`: a local proxy writing what a real endpoint did to a cassette (replayed by `rpq serve`)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from runpod_queue.cli._app import app
from runpod_queue.cli._options import BaseUrlOpt


class OnMissChoice(enum.StrEnum):
    error = "error"
    nearest = "nearest"
    handler = "handler"


@app.command()
def record(
    to: Annotated[
        Path,
        typer.Option("--to", metavar="FILE", help="The cassette to write (JSON Lines).", show_default=False),
    ],
    base_url: BaseUrlOpt = None,
    host: Annotated[
        str,
        typer.Option(metavar="HOST", help="Address to bind; keep 127.0.0.1: the proxy passes your key on."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8010,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing cassette.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing cassette.")] = False,
    on_miss: Annotated[
        OnMissChoice,
        typer.Option(
            metavar="error|nearest|handler",
            help="The rule written for replay: what an input with no recording gets.",
            case_sensitive=False,
        ),
    ] = OnMissChoice.error,
) -> None:
    """Record jobs through a local proxy into a cassette; replay it with `rpq serve ID=FILE`.

    Point a client at the printed base URL: each job's input, statuses with
    timings, output or error and stream chunks go to --to (never the API
    key). Stops on Ctrl-C."""
    from runpod_queue._settings import resolve_base_url
    from runpod_queue.emulator._cassette import Recording
    from runpod_queue.emulator._record import RecordingProxy, source_host
    from runpod_queue.errors import ConfigurationError

    if append and overwrite:
        typer.echo("error: --append adds to the cassette, --overwrite replaces it: give one", err=True)
        raise typer.Exit(2)
    try:
        target = resolve_base_url(base_url, name="--base-url")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def recorded(recording: Recording) -> None:
        typer.echo(f"recorded {recording.endpoint} {recording.job_id} {recording.status}", err=True)

    try:
        proxy = RecordingProxy(
            target,
            to,
            host=host,
            port=port,
            mode="append" if append else "overwrite" if overwrite else "new",
            on_miss=on_miss.value,
            on_job=recorded,
        )
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def ready(running: RecordingProxy) -> None:
        typer.echo(f"recording {source_host(target)} at {running.base_url}  → {to}")
        typer.echo(
            f"  point the client there: --base-url {running.base_url}  (the key is passed on, never written)"
        )
        typer.echo("Ctrl-C to stop (jobs still open are written as last seen).", err=True)

    import signal

    from runpod_queue.cli._serve import _stop_on_signals

    previous = _stop_on_signals()  # SIGTERM/SIGHUP stop it as Ctrl-C does: open jobs are written
    try:
        proxy.serve_forever(on_ready=ready)
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    typer.echo(f"stopped: {proxy.writer.written} job(s) in {to}.", err=True)
