"""The `/openai/v1/*` routes, driven by the real `openai` package (sync and async) over loopback HTTP.

Handlers run in-process: `examples/fake_llm.py` (worker-vllm's protocol without a model) and small
handlers here that hold mid-stream, fail, or yield chunk objects. The same calls through an official
worker process are in test_openai_external.py.

`openai` is imported inside the tests that name its classes: every xdist worker imports every test module
while collecting, and ~0.9 s CPU of openai is then paid only by the worker that runs them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from runpod_queue import AsyncClient, Client, ConfigurationError
from runpod_queue._contract import LIMITS, JobStatus, OperationLimit
from runpod_queue._limits import RateLimits
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.emulator._loading import load_endpoint
from shared_support import EmuSetup

if TYPE_CHECKING:
    import openai

# Loaded as `rpq serve examples/fake_llm.py` loads it.
FAKE_LLM = load_endpoint(str(Path(__file__).parents[2] / "examples" / "fake_llm.py")).spec.handler

KEY = "openai-test-key-71ac"
MESSAGES: list[Any] = [{"role": "user", "content": "Why queue jobs?"}]

# The held handler yields one SSE event, then waits until the test releases it.
FIRST_SENT = threading.Event()
RELEASE = threading.Event()


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-held",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "held",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def held_stream(job: dict[str, Any]) -> Iterator[Any]:
    import json

    yield f"data: {json.dumps(_chunk('first'))}\n\n"
    FIRST_SENT.set()
    RELEASE.wait(10)
    # No `data: [DONE]`: the emulator ends the stream with it once the job has ended.
    yield f"data: {json.dumps(_chunk(' second', 'stop'))}\n\n"


def object_chunks(job: dict[str, Any]) -> Iterator[Any]:
    """Yields chunk objects, not SSE text: the emulator frames each as one event."""
    body = job["input"]["openai_input"]
    if not body.get("stream"):
        yield {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
        return
    yield _chunk("a")
    yield _chunk("b", "stop")


def plain(job: dict[str, Any]) -> Any:
    """Not a generator: its return value is the answer, streamed as one event."""
    return {"object": "list", "data": [{"id": "plain", "object": "model", "created": 0, "owned_by": "me"}]}


def boom(job: dict[str, Any]) -> Any:
    raise RuntimeError("the model fell over")


def fails_mid_stream(job: dict[str, Any]) -> Iterator[Any]:
    import json

    yield f"data: {json.dumps(_chunk('partial'))}\n\n"
    raise RuntimeError("lost the GPU mid-answer")


def _endpoints() -> dict[str, EndpointSpec]:
    return {
        "llm": EndpointSpec(handler=FAKE_LLM, return_aggregate_stream=True),
        "llm-plain": EndpointSpec(handler=FAKE_LLM),  # without return_aggregate_stream
        "held": EndpointSpec(handler=held_stream, return_aggregate_stream=True),
        "objects": EndpointSpec(handler=object_chunks),
        "plain": EndpointSpec(handler=plain),
        "boom": EndpointSpec(handler=boom),
        "midfail": EndpointSpec(handler=fails_mid_stream),
    }


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EmuSetup(_endpoints, {"api_key": KEY, "workers": 2})


@pytest.fixture(scope="module")
def client(emu: Emulator) -> Iterator[Client]:
    with Client(KEY, base_url=emu.base_url) as c:
        yield c


def oai(client: Client, endpoint_id: str) -> openai.OpenAI:
    return client.endpoint(endpoint_id).openai(max_retries=0)


def _jobs(emu: Emulator, endpoint_id: str) -> list[Any]:
    return list(emu.core.endpoints[endpoint_id].jobs.values())


# -- the client helper ----------------------------------------------------------------------------


def test_openai_base_url_and_client_share_our_key_and_url(client: Client, emu: Emulator) -> None:
    endpoint = client.endpoint("llm")
    assert endpoint.openai_base_url == f"{emu.base_url}/llm/openai/v1"
    sdk = endpoint.openai()
    assert str(sdk.base_url).rstrip("/") == endpoint.openai_base_url
    assert sdk.api_key == KEY
    assert KEY not in repr(endpoint) and KEY not in repr(client)
    with pytest.raises(TypeError, match="sets base_url itself"):
        endpoint.openai(base_url="http://elsewhere")


def test_openai_missing_package_is_a_one_line_configuration_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openai" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match=r"pip install 'runpod-queue\[openai\]'") as info:
        client.endpoint("llm").openai()
    assert "\n" not in str(info.value)


# -- sync ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint_id", ["llm", "llm-plain"])
def test_chat_completion_is_a_job_with_worker_vllms_input(
    client: Client, emu: Emulator, endpoint_id: str
) -> None:
    before = {j.id for j in _jobs(emu, endpoint_id)}
    sdk = oai(client, endpoint_id)
    answer = sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=4, n=2)
    assert answer.object == "chat.completion"
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in answer.choices)
    assert all(len(c.message.content.split()) == 4 for c in answer.choices)  # type: ignore[union-attr]
    again = sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=4, n=2)
    assert again.choices[0].message.content == answer.choices[0].message.content  # deterministic
    (job, _) = [j for j in _jobs(emu, endpoint_id) if j.id not in before]
    assert job.status is JobStatus.COMPLETED
    assert job.original_input() == {
        "openai_route": "/v1/chat/completions",
        "openai_input": {"model": "fake-llm", "messages": MESSAGES, "max_tokens": 4, "n": 2},
    }
    # An ordinary job: /status shows it.
    status = httpx.get(
        f"{emu.base_url}/{endpoint_id}/status/{job.id}", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    assert status["status"] == "COMPLETED"


def test_completions_honours_stop_and_models_lists_the_model(client: Client) -> None:
    sdk = oai(client, "llm")
    full = sdk.completions.create(model="fake-llm", prompt="hello", max_tokens=30)
    text = full.choices[0].text
    stop = " " + text.split()[2]
    cut = sdk.completions.create(model="fake-llm", prompt="hello", max_tokens=30, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    assert [m.id for m in sdk.models.list()] == ["fake-llm"]


def test_responses_and_messages_routes(client: Client, emu: Emulator) -> None:
    sdk = oai(client, "llm")
    response = sdk.responses.create(model="fake-llm", input="hi", max_output_tokens=3)
    assert len(response.output_text.split()) == 3
    answer = httpx.post(
        f"{emu.base_url}/llm/openai/v1/messages",
        json={"model": "fake-llm", "max_tokens": 2, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 200
    assert answer.json()["stop_reason"] == "max_tokens"


def test_streaming_chat_chunks_arrive_before_the_job_ends(client: Client, emu: Emulator) -> None:
    FIRST_SENT.clear()
    RELEASE.clear()
    try:
        stream = oai(client, "held").chat.completions.create(model="held", messages=MESSAGES, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "first"
        # The handler is still blocked after its first yield: the chunk came while the job runs.
        (job,) = _jobs(emu, "held")
        assert job.status is JobStatus.IN_PROGRESS
        RELEASE.set()
        rest = [c.choices[0].delta.content for c in stream]
        assert rest == [" second"]
        assert job.status is JobStatus.COMPLETED
    finally:
        RELEASE.set()


def test_streaming_fake_llm_matches_the_whole_answer(client: Client) -> None:
    sdk = oai(client, "llm")
    whole = sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=6)
    pieces = list(
        sdk.chat.completions.create(
            model="fake-llm",
            messages=MESSAGES,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text == whole.choices[0].message.content
    assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens == 6


def test_chunk_objects_and_plain_outputs_are_framed_as_events(client: Client) -> None:
    deltas = [
        c.choices[0].delta.content
        for c in oai(client, "objects").chat.completions.create(model="m", messages=MESSAGES, stream=True)
    ]
    assert deltas == ["a", "b"]
    raw = httpx.post(
        f"{client.base_url}/plain/openai/v1/chat/completions",
        json={"stream": True, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")
    assert raw.text.count("data: ") == 2
    # Not streaming: a plain function's return value is the body.
    assert [m.id for m in oai(client, "plain").models.list()] == ["plain"]


def test_handler_errors_are_openai_errors(client: Client) -> None:
    import openai  # here, not at the top: see the module docstring

    with pytest.raises(openai.InternalServerError) as info:
        oai(client, "boom").chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 500
    assert "the model fell over" in info.value.message
    with pytest.raises(openai.BadRequestError, match="messages must be a non-empty list"):
        oai(client, "llm").chat.completions.create(model="m", messages=[])
    # Failing after a chunk was sent: the stream ends with an error event, which the SDK raises.
    stream = oai(client, "midfail").chat.completions.create(model="m", messages=MESSAGES, stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.content == "partial"
    with pytest.raises(openai.APIError, match="lost the GPU mid-answer"):
        next(chunks)
    # Failing before any chunk: a proper status, not a 200 stream.
    with pytest.raises(openai.BadRequestError):
        oai(client, "llm").chat.completions.create(model="m", messages=[], stream=True)


def test_wrong_key_is_refused_and_never_echoed(emu: Emulator) -> None:
    import openai  # here, not at the top: see the module docstring

    secret = "sk-wrong-key-0042"
    with Client(secret, base_url=emu.base_url) as other, pytest.raises(openai.AuthenticationError) as info:
        other.endpoint("llm").openai(max_retries=0).models.list()
    assert info.value.status_code == 401
    assert secret not in str(info.value) and secret not in repr(info.value.body)


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key"])
def test_the_401_is_the_same_for_known_and_unknown_endpoint_ids(emu: Emulator, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    answers = [
        httpx.post(f"{emu.base_url}/{endpoint}/openai/v1/chat/completions", json={}, headers=headers)
        for endpoint in ("llm", "no-such-endpoint")
    ]
    assert [a.status_code for a in answers] == [401, 401]
    assert answers[0].content == answers[1].content
    assert answers[0].json()["error"]["code"] == "invalid_api_key"


def test_a_body_nested_past_128_levels_is_an_openai_400(emu: Emulator) -> None:
    # 1,021 levels once answered a plain-text 500.
    for levels in (130, 1021):
        body = b'{"model": "m", "messages": ' + b"[" * levels + b"]" * levels + b"}"
        answer = httpx.post(
            f"{emu.base_url}/llm/openai/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert "nested more than 128 levels" in error["message"]
        assert error["type"] == "invalid_request_error"


def test_bad_requests_get_clear_openai_errors(emu: Emulator) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    base = f"{emu.base_url}/llm/openai/v1"
    cases = [
        (httpx.post(f"{base}/chat/completions", content=b"{nope", headers=auth), 400, "not valid JSON"),
        (httpx.post(f"{base}/chat/completions", json={"stream": "yes"}, headers=auth), 400, '"stream"'),
        (httpx.post(f"{base}/embeddings", json={}, headers=auth), 404, "/openai/v1/chat/completions"),
        (httpx.get(f"{base}/chat/completions", headers=auth), 405, "takes POST"),
    ]
    for answer, status, text in cases:
        assert answer.status_code == status
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "code"}
        assert text in error["message"]


@pytest.mark.parametrize(
    ("route", "body", "needle"),
    [
        ("chat/completions", {"messages": MESSAGES, "n": 300_000}, "n must be an integer from 1 to 128"),
        ("chat/completions", {"messages": MESSAGES, "max_tokens": 10**9}, "from 1 to 32768"),
        ("completions", {"prompt": ["a"] * 20, "n": 10}, "over 128 in one request"),
        ("messages", {"messages": MESSAGES, "max_tokens": 32_769}, "from 1 to 32768"),
    ],
)
def test_fake_llm_refuses_requests_too_big_to_answer_at_once(
    emu: Emulator, route: str, body: dict[str, Any], needle: str
) -> None:
    # n = 300000 once held the emulator's loop for 7 s (every route timed out) and grew without bound.
    answer = httpx.post(
        f"{emu.base_url}/llm/openai/v1/{route}", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "BadRequestError"
    assert needle in answer.json()["error"]["message"]


# -- async --------------------------------------------------------------------------------------


def test_async_openai_chat_stream_models_and_error(emu: Emulator) -> None:
    import openai  # here, not at the top: see the module docstring

    async def main() -> None:
        async with AsyncClient(KEY, base_url=emu.base_url) as aclient:
            endpoint = aclient.endpoint("llm")
            assert endpoint.openai_base_url == f"{emu.base_url}/llm/openai/v1"
            sdk = endpoint.openai(max_retries=0)
            try:
                whole = await sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=5)
                stream = await sdk.chat.completions.create(
                    model="fake-llm", messages=MESSAGES, max_tokens=5, stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
                assert text == whole.choices[0].message.content
                completion = await sdk.completions.create(model="fake-llm", prompt="x", max_tokens=2)
                assert completion.choices[0].finish_reason == "length"
                assert [m.id async for m in sdk.models.list()] == ["fake-llm"]
                with pytest.raises(openai.BadRequestError):
                    await sdk.completions.create(model="fake-llm", prompt="x", max_tokens=0)
            finally:
                await sdk.close()

    asyncio.run(main())


# -- the /openai/* rate limit -----------------------------------------------------------------------


def test_openai_rate_limit_answers_429_in_openais_shape() -> None:
    import openai  # here, not at the top: see the module docstring

    # Per endpoint: two calls per window, one in flight; the virtual clock keeps the window from sliding.
    limits = RateLimits(limits={**LIMITS, "openai": OperationLimit(2, 1)})
    with (
        Emulator(
            {"held": EndpointSpec(handler=held_stream)},
            api_key=KEY,
            clock="virtual",
            rate_limits=limits,
            per_worker_allowance=0,
            workers=2,
        ) as emu,
        Client(KEY, base_url=emu.base_url) as client,
    ):
        sdk = oai(client, "held")
        RELEASE.clear()
        try:
            held = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            next(iter(held))
            with pytest.raises(openai.RateLimitError) as busy:  # the one in-flight slot is taken
                sdk.models.list()
            RELEASE.set()
            list(held)
        finally:
            RELEASE.set()
        assert busy.value.response.headers["retry-after"] == "1"
        assert busy.value.body == {
            "message": "rate limit for /openai/* on endpoint held exceeded; retry later",
            "type": "rate_limit_exceeded",
            "code": None,
        }
        sdk.chat.completions.create(model="m", messages=MESSAGES)  # the second call of the window
        with pytest.raises(openai.RateLimitError, match=r"/openai/\* on endpoint held"):
            sdk.models.list()
