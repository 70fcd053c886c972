"""Every operation, sync and async through one parametrized body, against the emulator over real HTTP."""

from __future__ import annotations

import time

import pytest
from client_support import Api

from runpod_queue import (
    BadRequestError,
    Health,
    Job,
    JobFailedError,
    JobStatus,
    Policy,
    S3Config,
    StreamChunk,
    WaitTimeoutError,
)
from runpod_queue.emulator import Emulator
from shared_support import FAIL_MESSAGE


def test_run_then_wait_returns_the_terminal_job_and_reports_updates(api: Api) -> None:
    ep = api.endpoint("echo")
    job = ep.run({"prompt": "hi"})
    assert isinstance(job, Job) and job.status is JobStatus.IN_QUEUE and job.id
    seen: list[Job] = []
    done = ep.wait(job.id, timeout=10, on_update=seen.append)
    assert done.is_completed and done.is_terminal and not done.is_pending
    assert done.output == {"prompt": "hi"}
    assert done.id == job.id and done.worker_id and done.execution_time is not None
    assert seen and seen[-1] == done


def test_run_sends_webhook_policy_and_s3_config(api: Api, emu: Emulator) -> None:
    ep = api.endpoint("echo")
    hook = "http://127.0.0.1:9/hook"  # nothing listens: a failed delivery must not fail the job
    job = ep.run(
        {"prompt": "hi"},
        webhook=hook,
        policy=Policy(execution_timeout=120, ttl=600, low_priority=False),
        s3_config=S3Config(
            access_id="id", access_secret="secret", bucket_name="b", endpoint_url="https://s3"
        ),
    )
    done = ep.wait(job.id, timeout=10)
    assert done.is_completed
    assert "secret" not in done.to_json()  # s3Config is handed to the worker, never echoed
    deadline = time.monotonic() + 5
    while not any(a.url == hook for a in emu.webhook_attempts) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(a.url == hook for a in emu.webhook_attempts)


def test_status_returns_a_typed_snapshot_and_keeps_the_result_for(api: Api) -> None:
    ep = api.endpoint("echo")
    job = ep.wait(ep.run({"x": 1}).id, timeout=10)
    again = ep.status(job.id, keep_result_for=60)
    assert again == job and again.raw["id"] == job.id
    with pytest.raises(ValueError, match="keep_result_for must be at least 0 seconds"):
        ep.status(job.id, keep_result_for=-1)


def test_run_sync_returns_the_finished_job(api: Api) -> None:
    job = api.endpoint("echo").run_sync({"prompt": "hi"}, timeout=10)
    assert job.is_completed and job.output == {"prompt": "hi"}


def test_run_sync_waits_past_the_server_window(api: Api) -> None:
    # The emulator holds runsync for wait * time_scale (50 ms for timeout=5): the job (0.15 s) outlives
    # that window, so the client must keep waiting on its own until its 5 s are up.
    updates: list[Job] = []
    job = api.endpoint("slow").run_sync({"s": 0.15}, timeout=5, on_update=updates.append)
    assert job.is_completed and job.output == "slept"
    assert updates[0].is_pending and updates[-1] == job


def test_run_sync_timeout_is_at_least_runsyncs_minimum(api: Api) -> None:
    # Running out of time is WaitTimeoutError like wait's (test_client_flows drives it on a fake clock:
    # here it would cost a real second per variant).
    with pytest.raises(ValueError, match=r"timeout must be at least 1 seconds, got 0\.01"):
        api.endpoint("slow").run_sync({}, timeout=0.01)


def test_wait_timeout_raises_with_the_last_snapshot(api: Api) -> None:
    ep = api.endpoint("slow")
    job = ep.run({"s": 10})
    with pytest.raises(WaitTimeoutError) as info:
        ep.wait(job.id, timeout=0.2)
    assert info.value.job_id == job.id and info.value.timeout == 0.2
    assert info.value.job is not None and info.value.job.is_pending
    ep.cancel(job.id)


def test_stream_yields_each_chunk_once_in_order_and_ends_with_the_job(api: Api) -> None:
    ep = api.endpoint("gen")
    job = ep.run({"n": 25, "gap": 0.002})
    streamed = ep.stream(job.id, timeout=20)
    assert all(isinstance(c, StreamChunk) for c in streamed.chunks)
    assert streamed.outputs == [{"i": i} for i in range(25)]
    assert streamed.job is not None and streamed.job.id == job.id and streamed.job.is_completed


def test_stream_tells_a_failed_job_with_its_error(api: Api) -> None:
    ep = api.endpoint("gen_fail")
    job = ep.run({})
    streamed = ep.stream(job.id, timeout=20)
    assert streamed.outputs == ["first", "second"]
    # /stream carries no error: the stream fetched it, so the caller needs no second call.
    assert streamed.job is not None and streamed.job.is_failed
    assert streamed.job.error_message is not None and "stream broke" in streamed.job.error_message
    assert streamed.job == ep.status(job.id)


def test_stream_tells_a_timed_out_job(api: Api) -> None:
    ep = api.endpoint("gen_forever")
    job = ep.run({}, policy=Policy(execution_timeout=5))  # 50 ms at the emulator's time scale
    streamed = ep.stream(job.id, timeout=20)
    assert streamed.outputs == ["started"]
    assert streamed.job is not None and streamed.job.is_timed_out


def test_stream_tells_a_cancelled_job(api: Api) -> None:
    ep = api.endpoint("gen_forever")
    job = ep.run({})
    while ep.status(job.id).is_in_queue:
        time.sleep(0.01)
    assert ep.cancel(job.id).is_cancelled
    streamed = ep.stream(job.id, timeout=20)
    assert streamed.outputs in (["started"], [])  # the chunk may have been produced before the cancel
    assert streamed.job is not None and streamed.job.is_cancelled


def test_stream_timeout_raises(api: Api) -> None:
    ep = api.endpoint("gen_forever")
    job = ep.run({})
    with pytest.raises(WaitTimeoutError) as info:
        ep.stream(job.id, timeout=0.2)
    assert info.value.job_id == job.id
    ep.cancel(job.id)


def test_cancel_is_idempotent_and_refuses_finished_jobs(api: Api, idle: str) -> None:
    ep = api.endpoint(idle)
    job = ep.run({"x": 1})
    assert ep.cancel(job.id).is_cancelled
    assert ep.cancel(job.id).is_cancelled  # already cancelled: returned, not a 400
    done = api.endpoint("echo").run_sync({"x": 1}, timeout=10)
    with pytest.raises(BadRequestError) as info:
        api.endpoint("echo").cancel(done.id)
    assert info.value.status_code == 400 and info.value.message


def test_retry_requeues_a_failed_job_and_refuses_others(api: Api) -> None:
    ep = api.endpoint("fail")
    failed = ep.wait(ep.run({}).id, timeout=10)
    assert failed.is_failed
    again = ep.retry(failed.id)
    assert again.id == failed.id and again.status is JobStatus.IN_QUEUE
    assert ep.wait(failed.id, timeout=10).is_failed
    done = api.endpoint("echo").run_sync({}, timeout=10)
    with pytest.raises(BadRequestError):
        api.endpoint("echo").retry(done.id)


def test_purge_queue_returns_how_many_were_removed(api: Api, idle: str) -> None:
    ep = api.endpoint(idle)
    ids = [ep.run({"i": i}).id for i in range(3)]
    assert ep.purge_queue() == 3
    assert ep.health().jobs.in_queue == 0
    assert len(set(ids)) == 3


def test_health_is_typed(api: Api, idle: str) -> None:
    ep = api.endpoint(idle)
    ep.run({})
    health = ep.health()
    assert isinstance(health, Health)
    assert health.jobs.in_queue == 1 and health.workers.running == 0
    assert Health.from_dict(health.to_dict()) == health


def test_failed_job_keeps_its_error_parsed(api: Api) -> None:
    job = api.endpoint("boom").run_sync({}, timeout=10)
    assert job.is_failed
    assert job.error_message == "boom"
    assert job.error_type is not None and "ValueError" in job.error_type
    assert job.error_traceback is not None and "Traceback" in job.error_traceback
    assert isinstance(job.error, str) and "boom" in job.error  # the raw string is kept too
    with pytest.raises(JobFailedError) as info:
        job.raise_for_status()
    assert info.value.job is job and "boom" in str(info.value)

    plain = api.endpoint("fail").run_sync({}, timeout=10)
    assert plain.is_failed and plain.error_message == FAIL_MESSAGE and plain.error_type is None


def test_ids_are_path_encoded(api: Api) -> None:
    from runpod_queue import NotFoundError

    with pytest.raises(NotFoundError):
        api.endpoint("echo").status("no/such id?")
