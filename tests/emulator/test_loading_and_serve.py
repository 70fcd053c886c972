"""Handler references (`rpq serve` arguments) and the `rpq serve` command itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runpod_queue.emulator import HandlerLoadError, load_endpoint

HERE = Path(__file__).parent / "handlers"


def test_file_defaults_to_handler_and_its_stem() -> None:
    loaded = load_endpoint(str(HERE / "simple.py"))
    assert loaded.endpoint_id == "simple"
    assert loaded.spec.handler is not None and loaded.spec.handler({"input": 1}) == {"simple": 1}


def test_file_with_function_and_explicit_id() -> None:
    loaded = load_endpoint(f"loud={HERE / 'simple.py'}:shout")
    assert loaded.endpoint_id == "loud"
    assert loaded.spec.handler is not None and loaded.spec.handler({"input": {"text": "hi"}}) == "HI"


def test_module_function_defaults_to_the_function_name() -> None:
    loaded = load_endpoint("json:dumps")
    assert loaded.endpoint_id == "dumps"


def test_unmodified_runpod_worker_file_is_captured_not_started() -> None:
    loaded = load_endpoint(str(HERE / "plain_worker.py"))
    # The handler and options come from the file's own runpod.serverless.start(...) call.
    assert loaded.endpoint_id == "plain_worker"
    assert loaded.spec.return_aggregate_stream is True
    assert loaded.spec.handler is not None and list(loaded.spec.handler({"input": {}})) == ["a", "b"]
    named = load_endpoint(f"{HERE / 'plain_worker.py'}:handler")
    assert named.spec.handler is not None and named.spec.handler({"input": {"n": 2}}) == {"doubled": 4}


@pytest.mark.parametrize(
    "reference,needle",
    [
        ("missing_file.py", "does not exist"),
        (f"{HERE / 'simple.py'}:nope", "no function 'nope'"),
        ("no_such_module_xyz:handler", "cannot import module"),
        ("bad id!=x.py", "invalid endpoint id"),
        ("", "no handler"),
    ],
)
def test_bad_references_say_what_to_fix(reference: str, needle: str) -> None:
    with pytest.raises(HandlerLoadError, match=re.escape(needle)):
        load_endpoint(reference)


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_rpq_serve_prints_its_url_serves_and_stops_cleanly_on_ctrl_c() -> None:
    proc = _serve(
        f"echo={HERE / 'simple.py'}", f"{HERE / 'simple.py'}:shout", "--port", "0", "--api-key", "sk-1"
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", first)
        assert match, first
        base = match.group(1)
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert any("/v2/echo" in line for line in lines) and any("/v2/shout" in line for line in lines)
        assert "sk-1" not in first + "".join(lines)
        answer = httpx.post(
            f"{base}/echo/runsync", json={"input": {"a": 1}}, headers={"Authorization": "sk-1"}
        )
        assert answer.json()["output"] == {"simple": {"a": 1}}
        assert httpx.get(f"{base}/echo/health").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_rpq_serve_refuses_a_bad_handler_with_exit_2() -> None:
    proc = _serve("nope.py", "--port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "does not exist" in err and "Traceback" not in err
    assert json is not None
