"""`rpq demo`: the real thing in a few seconds, on this machine only.

It starts the emulator in-process on a free loopback port with the handlers from `examples/`, then runs
the real `rpq` commands against it — the same code paths a user's commands take — printing each command
line first so it can be copied. Each step checks its exit code, so the demo doubles as a smoke test.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from runpod_queue import Client, Job
from runpod_queue.cli._app import EXIT_JOB, EXIT_OK, app
from runpod_queue.cli._shipped import example_folders

_EXAMPLES = ("echo", "tokens", "slow", "fail", "flaky")


def _find_examples(given: Path | None) -> Path:
    """`examples/` of the source checkout (next to `src/`), else the copy the wheel ships, else of the
    current directory."""
    candidates = [given] if given is not None else [*example_folders(), Path.cwd() / "examples"]
    for folder in candidates:
        if all((folder / f"{name}.py").is_file() for name in _EXAMPLES):
            return folder
    shown = ", ".join(str(c) for c in candidates)
    typer.echo(
        f"error: the example handlers ({', '.join(_EXAMPLES)}) are not in {shown}; pass --examples DIR",
        err=True,
    )
    raise typer.Exit(2)


class _Tour:
    """Prints each step and runs `rpq` commands in-process against the emulator."""

    def __init__(self, console: Console, port: int) -> None:
        self.console = console
        self.port = port
        self.step = 0
        self.failures: list[str] = []
        self.command = typer.main.get_command(app)  # built once: typer rebuilds it on every call

    def section(self, title: str, why: str) -> None:
        self.step += 1
        self.console.print()
        self.console.rule(f"[bold]{self.step}. {title}", align="left")
        self.console.print(why, style="dim", highlight=False)

    def show(self, args: list[str]) -> None:
        self.console.print(f"$ rpq {shlex.join(args)}", style="bold cyan", highlight=False, soft_wrap=True)

    def rpq(self, *args: str, expect: int = EXIT_OK) -> int:
        """Run one real `rpq` command (as typed, plus --local PORT) and check its exit code."""
        argv = [*args, "--local", str(self.port)]
        self.show(argv)
        sys.stdout.flush()
        try:
            result: Any = self.command.main(args=argv, prog_name="rpq", standalone_mode=False)
        except SystemExit as exc:  # pragma: no cover - standalone_mode=False returns instead
            result = exc.code
        code = int(result or 0)
        sys.stdout.flush()
        note = f"exit {code}" + ("" if code == expect else f" (expected {expect})")
        self.console.print(
            f"[dim]→ {note}[/]" if code == expect else f"[bold red]→ {note}[/]", highlight=False
        )
        if code != expect:
            self.failures.append(f"rpq {shlex.join(argv)}: {note}")
        return code


def _submit(tour: _Tour, client: Client, endpoint: str, payload: Any) -> Job:
    """`rpq run … --no-wait`, done through the client so the demo has the id in hand."""
    tour.show(["run", endpoint, json.dumps(payload), "--no-wait", "--local", str(tour.port)])
    job = client.endpoint(endpoint).run(payload)
    tour.console.print(job.id, highlight=False)
    return job


def _until_running(client: Client, endpoint: str, job_id: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while client.endpoint(endpoint).status(job_id).is_in_queue and time.monotonic() < deadline:
        time.sleep(0.05)


@app.command()
def demo(
    examples: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder with the example handlers (default: the ones that come with runpod-queue).",
            show_default=False,
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast", help="Short jobs for a CI smoke run (too short to watch the live status line)."
        ),
    ] = False,
) -> None:
    """Walk through each kind of job on a local emulator with the example handlers (a few seconds).

    Runs the real commands against it: runsync, an async job with its live status
    line, streaming, a failing job, cancel, retry and health. About 3.5 s of jobs,
    paced so you can watch them, plus start-up.
    """
    from runpod_queue.emulator import Emulator, EndpointSpec, HandlerLoadError, load_endpoint

    folder = _find_examples(examples)
    console = Console(highlight=False, soft_wrap=True)
    specs: dict[str, EndpointSpec] = {}
    try:
        for name in _EXAMPLES:
            loaded = load_endpoint(str(folder / f"{name}.py"))
            specs[loaded.endpoint_id] = loaded.spec
    except HandlerLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # The pauses are for a person watching: long enough to see a job run and tokens arrive.
    slow_job = {"seconds": 0.1 if fast else 1.5}
    tokens_input: dict[str, Any] = {"prompt": "why queues?", "max_tokens": 24}
    if fast:
        tokens_input["delay"] = 0.002  # the handler's default is 0.05 s per token
    started = time.monotonic()
    with Emulator(specs, workers=2) as emulator, Client(base_url=emulator.base_url) as client:
        tour = _Tour(console, emulator.port)
        console.print(
            f"[bold]runpod-queue demo[/]: a RunPod queue emulator at {emulator.base_url}, endpoints "
            f"{', '.join(emulator.endpoint_ids)} (handlers from {folder}).",
            soft_wrap=True,
        )
        console.print(
            "Each step runs the real `rpq` command; progress goes to stderr, results to stdout.",
            style="dim",
        )

        tour.section("runsync", "One held request: the answer comes back in the same HTTP call.")
        tour.rpq("run", "echo", '{"prompt": "hello, queue"}', "--sync")

        tour.section(
            "async job", "/run returns an id at once; `rpq` then follows the job with a live status line."
        )
        tour.rpq("run", "slow", json.dumps(slow_job))

        tour.section("streaming", "A generator handler: each yield is a chunk, printed as it arrives.")
        tokens = _submit(tour, client, "tokens", tokens_input)
        tour.rpq("stream", "tokens", tokens.id)

        tour.section(
            "a failing job",
            "The handler raised: the job ends FAILED; RunPod's JSON error string is shown parsed (exit 1).",
        )
        tour.rpq("run", "fail", '{"text": "no prompt here"}', expect=EXIT_JOB)

        tour.section("cancel", "A long job is cancelled while it runs.")
        slow = _submit(tour, client, "slow", {"seconds": 30})
        _until_running(client, "slow", slow.id)
        tour.rpq("cancel", "slow", slow.id)

        tour.section("retry", "A transient failure, then `retry` requeues the same id with the same input.")
        flaky = _submit(tour, client, "flaky", {"n": 7})
        tour.rpq("wait", "flaky", flaky.id, expect=EXIT_JOB)
        tour.rpq("retry", "flaky", flaky.id)
        tour.rpq("wait", "flaky", flaky.id)

        tour.section("health", "Job and worker counts of an endpoint.")
        tour.rpq("health", "flaky")

    console.print()
    elapsed = time.monotonic() - started
    if tour.failures:
        console.print(f"[bold red]demo finished with {len(tour.failures)} unexpected result(s):[/]")
        for failure in tour.failures:
            console.print(f"  {failure}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[bold green]demo finished in {elapsed:.1f} s.[/] Try it with your own handler:")
    # A name, not examples/echo.py: that path exists only in a checkout; `rpq serve` finds the shipped copy.
    serve = "echo" if examples is None else shlex.quote(str(folder / "echo.py"))
    console.print(
        f"  rpq serve {serve}      # emulator on http://127.0.0.1:8000/v2, handler {folder / 'echo.py'}",
        style="cyan",
        markup=False,
    )
    console.print("""  rpq run echo '{"prompt": "hi"}' --local""", style="cyan")
