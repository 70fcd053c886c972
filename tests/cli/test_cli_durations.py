"""Duration options: `500ms`, `30s`, `10m`, `2h`, `7d` or a bare number of seconds, sent as RunPod's ms.

The wire values are read from `WireRecorder`, a stand-in server that records each request as sent: the
emulator checks policy ranges but does not echo a job's policy back, so it cannot show the exact number.
The emulator then shows the same options accepted and obeyed end to end.
"""

from __future__ import annotations

import json

import pytest
from cli_support import Invoke, WireRecorder

from runpod_queue import Client

FORMS = "(500ms, 30s, 10m, 2h, 7d)"


def _on(wire: WireRecorder) -> list[str]:
    return ["--base-url", wire.base_url]


# -- what reaches the wire -----------------------------------------------------------------------------


def test_ttl_and_execution_timeout_are_sent_as_milliseconds(rpq: Invoke, wire: WireRecorder) -> None:
    result = rpq(
        "run",
        "ep",
        '{"a": 1}',
        "--ttl",
        "10m",
        "--execution-timeout",
        "2m",
        "--no-wait",
        *_on(wire),
        connect=False,
    )
    assert result.exit_code == 0, result.stderr
    assert wire.requests == [
        ("POST", "/v2/ep/run", {"input": {"a": 1}, "policy": {"executionTimeout": 120000, "ttl": 600000}})
    ]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("600", 600_000),  # a bare number is seconds
        ("600.5", 600_500),
        ("600s", 600_000),
        ("10m", 600_000),
        ("600000ms", 600_000),
        ("1.5h", 5_400_000),
        ("7d", 604_800_000),  # RunPod's longest
        (" 2H ", 7_200_000),  # spaces around and the unit's case do not matter
    ],
)
def test_every_form_of_a_duration(rpq: Invoke, wire: WireRecorder, text: str, ms: int) -> None:
    result = rpq("run", "ep", "{}", "--ttl", text, "--no-wait", *_on(wire), connect=False)
    assert result.exit_code == 0, result.stderr
    assert wire.requests[0][2]["policy"] == {"ttl": ms}


@pytest.mark.parametrize(
    ("text", "ms"), [("30s", 30_000), ("45", 45_000), ("500ms", 500), ("1d", 86_400_000)]
)
def test_status_keep_result_for_is_runpods_status_ttl(
    rpq: Invoke, wire: WireRecorder, text: str, ms: int
) -> None:
    result = rpq("status", "ep", "job-1", "--keep-result-for", text, *_on(wire), connect=False)
    assert result.exit_code == 0, result.stderr
    assert wire.requests == [("GET", f"/v2/ep/status/job-1?ttl={ms}", None)]


@pytest.mark.parametrize(
    ("extra", "wait_ms"),
    [
        (["--timeout", "2s"], 2_000),
        (["--timeout", "90"], 90_000),
        (["--timeout", "200ms"], 1_000),  # runsync holds at least a second
        ([], 300_000),  # no --timeout: until the job ends, so the longest hold RunPod allows
    ],
)
def test_run_sync_timeout_is_the_runsync_wait(
    rpq: Invoke, wire: WireRecorder, extra: list[str], wait_ms: int
) -> None:
    result = rpq("run", "ep", "{}", "--sync", *extra, "--json", *_on(wire), connect=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "COMPLETED"
    assert [(method, path) for method, path, _ in wire.requests] == [
        ("POST", f"/v2/ep/runsync?wait={wait_ms}")
    ]


# -- the emulator accepts and obeys them ---------------------------------------------------------------


def test_policy_in_units_is_accepted_by_the_emulator(rpq: Invoke) -> None:
    # The emulator refuses a ttl under 10000 ms or an executionTimeout under 5000 ms with a 400 (exit 3):
    # seconds sent as if they were ms would not get through.
    result = rpq("run", "echo", '{"p": 1}', "--ttl", "10m", "--execution-timeout", "2m", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"p": 1}


@pytest.mark.parametrize("timeout", ["50ms", "0.05"])
def test_wait_and_stream_timeouts_take_units(rpq: Invoke, client: Client, timeout: str) -> None:
    job = client.endpoint("slow").run({"seconds": 30})
    try:
        waited = rpq("wait", "slow", job.id, "--timeout", timeout)
        streamed = rpq("stream", "slow", job.id, "--timeout", timeout)
    finally:
        client.endpoint("slow").cancel(job.id)
    for result in (waited, streamed):
        assert result.exit_code == 1
        assert f"job {job.id} did not finish within 0.05 s" in result.stderr


# -- refused before anything is sent: exit 2 -----------------------------------------------------------

DURATION_OPTIONS = [
    ["run", "ep", "{}", "--ttl"],
    ["run", "ep", "{}", "--execution-timeout"],
    ["run", "ep", "{}", "--timeout"],
    ["status", "ep", "job-1", "--keep-result-for"],
    ["wait", "ep", "job-1", "--timeout"],
    ["stream", "ep", "job-1", "--timeout"],
    ["health", "ep", "--watch", "--interval"],
]


@pytest.mark.parametrize("command", DURATION_OPTIONS, ids=lambda c: f"{c[0]} {c[-1]}")
@pytest.mark.parametrize("text", ["10 minutes", "-5s", "1m30s", "abc", ""])
def test_text_that_is_not_a_duration_names_the_option_and_the_forms(
    rpq: Invoke, wire: WireRecorder, command: list[str], text: str
) -> None:
    result = rpq(*command, text, *_on(wire), connect=False)
    assert result.exit_code == 2
    message = " ".join(result.stderr.replace("│", " ").split())  # typer's error box, unwrapped
    assert f"Invalid value for '{command[-1]}': '{text}' is not a duration" in message
    assert FORMS in message
    assert wire.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "ep", "{}", "--execution-timeout", "10ms"],
            "--execution-timeout must be at least 5 seconds, got 0.01",
        ),
        (
            ["run", "ep", "{}", "--execution-timeout", "8d"],
            "--execution-timeout must be at most 604800 seconds",
        ),
        (["run", "ep", "{}", "--ttl", "9s"], "--ttl must be at least 10 seconds, got 9"),
        (
            ["health", "ep", "--watch", "--interval", "10ms"],
            "--interval must be at least 0.1 seconds, got 0.01",
        ),
    ],
)
def test_a_duration_out_of_range_names_the_option_and_the_unit(
    rpq: Invoke, wire: WireRecorder, args: list[str], message: str
) -> None:
    result = rpq(*args, *_on(wire), connect=False)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}")
    assert wire.requests == []


def test_help_shows_the_duration_forms(rpq: Invoke) -> None:
    for command in ("run", "status", "wait", "stream", "health"):
        result = rpq(command, "--help", connect=False)
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "DURATION" in text
        assert "DURATION: 500ms, 30s, 10m, 2h or 7d; a bare number is seconds." in text
