"""A model-free stand-in for RunPod's vLLM worker: run OpenAI-client code locally, without a GPU.

    rpq serve examples/fake_llm.py          # then OpenAI(base_url="http://127.0.0.1:8000/v2/fake_llm/openai/v1")
    python examples/fake_llm.py             # or as an official worker process (needs `pip install runpod`)

It speaks the protocol of runpod-workers/worker-vllm (`src/handler.py`): the platform sends each call to
`/openai/v1/<route>` as a job `{"openai_route": "/v1/<route>", "openai_input": <request body>}`; the
handler yields the response JSON once or, with `"stream": true`, the server-sent-event text, and yields
`{"error": {"message", "type", "code"}}` when it cannot answer. Routes: /v1/chat/completions,
/v1/completions, /v1/models, and (not streaming) /v1/responses and /v1/messages.

The "model" is deterministic: the words it answers are drawn from a small vocabulary with a random
generator seeded by the prompt and the choice index, so the same request always gets the same answer.
It honours `max_tokens` (finish_reason "length"; at most 32768), `n` (at most 128 choices a request),
`stop` (finish_reason "stop", the stop text
left out), `stream` and `stream_options.include_usage`. The model id is $FAKE_LLM_MODEL or "fake-llm".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

MODEL = os.environ.get("FAKE_LLM_MODEL", "fake-llm")
_WORDS = (
    "the queue hands each job to a worker and the worker streams its answer back token by token "
    "while the caller waits for the result of a request on a local endpoint without any GPU"
)
_VOCABULARY = tuple(_WORDS.split())
_CREATED = 1_700_000_000  # fixed, so answers are reproducible byte for byte


class BadRequest(ValueError):
    """A request the worker cannot answer: yielded as an OpenAI-style error with code 400."""


def _error(message: str, code: int = 400) -> dict[str, Any]:
    # worker-vllm's shape (`src/utils.py` create_error_response: message, type "BadRequestError", code
    # 400); the code lets the emulator answer 400.
    return {"error": {"message": message, "type": "BadRequestError", "code": code}}


def _generate(prompt: str, index: int, max_tokens: int, stop: list[str]) -> tuple[list[str], str]:
    """The tokens of one choice (each with its leading space) and its finish_reason."""
    seed = hashlib.sha256(f"{index}\x00{prompt}".encode()).digest()
    rng = random.Random(seed)
    natural = rng.randint(8, 24)
    words = [rng.choice(_VOCABULARY) for _ in range(natural)]
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    finish = "stop"
    if len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    text = ""
    for position, token in enumerate(tokens):
        candidate = text + token
        hits = [candidate.find(s) for s in stop if s and s in candidate]
        if hits:  # cut at the earliest stop string, which is not part of the answer
            cut = min(hits)
            kept = candidate[:cut][len(text) :]
            return tokens[:position] + ([kept] if kept else []), "stop"
        text = candidate
    return tokens, finish


# Bounds a real server enforces too, so one request cannot hold the handler (and, as it is async, the
# emulator's whole loop) for seconds: OpenAI caps `n` at 128; vLLM refuses max_tokens past the model's
# context length (this one's is 32768). A prompt list counts once per prompt, as vLLM runs each.
MAX_CHOICES = 128
MAX_TOKENS = 32_768


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _choices(n: int, prompts: int = 1) -> None:
    if n * prompts > MAX_CHOICES:
        raise BadRequest(
            f"{n} choice(s) for each of {prompts} prompt(s) is over {MAX_CHOICES} in one request: "
            "lower n or split the prompts"
        )


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise BadRequest(f"stop must be a string or a list of strings, got {value!r}")


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _messages_prompt(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects")
    return "\n".join(f"{m.get('role')}: {_text(m.get('content'))}" for m in messages if isinstance(m, dict))


def _usage(prompt: str, choices: list[list[str]]) -> dict[str, int]:
    prompt_tokens = len(prompt.split())
    completion = sum(len(tokens) for tokens in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def _request_id(kind: str, body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:24]}"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _chat(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """A chat completion: the whole response, or (streaming) its SSE events."""
    prompt = _messages_prompt(body.get("messages"))
    n = _int(body, "n", 1, 1, MAX_CHOICES)
    max_tokens = _int(
        body, "max_completion_tokens", _int(body, "max_tokens", 16, 1, MAX_TOKENS), 1, MAX_TOKENS
    )
    stop = _stops(body.get("stop"))
    runs = [_generate(prompt, i, max_tokens, stop) for i in range(n)]
    rid, model = _request_id("chatcmpl", body), body.get("model") or MODEL
    head = {"id": rid, "created": _CREATED, "model": model}
    if not body.get("stream"):
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "finish_reason": finish,
                "logprobs": None,
            }
            for i, (tokens, finish) in enumerate(runs)
        ]
        usage = _usage(prompt, [t for t, _ in runs])
        return {**head, "object": "chat.completion", "choices": choices, "usage": usage}, []
    chunk = {**head, "object": "chat.completion.chunk"}
    events = []
    for i, (tokens, finish) in enumerate(runs):
        events.append(_sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant"}}]}))
        for token in tokens:
            events.append(_sse({**chunk, "choices": [{"index": i, "delta": {"content": token}}]}))
        events.append(_sse({**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": finish}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = _usage(prompt, [t for t, _ in runs])
        events.append(_sse({**chunk, "choices": [], "usage": usage}))
    return None, [*events, "data: [DONE]\n\n"]


def _completion(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    prompts = body.get("prompt")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("prompt must be a string or a non-empty list of strings")
    n = _int(body, "n", 1, 1, MAX_CHOICES)
    _choices(n, len(prompts))
    max_tokens = _int(body, "max_tokens", 16, 1, MAX_TOKENS)
    stop = _stops(body.get("stop"))
    runs = [_generate(p, i, max_tokens, stop) for p in prompts for i in range(n)]
    rid, model = _request_id("cmpl", body), body.get("model") or MODEL
    head = {"id": rid, "object": "text_completion", "created": _CREATED, "model": model}
    if not body.get("stream"):
        choices = [
            {"index": i, "text": "".join(tokens), "finish_reason": finish, "logprobs": None}
            for i, (tokens, finish) in enumerate(runs)
        ]
        return {**head, "choices": choices, "usage": _usage(" ".join(prompts), [t for t, _ in runs])}, []
    events = []
    for i, (tokens, finish) in enumerate(runs):
        for token in tokens:
            events.append(_sse({**head, "choices": [{"index": i, "text": token, "finish_reason": None}]}))
        events.append(_sse({**head, "choices": [{"index": i, "text": "", "finish_reason": finish}]}))
    return None, [*events, "data: [DONE]\n\n"]


def _response(body: dict[str, Any]) -> dict[str, Any]:
    """/v1/responses (OpenAI's Responses API), not streaming."""
    given = body.get("input")
    prompt = given if isinstance(given, str) else _messages_prompt(given)
    max_tokens = _int(body, "max_output_tokens", 16, 1, MAX_TOKENS)
    tokens, finish = _generate(prompt, 0, max_tokens, [])
    rid = _request_id("resp", body)
    usage = _usage(prompt, [tokens])
    return {
        "id": rid,
        "object": "response",
        "created_at": _CREATED,
        "model": body.get("model") or MODEL,
        "status": "completed" if finish == "stop" else "incomplete",
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "output": [
            {
                "type": "message",
                "id": f"msg-{rid[5:]}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(tokens), "annotations": []}],
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _message(body: dict[str, Any]) -> dict[str, Any]:
    """/v1/messages (Anthropic's Messages API), not streaming."""
    prompt = _messages_prompt(body.get("messages"))
    max_tokens = _int(body, "max_tokens", 16, 1, MAX_TOKENS)
    stop = _stops(body.get("stop_sequences"))
    tokens, finish = _generate(prompt, 0, max_tokens, stop)
    reason = "max_tokens" if finish == "length" else "end_turn"
    if finish == "stop" and stop:
        full, _ = _generate(prompt, 0, max_tokens, [])
        if full != tokens:
            reason = "stop_sequence"
    usage = _usage(prompt, [tokens])
    return {
        "id": _request_id("msg", body),
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or MODEL,
        "content": [{"type": "text", "text": "".join(tokens)}],
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
    }


def _answer(route: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    if route == "/v1/models":
        model = {"id": MODEL, "object": "model", "created": _CREATED, "owned_by": "runpod-queue"}
        return {"object": "list", "data": [model]}, []
    if route == "/v1/chat/completions":
        return _chat(body)
    if route == "/v1/completions":
        return _completion(body)
    if route in ("/v1/responses", "/v1/messages"):
        if body.get("stream"):
            raise BadRequest(f"fake_llm does not stream {route}; send it without stream")
        return (_response(body) if route == "/v1/responses" else _message(body)), []
    raise BadRequest(f"fake_llm does not serve {route}")


async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    # An async generator, as worker-vllm's: one yield for a whole answer, one per SSE event when
    # streaming, an {"error": ...} yield when the request cannot be answered.
    job_input = job.get("input") or {}
    route = job_input.get("openai_route")
    body = job_input.get("openai_input") or {}
    if not isinstance(route, str) or not isinstance(body, dict):
        yield _error('input must be {"openai_route": "/v1/...", "openai_input": {...}}')
        return
    try:
        whole, events = _answer(route, body)
    except BadRequest as exc:
        yield _error(str(exc))
        return
    if whole is not None:
        yield whole
    for event in events:
        yield event


if __name__ == "__main__":  # an official worker process, started as worker-vllm starts its handler
    import runpod

    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
