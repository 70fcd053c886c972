"""The pytest plugin as a user meets it: a test file, no conftest, nothing imported from the plugin;
the entry point alone provides the `runpod_emulator` fixture and the `runpod_mock` marker."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)

USER_TESTS = """
import httpx
import pytest
import requests

def handler(job):
    if not job["input"].get("prompt"):
        raise ValueError("input needs a 'prompt'")
    return {"text": job["input"]["prompt"].upper()}

# The user's own code: RunPod's URL hard-coded, as their docs show.
def summarize(prompt):
    r = requests.post("https://api.runpod.ai/v2/my-endpoint/runsync",
                      json={"input": {"prompt": prompt}}, timeout=30)
    r.raise_for_status()
    return r.json()

def test_factory(runpod_emulator):
    emu = runpod_emulator({"my-endpoint": handler})
    assert summarize("hi")["output"] == {"text": "HI"}
    assert [j.status for j in emu.jobs("my-endpoint")] == ["COMPLETED"]

@pytest.mark.runpod_mock({"my-endpoint": handler}, clock="virtual")
def test_marker(runpod_mock):
    assert summarize("")["status"] == "COMPLETED"  # wrong on purpose: this test must fail

@pytest.mark.runpod_mock({"my-endpoint": handler})
def test_marker_without_the_fixture():
    assert summarize("x")["output"] == {"text": "X"}

@pytest.mark.anyio
@pytest.mark.runpod_mock({"my-endpoint": handler})
async def test_async_under_anyio(runpod_mock):
    async with httpx.AsyncClient() as client:
        r = await client.post("https://api.runpod.ai/v2/my-endpoint/runsync", json={"input": {"prompt": "a"}})
    assert r.json()["output"] == {"text": "A"}
    assert runpod_mock.requests[-1].operation == "runsync"

def test_fixture_without_marker_explains(runpod_mock):
    pass

def test_nothing_mocked_after_a_test():
    import os
    assert "RUNPOD_ENDPOINT_BASE_URL" not in os.environ
"""


def test_a_users_test_file_passes_and_fails_as_it_should(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    # In-process: plugins still load from entry points as in a fresh run, without a new interpreter.
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["plugins:*runpod-queue*", "*needs @pytest.mark.runpod_mock*", "FAILED test_user.py::test_marker - *"]
    )


# A bare `pip install runpod-queue` has no emulator extra. Simulated here by packages that shadow two of the
# extra's modules and fail to import as a missing one would (the real wheel is checked by .ci/bare_wheel.sh).
MISSING = 'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'

BARE_USER_TESTS = """
import pytest
import runpod_queue

def test_plain():
    assert runpod_queue.Client

def test_fixture(runpod_emulator):
    runpod_emulator({"my-endpoint": lambda job: job["input"]})

@pytest.mark.runpod_mock({"my-endpoint": lambda job: job["input"]})
def test_marker():
    pass
"""


def test_without_the_emulator_extra_pytest_runs_and_a_use_names_the_extra(pytester: pytest.Pytester) -> None:
    for name in ("orjson", "uvicorn"):
        pytester.makepyfile(**{f"{name}/__init__": MISSING.format(name=name)})
    pytester.makepyfile(test_user=BARE_USER_TESTS)
    # A fresh interpreter: this one has the extra's modules imported already. pytester puts its directory
    # first on PYTHONPATH, so the shadowing packages win from the first import, the plugin's included.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1)  # before: exit 3, no test run
    extra = "needs the emulator extra (orjson is missing): pip install 'runpod-queue[emulator]'"
    result.stdout.fnmatch_lines(["plugins:*runpod-queue*"])
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_marker _*",
            f"@pytest.mark.runpod_mock {extra}",
            "*= FAILURES =*",
            "*_ test_fixture _*",
            f"the `runpod_emulator` fixture {extra}",
            "*= short test summary info =*",
        ],
        consecutive=True,  # each report is that one line: no traceback, no chained import error
    )
