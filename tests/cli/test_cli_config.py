"""Usage errors (exit 2), configuration from the environment and flags, --local, --debug, and the rule
that the API key is never printed, whatever goes wrong."""

from __future__ import annotations

import functools
import json
import re
import socket
from pathlib import Path
from typing import Annotated

import pytest
import typer
from cli_support import API_KEY, Invoke
from typer.testing import CliRunner

from runpod_queue import Client, Retries
from runpod_queue.cli import _session
from runpod_queue.cli._app import app
from runpod_queue.cli._argv import RpqCommand
from runpod_queue.cli._options import DEFAULT_LOCAL_PORT
from runpod_queue.cli._session import session
from runpod_queue.emulator import Emulator


def test_help_documents_every_command_and_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) ", result.stdout, re.MULTILINE))  # the Commands panel
    assert listed == {
        "run", "status", "wait", "stream", "cancel", "retry", "purge", "health",
        "serve", "listen", "webhook-url", "demo", "batch", "worker-env", "workers", "endpoint",
        "upload", "download", "logs", "why", "record", "simulate",
    }  # fmt: skip
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 completed" in text
    assert "1 the job failed, timed out or was cancelled" in text
    assert "2 usage error" in text
    assert "3 API or connection error" in text
    assert "130 interrupted (Ctrl-C" in text


# -- bad input: exit 2, one line, the position named ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": 1,}', "line 1, column 9"),
        ('{"a": [1, 2}', "line 1, column 12"),
        ("nope", "line 1, column 1"),
    ],
)
def test_invalid_inline_json_is_one_line_naming_the_position(rpq: Invoke, text: str, where: str) -> None:
    result = rpq("run", "echo", text)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: INPUT is not valid JSON")
    assert where in lines[0]


def test_invalid_json_on_stdin_names_stdin_and_the_line(rpq: Invoke) -> None:
    result = rpq("run", "echo", "-", input='{\n  "a": 1\n  "b": 2\n}')
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: stdin is not valid JSON: Expecting ',' delimiter at line 3, column 3 (char 13)"
    ]


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "an array"), ('"hi"', "a string"), ("3", "a number")])
def test_input_that_is_not_an_object_is_a_usage_error(rpq: Invoke, text: str, kind: str) -> None:
    result = rpq("run", "echo", text)
    assert result.exit_code == 2
    assert f"INPUT must be a JSON object (the handler's input), got {kind}" in result.stderr


def test_empty_stdin_is_a_usage_error(rpq: Invoke) -> None:
    result = rpq("run", "echo", "-", input="")
    assert result.exit_code == 2
    assert "stdin is empty" in result.stderr


def test_missing_and_invalid_input_files(rpq: Invoke, tmp_path: Path) -> None:
    missing = rpq("run", "echo", f"@{tmp_path / 'absent.json'}")
    assert missing.exit_code == 2
    assert "cannot read input file" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"a":\n}')
    invalid = rpq("run", "echo", f"@{bad}")
    assert invalid.exit_code == 2
    assert f"{bad} is not valid JSON" in invalid.stderr
    assert "line 2, column 1" in invalid.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "echo", "{}", "--sync", "--no-wait"], "--sync and --no-wait exclude each other"),
        (["run", "echo"], "Missing argument 'INPUT'"),
        (["status", "echo", "job", "--bogus"], "No such option: --bogus"),
        (["status", "echo", "job", "--ttl", "60000"], "No such option: --ttl"),  # now --keep-result-for
    ],
)
def test_bad_options_are_usage_errors(rpq: Invoke, args: list[str], message: str) -> None:
    result = rpq(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


# -- configuration -------------------------------------------------------------------------------------


def test_environment_configures_the_connection(rpq: Invoke, emu: Emulator) -> None:
    env = {"RUNPOD_API_KEY": API_KEY, "RUNPOD_ENDPOINT_BASE_URL": emu.base_url}
    result = rpq("run", "echo", '{"env": 1}', "--json", connect=False, env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"env": 1}


def test_flags_override_the_environment(rpq: Invoke, emu: Emulator) -> None:
    env = {"RUNPOD_API_KEY": "wrong-key", "RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:9/v2"}
    result = rpq("health", "echo", "--json", env=env)  # connect=True appends the right flags
    assert result.exit_code == 0, result.stderr


def test_local_port_points_at_the_emulator(rpq: Invoke, emu: Emulator) -> None:
    env = {"RUNPOD_API_KEY": API_KEY, "RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:9/v2"}
    result = rpq("health", "echo", "--local", str(emu.port), "--json", connect=False, env=env)
    assert result.exit_code == 0, result.stderr


def test_bare_local_means_the_default_port() -> None:
    seen: list[int | None] = []
    probe = typer.Typer()

    @probe.command(cls=RpqCommand)
    def cmd(
        endpoint: str,
        local: Annotated[int | None, typer.Option("--local")] = None,
        flag: Annotated[bool, typer.Option("--flag")] = False,
    ) -> None:
        seen.append(local)

    runner = CliRunner()
    for args in (
        ["ep", "--local"],
        ["--local", "ep"],
        ["ep", "--local", "--flag"],
        ["ep", "--local", "9001"],
    ):
        assert runner.invoke(probe, args).exit_code == 0, args
    assert runner.invoke(probe, ["ep"]).exit_code == 0
    assert seen == [DEFAULT_LOCAL_PORT, DEFAULT_LOCAL_PORT, DEFAULT_LOCAL_PORT, 9001, None]


def test_missing_api_key_for_the_real_service_says_how_to_set_it(rpq: Invoke) -> None:
    result = rpq("status", "abc123", "job-1", connect=False)  # default base URL: api.runpod.ai
    assert result.exit_code == 2
    assert "RUNPOD_API_KEY" in result.stderr
    assert "--api-key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_api_key_is_exit_3_with_a_hint(rpq: Invoke, emu: Emulator) -> None:
    result = rpq("health", "echo", "--base-url", emu.base_url, "--api-key", "not-the-key", connect=False)
    assert result.exit_code == 3
    assert "401" in result.stderr
    assert "RUNPOD_API_KEY" in result.stderr
    assert "not-the-key" not in result.stdout + result.stderr


def test_unreachable_server_is_exit_3_with_a_hint(rpq: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client retries a refused connection with backoff (tests/client covers that); this test is about
    # the message and the exit code, so its clients keep the retries and drop the pauses (Retries.wait).
    monkeypatch.setattr(_session, "Client", functools.partial(Client, retries=Retries(wait=False)))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: the port is ours and refuses connections
        port = closed.getsockname()[1]
        result = rpq("retry", "echo", "job-1", "--local", str(port), connect=False)
    assert result.exit_code == 3
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in result.stderr
    assert f"rpq serve HANDLER.py --port {port}" in result.stderr
    assert result.stderr.count("emulator running") == 1  # asked once, by the client's message
    assert "ssl:default" not in result.stderr and "Errno" not in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_adds_request_logs_and_tracebacks(rpq: Invoke) -> None:
    quiet = rpq("status", "echo", "no-such-job")
    loud = rpq("status", "echo", "no-such-job", "--debug")
    assert quiet.exit_code == loud.exit_code == 3
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert "NotFoundError" in loud.stderr
    assert "GET /echo/status/no-such-job -> 404" in loud.stderr


def test_the_api_key_is_never_printed(rpq: Invoke, client: Client, tmp_path: Path) -> None:
    failed = client.endpoint("fail").run_sync({})
    runs = [
        rpq("run", "echo", '{"a": 1}', "--debug"),
        rpq("run", "echo", '{"a": 1}', "--json", "--debug"),
        rpq("run", "fail", "{}", "--debug"),
        rpq("status", "fail", failed.id, "--debug"),
        rpq("status", "echo", "no-such-job", "--debug"),
        rpq("retry", "echo", "no-such-job", "--debug"),
        rpq("health", "echo", "--debug"),
        rpq("run", "echo", "{bad json", "--debug"),
        rpq("run", "echo", "{}", "--execution-timeout", "1", "--debug"),
        rpq("wait", "echo", "no-such-job", "--debug"),
    ]
    assert {r.exit_code for r in runs} == {0, 1, 2, 3}
    for result in runs:
        assert API_KEY not in result.stdout
        assert API_KEY not in result.stderr
        assert API_KEY[-8:] not in result.stdout + result.stderr


def test_the_api_key_is_not_in_a_sessions_repr(emu: Emulator) -> None:
    with session(API_KEY, emu.base_url, None, False, False) as s:
        s.endpoint("echo").health()  # the emulator requires the key: it is really in the session
        assert API_KEY not in repr(s)
        assert API_KEY not in repr(s.client)


# -- the demo ------------------------------------------------------------------------------------------


def test_demo_runs_end_to_end(rpq: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rpq demo` with its output to a pipe (not a terminal), each step checking its own exit code.

    `--fast` shortens the jobs a person would watch; the steps and commands are the same. (Other tests
    run `python -m runpod_queue.cli` as a subprocess; this one needs no process of its own.)"""
    monkeypatch.chdir(tmp_path)  # the demo finds examples/ next to the package, not in the working directory
    result = rpq("demo", "--fast", connect=False, env={"COLUMNS": "100", "RUNPOD_API_KEY": API_KEY})
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("runsync", "async job", "streaming", "a failing job", "cancel", "retry", "health"):
        assert step in out
    assert "Queues decouple the caller from the GPU" in out  # streamed tokens
    assert "ValueError: input needs a 'prompt'" in result.stderr  # the failure, parsed
    assert "CANCELLED" in out
    assert "demo finished" in out
    # The serve command it suggests names the shipped example: examples/echo.py is only a checkout's path.
    assert "\n  rpq serve echo  " in out
    assert "unexpected" not in out
    assert "Traceback" not in out + result.stderr
    assert API_KEY not in out + result.stderr
