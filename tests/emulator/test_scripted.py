"""Scripted endpoints: canned answers in order or matched on the input, with delays on the emulator's
clock, from `PUT /_emulator/endpoints/{id}` or `rpq serve --config FILE` (TOML or JSON)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_support import KEY, Http
from typer.testing import CliRunner

from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator
from runpod_queue.emulator._endpoint_file import ConfigFileError, load_endpoints_file

HERE = Path(__file__).parent / "handlers"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator({}, api_key=KEY, clock="virtual", rate_limits=False) as emulator:
        yield emulator


@pytest.fixture
def http(emu: Emulator) -> Iterator[Http]:
    client = Http(emu)
    yield client
    client.close()


def _script(http: Http, endpoint: str, script: dict[str, Any], **fields: Any) -> None:
    answer = http.control(f"endpoints/{endpoint}", "PUT", json={"script": script, **fields})
    assert answer.status_code in (200, 201), answer.text


def _runsync(http: Http, endpoint: str, job_input: Any = None) -> dict[str, Any]:
    return dict(http.post(endpoint, "runsync", json={"input": job_input or {}}).json())


@pytest.mark.parametrize(
    ("exhausted", "third", "fourth"),
    [
        ("cycle", {"output": "a"}, {"output": "b"}),
        ("repeat_last", {"output": "b"}, {"output": "b"}),
        ("error", {"status": "FAILED"}, {"status": "FAILED"}),
    ],
)
def test_a_sequence_answers_in_order_then_as_its_exhausted_rule_says(
    http: Http, exhausted: str, third: dict[str, Any], fourth: dict[str, Any]
) -> None:
    _script(http, "s", {"answers": [{"output": "a"}, {"output": "b"}], "exhausted": exhausted})
    answers = [_runsync(http, "s") for _ in range(4)]
    assert [a["output"] for a in answers[:2]] == ["a", "b"]
    for got, want in ((answers[2], third), (answers[3], fourth)):
        assert {k: got.get(k) for k in want} == want
    if exhausted == "error":
        assert "used up" in answers[2]["error"]


def test_an_error_answer_fails_the_job_with_that_message(http: Http) -> None:
    _script(http, "e", {"answers": [{"error": "CUDA out of memory"}]})
    answer = _runsync(http, "e")
    assert answer["status"] == "FAILED" and answer["error"] == "CUDA out of memory"


def test_match_picks_the_first_answer_whose_match_the_input_contains(http: Http) -> None:
    _script(
        http,
        "m",
        {
            "answers": [
                {"match": {"prompt": "hi", "opts": {"lang": "fr"}}, "output": "salut"},
                {"match": {"prompt": "hi"}, "output": "hello"},
                {"output": "default"},
            ]
        },
    )
    assert _runsync(http, "m", {"prompt": "hi", "opts": {"lang": "fr", "x": 1}})["output"] == "salut"
    assert _runsync(http, "m", {"prompt": "hi"})["output"] == "hello"
    assert _runsync(http, "m", {"prompt": "bye"})["output"] == "default"


def test_match_with_no_answer_for_the_input_fails_the_job_saying_so(http: Http) -> None:
    _script(http, "m", {"answers": [{"match": {"prompt": "hi"}, "output": "hello"}]})
    answer = _runsync(http, "m", {"prompt": "bye"})
    assert answer["status"] == "FAILED" and "no scripted answer matches" in answer["error"]


def test_a_fixed_delay_is_virtual_seconds(http: Http) -> None:
    _script(http, "d", {"answers": [{"output": 1, "delay": 5}]})
    job = http.run("d")
    http.control("advance", json={"seconds": 4.9})
    assert http.status("d", job)["status"] == "IN_PROGRESS"
    http.control("advance", json={"seconds": 0.1})
    assert http.status("d", job) | {"delayTime": 0, "executionTime": 0} == {
        "id": job,
        "status": "COMPLETED",
        "output": 1,
        "delayTime": 0,
        "executionTime": 0,
        "workerId": http.status("d", job)["workerId"],
    }
    assert http.status("d", job)["executionTime"] == 5000


def test_a_distributed_delay_stays_in_its_range_and_repeats_with_its_seed(http: Http) -> None:
    script = {"answers": [{"output": 1, "delay": {"uniform": [2, 3]}}], "seed": 4}
    times = []
    for name in ("u1", "u2"):
        _script(http, name, script)
        job = http.run(name)
        http.control("advance", json={"seconds": 1.99})
        assert http.status(name, job)["status"] == "IN_PROGRESS"
        http.control("advance", json={"seconds": 1.01})
        done = http.status(name, job)
        assert done["status"] == "COMPLETED"
        times.append(done["executionTime"])
    assert times[0] == times[1] and 2000 <= times[0] <= 3000


def test_stream_chunks_arrive_with_their_delays(http: Http) -> None:
    _script(
        http,
        "st",
        {"answers": [{"stream": [{"t": "a"}, {"t": "b"}], "delay": 1, "chunk_delay": 2}]},
        return_aggregate_stream=True,
    )
    job = http.run("st")
    http.control("advance", json={"seconds": 1})
    assert http.get("st", f"stream/{job}").json()["stream"] == [{"output": {"t": "a"}}]
    http.control("advance", json={"seconds": 2})
    assert http.get("st", f"stream/{job}").json()["stream"] == [{"output": {"t": "b"}}]
    assert http.status("st", job)["output"] == [{"t": "a"}, {"t": "b"}]


def test_reset_starts_a_sequence_from_its_first_answer(http: Http) -> None:
    _script(http, "r", {"answers": [{"output": "first"}, {"output": "second"}]})
    assert _runsync(http, "r")["output"] == "first"
    http.control("reset")
    assert _runsync(http, "r")["output"] == "first"


def test_endpoints_lists_a_script_for_what_it_is(http: Http) -> None:
    _script(http, "l", {"answers": [{"output": 1}, {"output": 2}]})
    listed = http.control("endpoints/l", "GET").json()
    assert listed["handler"] == "script: 2 answer(s), sequence"


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ({"answers": []}, "field script.answers: must be a non-empty list"),
        ({"answers": [{"output": 1, "error": "x"}]}, "field script.answers[0]: give exactly one of"),
        ({"answers": [{"output": 1, "delay": -1}]}, "field script.answers[0].delay: must be a number"),
        ({"answers": [{"output": 1, "delay": {"gamma": 1}}]}, "one distribution"),
        ({"answers": [{"output": 1, "delay": {"uniform": [3, 1]}}]}, "low 3 is above high 1"),
        ({"answers": [{"output": 1}], "exhausted": "stop"}, "field script.exhausted: must be one of"),
        ({"answers": [{"output": 1, "colour": 1}]}, "field script.answers[0].colour: unknown field"),
    ],
)
def test_a_broken_script_is_a_400_naming_the_field(http: Http, script: Any, needle: str) -> None:
    answer = http.control("endpoints/bad", "PUT", json={"script": script})
    assert answer.status_code == 400 and needle in answer.json()["error"], answer.text


# -- the config file -------------------------------------------------------------------------------

GOOD_TOML = f"""
[endpoints.echo]
handler = "{HERE / "simple.py"}:shout"
workers = 2

[endpoints.llm]
workers = 1
return_aggregate_stream = true

[endpoints.llm.script]
exhausted = "repeat_last"

[[endpoints.llm.script.answers]]
stream = ["Hel", "lo"]

[[endpoints.llm.script.answers]]
error = "overloaded"

[endpoints.outside]
"""


def test_a_toml_file_defines_every_kind_of_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(GOOD_TOML)
    specs = load_endpoints_file(path)
    assert sorted(specs) == ["echo", "llm", "outside"]
    assert specs["echo"].workers == 2 and specs["outside"].handler is None
    assert specs["llm"].return_aggregate_stream


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "e.toml",
            "[endpoints.a]\nworkers = 1\n[endpoints.a.script]\n[[endpoints.a.script.answers]]\noutput = 1\n"
            "[[endpoints.a.script.answers]]\noutput = 2\ndelay = -3\n",
            ":8: endpoints.a.script.answers[1].delay: must be a number",
        ),
        ("e.toml", "[endpoints.a]\nworkers = 1\ncolour = 2\n", ":3: endpoints.a.colour: unknown field"),
        ("e.toml", "[endpoints.a\n", ":1: not valid TOML"),
        (
            "e.json",
            '{"endpoints": {\n  "a": {\n    "script": {"answers": [\n      {"output": 1},\n'
            '      {"output": 2, "delay": "soon"}\n    ]}\n  }\n}}\n',
            ":5: endpoints.a.script.answers[1].delay: must be a number",
        ),
        ("e.json", '{"endpoints": {"a": {"workers": -1}}}', ":1: endpoints.a.workers: must be an integer"),
        ("e.json", '{"endpoints": {\n', ":2: not valid JSON"),
        ("e.json", '{"endpoint": {}}', "the file holds one table, endpoints"),
    ],
)
def test_a_broken_file_is_one_line_naming_file_line_and_field(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        load_endpoints_file(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message, message


def test_rpq_serve_refuses_a_broken_config_with_exit_2_and_one_line(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text("[endpoints.a]\nworkers = -1\n")
    load_commands()
    refused = CliRunner().invoke(app, ["serve", "--config", str(path), "--port", "0"])
    assert refused.exit_code == 2
    assert f"error: {path}:2: endpoints.a.workers: must be an integer >= 0" in refused.output


def test_rpq_serve_config_serves_a_scripted_endpoint_over_http(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": {"canned": {"script": {"answers": [{"output": {"n": 7}}]}}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "serve", "--config", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert match
        with httpx.Client(verify=False) as client:
            answer = client.post(f"{match.group(1)}/canned/runsync", json={"input": {}})
        assert answer.json()["output"] == {"n": 7}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err
