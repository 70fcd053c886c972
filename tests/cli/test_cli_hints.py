"""Hints that name the next `rpq` command carry the invocation's connection options and work when pasted;
Ctrl-C names the job (or says honestly that its id is not known yet) with the commands to follow it.

A paste test takes the printed line, splits it as a shell would, and runs it against the same emulator.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
import uuid
from typing import IO

import pytest
from cli_support import API_KEY, Invoke

from runpod_queue import Client
from runpod_queue.cli._next import Connection
from runpod_queue.emulator import Emulator

KEY_ENV = {"RUNPOD_API_KEY": API_KEY}


def hint(stderr: str, label: str) -> list[str]:
    """The command printed after ``label:``, as a shell splits it (without the leading ``rpq``)."""
    for line in stderr.splitlines():
        if f"{label}: rpq " in line:
            argv = shlex.split(line.split(f"{label}: ", 1)[1])
            assert argv[0] == "rpq"
            return argv[1:]
    raise AssertionError(f"no {label!r} hint in:\n{stderr}")


def _connection(emu: Emulator, form: str) -> list[str]:
    return ["--local", str(emu.port)] if form == "local" else ["--base-url", emu.base_url]


@pytest.mark.parametrize("form", ["local", "base-url"])
def test_the_no_wait_hint_carries_the_connection_and_works_when_pasted(
    rpq: Invoke, emu: Emulator, form: str
) -> None:
    options = _connection(emu, form)
    queued = rpq("run", "echo", '{"prompt": "pasted"}', "--no-wait", *options, connect=False, env=KEY_ENV)
    assert queued.exit_code == 0, queued.stderr
    job_id = queued.stdout.strip()
    follow = hint(queued.stderr, "follow it with")
    assert follow == ["wait", "echo", job_id, *options]
    assert hint(queued.stderr, "cancel it with") == ["cancel", "echo", job_id, *options]
    waited = rpq(*follow, connect=False, env=KEY_ENV)
    assert waited.exit_code == 0, waited.stderr
    assert "pasted" in waited.stdout


def test_the_retry_hint_works_when_pasted(rpq: Invoke, client: Client, emu: Emulator) -> None:
    job = client.endpoint("flaky").run({"n": 3})
    assert client.endpoint("flaky").wait(job.id, timeout=10).is_failed
    options = ["--local", str(emu.port)]
    requeued = rpq("retry", "flaky", job.id, *options, connect=False, env=KEY_ENV)
    assert requeued.exit_code == 0, requeued.stderr
    assert hint(requeued.stderr, "follow it with") == ["wait", "flaky", job.id, *options]
    waited = rpq(*hint(requeued.stderr, "follow it with"), connect=False, env=KEY_ENV)
    assert waited.exit_code == 0, waited.stderr


def test_a_wait_timeout_says_how_to_wait_again_or_cancel(rpq: Invoke, client: Client, emu: Emulator) -> None:
    job = client.endpoint("slow").run({"seconds": 30})
    options = ["--local", str(emu.port)]
    result = rpq("wait", "slow", job.id, "--timeout", "50ms", *options, connect=False, env=KEY_ENV)
    assert result.exit_code == 1
    assert hint(result.stderr, "follow it with") == ["wait", "slow", job.id, *options]
    cancelled = rpq(*hint(result.stderr, "cancel it with"), connect=False, env=KEY_ENV)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert client.endpoint("slow").status(job.id).is_cancelled


def test_a_key_given_with_api_key_is_never_in_a_hint_which_says_to_export_it(
    rpq: Invoke, emu: Emulator
) -> None:
    queued = rpq(
        "run", "echo", '{"prompt": "k"}', "--no-wait", "--local", str(emu.port), "--api-key", API_KEY
    )
    assert queued.exit_code == 0, queued.stderr
    assert API_KEY not in queued.stderr + queued.stdout
    assert "export RUNPOD_API_KEY=<your key>" in queued.stderr
    # As told: with the key exported, the pasted command works.
    assert rpq(*hint(queued.stderr, "follow it with"), connect=False, env=KEY_ENV).exit_code == 0
    # The key already in the environment: nothing to export.
    again = rpq("run", "echo", "{}", "--no-wait", "--local", str(emu.port), "--api-key", API_KEY, env=KEY_ENV)
    assert again.exit_code == 0 and "export" not in again.stderr


@pytest.mark.parametrize(
    ("given", "options"),
    [
        ((None, None, None), []),
        ((None, None, 8000), ["--local", "8000"]),  # a bare --local is port 8000: said explicitly
        ((None, None, 9001), ["--local", "9001"]),
        ((None, "https://rp.example/v2", 9001), ["--local", "9001"]),  # --local overrides --base-url
        ((None, "https://rp.example/v2", None), ["--base-url", "https://rp.example/v2"]),
        (("secret", "https://rp.example/v2", None), ["--base-url", "https://rp.example/v2"]),
    ],
)
def test_a_hint_repeats_the_connection_options_given_and_never_the_key(
    given: tuple[str | None, str | None, int | None], options: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "https://from-env.example/v2")  # the shell keeps it
    connection = Connection.given(*given)
    assert connection.options() == options
    text = connection.commands(("follow it with", ["wait", "ep", "job 1"]))
    assert text.endswith(shlex.join(["rpq", "wait", "ep", "job 1", *options]))
    assert "secret" not in text and ("export RUNPOD_API_KEY" in text) == (given[0] is not None)


# -- Ctrl-C -------------------------------------------------------------------------------------------


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and a child inherits
    # that: give the command the disposition a terminal's Ctrl-C meets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _rpq_process(emu: Emulator, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", *args, "--local", str(emu.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "", **KEY_ENV},
        preexec_fn=_default_sigint,
    )


def _interrupt(process: subprocess.Popen[bytes]) -> str:
    """Ctrl-C, then the command's stderr; it must exit 130 without a traceback."""
    try:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    text = err.decode()
    assert process.returncode == 130, text
    assert "Traceback" not in text
    return text


def _first_byte(stream: IO[bytes] | None) -> bytes:
    assert stream is not None
    return stream.read(1)


def test_ctrl_c_while_run_waits_names_the_job_and_both_commands(
    rpq: Invoke, emu: Emulator, client: Client
) -> None:
    process = _rpq_process(emu, "run", "slow", '{"seconds": 30}')
    assert process.stderr is not None
    line = process.stderr.readline().decode()  # the first progress line: the job is queued, its id known
    job_id = line.split()[-1]
    err = _interrupt(process)
    assert f"job {job_id} keeps running on endpoint slow" in err
    local = ["--local", str(emu.port)]
    assert hint(err, "follow it with") == ["wait", "slow", job_id, *local]
    assert "stream" not in err  # not a generator: nothing to stream
    cancelled = rpq(*hint(err, "cancel it with"), connect=False, env=KEY_ENV)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert client.endpoint("slow").status(job_id).is_cancelled


def test_ctrl_c_while_run_streams_also_offers_the_rest_of_the_stream(
    rpq: Invoke, emu: Emulator, client: Client
) -> None:
    process = _rpq_process(
        emu, "run", "tokens", '{"prompt": "why queues?", "max_tokens": 500, "delay": 0.05}'
    )
    assert _first_byte(process.stdout)  # a chunk is out: the command streams
    err = _interrupt(process)
    job_id = hint(err, "follow it with")[2]
    assert hint(err, "or print its remaining chunks") == [
        "stream",
        "tokens",
        job_id,
        "--local",
        str(emu.port),
    ]
    assert rpq(*hint(err, "cancel it with"), connect=False, env=KEY_ENV).exit_code == 0
    assert client.endpoint("tokens").status(job_id).is_cancelled


def test_ctrl_c_during_runsync_says_the_job_may_run_and_its_id_is_unknown(
    rpq: Invoke, emu: Emulator, client: Client
) -> None:
    marker = uuid.uuid4().hex
    payload = f'{{"seconds": 30, "marker": "{marker}", "text": "[/] is not markup"}}'
    process = _rpq_process(emu, "run", "slow", payload, "--sync")
    try:
        deadline = time.monotonic() + 15
        while not (mine := [j for j in emu.jobs("slow") if j.input.get("marker") == marker]):
            assert time.monotonic() < deadline, "the /runsync request never arrived"
            time.sleep(0.02)
        err = _interrupt(process)  # /runsync is on the wire: the emulator holds it while the job runs
    finally:
        process.kill()
    assert "interrupted before /runsync answered: the job may still run on endpoint slow" in err
    assert "its id is not known" in err and mine[0].id not in err
    resubmit = hint(err, "run it with")
    assert resubmit == ["run", "slow", payload, "--local", str(emu.port)]  # INPUT as given: no --sync
    client.endpoint("slow").cancel(mine[0].id)
