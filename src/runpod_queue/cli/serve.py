"""`rpq serve`: run the emulator in the foreground."""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from runpod_queue.cli._app import app


@app.command()
def serve(
    handlers: Annotated[
        list[str],
        typer.Argument(
            help="[ENDPOINT_ID=]HANDLER, where HANDLER is path/to/file.py[:function] or "
            "package.module:function (function defaults to 'handler'; the id to the file stem or "
            "function name).",
            show_default=False,
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to expose it.")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RPQ_EMULATOR_API_KEY", help="Require this API key (default: accept any key)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="In-process workers per endpoint.")] = 1,
    time_scale: Annotated[
        float,
        typer.Option(min=0.0001, max=1000, help="Multiply every RunPod duration (ttl, retention, ...)."),
    ] = 1.0,
    no_rate_limits: Annotated[
        bool, typer.Option("--no-rate-limits", help="Switch RunPod's rate limits off.")
    ] = False,
    aggregate: Annotated[
        bool,
        typer.Option("--return-aggregate-stream", help="Generator handlers' chunks are also their output."),
    ] = False,
) -> None:
    """Serve a local emulator of RunPod queue endpoints, one per handler. Stops on Ctrl-C."""
    from dataclasses import replace

    from runpod_queue.emulator import Emulator, EndpointSpec, HandlerLoadError, load_endpoint

    endpoints: dict[str, EndpointSpec] = {}
    for reference in handlers:
        try:
            loaded = load_endpoint(reference)
        except HandlerLoadError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if loaded.endpoint_id in endpoints:
            typer.echo(
                f"error: endpoint id {loaded.endpoint_id!r} given twice; name one: ID={reference}", err=True
            )
            raise typer.Exit(2)
        spec = loaded.spec
        if aggregate and not spec.return_aggregate_stream:
            spec = replace(spec, return_aggregate_stream=True)
        endpoints[loaded.endpoint_id] = spec
    emulator = Emulator(
        endpoints,
        api_key=api_key,
        workers=workers,
        time_scale=time_scale,
        rate_limits=not no_rate_limits,
        host=host,
        port=port,
    )

    def announce(emu: Emulator) -> None:
        auth = "API key required" if api_key else "any API key accepted"
        typer.echo(f"RunPod emulator at {emu.base_url}  ({auth})")
        for endpoint_id in emu.endpoint_ids:
            typer.echo(f"  endpoint {endpoint_id:<20} {emu.base_url}/{endpoint_id}")
        typer.echo("Ctrl-C to stop.", err=True)

    # A dedicated server process: collect the young generation less often. Each retained job is a few
    # tracked objects, and the default thresholds made full collections the largest cost at load
    # (tail latency 100+ ms at 5k jobs/s, see bench/emulator.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        emulator.serve_forever(on_ready=announce)
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    typer.echo("stopped.", err=True)
