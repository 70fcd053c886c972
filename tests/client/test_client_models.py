"""Models and pure helpers: Job snapshots, error parsing, validation messages, retry arithmetic."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import timedelta

import httpx
import pytest

from runpod_queue import APIResponseError, Health, Job, JobFailedError, JobStatus, Policy, Retries, S3Config
from runpod_queue._answers import _loads, parse_job
from runpod_queue._models import job_from_answer
from runpod_queue._retry import Safety, backoff_delay, parse_retry_after, retry_on_status
from runpod_queue._transport import Answer, was_not_sent
from runpod_queue.emulator._workers import _generator_error

RUNPOD_ERROR = json.dumps(
    {
        "error_type": "<class 'ValueError'>",
        "error_message": "bad prompt",
        "error_traceback": "Traceback (most recent call last):\n  ...\nValueError: bad prompt\n",
        "hostname": "abc",
        "worker_id": "w1",
    }
)


def test_job_round_trips_in_runpod_field_names() -> None:
    wire = {
        "id": "j1",
        "status": "COMPLETED",
        "output": {"text": "hi"},
        "delayTime": 12,
        "executionTime": 34,
        "workerId": "w1",
        "retries": 1,
        "input": {"prompt": "p"},  # extra keys survive
    }
    job = Job.from_dict(wire)
    # Seconds on the Python side; RunPod's milliseconds stay in raw and to_dict().
    assert (job.delay_time, job.execution_time, job.worker_id, job.retries) == (0.012, 0.034, "w1", 1)
    assert job.to_dict() == wire
    assert Job.from_json(job.to_json()) == job
    assert Job("j2", JobStatus.IN_QUEUE).to_dict() == {"id": "j2", "status": "IN_QUEUE"}
    with pytest.raises(AttributeError):
        job.status = JobStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.raw["id"] = "x"  # type: ignore[index]


@pytest.mark.parametrize("status", list(JobStatus))
def test_predicates_and_raise_for_status(status: JobStatus) -> None:
    job = Job("j", status)
    assert job.is_terminal == (status in {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
    assert job.is_pending == (not job.is_terminal)
    flags = [
        job.is_in_queue,
        job.is_in_progress,
        job.is_completed,
        job.is_failed,
        job.is_cancelled,
        job.is_timed_out,
    ]
    assert sum(flags) == 1
    if status in {"FAILED", "CANCELLED", "TIMED_OUT"}:
        with pytest.raises(JobFailedError) as info:
            job.raise_for_status()
        assert info.value.job is job
    else:
        assert job.raise_for_status() is job


def test_runpod_error_string_is_parsed_and_kept() -> None:
    job = Job.from_dict({"id": "j", "status": "FAILED", "error": RUNPOD_ERROR})
    assert job.error == RUNPOD_ERROR
    assert job.error_type == "ValueError"  # the worker's "<class 'ValueError'>" unwrapped
    assert job.error_message == "bad prompt"
    assert job.error_traceback is not None and "ValueError: bad prompt" in job.error_traceback
    assert "bad prompt" in str(JobFailedError(job))


def test_generator_error_string_is_parsed_and_kept() -> None:
    try:
        raise ValueError("stream broke")
    except ValueError as exc:
        raw = _generator_error(exc)  # the official worker's string, as the emulator reproduces it
    job = Job.from_dict({"id": "j", "status": "FAILED", "error": raw})
    assert job.error == raw
    assert (job.error_type, job.error_message) == ("ValueError", "stream broke")
    assert job.error_traceback is not None and job.error_traceback.startswith("Traceback")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("job timed out after 1 retries", "job timed out after 1 retries"),
        ("{not json", "{not json"),
        ({"error_message": "as a dict"}, "as a dict"),
        ({"detail": 3}, '{"detail": 3}'),
        (None, None),
    ],
)
def test_other_errors_are_never_thrown_away(error: object, message: str | None) -> None:
    job = Job.from_dict({"id": "j", "status": "FAILED", "error": error})
    assert job.error_message == message


@pytest.mark.parametrize(
    "wire",
    [
        {"id": "j", "status": "COMPLETED", "output": 1, "delayTime": 0, "executionTime": 3, "workerId": "w"},
        {"id": "j", "status": "FAILED", "error": RUNPOD_ERROR, "retries": 2, "workerId": 7},
        {"id": "j", "status": "FAILED", "error": {"error_message": "as a dict"}, "executionTime": 1.5},
        {"id": "j", "status": "IN_QUEUE"},
        {"id": "j", "status": "WARMING_UP", "extra": [1, 2]},  # a status this version does not know
        {"id": "j", "status": "IN_PROGRESS", "delayTime": 1.9, "retries": 3.0, "executionTime": 10**20},
        {"id": "j", "status": "COMPLETED", "output": None, "error": None, "workerId": None, "retries": None},
    ],
)
def test_from_dict_builds_the_same_job_as_the_constructor(wire: dict[str, object]) -> None:
    """from_dict sets a Job's fields directly (speed): every field, compared or not, must hold what the
    dataclass constructor would have stored — a field added to Job and missed there fails here."""

    class ThroughConstructor(Job):  # from_dict of a subclass calls the constructor
        pass

    fast, slow = Job.from_dict(wire), ThroughConstructor.from_dict(wire)
    owned = job_from_answer(dict(wire))  # parse_job's path: the decoded dict is wrapped, not copied
    for field in dataclasses.fields(Job):
        assert getattr(fast, field.name) == getattr(slow, field.name), field.name
        assert getattr(owned, field.name) == getattr(slow, field.name), field.name
        assert type(getattr(owned, field.name)) is type(getattr(slow, field.name)), field.name
    assert type(fast.raw) is type(slow.raw) is type(owned.raw)
    assert type(owned) is Job
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "wire",
    [
        [1],
        {"status": "COMPLETED"},
        {"id": "", "status": "COMPLETED"},
        {"id": 5, "status": "COMPLETED"},
        {"id": "j"},
        {"id": "j", "status": 3},
        {"id": "j", "status": "COMPLETED", "retries": True},
        {"id": "j", "status": "COMPLETED", "delayTime": "12"},
        {"id": "j", "status": "COMPLETED", "executionTime": float("inf")},
    ],
)
def test_job_from_answer_refuses_what_from_dict_refuses(wire: object) -> None:
    with pytest.raises(ValueError) as expected:
        Job.from_dict(wire)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as got:
        job_from_answer(wire)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        ' {"a": 1}',
        '{"a": 1}\n',
        "[1] [2]",
        "NaN",
        "12345678901234567890123",
        '"\\ud800"',
        "{",
        "",
    ],
)
def test_answers_decode_as_json_loads_does(text: str) -> None:
    """_loads skips json.loads's wrapper when the scanner consumes the whole text: same value, same error."""
    try:
        expected: object = json.loads(text)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            _loads(text)
        assert str(got.value) == str(exc)
    else:
        assert repr(_loads(text)) == repr(expected)


def test_from_dict_of_a_subclass_goes_through_its_constructor() -> None:
    class Tagged(Job):
        def __post_init__(self) -> None:
            super().__post_init__()
            object.__setattr__(self, "retries", -1)

    job = Tagged.from_dict({"id": "j", "status": "COMPLETED"})
    assert type(job) is Tagged
    assert job.retries == -1


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32-le"])
def test_answers_in_any_json_encoding_still_parse(encoding: str) -> None:
    """Answers are decoded as UTF-8 text first (speed); what that path refuses goes through json's own
    byte sniffing, as before, so a BOM or a UTF-16/32 body parses as it always did."""
    body = json.dumps({"id": "j", "status": "COMPLETED", "output": "héllo"}).encode(encoding)
    job = parse_job(Answer(200, body, [], "OK", "GET", "http://127.0.0.1/v2/e/status/j"))
    assert (job.id, job.output) == ("j", "héllo")


def test_an_answer_that_is_not_json_is_reported_with_its_start() -> None:
    with pytest.raises(APIResponseError, match="body is not JSON: 'oops"):
        parse_job(Answer(200, b"oops \xff", [], "OK", "GET", "http://127.0.0.1/v2/e/status/j"))


def test_health_parses_sparse_answers() -> None:
    health = Health.from_dict({"jobs": {"inQueue": 2}, "workers": {"idle": 1}})
    assert health.jobs.in_queue == 2 and health.jobs.completed == 0 and health.workers.idle == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"execution_timeout": 4.999}, r"Policy.execution_timeout must be at least 5 seconds, got 4.999"),
        ({"execution_timeout": 604_801}, r"Policy.execution_timeout must be at most 604800 seconds"),
        ({"ttl": timedelta(seconds=9)}, r"Policy.ttl must be at least 10 seconds, got 9"),
        ({"ttl": "10m"}, r"Policy.ttl must be a number of seconds or a datetime.timedelta, got str"),
        ({"ttl": float("nan")}, r"Policy.ttl must be a finite number of seconds"),
        ({"low_priority": "yes"}, r"Policy.low_priority must be a bool"),
    ],
)
def test_policy_validates_with_field_and_range(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_wire_names() -> None:
    assert Policy(execution_timeout=5, ttl=10, low_priority=True).to_wire() == {
        "executionTimeout": 5_000,
        "ttl": 10_000,
        "lowPriority": True,
    }
    assert Policy().to_wire() == {}
    assert Policy(execution_timeout=timedelta(minutes=2), ttl=600.0004).to_wire() == {
        "executionTimeout": 120_000,
        "ttl": 600_000,
    }


def test_s3_config_validates_and_hides_its_secret() -> None:
    cfg = S3Config(access_id="AK", access_secret="hunter2", bucket_name="b", endpoint_url="https://s3")
    assert "hunter2" not in repr(cfg)
    assert cfg.to_wire() == {
        "accessId": "AK",
        "accessSecret": "hunter2",
        "bucketName": "b",
        "endpointUrl": "https://s3",
    }
    with pytest.raises(ValueError, match=r"S3Config\.bucket_name must be a non-empty string"):
        S3Config(access_id="AK", access_secret="s", bucket_name=" ", endpoint_url="https://s3")
    with pytest.raises(ValueError, match=r"S3Config\.access_secret") as info:
        S3Config(access_id="AK", access_secret="", bucket_name="b", endpoint_url="https://s3")
    assert "<hidden>" in str(info.value)


def test_retry_rules() -> None:
    assert retry_on_status(Safety.IDEMPOTENT, 500) and retry_on_status(Safety.IDEMPOTENT, 429)
    assert not retry_on_status(Safety.IDEMPOTENT, 404)
    assert retry_on_status(Safety.CREATES, 503) and retry_on_status(Safety.CREATES, 429)
    assert not retry_on_status(Safety.CREATES, 500) and not retry_on_status(Safety.CREATES, 502)
    assert was_not_sent(httpx.ConnectError("x")) and was_not_sent(httpx.PoolTimeout("x"))
    assert not was_not_sent(httpx.ReadTimeout("x")) and not was_not_sent(httpx.RemoteProtocolError("x"))


def test_aiohttp_causes_decide_whether_a_request_was_sent() -> None:
    import aiohttp

    def mapped(cause: BaseException) -> httpx.TransportError:
        # httpx-aiohttp maps ServerDisconnectedError to ConnectTimeout: the cause must win.
        err = httpx.ConnectTimeout("mapped")
        err.__cause__ = cause
        return err

    assert not was_not_sent(mapped(aiohttp.ServerDisconnectedError()))
    assert not was_not_sent(mapped(aiohttp.ClientPayloadError("cut")))
    assert was_not_sent(mapped(aiohttp.ConnectionTimeoutError()))


def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    rng = random.Random(1)
    retries = Retries(backoff=0.5, max_backoff=4.0, max_retry_after=60.0)
    for attempt in range(1, 10):
        assert 0.0 <= backoff_delay(retries, attempt, None, rng) <= min(4.0, 0.5 * 2 ** (attempt - 1))
    assert backoff_delay(retries, 1, 7.0, rng) >= 7.0
    assert backoff_delay(retries, 1, 600.0, rng) == 60.0
    assert backoff_delay(Retries(wait=False), 5, 30.0, rng) == 0.0
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and parse_retry_after("soon") is None
    with pytest.raises(ValueError, match="attempts"):
        Retries(attempts=0)


def test_endpoint_ids_are_checked_and_quoted_every_time_even_when_remembered() -> None:
    """_calls remembers each endpoint id's quoted form: the answer must not change on the second call."""
    from runpod_queue._calls import cancel_call, status_call

    for _ in range(2):
        assert status_call("ep/1", "j").path == "/ep%2F1/status/j"
        assert cancel_call("ep-2", "j/k").path == "/ep-2/cancel/j%2Fk"
        for bad in ("", None, 5):
            with pytest.raises(ValueError, match="endpoint_id"):
                status_call(bad, "j")  # type: ignore[arg-type]
