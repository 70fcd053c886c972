"""`rpq batch`: options, exit codes, messages (the key never printed), and resuming by running it again."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_support import Recorder, keys_once, write_inputs
from typer.testing import CliRunner

from runpod_queue.cli import _batch as batch_command
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator

load_commands()
KEY = "rpq-batch-secret-4f1c9a"


@pytest.fixture(scope="module")
def keyed(shared_recorder: Recorder) -> Iterator[Emulator]:
    with Emulator(
        {"ep": shared_recorder}, api_key=KEY, workers=4, time_scale=0.001, rate_limits=False
    ) as emu:
        yield emu


def rpq(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_all_completed_exits_0_and_prints_a_summary(keyed: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 40)
    out = tmp_path / "out.jsonl"
    env = {"RUNPOD_API_KEY": KEY, "RUNPOD_ENDPOINT_BASE_URL": keyed.base_url}
    code, text = rpq("batch", str(inputs), "--endpoint", "ep", "--out", str(out), env=env)
    assert code == 0, text
    assert text.strip().splitlines() == [f"done: all 40 ok in {text.split(' in ')[1].split()[0]} → {out}"]
    assert KEY not in text and len(keys_once(out)) == 40
    assert (tmp_path / "out.jsonl.journal").exists()  # the default journal sits next to the output
    # The same command again: nothing to do, same file.
    code, text = rpq("batch", str(inputs), "--endpoint", "ep", "--out", str(out), env=env)
    assert code == 0 and len(keys_once(out)) == 40


def test_local_port_and_failures_exit_1(keyed: Emulator, tmp_path: Path) -> None:
    text = json.dumps({"n": 1}) + "\nnot json\n" + json.dumps({"fail": 1}) + "\n"
    (tmp_path / "in.jsonl").write_bytes(text.encode() + b'{"n": "\xff"}\n')  # line 4: not UTF-8
    code, text = rpq(
        "batch",
        str(tmp_path / "in.jsonl"),
        "-e",
        "ep",
        "-o",
        str(tmp_path / "out.jsonl"),
        "--local",
        str(keyed.port),
        "--api-key",
        KEY,
        "--retry-failed",
        "0",
    )
    assert code == 1, text
    assert "line 2: malformed input" in text and KEY not in text
    assert "batch summary" in text and re.search(r"2\s+invalid", text) and re.search(r"1\s+failed", text)
    assert "3 items did not complete (1 failed, 2 invalid)" in text
    statuses = {r["key"]: r["status"] for r in keys_once(tmp_path / "out.jsonl").values()}
    assert statuses == {1: "COMPLETED", 2: "INVALID", 3: "FAILED", 4: "INVALID"}


def test_usage_errors_exit_2(keyed: Emulator, tmp_path: Path) -> None:
    base = ["--base-url", keyed.base_url, "--api-key", KEY]
    code, text = rpq("batch", str(tmp_path / "missing.jsonl"), "-e", "ep", "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "no such input file" in text
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    code, text = rpq("batch", str(inputs), "-e", "ep", "-o", str(tmp_path / "o"), "--policy-ttl", "5", *base)
    assert code == 2 and "Policy.ttl must be at least 10 seconds, got 5" in text  # a bare number: seconds
    code, text = rpq(
        "batch", str(inputs), "-e", "ep", "-o", str(tmp_path / "o"), "--policy-ttl", "9000ms", *base
    )
    assert code == 2 and "got 9" in text
    code, text = rpq(
        "batch", str(inputs), "-e", "ep", "-o", str(tmp_path / "o"), "--execution-timeout", "2x", *base
    )
    assert code == 2 and "not a duration" in text
    code, text = rpq(
        "batch",
        str(inputs),
        "-e",
        "ep",
        "-o",
        str(tmp_path / "o"),
        "--base-url",
        "https://example.invalid/v2",
        env={"RUNPOD_API_KEY": ""},
    )
    assert code == 2 and "no API key" in text  # refused before any request
    (tmp_path / "o").write_text('{"key": 1}\n')
    code, text = rpq("batch", str(inputs), "-e", "ep", "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "already has results" in text


def test_api_errors_exit_3_and_leave_nothing_behind(keyed: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    code, text = rpq(
        "batch", str(inputs), "-e", "ep", "-o", str(out), "--base-url", keyed.base_url, "--api-key", "wrong"
    )
    assert code == 3 and "401" in text and "wrong" not in text
    assert "API key was refused" in text and "resume" not in text  # the same command cannot cure it
    code, text = rpq(
        "batch", str(inputs), "-e", "nope", "-o", str(out), "--base-url", keyed.base_url, "--api-key", KEY
    )
    assert code == 3 and "404" in text and KEY not in text
    assert "endpoint 'nope' not found" in text and "check --endpoint (nope) and the base URL" in text
    assert text.count("not found") + text.count("does not exist") == 1  # the missing endpoint: said once
    assert "resume" not in text
    assert not out.exists() and not (tmp_path / "out.jsonl.journal").exists()


def _refusal(case: str, keyed: Emulator, tmp_path: Path) -> tuple[list[str], int]:
    """Arguments of a batch that must be refused before any job exists, and its exit code."""
    out = tmp_path / "out.jsonl"
    base = ["-e", "ep", "--base-url", keyed.base_url, "--api-key", KEY, "--journal", str(tmp_path / "j")]
    if case == "results without their journal":
        out.write_text('{"key": 1}\n')
        return ["-o", str(out), *base], 2
    if case == "listen address taken":
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _held.append(taken)
        return ["-o", str(out), *base, "--listen", f"127.0.0.1:{taken.getsockname()[1]}"], 2
    if case == "output directory missing":
        return ["-o", str(tmp_path / "missing" / "out.jsonl"), *base], 2
    assert case == "server unreachable"
    return ["-o", str(out), "-e", "ep", "--local", str(_closed_port()), "--journal", str(tmp_path / "j")], 3


_held: list[socket.socket] = []


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening, closed: a connection there is refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "case",
    [
        "results without their journal",
        "listen address taken",
        "output directory missing",
        "server unreachable",
    ],
)
def test_a_refused_run_leaves_no_journal_behind(keyed: Emulator, tmp_path: Path, case: str) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('not json\n{"n": 1}\n')  # a malformed line is recorded before the refusal can come
    args, expected = _refusal(case, keyed, tmp_path)
    try:
        code, text = rpq("batch", str(inputs), *args)
    finally:
        for sock in _held:
            sock.close()
        _held.clear()
    assert code == expected, text
    assert not (tmp_path / "j").exists() and "resume" not in text and "Traceback" not in text
    assert "ssl:default" not in text and "Errno" not in text


def test_a_refusal_never_removes_a_journal_that_existed(keyed: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(inputs), "-e", "ep", "-o", str(out), "--base-url", keyed.base_url]
    code, text = rpq(*args, env={"RUNPOD_API_KEY": KEY})
    assert code == 0, text
    code, text = rpq(*args, env={"RUNPOD_API_KEY": "wrong"})
    assert code == 3 and (tmp_path / "out.jsonl.journal").exists() and len(keys_once(out)) == 3
    assert "the same command resumes once this is fixed" in text


def test_an_unreadable_input_is_a_usage_error(
    keyed: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path) -> int:
        raise PermissionError(13, "Permission denied", str(path))  # as root, chmod cannot make one

    monkeypatch.setattr(batch_command, "_count_lines", denied)
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    code, text = rpq(
        "batch", str(inputs), "-e", "ep", "-o", str(tmp_path / "o"), "--base-url", keyed.base_url
    )
    assert code == 2 and f"cannot read the input file {inputs}: permission denied" in text
    assert not (tmp_path / "o.journal").exists()
    code, text = rpq(
        "batch", str(tmp_path), "-e", "ep", "-o", str(tmp_path / "o"), "--base-url", keyed.base_url
    )
    assert code == 2 and "is a directory" in text


def test_durations_take_units_and_reach_the_policy(
    keyed: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 3, sleep=0.5)  # runs 500 ms: well past a 100 ms timeout
    out = tmp_path / "out.jsonl"
    env = {"RUNPOD_API_KEY": KEY}
    # RunPod durations are scaled by 0.001 in this emulator: 1 h of ttl is 3.6 s, 100 s of timeout 0.1 s.
    args = ["--base-url", keyed.base_url, "--policy-ttl", "1h", "--execution-timeout", "100s"]
    code, text = rpq("batch", str(inputs), "-e", "ep", "-o", str(out), "--retry-failed", "0", *args, env=env)
    assert code == 1, text
    assert {r["status"] for r in keys_once(out).values()} == {"TIMED_OUT"}


def test_the_resume_command_works_with_a_keyed_endpoint_without_showing_the_key(
    keyed: Emulator, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    journal = ["--journal", str(tmp_path / "j")]
    code, text = rpq(
        "batch",
        str(inputs),
        "-e",
        "ep",
        "-o",
        str(out),
        "--base-url",
        keyed.base_url,
        *journal,
        env={"RUNPOD_API_KEY": KEY},
    )
    assert code == 0, text
    # A journal with work in it, then a server that went away: the resume command is offered.
    args = ["batch", str(inputs), "-e", "ep", "-o", str(out), "--local", str(_closed_port()), *journal]
    code, text = rpq(*args, "--api-key", KEY, env={"RUNPOD_API_KEY": ""})
    assert code == 3 and KEY not in text and "resume with" in text
    # The key came on the command line: the resume takes it from the environment, and says so.
    assert "export RUNPOD_API_KEY=<your key>" in text and "--api-key" not in text.split("resume")[-1]
    code, text = rpq(*args, env={"RUNPOD_API_KEY": KEY})
    assert code == 3 and KEY not in text and "export RUNPOD_API_KEY" not in text  # already there
