"""The runner's pure parts: reading items, option groups, result lines, and the limits it keeps to."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from runpod_queue import BatchResult, OperationLimit, RateLimits
from runpod_queue.batch import ItemStatus, PollOptions, WebhookOptions
from runpod_queue.batch._inputs import SKIP, Invalid, parse_item
from runpod_queue.batch._submit import runner_limits


def test_items_and_their_keys() -> None:
    assert parse_item('{"key": "a", "input": {"n": 1}}', 7) == ("a", {"n": 1})
    assert parse_item(b'{"n": 1}', 7) == (7, {"n": 1})  # no key: its line number
    assert parse_item({"key": 3, "x": 1}, 2) == (2, {"key": 3, "x": 1})  # not a wrapper: the input itself
    assert parse_item(("k", [1, 2]), 1) == ("k", [1, 2])
    assert parse_item("  \n", 1) is SKIP
    for raw, reason in [
        ("{not json", "invalid JSON"),
        ('{"seconds": 0.2\n', "invalid JSON at column 16: Expecting ',' delimiter"),  # not "line 2"
        ("[1]", "got an array"),
        (b'{"n": "\xff"}', "invalid JSON"),
        ('{"key": true, "input": 1}', "'key' must be"),
        ((1.5, {}), "tuple item"),
        ('{"key": "k-120", "input": {"n": 1}, "extra": true}', "also has 'extra'"),  # a stray field
        ({"key": 3, "input": None, "x": 1, "a": 2}, "also has 'a', 'x'"),
    ]:
        item = parse_item(raw, 1)
        assert isinstance(item, Invalid) and reason in item.message, (raw, item)


def test_result_seconds_in_python_milliseconds_in_the_file() -> None:
    result = BatchResult("k", "job-1", "COMPLETED", output=1, delay_time=1.5, execution_time=0.25, attempts=1)
    line = json.loads(result.to_json())
    assert line == {
        "key": "k",
        "id": "job-1",
        "status": "COMPLETED",
        "output": 1,
        "delayTime": 1500,
        "executionTime": 250,
        "attempts": 1,
    }
    assert BatchResult.from_dict(line) == result
    # A line written before 1.0 (RunPod's ms, or nothing at all) still reads.
    old = BatchResult.from_dict({"key": 1, "id": None, "status": "INVALID", "error": "x", "delayTime": None})
    assert old.delay_time is None and old.execution_time is None and not old.ok


def test_statuses_are_named_and_spelled_as_the_files_have_always_spelled_them() -> None:
    lost = BatchResult("k", "job-1", ItemStatus.LOST, error="gone")
    assert lost.to_json() == (
        '{"key":"k","id":"job-1","status":"LOST","error":"gone","delayTime":null,"executionTime":null,'
        '"attempts":0}'
    )
    assert BatchResult.from_dict(json.loads(lost.to_json())).status is ItemStatus.LOST
    assert [s.value for s in ItemStatus] == [s.name for s in ItemStatus]  # the value is the text written
    # A status a later version may write reads back as its text, not an error.
    newer = BatchResult.from_dict({"key": 1, "id": "j", "status": "PAUSED"})
    assert newer.status == "PAUSED" and not isinstance(newer.status, ItemStatus) and not newer.ok


def test_poll_options() -> None:
    assert PollOptions(min_interval=timedelta(milliseconds=20)).min_interval == pytest.approx(0.02)
    with pytest.raises(ValueError, match="concurrency"):
        PollOptions(concurrency=0)
    with pytest.raises(ValueError, match="must not exceed"):
        PollOptions(min_interval=5, max_interval=1)
    with pytest.raises(ValueError, match="more than 0 seconds"):
        PollOptions(min_interval=0)
    with pytest.raises(TypeError, match="seconds"):
        PollOptions(max_interval="10s")  # type: ignore[arg-type]


def test_webhook_options() -> None:
    own = WebhookOptions(listen=("127.0.0.1", 0), grace=timedelta(seconds=5))
    assert own.grace == 5.0 and own.public_url(("127.0.0.1", 8123)) == "http://127.0.0.1:8123/"
    assert WebhookOptions(listen=("::1", 0)).public_url(("::1", 9)) == "http://[::1]:9/"
    tunnel = WebhookOptions(listen=("0.0.0.0", 8787), url="https://t.example/h", secret="s" * 16)
    assert tunnel.public_url(("0.0.0.0", 8787)) == "https://t.example/h"
    assert "s" * 16 not in repr(tunnel)
    with pytest.raises(ValueError, match="every interface"):
        WebhookOptions(listen=("0.0.0.0", 8787))  # which URL would reach it?
    with pytest.raises(ValueError, match="http"):
        WebhookOptions(listen=("127.0.0.1", 1), url="t.example/h")
    with pytest.raises(ValueError, match="port"):
        WebhookOptions(listen=("127.0.0.1", 70000))
    with pytest.raises(ValueError, match="16 bytes"):
        WebhookOptions(listen=("127.0.0.1", 0), secret="short")
    with pytest.raises(ValueError, match="grace"):
        WebhookOptions(listen=("127.0.0.1", 0), grace=0)


def test_the_runner_limits_are_never_looser_than_the_client_limits() -> None:
    own = RateLimits(limits={"run": OperationLimit(1000, 200), "status": OperationLimit(2000, None)})
    client = RateLimits(
        limits={
            "run": OperationLimit(500, 300),
            "status": OperationLimit(3000, 100),
            "cancel": OperationLimit(1, 1),
        },
        window=12.0,
        margin=0.5,
    )
    merged = runner_limits(own, client)
    assert merged.enabled and (merged.window, merged.margin) == (12.0, 0.5)
    assert dict(merged.limits) == {
        "run": OperationLimit(500, 200),
        "status": OperationLimit(2000, 100),
        "cancel": OperationLimit(1, 1),
    }
    assert runner_limits(own, RateLimits.off()) is own
    assert runner_limits(RateLimits.off(), client) is client  # the client's limits hold anyway
