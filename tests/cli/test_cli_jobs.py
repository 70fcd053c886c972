"""Every endpoint command against a live emulator, in both output modes, with its exit codes.

Human mode: results on stdout, progress and verdicts on stderr. `--json`: stdout is exactly RunPod's
JSON. Exit codes: 0 completed, 1 failed / timed out / cancelled, 2 usage, 3 API or connection.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_support import API_KEY, Invoke, json_lines, until_running

from runpod_queue import Client, JobStatus
from runpod_queue.emulator import Emulator

# -- run ---------------------------------------------------------------------------------------------


def test_run_waits_and_prints_output_on_stdout_progress_on_stderr(rpq: Invoke) -> None:
    result = rpq("run", "echo", '{"prompt": "hi", "n": [1, 2]}')
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"prompt": "hi", "n": [1, 2]}
    assert "COMPLETED" in result.stderr
    assert "COMPLETED" not in result.stdout


def test_input_the_api_refuses_is_exit_3_with_the_servers_reason(rpq: Invoke) -> None:
    result = rpq("run", "echo", "{}", "--webhook", "ftp://example.com/hook")
    assert result.exit_code == 3
    assert "400" in result.stderr
    assert "webhook" in result.stderr


def test_run_json_prints_exactly_the_status_answer(rpq: Invoke, client: Client) -> None:
    result = rpq("run", "echo", '{"a": 1}', "--json")
    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["status"] == "COMPLETED"
    assert answer["output"] == {"a": 1}
    assert set(answer) <= {"id", "status", "delayTime", "executionTime", "output", "workerId", "retries"}
    # The same document /status serves for that job.
    assert client.endpoint("echo").status(answer["id"]).to_dict() == answer


def test_run_json_of_a_generator_carries_its_chunks(rpq: Invoke, client: Client) -> None:
    # Without return_aggregate_stream RunPod's /status says "output": [], and /stream handed the chunks
    # to rpq: they become the output, as return_aggregate_stream would make them.
    result = rpq("run", "tokens", '{"max_tokens": 3, "delay": 0}', "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["output"] == ["Queues", " decouple", " the"]
    status = client.endpoint("tokens").status(answer["id"]).to_dict()
    assert status["output"] == []
    assert {**status, "output": answer["output"]} == answer  # otherwise the same /status document


def test_run_sync_uses_runsync(rpq: Invoke) -> None:
    result = rpq("run", "echo", '{"s": true}', "--sync", "--json")
    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["id"].startswith("sync-")  # only /runsync makes such ids
    assert answer["output"] == {"s": True}


def test_run_no_wait_prints_the_id_and_wait_picks_it_up(rpq: Invoke) -> None:
    queued = rpq("run", "slow", '{"seconds": 0.05}', "--no-wait")
    assert queued.exit_code == 0
    job_id = queued.stdout.strip()
    assert job_id and "\n" not in job_id
    assert f"rpq wait slow {job_id}" in queued.stderr
    waited = rpq("wait", "slow", job_id)
    assert waited.exit_code == 0
    assert "slept" in json.loads(waited.stdout)


def test_run_no_wait_json_is_the_run_answer(rpq: Invoke) -> None:
    result = rpq("run", "slow", '{"seconds": 0.01}', "--no-wait", "--json")
    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["status"] == "IN_QUEUE"
    assert set(answer) == {"id", "status"}


def test_run_reads_input_from_stdin(rpq: Invoke) -> None:
    result = rpq("run", "echo", "-", "--json", input='{"from": "stdin"}\n')
    assert result.exit_code == 0
    assert json.loads(result.stdout)["output"] == {"from": "stdin"}


def test_run_reads_input_from_a_file(rpq: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('{"from": "file"}')
    result = rpq("run", "echo", f"@{path}", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["output"] == {"from": "file"}


def test_a_whole_request_body_as_input_is_warned_about(rpq: Invoke, tmp_path: Path) -> None:
    # RunPod's docs show the body {"input": {...}}; pasted into INPUT it reaches the handler wrapped twice.
    path = tmp_path / "request.json"
    path.write_text('{"input": {"prompt": "hi"}}')
    result = rpq("run", "echo", f"@{path}", "--json")
    assert result.exit_code == 0  # a handler may mean it: the job runs, as asked
    assert json.loads(result.stdout)["output"] == {"input": {"prompt": "hi"}}
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning == [
        f'warning: {path} is a whole request body ({{"input": ...}}), but INPUT is the input itself (rpq '
        'sends {"input": INPUT}): the handler gets job["input"]["input"]; give the inner object'
    ]
    inline = rpq("run", "echo", '{"input": 1}', "--no-wait")
    assert inline.stderr.startswith("warning: INPUT is a whole request body")
    # Another key next to "input" is an input of its own: no warning.
    assert "warning" not in rpq("run", "echo", '{"input": 1, "mode": "x"}', "--no-wait").stderr


def test_failed_job_exits_1_with_its_error_parsed(rpq: Invoke) -> None:
    result = rpq("run", "fail", '{"text": "no prompt"}')
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "FAILED" in result.stderr
    # RunPod's JSON error string, shown as "type: message" rather than raw JSON or a traceback.
    assert "ValueError: input needs a 'prompt'" in result.stderr
    assert "error_traceback" not in result.stderr
    assert "Traceback" not in result.stderr


def test_failing_generator_reads_like_any_failed_job(rpq: Invoke) -> None:
    result = rpq("run", "broken_stream", '{"at": 1}')
    assert result.exit_code == 1
    assert result.stdout == "partial \n"  # the chunk it yielded before failing
    # One line, not the worker's "handler: … traceback: …" with the emulator's own frames.
    assert "  ValueError: stream broke at 1\n" in result.stderr
    assert "traceback" not in result.stderr.lower()


def test_failed_job_json_keeps_the_raw_error(rpq: Invoke) -> None:
    result = rpq("run", "fail", '{"text": "no prompt"}', "--json")
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["status"] == "FAILED"
    assert json.loads(answer["error"])["error_message"].startswith("input needs a 'prompt'")


def test_handler_returning_an_error_dict_fails_with_that_message(rpq: Invoke) -> None:
    result = rpq("run", "fail", '{"prompt": 42}')
    assert result.exit_code == 1
    assert "'prompt' must be a string" in result.stderr


def test_policy_options_reach_the_job(rpq: Invoke, emu: Emulator) -> None:
    # executionTimeout 5 s (0.5 s at this time scale) against a 30 s job: it must end TIMED_OUT.
    result = rpq(
        "run",
        "slow",
        '{"seconds": 30}',
        "--execution-timeout",
        "5s",
        "--ttl",
        "1m",
        "--low-priority",
        "--webhook",
        "http://127.0.0.1:9/hook",
        "--json",
    )
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["status"] == "TIMED_OUT"
    deadline = time.monotonic() + 5  # delivery is asynchronous: wait for the first attempt
    while not any(a.job_id == answer["id"] for a in emu.webhook_attempts) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [a.url for a in emu.webhook_attempts if a.job_id == answer["id"]][:1] == [
        "http://127.0.0.1:9/hook"
    ]


def test_wait_timeout_exits_1_and_names_the_job(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("slow").run({"seconds": 30})
    result = rpq("wait", "slow", job.id, "--timeout", "50ms")
    assert result.exit_code == 1
    assert job.id in result.stderr
    assert "did not finish within 0.05 s" in result.stderr
    client.endpoint("slow").cancel(job.id)


# -- status, stream, cancel, retry, purge, health ------------------------------------------------------


def test_status_human_and_json(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("echo").run_sync({"x": 1})
    human = rpq("status", "echo", job.id)
    assert human.exit_code == 0
    assert job.id in human.stdout
    assert "COMPLETED" in human.stdout
    as_json = rpq("status", "echo", job.id, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == client.endpoint("echo").status(job.id).to_dict()


def test_status_of_a_failed_job_exits_1(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("fail").run_sync({"nothing": True})
    result = rpq("status", "fail", job.id)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert "ValueError" in result.stdout


def test_status_of_a_pending_job_exits_0(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("idle").run({"never": "runs"})
    result = rpq("status", "idle", job.id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "IN_QUEUE"


def test_unknown_job_is_an_api_error_exit_3(rpq: Invoke) -> None:
    result = rpq("status", "echo", "no-such-job")
    assert result.exit_code == 3
    assert "404" in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_stream_prints_tokens_as_text(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("tokens").run({"max_tokens": 6, "delay": 0.01})
    result = rpq("stream", "tokens", job.id)
    assert result.exit_code == 0
    assert result.stdout == "Queues decouple the caller from the\n"
    assert "COMPLETED" in result.stderr


def test_run_of_a_generator_job_prints_its_tokens_not_an_empty_list(rpq: Invoke) -> None:
    result = rpq("run", "tokens", '{"max_tokens": 6, "delay": 0.01}')
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Queues decouple the caller from the\n"  # before: "[]"
    assert "COMPLETED" in result.stderr


def test_stream_of_a_job_that_streams_nothing_prints_its_output(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("echo").run({"prompt": "hi"})
    result = rpq("stream", "echo", job.id)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"prompt": "hi"}


def test_a_second_stream_of_a_job_says_its_chunks_were_handed_out(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("tokens").run({"max_tokens": 3, "delay": 0.01})
    assert rpq("stream", "tokens", job.id).stdout == "Queues decouple the\n"
    again = rpq("stream", "tokens", job.id)
    assert again.exit_code == 0
    assert again.stdout == ""
    assert "streamed them to an earlier reader" in again.stderr


def test_stream_json_prints_one_chunk_object_per_line(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("tokens").run({"max_tokens": 4, "delay": 0.01})
    result = rpq("stream", "tokens", job.id, "--json")
    assert result.exit_code == 0
    assert json_lines(result.stdout) == [{"output": t} for t in ["Queues", " decouple", " the", " caller"]]


def test_stream_of_a_cancelled_job_ends_with_exit_1(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("tokens").run({"max_tokens": 40, "delay": 0.5})
    until_running(client, "tokens", job.id)
    client.endpoint("tokens").cancel(job.id)
    result = rpq("stream", "tokens", job.id)
    assert result.exit_code == 1
    assert "CANCELLED" in result.stderr


def test_cancel_a_running_job(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("slow").run({"seconds": 30})
    assert until_running(client, "slow", job.id).status is JobStatus.IN_PROGRESS
    result = rpq("cancel", "slow", job.id)
    assert result.exit_code == 0
    assert "CANCELLED" in result.stdout
    assert client.endpoint("slow").status(job.id).is_cancelled


def test_cancel_json_and_cancelling_a_finished_job_is_exit_3(rpq: Invoke, client: Client) -> None:
    queued = client.endpoint("idle").run({})
    result = rpq("cancel", "idle", queued.id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"id": queued.id, "status": "CANCELLED"}
    done = client.endpoint("echo").run_sync({})
    refused = rpq("cancel", "echo", done.id)
    assert refused.exit_code == 3
    assert "400" in refused.stderr


def test_retry_requeues_a_failed_job_under_the_same_id(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("flaky").run({"n": 1})
    failed = rpq("wait", "flaky", job.id)
    assert failed.exit_code == 1
    assert "CUDA out of memory" in failed.stderr
    retried = rpq("retry", "flaky", job.id, "--json")
    assert retried.exit_code == 0
    assert json.loads(retried.stdout) == {"id": job.id, "status": "IN_QUEUE"}
    done = rpq("wait", "flaky", job.id, "--json")
    assert done.exit_code == 0
    assert json.loads(done.stdout)["output"] == {"ok": True, "input": {"n": 1}}


def test_retry_of_a_completed_job_is_exit_3(rpq: Invoke, client: Client) -> None:
    done = client.endpoint("echo").run_sync({})
    result = rpq("retry", "echo", done.id)
    assert result.exit_code == 3
    assert "400" in result.stderr


def test_purge_removes_queued_jobs(rpq: Invoke, client: Client) -> None:
    for _ in range(3):
        client.endpoint("idle").run({})
    human = rpq("purge", "idle")
    assert human.exit_code == 0
    removed = re.fullmatch(r"removed (\d+) queued jobs\n", human.stdout)
    assert removed and int(removed.group(1)) >= 3  # other tests may have left jobs on `idle` too
    client.endpoint("idle").run({})
    as_json = rpq("purge", "idle", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {"removed": 1, "status": "completed"}


def test_health_table_and_json(rpq: Invoke, client: Client) -> None:
    client.endpoint("echo").run_sync({})
    table = rpq("health", "echo")
    assert table.exit_code == 0
    for label in ("completed", "in queue", "idle", "running"):
        assert label in table.stdout
    as_json = rpq("health", "echo", "--json")
    assert as_json.exit_code == 0
    answer = json.loads(as_json.stdout)
    assert set(answer) == {"jobs", "workers"}
    assert answer["jobs"]["completed"] >= 1
    assert answer["workers"]["idle"] + answer["workers"]["running"] == 2


def test_health_watch_refreshes(rpq: Invoke) -> None:
    # --interval takes a duration with a unit or a bare number of seconds.
    as_json = rpq("health", "echo", "--watch", "--interval", "100ms", "--count", "2", "--json")
    assert as_json.exit_code == 0
    assert len(json_lines(as_json.stdout)) == 2
    tables = rpq("health", "echo", "--watch", "--interval", "0.1", "--count", "2")
    assert tables.exit_code == 0
    assert tables.stdout.count("endpoint echo") == 2


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_waiting_exits_130_and_names_the_job(emu: Emulator, client: Client) -> None:
    job = client.endpoint("slow").run({"seconds": 30})
    until_running(client, "slow", job.id)
    process = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "wait", "slow", job.id, "--base-url", emu.base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "", "RUNPOD_API_KEY": API_KEY},
        # A shell without job control starts background commands with SIGINT ignored, and a child
        # inherits that: give the command the disposition a terminal's Ctrl-C meets.
        preexec_fn=_default_sigint,
    )
    try:
        assert process.stderr is not None
        # The first progress line means the command is inside its wait.
        assert "IN_PROGRESS" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 130
    assert f"job {job.id} keeps running" in err
    assert "Traceback" not in err
    assert client.endpoint("slow").status(job.id).is_in_progress
    client.endpoint("slow").cancel(job.id)


def test_retry_human_output_names_the_job_and_how_to_follow_it(rpq: Invoke, client: Client) -> None:
    job = client.endpoint("flaky").run({"n": 2})
    assert client.endpoint("flaky").wait(job.id, timeout=10).is_failed
    result = rpq("retry", "flaky", job.id)
    assert result.exit_code == 0
    assert f"id      {job.id}\nstatus  IN_QUEUE\n" in result.stdout
    assert f"rpq wait flaky {job.id}" in result.stderr
    assert client.endpoint("flaky").wait(job.id, timeout=10).is_completed
