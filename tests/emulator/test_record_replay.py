"""Record and replay: `rpq record` proxies a base URL and writes a cassette; `EndpointSpec(replay=…)` and
`rpq serve ID=cassette.jsonl` answer from it with the recorded timings on the emulator's clock."""

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
from emulator_support import KEY

from runpod_queue.emulator import Cassette, Emulator, EndpointSpec, Recording
from runpod_queue.emulator._record import RecordingProxy
from runpod_queue.errors import ConfigurationError

SCRIPT = {
    "order": "match",
    "answers": [
        {"match": {"prompt": "a"}, "output": {"text": "alpha"}, "delay": 2},
        {"match": {"prompt": "b"}, "output": {"text": "beta"}, "delay": 3},
        {"match": {"prompt": "bad"}, "error": "CUDA out of memory", "delay": 1},
        {"match": {"prompt": "s"}, "stream": [{"t": 1}, {"t": 2}], "delay": 1, "chunk_delay": 0.5},
    ],
}
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def source() -> Iterator[Emulator]:
    """The emulator recorded from: one worker, so the second job waits in its queue."""
    with Emulator({}, api_key=KEY, clock="virtual", rate_limits=False, workers=1) as emulator:
        put = httpx.put(
            f"{emulator.root_url}/_emulator/endpoints/llm", json={"script": SCRIPT}, headers=HEADERS
        )
        assert put.status_code == 201, put.text
        yield emulator


def _record_through(base: str, source: Emulator) -> dict[str, dict[str, Any]]:
    """Two jobs (the second queued behind the first), a failing one and a streamed one, through `base`;
    returns each input's final /status as the source answered it."""
    with httpx.Client(base_url=base, headers=HEADERS) as client:
        ids = {
            name: client.post("/llm/run", json={"input": {"prompt": name}}).json()["id"]
            for name in ("a", "b", "bad", "s")
        }
        source.advance(20)  # a runs 0-2, b 2-5, bad 5-6, s 6-7.5: each waited for the one worker
        chunks = client.get(f"/llm/stream/{ids['s']}").json()
        assert [c["output"] for c in chunks["stream"]] == [{"t": 1}, {"t": 2}]
        return {name: client.get(f"/llm/status/{job_id}").json() for name, job_id in ids.items()}


def test_a_cassette_recorded_by_rpq_record_replays_with_the_outputs_and_recorded_delays(
    source: Emulator, tmp_path: Path
) -> None:
    cassette = tmp_path / "llm.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "record", "--to", str(cassette),
         "--base-url", source.base_url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"at (http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert match, proc.stderr.read() if proc.stderr else ""
        recorded = _record_through(match.group(1), source)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert recorded["b"]["delayTime"] == 2000 and recorded["b"]["executionTime"] == 3000

    text = cassette.read_text()
    assert KEY not in text  # never the key
    loaded = Cassette.load(cassette)
    assert loaded.source == source.base_url.split("//")[1].split("/")[0]
    assert sorted(r.input["prompt"] for r in loaded.recordings) == ["a", "b", "bad", "s"]

    seen_by_source = len(source.requests)
    with (
        Emulator(
            {"llm": EndpointSpec(replay=cassette)}, api_key=KEY, clock="virtual", rate_limits=False, workers=4
        ) as replay,
        httpx.Client(base_url=replay.base_url, headers=HEADERS) as client,
    ):
        ids = {
            name: client.post("/llm/run", json={"input": {"prompt": name}}).json()["id"]
            for name in ("a", "b", "bad", "s")
        }
        # b waited 2 s in the source's queue: it does here too, then runs its 3 s.
        replay.advance(1.9)
        assert client.get(f"/llm/status/{ids['b']}").json()["status"] == "IN_QUEUE"
        replay.advance(0.2)
        assert client.get(f"/llm/status/{ids['b']}").json()["status"] == "IN_PROGRESS"
        replay.advance(30)
        replayed = {name: client.get(f"/llm/status/{job_id}").json() for name, job_id in ids.items()}
        streamed = client.get(f"/llm/stream/{ids['s']}").json()
    for name in ("a", "b", "bad", "s"):
        want, got = recorded[name], replayed[name]
        for key in ("status", "output", "error", "delayTime", "executionTime"):
            assert got.get(key) == want.get(key), (name, key)
    assert replayed["bad"]["error"] == "CUDA out of memory"
    assert [c["output"] for c in streamed["stream"]] == [{"t": 1}, {"t": 2}]
    assert len(source.requests) == seen_by_source  # replay never contacted the recorded base URL


def _cassette(tmp_path: Path, lines: list[dict[str, Any]], **header: Any) -> Path:
    path = tmp_path / "c.jsonl"
    head = {"format": "rpq-cassette", "version": 1, "source": "example.invalid", **header}
    path.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n")
    return path


def _line(prompt: Any, output: Any, **extra: Any) -> dict[str, Any]:
    return {"endpoint": "e", "input": {"prompt": prompt, "n": 1}, "status": "COMPLETED", "output": output,
            "delayTime": 0, "executionTime": 1000, **extra}  # fmt: skip


def _run_all(emulator: Emulator, inputs: list[Any]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=emulator.base_url, headers=HEADERS) as client:
        ids = [client.post("/e/run", json={"input": i}).json()["id"] for i in inputs]
        emulator.advance(60)
        return [client.get(f"/e/status/{i}").json() for i in ids]


def test_an_input_recorded_several_times_replays_in_order_then_cycles(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [_line("x", 1), _line("x", 2), _line("y", 9)])
    with Emulator({"e": EndpointSpec(replay=path)}, api_key=KEY, clock="virtual", workers=8) as emu:
        answers = _run_all(emu, [{"n": 1, "prompt": "x"}] * 5)  # key order does not matter
    assert [a["output"] for a in answers] == [1, 2, 1, 2, 1]


@pytest.mark.parametrize(
    ("on_miss", "want"),
    [("error", {"status": "FAILED"}), ("nearest", {"status": "COMPLETED", "output": "near"})],
)
def test_an_unknown_input_answers_as_the_cassettes_rule_says(
    tmp_path: Path, on_miss: str, want: dict[str, Any]
) -> None:
    lines = [_line("far", "far"), {**_line("near", "near"), "input": {"prompt": "other", "n": 2, "k": 1}}]
    path = _cassette(tmp_path, lines, on_miss=on_miss)
    with Emulator({"e": EndpointSpec(replay=path)}, api_key=KEY, clock="virtual", workers=2) as emu:
        (answer,) = _run_all(emu, [{"prompt": "unknown", "n": 2, "k": 1}])
    assert {k: answer.get(k) for k in want} == want
    if on_miss == "error":
        assert "no recording in" in answer["error"] and str(path) in answer["error"]


def test_a_handler_given_with_replay_runs_the_inputs_the_cassette_lacks(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [_line("x", "recorded")])

    def fallback(job: dict[str, Any]) -> Any:
        return {"live": job["input"]["prompt"]}

    spec = EndpointSpec(replay=path, handler=fallback)
    with Emulator({"e": spec}, api_key=KEY, clock="virtual", workers=2) as emu:
        answers = _run_all(emu, [{"prompt": "x", "n": 1}, {"prompt": "new", "n": 1}])
    assert [a["output"] for a in answers] == ["recorded", {"live": "new"}]


def test_on_miss_handler_without_a_handler_is_refused(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [_line("x", 1)], on_miss="handler")
    with pytest.raises(ConfigurationError, match="no handler was given"):
        EndpointSpec(replay=path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"format": "rpq-cassette", "version": 2}'], r"c\.jsonl:1: version: written by a newer"),
        (['{"format": "har"}'], r"c\.jsonl:1: format:"),
        (['{"format": "rpq-cassette", "version": 1}', "{not json"], r"c\.jsonl:2: not valid JSON"),
        (
            ['{"format": "rpq-cassette", "version": 1}', '{"endpoint": "e", "input": 1, "delayTime": -1}'],
            r"c\.jsonl:2: delayTime: must be a number >= 0",
        ),
        (
            [
                '{"format": "rpq-cassette", "version": 1}',
                "",
                '{"endpoint": "e", "input": 1, "status": "DONE"}',
            ],
            r"c\.jsonl:3: status: must be one of",
        ),
        (
            ['{"format": "rpq-cassette", "version": 1}', '{"endpoint": "e", "input": 1, "status": "FAILED"}'],
            r"c\.jsonl:2: error: missing",
        ),
    ],
)
def test_a_broken_cassette_is_one_line_naming_file_line_and_field(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigurationError, match=message) as caught:
        Cassette.load(path)
    assert "\n" not in str(caught.value)


def test_a_cassette_of_several_endpoints_needs_a_recorded_id(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [_line("x", 1), {**_line("x", 2), "endpoint": "f"}])
    with pytest.raises(ConfigurationError, match="holds e, f"):
        Emulator({"g": EndpointSpec(replay=path)})


def test_rpq_serve_replays_a_cassette_given_as_id_equals_file(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [_line("x", {"from": "cassette"})])
    proc = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "serve", f"renamed={path}", str(path), "--port", "0",
         "--clock", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert match
        for endpoint in ("renamed", "e"):  # ID=file, and a bare file under its recorded id
            answer = httpx.post(
                f"{match.group(1)}/{endpoint}/runsync", json={"input": {"prompt": "x", "n": 1}}
            )
            assert answer.json()["output"] == {"from": "cassette"}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err


def test_record_refuses_to_overwrite_a_cassette_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("precious\n")
    with pytest.raises(ConfigurationError, match="--append"):
        RecordingProxy("http://127.0.0.1:9/v2", path)
    assert path.read_text() == "precious\n"


def test_recording_round_trips_through_its_line() -> None:
    r = Recording("e", {"p": 1}, output=[1], delay=1.5, execution=2.0, stream=((1.6, 1),), job_id="j")
    line = r.to_json()
    assert line["delayTime"] == 1500 and line["stream"] == [[1.6, 1]]


def test_a_job_recorded_without_an_end_is_not_replayed_and_the_miss_says_so(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [{**_line("x", None), "status": "IN_QUEUE"}])
    with Emulator({"e": EndpointSpec(replay=path)}, api_key=KEY, clock="virtual") as emu:
        (answer,) = _run_all(emu, [{"prompt": "x", "n": 1}])
    assert answer["status"] == "FAILED" and "only as IN_QUEUE" in answer["error"]


def test_the_proxy_writes_neither_the_key_nor_s3_credentials_nor_the_webhook(
    source: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "c.jsonl"
    proxy = RecordingProxy(source.base_url, path).start()
    try:
        body = {
            "input": {"prompt": "a"},
            "s3Config": {"accessId": "AKIA-ID-1", "accessSecret": "S3-SECRET-2", "bucketName": "b",
                         "endpointUrl": "http://127.0.0.1:9"},
            "webhook": "http://127.0.0.1:9/hook?token=HOOK-TOKEN-3",
        }  # fmt: skip
        with httpx.Client(base_url=proxy.base_url, headers=HEADERS) as client:
            job_id = client.post("/llm/run", json=body).json()["id"]
            source.advance(5)
            assert client.get(f"/llm/status/{job_id}").json()["status"] == "COMPLETED"
            assert client.get("/llm/health").status_code == 200  # forwarded, not recorded
    finally:
        proxy.stop()
    text = path.read_text()
    for secret in (KEY, "AKIA-ID-1", "S3-SECRET-2", "HOOK-TOKEN-3"):
        assert secret not in text
    (recording,) = Cassette.load(path).recordings
    assert recording.output == {"text": "alpha"} and recording.execution == 2


def test_a_config_file_replays_a_cassette_and_names_a_bad_replay_field(tmp_path: Path) -> None:
    from runpod_queue.emulator._endpoint_file import ConfigFileError, load_endpoints_file

    _cassette(tmp_path, [_line("x", "recorded")])
    good = tmp_path / "e.toml"
    good.write_text('[endpoints.e]\nreplay = "c.jsonl"\non_miss = "nearest"\n')
    specs = load_endpoints_file(good)
    with Emulator(specs, api_key=KEY, clock="virtual") as emu:
        (answer,) = _run_all(emu, [{"prompt": "unknown"}])
    assert answer["output"] == "recorded"  # nearest
    bad = tmp_path / "b.toml"
    bad.write_text('[endpoints.e]\nworkers = 1\nreplay = "missing.jsonl"\n')
    with pytest.raises(
        ConfigFileError, match=r"b\.toml:3: endpoints\.e\.replay: .*missing\.jsonl: cannot read"
    ):
        load_endpoints_file(bad)


def test_a_job_cancelled_while_held_in_the_queue_never_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = _cassette(tmp_path, [{**_line("x", "late"), "delayTime": 5000}])
    spec = EndpointSpec(replay=path)
    with (
        Emulator({"e": spec}, api_key=KEY, clock="virtual") as emu,
        httpx.Client(base_url=emu.base_url, headers=HEADERS) as client,
    ):
        job_id = client.post("/e/run", json={"input": {"prompt": "x", "n": 1}}).json()["id"]
        assert client.get("/e/health").json()["jobs"]["inQueue"] == 1
        assert client.post(f"/e/cancel/{job_id}").json()["status"] == "CANCELLED"
        emu.advance(10)
        assert client.get(f"/e/status/{job_id}").json()["status"] == "CANCELLED"
        assert client.get("/e/health").json()["jobs"] == {
            "completed": 0,
            "failed": 0,
            "inProgress": 0,
            "inQueue": 0,
            "retried": 0,
        }
        purged = client.post("/e/run", json={"input": {"prompt": "x", "n": 1}}).json()["id"]
        assert client.post("/e/purge-queue").json()["removed"] == 1  # a held job is queued: purged too
        emu.advance(10)
        assert client.get(f"/e/status/{purged}").status_code == 404
        emu.advance(1800)  # the cancelled job's retention ends
    assert spec.handler._picks == {}  # type: ignore[union-attr]


def test_rpq_record_refuses_an_existing_cassette_and_contradicting_options_with_exit_2(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from runpod_queue.cli._app import app, load_commands

    load_commands()
    path = tmp_path / "c.jsonl"
    path.write_text("precious\n")
    both = CliRunner().invoke(app, ["record", "--to", str(path), "--append", "--overwrite", "--port", "0"])
    assert both.exit_code == 2 and "give one" in both.output
    kept = CliRunner().invoke(app, ["record", "--to", str(path), "--port", "0"])
    assert kept.exit_code == 2 and "--overwrite to replace it" in kept.output
    broken = CliRunner().invoke(app, ["record", "--to", str(path), "--append", "--port", "0"])
    assert broken.exit_code == 2 and f"{path}:1: not valid JSON" in broken.output
    assert path.read_text() == "precious\n"
