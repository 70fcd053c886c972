"""`endpoint.openai()`: the `openai` package pointed at an endpoint's OpenAI-compatible routes.

RunPod serves `https://api.runpod.ai/v2/<endpoint_id>/openai/v1` (chat/completions, completions, models,
and on worker-vllm responses and messages) and takes the RunPod API key as the bearer token, so the only
settings are the base URL and the key, both taken from our client. `openai` is an optional dependency
(the `openai` extra), imported only when a client is asked for.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from runpod_queue.errors import ConfigurationError

if TYPE_CHECKING:
    import openai

__all__ = ["async_openai_client", "openai_base_url", "openai_client"]

# The openai package refuses to start without a key; a keyless emulator accepts any.
_NO_KEY: Final = "no-key"
_OURS: Final = frozenset({"api_key", "base_url"})


def openai_base_url(base_url: str, endpoint_id: str) -> str:
    """The base URL to give `openai.OpenAI(base_url=...)` for this endpoint."""
    return f"{base_url}/{quote(endpoint_id, safe='')}/openai/v1"


def openai_client(
    api_key: str | None, base_url: str, endpoint_id: str, options: dict[str, Any]
) -> openai.OpenAI:
    """An `openai.OpenAI` with our key and this endpoint's base URL; `options` go to its constructor
    (`max_retries`, `timeout`, `http_client`, ...)."""
    _check(options)
    import openai

    return openai.OpenAI(
        api_key=api_key or _NO_KEY, base_url=openai_base_url(base_url, endpoint_id), **options
    )


def async_openai_client(
    api_key: str | None, base_url: str, endpoint_id: str, options: dict[str, Any]
) -> openai.AsyncOpenAI:
    """`openai_client`, as an `openai.AsyncOpenAI`."""
    _check(options)
    import openai

    return openai.AsyncOpenAI(
        api_key=api_key or _NO_KEY, base_url=openai_base_url(base_url, endpoint_id), **options
    )


def _check(options: dict[str, Any]) -> None:
    clash = _OURS & options.keys()
    if clash:
        raise TypeError(
            f"openai() sets {' and '.join(sorted(clash))} itself (the client's key and the endpoint's "
            "URL); build openai.OpenAI yourself to use others"
        )
    if importlib.util.find_spec("openai") is None:
        raise ConfigurationError(
            "endpoint.openai() needs the openai package: pip install 'runpod-queue[openai]'"
        )
