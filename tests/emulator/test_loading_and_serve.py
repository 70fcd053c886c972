"""Handler references (`rpq serve` arguments) and the `rpq serve` command itself."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from runpod_queue.cli._app import app, load_commands
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


def test_an_edit_in_the_same_second_with_the_same_length_is_loaded(tmp_path: Path) -> None:
    """`--reload` loads a file again after each save; a stale bytecode cache (trusted on equal whole-second
    mtime and size) once served the old handler for a `1` -> `2` edit. conftest turns bytecode caches on."""
    source = tmp_path / "same.py"
    source.write_text("def handler(job):\n    return 1\n")
    first = load_endpoint(f"same={source}")
    stamp = source.stat().st_mtime_ns
    source.write_text("def handler(job):\n    return 2\n")
    os.utime(source, ns=(stamp, stamp))
    assert first.spec.handler({}) == 1
    assert load_endpoint(f"same={source}").spec.handler({}) == 2
    assert not (tmp_path / "__pycache__").exists(), "a user's handler folder gets no __pycache__ from us"


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


def _serve(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def _base_url(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The base URL `rpq serve --port 0` prints once its port is bound, and that first line."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", first)
    assert match, first
    return match.group(1), first


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


def test_rpq_serve_prints_its_url_serves_and_stops_cleanly_on_ctrl_c() -> None:
    proc = _serve(
        f"echo={HERE / 'simple.py'}", f"{HERE / 'simple.py'}:shout", "--port", "0", "--api-key", "sk-1"
    )
    try:
        base, first = _base_url(proc)
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert any("/v2/echo" in line for line in lines) and any("/v2/shout" in line for line in lines)
        assert "sk-1" not in first + "".join(lines)
        console = next(line.split()[1] for line in lines if line.startswith("  console "))
        assert console == base.removesuffix("v2")  # the console: same port, at /
        with httpx.Client(verify=False) as http:
            answer = http.post(
                f"{base}/echo/runsync", json={"input": {"a": 1}}, headers={"Authorization": "sk-1"}
            )
            assert answer.json()["output"] == {"simple": {"a": 1}}
            assert http.get(f"{base}/echo/health").status_code == 401
            # A key RunPod ignores (the JS SDK's webhookV2) is ignored here too, and said so.
            lenient = http.post(
                f"{base}/echo/run",
                json={"input": {}, "webhookV2": "http://127.0.0.1:9/h"},
                headers={"Authorization": "sk-1"},
            )
            assert lenient.status_code == 200 and "webhookV2" in lenient.headers["x-rpq-warning"]
            assert "console.js" in http.get(console).text
            assert http.get(f"{console}_console/api/snapshot").status_code == 401
    finally:
        err = _stop(proc)
    assert "ignored unknown request key(s) webhookV2" in err


def test_rpq_serve_clock_virtual_moves_time_only_through_the_advance_route() -> None:
    proc = _serve(
        f"echo={HERE / 'simple.py'}",
        "--workers",
        "0",
        "--clock",
        "virtual",
        "--port",
        "0",
        "--api-key",
        "sk-2",
    )
    try:
        base, _ = _base_url(proc)
        root = base.removesuffix("/v2")
        with httpx.Client(headers={"Authorization": "Bearer sk-2"}, verify=False) as http:
            job_id = http.post(f"{base}/echo/run", json={"input": {}, "policy": {"ttl": 10_000}}).json()["id"]
            assert http.post(f"{root}/_emulator/advance", json={"seconds": 9.5}).json() == {"now": 9.5}
            assert http.get(f"{base}/echo/status/{job_id}").json()["status"] == "IN_QUEUE"
            assert http.post(f"{root}/_emulator/advance", json={"seconds": 0.5}).json() == {"now": 10.0}
            assert http.get(f"{base}/echo/status/{job_id}").json()["status"] == "TIMED_OUT"
            bad = http.post(f"{root}/_emulator/advance", json={"seconds": "soon"})
            assert bad.status_code == 400 and "seconds" in bad.json()["error"]
            anonymous = http.post(
                f"{root}/_emulator/advance", json={"seconds": 1}, headers={"Authorization": ""}
            )
            assert anonymous.status_code == 401
    finally:
        _stop(proc)


def test_rpq_serve_strict_and_a_contested_reading() -> None:
    proc = _serve(
        f"echo={HERE / 'simple.py'}",
        "--workers",
        "0",
        "--clock",
        "virtual",
        "--port",
        "0",
        "--strict",
        "--reading",
        "queued_ttl=deleted",
    )
    try:
        base, _ = _base_url(proc)
        with httpx.Client(verify=False) as http:
            typo = http.post(f"{base}/echo/run", json={"input": {}, "webhookV2": "http://127.0.0.1:9/h"})
            assert typo.status_code == 400 and "webhookV2" in typo.json()["error"]
            job_id = http.post(f"{base}/echo/run", json={"input": {}, "policy": {"ttl": 10_000}}).json()["id"]
            http.post(f"{base.removesuffix('/v2')}/_emulator/advance", json={"seconds": 10})
            assert http.get(f"{base}/echo/status/{job_id}").status_code == 404  # deleted, not TIMED_OUT
    finally:
        _stop(proc)


def test_rpq_serve_max_retained_jobs_forgets_the_oldest_and_warns_once() -> None:
    proc = _serve(f"echo={HERE / 'simple.py'}", "--port", "0", "--max-retained-jobs", "2")
    try:
        base, _ = _base_url(proc)
        with httpx.Client(verify=False) as http:
            ids = [http.post(f"{base}/echo/runsync", json={"input": {}}).json()["id"] for _ in range(4)]
            codes = [http.get(f"{base}/echo/status/{job_id}").status_code for job_id in ids]
            assert codes == [404, 404, 200, 200]
    finally:
        err = _stop(proc)
    assert err.count("more than 2 finished jobs retained") == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_rpq_serve_stops_on_a_signal_even_while_a_handler_holds_its_loop(sig: signal.Signals) -> None:
    # An async handler that never awaits once made `rpq serve` ignore SIGTERM until it returned.
    proc = _serve(f"{HERE / 'hog.py'}", "--port", "0")
    try:
        base, _ = _base_url(proc)
        with httpx.Client(timeout=0.5) as http, contextlib.suppress(httpx.TimeoutException):
            http.post(f"{base}/hog/run", json={"input": {}})
        assert proc.stderr is not None
        stderr = proc.stderr
        warned: list[str] = []
        seen = threading.Event()

        def read() -> None:  # the watchdog's warning says the loop is held, and why
            for line in stderr:
                if "event loop has not answered" in line:
                    warned.append(line)
                    seen.set()
                    return

        threading.Thread(target=read, daemon=True).start()
        assert seen.wait(30), "no warning that the loop is held"
        assert "hog/" in warned[0] and "asyncio.to_thread" in warned[0]
        proc.send_signal(sig)
        proc.wait(timeout=30)  # a bound for a hung process, not a timing assertion
        assert proc.returncode == 128 + sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_rpq_serve_refuses_bad_settings_with_exit_2() -> None:
    load_commands()
    missing = CliRunner().invoke(app, ["serve", "nope.py", "--port", "0"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    scaled = CliRunner().invoke(
        app, ["serve", str(HERE / "simple.py"), "--clock", "virtual", "--time-scale", "0.5", "--port", "0"]
    )
    assert scaled.exit_code == 2
    assert "--time-scale applies to --clock real only" in scaled.output
    for bad in ("queued_ttl", "nope=1", "queued_ttl=gone"):
        refused = CliRunner().invoke(app, ["serve", str(HERE / "simple.py"), "--reading", bad, "--port", "0"])
        assert refused.exit_code == 2 and "--reading" in refused.output


def test_rpq_serve_takes_a_shipped_example_by_name_from_any_directory(tmp_path: Path) -> None:
    # What `rpq demo` suggests, so it must work outside a checkout, where examples/echo.py is no path.
    proc = _serve("echo", "words=tokens", "--port", "0", "--no-rate-limits", cwd=tmp_path)
    try:
        base, _ = _base_url(proc)
        assert httpx.post(f"{base}/echo/runsync", json={"input": {"a": 1}}).json()["output"] == {"a": 1}
        words = httpx.post(f"{base}/words/runsync", json={"input": {"max_tokens": 1, "delay": 0}})
        assert words.json()["status"] == "COMPLETED"
    finally:
        err = _stop(proc)
    assert re.search(r"^echo: the example shipped with runpod-queue, .*echo\.py$", err, re.MULTILINE)


def test_rpq_serve_points_a_missing_example_path_at_the_shipped_one(tmp_path: Path) -> None:
    load_commands()
    missing = CliRunner().invoke(app, ["serve", str(tmp_path / "examples" / "echo.py"), "--port", "0"])
    assert missing.exit_code == 2
    assert missing.output.rstrip().endswith("for the example shipped with runpod-queue: rpq serve echo")
    unknown = CliRunner().invoke(app, ["serve", "ecoh", "--port", "0"])
    assert unknown.exit_code == 2
    assert "or name a shipped example: echo, fail, " in unknown.output
