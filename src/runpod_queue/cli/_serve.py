"""`rpq serve`: run the emulator in the foreground."""

from __future__ import annotations

import enum
import gc
import importlib.util
import re
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from runpod_queue.cli._app import app
from runpod_queue.cli._duration import DURATION_METAVAR, duration
from runpod_queue.cli._shipped import example_names, shipped_example

_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


_FLEET = "Fleet (workers that scale; docs/fleet.md)"


class ScalerChoice(enum.StrEnum):
    queue_delay = "queue_delay"
    request_count = "request_count"


class ClockChoice(enum.StrEnum):
    real = "real"
    virtual = "virtual"
    auto = "auto"


@app.command()
def serve(
    handlers: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="HANDLER",
            help="[ENDPOINT_ID=]HANDLER, where HANDLER is path/to/file.py[:function], "
            "package.module:function (function defaults to 'handler'; the id to the file stem or "
            "function name), the name of an example shipped with runpod-queue (echo, tokens, ...), or "
            "a cassette [ID=]file.jsonl written by `rpq record`, to replay.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(metavar="HOST", help="Address to bind; keep 127.0.0.1 unless you mean to expose it."),
    ] = ("127.0.0.1"),
    port: Annotated[
        int, typer.Option(metavar="PORT", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RPQ_EMULATOR_API_KEY",
            metavar="KEY",
            help="Require this API key (default: accept any key). Prefer $RPQ_EMULATOR_API_KEY: a command "
            "line is visible to every user (ps).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(metavar="N", min=0, help="In-process workers per endpoint.")] = 1,
    time_scale: Annotated[
        float,
        typer.Option(
            metavar="FACTOR",
            min=0.0001,
            max=1000,
            help="Multiply every RunPod duration (ttl, retention, ...); real clock only.",
        ),
    ] = 1.0,
    clock: Annotated[
        ClockChoice,
        typer.Option(
            metavar="real|virtual|auto",
            help="real: wall-clock time. virtual: time moves only through POST /_emulator/advance "
            '{"seconds": N}. auto: virtual, and a held runsync/status-sync/stream request that only time '
            "can end skips ahead to the next timer.",
            case_sensitive=False,
        ),
    ] = ClockChoice.real,
    no_rate_limits: Annotated[
        bool, typer.Option("--no-rate-limits", help="Switch RunPod's rate limits off.")
    ] = False,
    aggregate: Annotated[
        bool,
        typer.Option("--return-aggregate-stream", help="Generator handlers' chunks are also their output."),
    ] = False,
    external: Annotated[
        list[str] | None,
        typer.Option(
            "--external",
            metavar="ENDPOINT_ID",
            help="Also serve this endpoint with no in-process handler: external workers feed it "
            "(see `rpq worker-env`). Repeatable.",
        ),
    ] = None,
    runpod_worker: Annotated[
        bool,
        typer.Option(
            "--runpod-worker",
            help="HANDLERs are official `runpod.serverless.start` worker files: run each unmodified as "
            "--replicas processes talking to the emulator over HTTP (stopped on exit).",
        ),
    ] = False,
    replicas: Annotated[
        int, typer.Option(metavar="N", min=1, max=64, help="Worker processes per file with --runpod-worker.")
    ] = 1,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse unknown request keys with a 400 (RunPod ignores them; by default the emulator "
            "ignores them too, with a warning).",
        ),
    ] = False,
    max_retained_jobs: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=0,
            help="Keep at most N finished jobs for their retention (about 5.5 KB each); past it the oldest "
            "is forgotten first and answers 404, as after retention. 0: no cap, as on RunPod.",
        ),
    ] = 100_000,
    workers_min: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=0,
            help="Make each handler's endpoint a fleet that keeps N workers running (RunPod's active "
            "workers); the others start on demand after --cold-start.",
            rich_help_panel=_FLEET,
        ),
    ] = None,
    workers_max: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=0,
            help="Make each handler's endpoint a fleet of at most N workers (default 3 with --workers-min).",
            rich_help_panel=_FLEET,
        ),
    ] = None,
    cold_start: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="Fleet: how long a new worker initializes before it takes jobs (default 0s).",
            show_default=False,
            rich_help_panel=_FLEET,
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            parser=duration,
            metavar=DURATION_METAVAR,
            help="Fleet: how long an idle worker above --workers-min lives (default 5s, as RunPod's).",
            show_default=False,
            rich_help_panel=_FLEET,
        ),
    ] = None,
    scaler: Annotated[
        ScalerChoice | None,
        typer.Option(
            metavar="queue_delay|request_count",
            help="Fleet: add a worker when a job waited --scaler-value seconds (queue_delay, default), "
            "or run one worker per --scaler-value requests (request_count).",
            case_sensitive=False,
            rich_help_panel=_FLEET,
        ),
    ] = None,
    scaler_value: Annotated[
        float | None,
        typer.Option(metavar="N", help="Fleet: the scaler's threshold (default 4).", rich_help_panel=_FLEET),
    ] = None,
    flashboot: Annotated[
        bool,
        typer.Option(
            "--flashboot",
            help="Fleet: a worker restarted soon after one stopped boots in a tenth of --cold-start.",
            rich_help_panel=_FLEET,
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Endpoints defined in a TOML (.toml) or JSON file: a table endpoints.ID with handler, script"
            " (canned answers), workers, return_aggregate_stream. See docs/local-runpod.md.",
            show_default=False,
        ),
    ] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Watch the handler files and swap a changed handler in: running jobs finish on the old "
            "code, the next job takes the new (needs watchfiles, the reload extra).",
        ),
    ] = False,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            metavar="FILE",
            help="Keep jobs, counters, owed webhooks and the clock in this SQLite file across restarts "
            "(created when missing); running jobs are requeued on restart.",
            show_default=False,
        ),
    ] = None,
    restore: Annotated[
        Path | None,
        typer.Option(
            "--restore",
            metavar="SNAPSHOT",
            help="Start from this snapshot (POST /_emulator/snapshot): --state FILE becomes a copy of it "
            "(its content replaced); without --state, a temporary copy. The snapshot is only read.",
            show_default=False,
        ),
    ] = None,
    s3: Annotated[
        bool,
        typer.Option(
            "--s3",
            help="Also serve an S3 (moto, the s3 extra) with the buckets workers write to; handlers and "
            "--runpod-worker workers get the BUCKET_* variables rp_upload reads.",
        ),
    ] = False,
    reading: Annotated[
        list[str] | None,
        typer.Option(
            "--reading",
            metavar="NAME=VALUE",
            help="Where RunPod's docs contradict each other, follow the other reading: queued_ttl=deleted, "
            "finished_ttl=deleted, execution_timeout=FAILED, status_ttl=job_ttl, and Batch Jobs' batch_* "
            "readings (docs/batch-jobs.md). Repeatable.",
        ),
    ] = None,
) -> None:
    """Serve a local emulator of RunPod queue endpoints, one per handler. Stops on Ctrl-C."""
    from dataclasses import replace

    from runpod_queue.emulator import (
        Emulator,
        EndpointSpec,
        HandlerLoadError,
        Readings,
        Timings,
        load_endpoint,
    )

    handlers = handlers or []
    fleet = _fleet_options(
        workers_min=workers_min,
        workers_max=workers_max,
        cold_start=cold_start,
        idle_timeout=idle_timeout,
        scaler=scaler.value if scaler is not None else None,
        scaler_value=scaler_value,
        flashboot=flashboot,
    )
    if fleet and runpod_worker:
        typer.echo(
            "error: a fleet (--workers-min/--workers-max) runs in-process handlers; --runpod-worker files "
            "run as --replicas processes: drop one of them",
            err=True,
        )
        raise typer.Exit(2)
    endpoints: dict[str, EndpointSpec] = {}
    worker_files: dict[str, str] = {}
    reloadable: dict[str, str] = {}  # endpoint id -> the ID=file.py reference it was loaded from
    if reload and importlib.util.find_spec("watchfiles") is None:
        typer.echo("error: --reload needs watchfiles: pip install 'runpod-queue[reload]'", err=True)
        raise typer.Exit(2)
    if config is not None:
        from runpod_queue.emulator._endpoint_file import ConfigFileError, load_endpoints_file

        try:
            endpoints.update(load_endpoints_file(config))
        except ConfigFileError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    for endpoint_id in external or []:
        _add_external(endpoints, endpoint_id, endpoint_id)
    if not handlers and not endpoints:
        typer.echo("error: give at least one HANDLER, --config FILE or --external ENDPOINT_ID", err=True)
        raise typer.Exit(2)
    if runpod_worker and handlers and importlib.util.find_spec("runpod") is None:
        typer.echo(
            "error: --runpod-worker runs official workers: install `runpod` (pip install runpod)", err=True
        )
        raise typer.Exit(2)
    for reference in handlers if runpod_worker else []:
        endpoint_id, file_name = _worker_reference(reference)
        _add_external(endpoints, endpoint_id, reference)
        worker_files[endpoint_id] = file_name
    for given in [] if runpod_worker else handlers:
        if given.partition("=")[2 if "=" in given else 0].endswith(".jsonl"):
            _add_replay(endpoints, given, fleet)
            continue
        reference = _shipped_reference(given)
        try:
            loaded = load_endpoint(reference)
        except HandlerLoadError as exc:
            typer.echo(f"error: {exc}{_examples_hint(given)}", err=True)
            raise typer.Exit(2) from None
        if loaded.endpoint_id in endpoints:
            typer.echo(
                f"error: endpoint id {loaded.endpoint_id!r} given twice; name one: ID={reference}", err=True
            )
            raise typer.Exit(2)
        spec = loaded.spec
        if aggregate and not spec.return_aggregate_stream:
            spec = replace(spec, return_aggregate_stream=True)
        if fleet:
            try:
                spec = replace(spec, workers=None, **fleet)
            except ValueError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
        endpoints[loaded.endpoint_id] = spec
        if ".py" in reference:
            reloadable[loaded.endpoint_id] = f"{loaded.endpoint_id}={loaded.source}"
    if clock is not ClockChoice.real and time_scale != 1:
        typer.echo(
            f"error: --time-scale applies to --clock real only; a {clock.value} clock moves only when "
            "advanced (POST /_emulator/advance): drop --time-scale",
            err=True,
        )
        raise typer.Exit(2)
    chosen: dict[str, str] = {}
    for item in reading or []:
        name, sep, value = item.partition("=")
        if not sep or name not in Readings.__dataclass_fields__:
            typer.echo(
                f"error: --reading {item!r}: use NAME=VALUE, NAME one of "
                f"{', '.join(Readings.__dataclass_fields__)}",
                err=True,
            )
            raise typer.Exit(2)
        chosen[name] = value
    try:
        readings = Readings(**chosen)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"error: --reading: {exc}", err=True)
        raise typer.Exit(2) from None
    from runpod_queue.errors import ConfigurationError

    try:
        emulator = Emulator(
            endpoints,
            readings=readings,
            api_key=api_key,
            workers=workers,
            clock=clock.value,
            time_scale=time_scale,
            rate_limits=not no_rate_limits,
            host=host,
            port=port,
            strict=strict,
            state=state,
            restore=restore,
            s3=s3,
            timings=Timings(max_retained_jobs=max_retained_jobs or None),
        )
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    from runpod_queue.emulator._worker_processes import WorkerProcesses

    processes: WorkerProcesses | None = None
    reloader: Any = None

    def announce(emu: Emulator) -> None:
        nonlocal processes
        auth = "API key required" if api_key else "any API key accepted"
        typer.echo(f"RunPod emulator at {emu.base_url}  ({auth})")
        typer.echo(f"  console  {emu.root_url}/  (jobs, workers and queues live in a browser)")
        for endpoint_id, spec in emu.endpoint_specs.items():
            fed = " (external workers)" if spec.handler is None else ""
            if spec.replay is not None:
                fed = f" (replays {getattr(spec.replay, 'name', spec.replay)})"
            if spec.fleet:
                low, high = spec.workers_min or 0, spec.workers_max
                fed = f" (fleet: {low} to {high if high is not None else max(3, low)} workers)"
            typer.echo(f"  endpoint {endpoint_id:<20} {emu.base_url}/{endpoint_id}{fed}")
        if emu.clock.kind != "real":
            typer.echo(
                f"  clock    {emu.clock.kind}: move it with POST {emu.root_url}/_emulator/advance "
                '{"seconds": N}'
            )
        typer.echo(f"  inspect  GET {emu.root_url}/_emulator/jobs, GET {emu.root_url}/_emulator/requests")
        typer.echo(
            f"  manage   {emu.management_url}  (RunPod's REST v2: /serverless/<id>, …/workers, "
            "…/workers/<worker>/logs)"
        )
        typer.echo(
            f"  control  POST {emu.root_url}/_emulator/reset, PUT {emu.root_url}/_emulator/endpoints/ID"
        )
        if restore is not None:
            where = f"state {state}" if state is not None else "a temporary state file"
            typer.echo(f"  restore  {where} started from snapshot {restore}")
        if s3:
            storage = emu.s3_config
            typer.echo(
                f"  s3       {storage.endpoint_url}  bucket {storage.bucket_name}  "
                "(BUCKET_* set for handlers and --runpod-worker workers)"
            )
        if worker_files:
            processes = WorkerProcesses(emu.root_url, api_key=api_key, logs=emu.core.logs)
            emu.external.on_stop_pod.append(processes.request_replace)
            for endpoint_id, file_name in worker_files.items():
                for _ in range(replicas):
                    worker = processes.start(endpoint_id, file_name)
                    typer.echo(
                        f"  worker   {worker.worker_id} pid {worker.proc.pid if worker.proc else '?'} "
                        f"runs {file_name} for {endpoint_id}"
                    )
            processes.start_supervisor()
        if reload and reloadable:
            from runpod_queue.emulator._reload import HandlerReloader

            nonlocal reloader
            reloader = HandlerReloader(emu, reloadable, lambda message: typer.echo(message, err=True))
            reloader.start()
            typer.echo(f"  reload   watching {', '.join(sorted(reloadable))}' handler files", err=True)
        typer.echo("Ctrl-C to stop.", err=True)

    # A dedicated server process: collect the young generation less often. Each retained job is a few
    # tracked objects, and the default thresholds made full collections the largest cost at load
    # (tail latency 100+ ms at 5k jobs/s, see bench/emulator.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # SIGTERM (kill, timeout, systemd, docker stop) and SIGHUP stop the server as Ctrl-C does; the
    # server raises each again once it is down, and these handlers make that an exception, so the
    # `finally` below always stops the worker processes (the default action would kill us first and
    # orphan them).
    previous = _stop_on_signals()
    try:
        emulator.serve_forever(on_ready=announce)
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    finally:
        try:
            if reloader is not None:
                reloader.stop()
            if processes is not None:
                processes.close(timeout=1.0)  # the queue is gone: no result could be reported
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    typer.echo("stopped.", err=True)


def _stop_on_signals() -> dict[signal.Signals, Any]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as SIGINT does; returns the handlers replaced."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, interrupt)
    return previous


def _shipped_reference(reference: str) -> str:
    """``[ID=]echo`` → ``[ID=]…/_examples/echo.py`` when ``echo`` names a shipped example (and no file or
    module of that name exists); any other reference as given."""
    endpoint_id, sep, target = reference.partition("=")  # as load_endpoint splits it
    if not sep:
        endpoint_id, target = "", reference
    path = shipped_example(target)
    if path is None:
        return reference
    typer.echo(f"{target}: the example shipped with runpod-queue, {path}", err=True)
    return f"{endpoint_id}{sep}{path}"


def _examples_hint(reference: str) -> str:
    """After a HANDLER that failed to load: the shipped examples, when it looks like it meant one."""
    target = reference.partition("=")[2] or reference
    stem = Path(target.partition(":")[0]).stem
    names = example_names()
    if stem in names:
        return f"; for the example shipped with runpod-queue: rpq serve {stem}"
    if "/" not in target and ".py" not in target and names:
        return f"; or name a shipped example: {', '.join(names)}"
    return ""


def _add_external(endpoints: dict[str, Any], endpoint_id: str, reference: str) -> None:
    from runpod_queue.emulator import EndpointSpec

    if not _ENDPOINT_ID.match(endpoint_id):
        typer.echo(
            f"error: invalid endpoint id {endpoint_id!r}: use letters, digits, '-', '_' or '.'", err=True
        )
        raise typer.Exit(2)
    if endpoint_id in endpoints:
        typer.echo(f"error: endpoint id {endpoint_id!r} given twice; name one: ID={reference}", err=True)
        raise typer.Exit(2)
    endpoints[endpoint_id] = EndpointSpec(handler=None)


def _add_replay(endpoints: dict[str, Any], reference: str, fleet: dict[str, Any]) -> None:
    """`[ID=]cassette.jsonl`: replay a cassette `rpq record` wrote; without ID, one endpoint per
    endpoint id recorded in it."""
    from dataclasses import replace

    from runpod_queue.emulator import Cassette, EndpointSpec
    from runpod_queue.errors import ConfigurationError

    endpoint_id, sep, file_name = reference.partition("=")
    if not sep:
        endpoint_id, file_name = "", reference
    if endpoint_id and not _ENDPOINT_ID.match(endpoint_id):
        typer.echo(
            f"error: invalid endpoint id {endpoint_id!r}: use letters, digits, '-', '_' or '.'", err=True
        )
        raise typer.Exit(2)
    try:
        cassette = Cassette.load(file_name)
        ids = [endpoint_id] if endpoint_id else cassette.endpoints
        if not ids:
            raise ConfigurationError(
                f"{file_name}: no recorded job, so no endpoint id to serve: name one, ID={file_name}"
            )
        for one in ids:
            if one in endpoints:
                raise ConfigurationError(f"endpoint id {one!r} given twice; name one: ID={file_name}")
            spec = EndpointSpec(replay=cassette)
            spec.handler.bind_check(one)  # type: ignore[union-attr]
            endpoints[one] = replace(spec, workers=None, **fleet) if fleet else spec
    except (ConfigurationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _worker_reference(reference: str) -> tuple[str, str]:
    """`[ENDPOINT_ID=]path/to/worker.py` → (endpoint id, file); the id defaults to the file's stem."""
    endpoint_id, sep, file_name = reference.partition("=")
    if not sep:
        endpoint_id, file_name = "", reference
    path = Path(file_name)
    if not path.is_file():
        typer.echo(f"error: worker file {file_name} does not exist", err=True)
        raise typer.Exit(2)
    return endpoint_id or path.stem, file_name


def _fleet_options(**given: Any) -> dict[str, Any]:
    """The EndpointSpec fleet fields given on the command line; a fleet option without a fleet is an error."""
    chosen = {name: value for name, value in given.items() if value is not None and value is not False}
    if chosen and "workers_min" not in chosen and "workers_max" not in chosen:
        names = ", ".join("--" + name.replace("_", "-") for name in chosen)
        typer.echo(
            f"error: {names} shape a fleet: add --workers-max N (or --workers-min N) to make one",
            err=True,
        )
        raise typer.Exit(2)
    return chosen
