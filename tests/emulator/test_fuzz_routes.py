"""Property-based fuzz of the emulator's public routes: whatever the method, ids, query string, headers
or body, the answer is never a 5xx, and every 4xx says what is wrong in ``error``. The bodies reach
deep nesting (up to 1,100 levels, past every parser's limit) and OpenAI requests with huge ``n`` and
``max_tokens`` to `examples/fake_llm.py`; after each request, ``GET /_emulator/jobs`` must still answer.

A bounded number of examples (the suite stays fast); Hypothesis keeps the failing ones it finds in its
database, so a failure found once is replayed first next time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runpod_queue.emulator import Emulator
from runpod_queue.emulator._loading import load_endpoint
from shared_support import EmuSetup, echo

FAKE_LLM = load_endpoint(str(Path(__file__).parents[2] / "examples" / "fake_llm.py")).spec

KEY = "fuzz-key-0123456789"
OPENAI = ["openai/v1/chat/completions", "openai/v1/completions", "openai/v1/messages", "openai/v1/models"]
OPERATIONS = ["run", "runsync", "status", "status-sync", "stream", "cancel", "retry", "purge-queue", "health"]

# JSON values, numbers at the edges included (past 64 bits, tiny, huge, negative zero).
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([18446744073709551616, -9223372036854775809, 1e308, -0.0, 5e-324]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(lambda v: {"input": v}, json_values),
    st.fixed_dictionaries(
        {"input": json_values},
        optional={
            "policy": st.dictionaries(
                st.sampled_from(["ttl", "executionTimeout", "lowPriority", "x"]), json_values, max_size=3
            ),
            "webhook": json_values,
            "s3Config": json_values,
        },
    ),
    json_values,
)


def _deep(levels: int, kind: str, template: bytes) -> bytes:
    opener, closer = (b"[", b"]") if kind == "array" else (b'{"a":', b"}")
    return template.replace(b"@", opener * levels + b"1" + closer * levels)


# Nested past the 128-level bound, past orjson's 254 and past its 1,024 parse limit; as a job input
# and as an OpenAI body.
deep_bodies = st.builds(
    _deep,
    st.integers(min_value=100, max_value=1100),
    st.sampled_from(["array", "object"]),
    st.sampled_from(
        [b'{"input": {"x": @}}', b'{"model": "m", "messages": [{"role": "user", "content": @}]}']
    ),
)
openai_bodies = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}])},
    optional={
        "n": st.one_of(st.integers(min_value=-1, max_value=2**40), json_values),
        "max_tokens": st.one_of(st.integers(min_value=-1, max_value=2**40), json_values),
        "prompt": st.one_of(st.text(max_size=10), st.lists(st.text(max_size=5), max_size=200)),
        "stream": st.booleans(),
        "model": json_values,
    },
)
ids = st.one_of(st.sampled_from(["echo", "llm", "nope", "", "..", "a" * 300]), st.text(max_size=30))
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)  # no edge spaces
queries = st.dictionaries(
    st.sampled_from(["wait", "ttl", "x", ""]) | st.text(max_size=8), header_text, max_size=3
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EmuSetup(
        lambda: {"echo": echo, "llm": FAKE_LLM}, {"api_key": KEY, "workers": 2, "rate_limits": False}
    )


@pytest.fixture(scope="module")
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.root_url, timeout=30) as client:
        yield client


def _encoded(body: Any) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return httpx.Request("POST", "http://x", json=body).content


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    endpoint=ids,
    operation=st.one_of(st.sampled_from(OPERATIONS), st.text(max_size=12), st.sampled_from(OPENAI)),
    job_id=st.one_of(st.none(), ids),
    query=queries,
    auth=st.sampled_from([f"Bearer {KEY}", KEY, "", "Bearer wrong", None]),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
    extra=st.dictionaries(st.sampled_from(["x-a", "x-b", "accept"]), header_text, max_size=2),
    body=bodies,
)
def test_no_route_answers_5xx_and_every_4xx_says_why(
    http: httpx.Client,
    method: str,
    endpoint: str,
    operation: str,
    job_id: str | None,
    query: dict[str, str],
    auth: str | None,
    content_type: str,
    extra: dict[str, str],
    body: Any,
) -> None:
    path = f"/v2/{quote(endpoint, safe='')}/{quote(operation, safe='/' if operation in OPENAI else '')}"
    if job_id is not None:
        path += f"/{quote(job_id, safe='')}"
    query = {**query, "wait": "1000"} if operation in ("runsync", "status-sync", "stream") else query
    headers = {**extra, "content-type": content_type}
    if auth is not None:
        headers["authorization"] = auth
    response = http.request(method, path, params=query, headers=headers, content=_encoded(body))
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        if operation in OPENAI and isinstance(error, dict):  # OpenAI's shape
            error = error["message"]
        assert isinstance(error, str) and error
        assert KEY not in response.text
    listing = http.get("/_emulator/jobs", headers={"authorization": f"Bearer {KEY}"})
    assert listing.status_code == 200, listing.text[:300]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(OPENAI), body=st.one_of(openai_bodies, deep_bodies, bodies))
def test_openai_routes_of_fake_llm_never_answer_5xx(http: httpx.Client, route: str, body: Any) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    method = "GET" if route.endswith("models") else "POST"
    response = http.request(method, f"/v2/llm/{route}", headers=headers, content=_encoded(body))
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.json()["error"]["message"]
    listing = http.get("/_emulator/jobs", headers={"authorization": f"Bearer {KEY}"})
    assert listing.status_code == 200, listing.text[:300]
